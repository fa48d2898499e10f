/*
 * log.c — the runtime's one way to say something (troupe.h, "Logging"): tr_log formats a line,
 * writes its control characters as \xNN (no value inside a line can forge another), and hands it
 * to the process's hook, stderr by default. The hook and its argument change together
 * under a mutex; a line is formatted on the caller's stack and the hook is called outside the
 * lock, so hooks run concurrently and a slow one delays only its caller.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static tr_log_fn log_fn;
static void *log_user;

static void log_stderr(void *user, tr_log_level level, const char *component, const char *line)
{
    (void)user;
    (void)level;
    fprintf(stderr, "troupe %s: %s\n", component, line);
}

#if TROUPE_DEBUG
void tr__assert_fail(const char *cond, const char *file, int line)
{
    fprintf(stderr, "troupe: invariant broken at %s:%d: %s\n", file, line, cond);
    abort();
}
#endif

void tr_log_set(tr_log_fn fn, void *user)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_user = user;
    pthread_mutex_unlock(&log_lock);
}

void tr_log(tr_log_level level, const char *component, const char *fmt, ...)
{
    char raw[1001], line[4 * sizeof raw];
    raw[0] = '\0';
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
    }
    /* control characters as \xNN: a value from a peer or a user (a node name, an address) can
     * never start a line of its own in the log */
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            k += (size_t)snprintf(line + k, sizeof line - k, "\\x%02x", *p);
        else
            line[k++] = (char)*p;
    }
    line[k] = '\0';
    pthread_mutex_lock(&log_lock);
    tr_log_fn fn = log_fn != NULL ? log_fn : log_stderr;
    void *user = log_user;
    pthread_mutex_unlock(&log_lock);
    fn(user, level, component != NULL ? component : "runtime", line);
}

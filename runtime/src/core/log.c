/*
 * log.c — the runtime's one way to say something (troupe.h, "Logging"): tr_log drops a line above
 * the level kept (an atomic load, before any formatting), formats the rest, writes their control
 * characters as \xNN (no value inside a line can forge another), and hands them to the process's
 * hook, stderr by default. The hook and its argument change together under a mutex; a line is
 * formatted on the caller's stack and the hook is called outside the lock, so hooks run
 * concurrently and a slow one delays only its caller. The level starts as TROUPE_LOG's, read
 * once, unless tr_log_set came first.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static tr_log_fn log_fn;
static void *log_user;
/* the level kept; -1 until TROUPE_LOG was read or tr_log_set called */
static _Atomic int log_level = -1;

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

int tr_log_level_parse(const char *name, tr_log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; name != NULL && out != NULL && i < 4; i++)
        if (strcasecmp(name, names[i]) == 0) {
            *out = (tr_log_level)i;
            return TR_OK;
        }
    return TR_EINVAL;
}

void tr_log_set(tr_log_fn fn, void *user, tr_log_level level)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_user = user;
    atomic_store(&log_level, level < TR_LOG_ERROR ? (int)TR_LOG_ERROR
                             : level > TR_LOG_DEBUG ? (int)TR_LOG_DEBUG : (int)level);
    pthread_mutex_unlock(&log_lock);
}

tr_log_level tr_log_level_get(void)
{
    int v = atomic_load_explicit(&log_level, memory_order_relaxed);
    if (v >= 0)
        return (tr_log_level)v;
    tr_log_level l = TR_LOG_INFO;
    (void)tr_log_level_parse(getenv("TROUPE_LOG"), &l);
    /* whoever comes first sets it: TROUPE_LOG's level, or tr_log_set's */
    int expected = -1;
    atomic_compare_exchange_strong(&log_level, &expected, (int)l);
    return (tr_log_level)atomic_load(&log_level);
}

void tr_log(tr_log_level level, const char *component, const char *fmt, ...)
{
    if (level > tr_log_level_get())
        return;
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

/*
 * test_app.h — an app's node as a process of its own (build/bin/flashsale, build/bin/social):
 * started on a loopback port, its "listening on http://127.0.0.1:PORT" line awaited, stopped
 * with a signal and reaped. The apps' tests drive it over HTTP (test_net.h).
 */
#ifndef TROUPE_TEST_APP_H
#define TROUPE_TEST_APP_H

#include "test_util.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct tt_app {
    pid_t pid;
    int port;
} tt_app;

/* Runs bin with argv (NULL-terminated, argv[0] included), its stdout a pipe, and waits up to 30 s
 * for the port in its first line ("... 127.0.0.1:PORT ..."). The child dies with the test. */
static inline void tt_app_start(tt_app *n, const char *bin, const char *const *argv)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    n->pid = fork();
    assert_true(n->pid >= 0);
    if (n->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    char line[256] = {0};
    size_t len = 0;
    uint64_t deadline = tt_now_ns() + 30000000000ull;
    while (tt_now_ns() < deadline && strchr(line, '\n') == NULL && len + 1 < sizeof line) {
        struct pollfd pf = {.fd = fds[0], .events = POLLIN};
        if (poll(&pf, 1, 100) > 0 && read(fds[0], line + len, 1) == 1)
            len++;
    }
    close(fds[0]);
    char *p = strstr(line, "127.0.0.1:");
    assert_non_null(p);
    n->port = atoi(p + 10);
    assert_true(n->port > 0);
}

/* Sends sig and reaps the node. After SIGTERM it must have stopped cleanly: exit status 0 (a
 * sanitizer's report in the node makes it non-zero, so the sanitizer builds check the node too). */
static inline void tt_app_kill(tt_app *n, int sig)
{
    kill(n->pid, sig);
    int st = 0;
    assert_int_equal(waitpid(n->pid, &st, 0), n->pid);
    if (sig == SIGTERM) {
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
}

#endif

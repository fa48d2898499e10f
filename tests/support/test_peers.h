/*
 * test_peers.h — real servers for tests, on loopback ports (header-only, static inline):
 * postfix's smtp-sink (an SMTP peer writing each message it accepts, headers included, to its own
 * file) and redis-server (append-only file fsynced at every write).
 */
#ifndef TROUPE_TEST_PEERS_H
#define TROUPE_TEST_PEERS_H

#include "test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define SMTP_SINK "/usr/sbin/smtp-sink"

/* A loopback port nobody listens on (bound and released). */
static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static inline bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Starts postfix's smtp-sink on 127.0.0.1:port writing each message to its own file in dir;
 * reject4xx: it answers RCPT TO with a soft error instead. */
static inline pid_t sink_start(int port, const char *dir, bool reject4xx)
{
    if (access(SMTP_SINK, X_OK) != 0)
        fail_msg(SMTP_SINK " is missing: install postfix (scripts/bootstrap does)");
    char tmpl[256], addr[64];
    snprintf(tmpl, sizeof tmpl, "%s/%%M.", dir);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    char *argv[12];
    int n = 0;
    argv[n++] = (char *)SMTP_SINK;
    if (geteuid() == 0) { /* it refuses to run as root without dropping to a user */
        argv[n++] = (char *)"-u";
        argv[n++] = (char *)"root";
    }
    if (reject4xx) {
        argv[n++] = (char *)"-r";
        argv[n++] = (char *)"rcpt";
    }
    argv[n++] = (char *)"-d";
    argv[n++] = tmpl;
    argv[n++] = addr;
    argv[n++] = (char *)"100";
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test does not leave it running */
        execv(SMTP_SINK, argv);
        _exit(127);
    }
    TT_WAIT_FOR(port_open(port), TT_DEADLINE_MS);
    assert_true(port_open(port));
    return pid;
}

static inline void sink_stop(pid_t pid, int port)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    TT_WAIT_FOR(!port_open(port), TT_DEADLINE_MS);
}

/* Starts redis-server on a free loopback port (*port) keeping its files in dir; its pid, or -1 if
 * it cannot be started (not installed). */
static inline pid_t redis_start(const char *dir, int *port)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        *port = free_port();
        char p[16];
        snprintf(p, sizeof p, "%d", *port);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test does not leave it running */
            int devnull = open("/dev/null", O_WRONLY);
            if (devnull >= 0) {
                dup2(devnull, STDOUT_FILENO);
                dup2(devnull, STDERR_FILENO);
            }
            execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save",
                   "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir,
                   (char *)NULL);
            _exit(127);
        }
        for (int i = 0; i < 200; i++) { /* up to 2 s to listen */
            if (port_open(*port))
                return pid;
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid)
                break; /* it exited: port taken, or not installed */
            tt_sleep_ms(10);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

/* Stops a redis-server started by redis_start. */
static inline void redis_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

#endif

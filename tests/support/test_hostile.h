/*
 * test_hostile.h — tables of hostile HTTP input (issue 21, "Bad input"), one per app's port: each
 * row is the bytes a client writes on one connection and the outcome the server owes it — the
 * statuses of its answers in order (interim 100s included), each answer whole (Content-Length
 * bytes of body, none after a HEAD), a text the answers must hold, and then the connection either
 * closed cleanly by the server (an end of stream, never a reset: a reset can destroy answers the
 * client has not read) or kept (a GET /health on it answered 200). After every row a new
 * connection's GET /health must be answered 200: the process still serves others.
 */
#ifndef TROUPE_TEST_HOSTILE_H
#define TROUPE_TEST_HOSTILE_H

#include "test_net.h"
#include "test_util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct tt_http_row {
    const char *what;
    const char *bytes;  /* written as they are */
    size_t len;         /* 0: strlen(bytes) */
    const char *want;   /* the statuses, in order: "100 201" */
    bool closed;        /* the server closes after them (else it keeps the connection) */
    const char *has;    /* NULL, or a text the answers hold */
    bool head;          /* the requests are HEAD: answers without a body */
} tt_http_row;

/* Reads from fd into *buf (growing) until `until` (ns); false at the end of the stream. A reset
 * fails the test. */
static inline bool tt_hostile_read(int fd, char **buf, size_t *len, size_t *cap, uint64_t until)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int ms = (int)((until - tt_now_ns()) / 1000000u);
    if (tt_now_ns() >= until || poll(&pf, 1, ms > 0 ? ms : 0) <= 0)
        fail_msg("no answer in time");
    if (*cap - *len < 4096) {
        *cap *= 2;
        *buf = realloc(*buf, *cap);
        assert_non_null(*buf);
    }
    ssize_t r = read(fd, *buf + *len, *cap - *len - 1);
    if (r < 0 && errno == ECONNRESET)
        fail_msg("the server reset the connection");
    if (r <= 0)
        return false;
    *len += (size_t)r;
    (*buf)[*len] = '\0';
    return true;
}

/* The next answer at buf + *off, whole: its status (0 if the stream ended first). */
static inline int tt_hostile_answer(int fd, bool head, char **buf, size_t *len, size_t *cap,
                                    size_t *off, bool *eof)
{
    uint64_t until = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
    for (;;) {
        char *p = *buf + *off;
        char *end = strstr(p, "\r\n\r\n");
        if (end != NULL) {
            int status = 0;
            if (sscanf(p, "HTTP/1.1 %d ", &status) != 1)
                fail_msg("not a status line: %.60s", p);
            size_t hl = (size_t)(end + 4 - p), body = 0;
            const char *cl = strstr(p, "Content-Length: ");
            if (status != 100 && status != 204 && !head) {
                if (cl == NULL || cl > end)
                    fail_msg("an answer without Content-Length: %.200s", p);
                body = strtoul(cl + 16, NULL, 10);
            }
            if (*len - *off >= hl + body) {
                *off += hl + body;
                return status;
            }
        }
        if (*eof || !tt_hostile_read(fd, buf, len, cap, until)) {
            *eof = true;
            return 0;
        }
    }
}

/* Runs the rows against the server on port (see the top of this file). */
static inline void tt_http_table(int port, const tt_http_row *rows, size_t n)
{
    signal(SIGPIPE, SIG_IGN); /* a server that closes while a row still writes */
    for (size_t i = 0; i < n; i++) {
        const tt_http_row *row = &rows[i];
        size_t len = row->len ? row->len : strlen(row->bytes);
        print_message("HTTP: %s\n", row->what);
        int fd = tt_dial(port);
        for (size_t put = 0; put < len;) { /* the server may close before it has read it all */
            ssize_t w = write(fd, row->bytes + put, len - put);
            if (w <= 0)
                break;
            put += (size_t)w;
        }
        size_t cap = 8192, blen = 0, off = 0;
        char *buf = malloc(cap);
        assert_non_null(buf);
        buf[0] = '\0';
        bool eof = false;
        char got[256] = "";
        char want[256];
        snprintf(want, sizeof want, "%s", row->want);
        for (char *save = NULL, *w = strtok_r(want, " ", &save); w != NULL;
             w = strtok_r(NULL, " ", &save)) {
            int st = tt_hostile_answer(fd, row->head, &buf, &blen, &cap, &off, &eof);
            size_t gl = strlen(got);
            snprintf(got + gl, sizeof got - gl, "%s%d", gl ? " " : "", st);
            if (st == 0)
                break;
        }
        if (strcmp(got, row->want) != 0)
            fail_msg("%s: answers %s, wanted %s:\n%.2000s", row->what, got, row->want, buf);
        if (row->has != NULL && strstr(buf, row->has) == NULL)
            fail_msg("%s: no \"%s\" in:\n%.2000s", row->what, row->has, buf);
        if (row->closed) {
            uint64_t until = tt_now_ns() + (uint64_t)TT_DEADLINE_MS * 1000000u;
            while (!eof && tt_hostile_read(fd, &buf, &blen, &cap, until))
                ;
            if (blen != off)
                fail_msg("%s: more after the answers:\n%.2000s", row->what, buf + off);
        } else {
            if (eof)
                fail_msg("%s: the connection was closed", row->what);
            const char *again = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
            assert_int_equal(write(fd, again, strlen(again)), (ssize_t)strlen(again));
            int st = tt_hostile_answer(fd, false, &buf, &blen, &cap, &off, &eof);
            if (st != 200)
                fail_msg("%s: the kept connection answered %d to GET /health", row->what, st);
        }
        close(fd);
        free(buf);
        char out[512];
        assert_int_equal(tt_http(port, "GET", "/health", NULL, out, sizeof out, NULL, 0, 10000),
                         200);
    }
}

#endif

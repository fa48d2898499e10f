/*
 * test_net.h — loopback connections and the one HTTP client of the tests that talk to a server
 * over TCP (header-only): test_http, test_web, test_flashsale and the apps' tests share these.
 */
#ifndef TROUPE_TEST_NET_H
#define TROUPE_TEST_NET_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* A connection to 127.0.0.1:port, from loopback address `from` (e.g. "127.0.0.3") when not NULL:
 * a test's way to be several clients. Fails the test if it cannot connect. */
static inline int tt_dial_from(int port, const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (from != NULL) {
        struct sockaddr_in me = {.sin_family = AF_INET};
        assert_int_equal(inet_pton(AF_INET, from, &me.sin_addr), 1);
        assert_int_equal(bind(fd, (struct sockaddr *)&me, sizeof me), 0);
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static inline int tt_dial(int port)
{
    return tt_dial_from(port, NULL);
}

/* One HTTP/1.1 request on a fresh connection to 127.0.0.1:port, with "Connection: close" and a
 * Content-Length (0 without a body), read to the end. Returns the status, -1 when it cannot
 * connect, -2 when no answer came within timeout_ms. The answer's body goes to out (cap bytes,
 * NUL-terminated; NULL: not wanted), its status line and headers to head (likewise); at most
 * 1 MiB of answer is read. A request the server refuses may be cut short: the answer is read. */
static inline int tt_http_with(int port, const char *method, const char *path,
                               const char *headers, const char *body, char *out, size_t cap,
                               char *head, size_t headcap, unsigned timeout_ms);

static inline int tt_http(int port, const char *method, const char *path, const char *body,
                          char *out, size_t cap, char *head, size_t headcap, unsigned timeout_ms)
{
    return tt_http_with(port, method, path, NULL, body, out, cap, head, headcap, timeout_ms);
}

/* The same with extra header lines (each ending "\r\n"; NULL: none). */
static inline int tt_http_with(int port, const char *method, const char *path,
                               const char *headers, const char *body, char *out, size_t cap,
                               char *head, size_t headcap, unsigned timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    size_t blen = body != NULL ? strlen(body) : 0;
    size_t qcap = strlen(method) + strlen(path) + (headers != NULL ? strlen(headers) : 0) + blen + 128;
    char *req = malloc(qcap);
    assert_non_null(req);
    int n = snprintf(req, qcap,
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n%s",
                     method, path, headers != NULL ? headers : "", blen, body != NULL ? body : "");
    (void)!write(fd, req, (size_t)n);
    free(req);
    size_t len = 0, acap = 16384;
    char *buf = malloc(acap);
    assert_non_null(buf);
    ssize_t r = 0;
    for (;;) {
        if (len + 1 == acap && acap < (1u << 20)) {
            acap *= 2;
            char *bigger = realloc(buf, acap);
            assert_non_null(bigger);
            buf = bigger;
        }
        if (len + 1 >= acap || (r = read(fd, buf + len, acap - 1 - len)) <= 0)
            break;
        len += (size_t)r;
    }
    int err = errno;
    buf[len] = '\0';
    close(fd);
    if (len == 0 && r < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
        free(buf);
        return -2;
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    const char *b = strstr(buf, "\r\n\r\n");
    if (head != NULL && headcap > 0)
        snprintf(head, headcap, "%.*s", b != NULL ? (int)(b - buf) : 0, buf);
    if (out != NULL && cap > 0)
        snprintf(out, cap, "%s", b != NULL ? b + 4 : "");
    free(buf);
    return status;
}

#endif

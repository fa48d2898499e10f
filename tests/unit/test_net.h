/*
 * test_net.h — loopback connections for the tests that talk to a server over TCP (header-only):
 * one place for what test_http, test_web and test_flashsale each wrote out.
 */
#ifndef TROUPE_TEST_NET_H
#define TROUPE_TEST_NET_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

#endif

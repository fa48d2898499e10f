/*
 * fuzz_wire.c — libFuzzer harness for the node-to-node frame decoder (runtime/src/dist/wire.c):
 * what an unauthenticated or authenticated peer can put on a node's port after the length prefix.
 * Every decoder runs on the input as one frame: the header, HELLO, AUTH, LEAVE, MEMBERS
 * (validated whole, then handed out) and DATA (every envelope validated before any message is
 * made). Messages handed out are read through and freed, so a leak or a bad length shows under
 * ASan.
 */
#include "dist/wire.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void member(void *arg, const char *name, const char *addr)
{
    size_t *n = arg;
    *n += strlen(name) + strlen(addr); /* both NUL-terminated, bounded */
}

static void envelope(void *arg, tr_pid to, tr_msg *m)
{
    size_t *n = arg;
    *n += (size_t)(to & 1) + tr_msg_size(m);
    tr_reader r;
    tr_reader_init(&r, m);
    const msgpack_object *o;
    while (tr_read_object(&r, &o) == TR_OK)
        (*n)++;
    tr_reader_done(&r);
    tr_msg_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned kind;
    size_t n = 0;
    if (tr__wire_kind(data, size, &kind) != TR_OK)
        return 0;
    tr_wire_hello h;
    uint8_t mac[TR_WIRE_MAC];
    switch (kind) {
    case TR_WIRE_HELLO:
        if (tr__wire_get_hello(data, size, &h) == TR_OK)
            n += strlen(h.name) + strlen(h.addr);
        break;
    case TR_WIRE_AUTH:
        (void)tr__wire_get_auth(data, size, mac);
        break;
    case TR_WIRE_MEMBERS:
        (void)tr__wire_get_members(data, size, member, &n);
        break;
    case TR_WIRE_LEAVE:
        n += tr__wire_get_leave(data, size) == TR_OK;
        break;
    case TR_WIRE_DATA:
        (void)tr__wire_get_data(data, size, 1u << 20, envelope, &n);
        break;
    default:
        break;
    }
    return n == (size_t)-1; /* keep n alive */
}

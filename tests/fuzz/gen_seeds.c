/*
 * gen_seeds.c — writes the seed corpora of the wire and reader harnesses (tests/fuzz/corpus/) with
 * the runtime's own encoders, so the seeds are what real peers send: a HELLO, an AUTH, MEMBERS, a PING, a LEAVE,
 * DATA frames with one and several envelopes, and msgpack payloads of each kind. Run by hand
 * (build-fuzz/bin/fuzz-gen-seeds tests/fuzz/corpus) when the wire format changes.
 */
#include "dist/wire.h"

#include <stdio.h>
#include <string.h>

static void put(const char *dir, const char *name, const void *p, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, len, f) != len) {
        perror(path);
        return;
    }
    fclose(f);
}

static void frame(const char *dir, const char *name, tr_wire_buf *b)
{
    put(dir, name, b->data, b->len);
    tr__wire_buf_free(b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz-gen-seeds CORPUS_DIR (with wire/ and reader/ inside)\n");
        return 2;
    }
    char wire[400], reader[400];
    snprintf(wire, sizeof wire, "%s/wire", argv[1]);
    snprintf(reader, sizeof reader, "%s/reader", argv[1]);
    tr_wire_buf b;
    tr_wire_hello h = {.name = "n1", .node_id = 7, .incarnation = 42,
                       .addr = "tcp://127.0.0.1:7201"};
    memset(h.nonce, 0xab, sizeof h.nonce);
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_HELLO);
    tr__wire_put_hello(&b, &h);
    frame(wire, "hello", &b);
    uint8_t mac[TR_WIRE_MAC];
    memset(mac, 0x5a, sizeof mac);
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_AUTH);
    tr__wire_put_auth(&b, mac);
    frame(wire, "auth", &b);
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_MEMBERS);
    tr__wire_put_members(&b, 2);
    tr__wire_put_member(&b, "n2", "tcp://127.0.0.1:7202");
    tr__wire_put_member(&b, "n3", "tcp://127.0.0.1:7203");
    frame(wire, "members", &b);
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_PING);
    frame(wire, "ping", &b);
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_LEAVE);
    frame(wire, "leave", &b);
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_DATA);
    for (int i = 0; i < 3; i++) {
        tr_msg *m = tr_msg_new((uint32_t)(100 + i), 32);
        tr_msg_put_u64(m, (uint64_t)i * 1000);
        tr_msg_put_str(m, "payload", 7);
        tr__wire_put_envelope(&b, ((tr_pid)7 << 48) | (tr_pid)(i + 1), m);
        tr_msg_free(m);
    }
    frame(wire, "data3", &b);
    tr__wire_buf_init(&b);
    tr__wire_begin(&b, TR_WIRE_DATA);
    tr_msg *m = tr_msg_new(5, 0);
    tr__wire_put_envelope(&b, (tr_pid)9 << 48, m);
    tr_msg_free(m);
    frame(wire, "data-empty", &b);

    /* reader seeds: the first byte is the harness's plan of reads */
    m = tr_msg_new(1, 64);
    uint8_t plan = 0x1b; /* u64, str, i64, object */
    tr_msg_append(m, &plan, 1);
    tr_msg_put_u64(m, UINT64_MAX);
    tr_msg_put_str(m, "name", 4);
    tr_msg_put_i64(m, -42);
    msgpack_pack_array(tr_msg_packer(m), 2);
    msgpack_pack_map(tr_msg_packer(m), 1);
    tr_msg_put_str(m, "k", 1);
    msgpack_pack_bin(tr_msg_packer(m), 3);
    msgpack_pack_bin_body(tr_msg_packer(m), "bin", 3);
    tr_msg_put_u64(m, 1);
    put(reader, "mixed", tr_msg_data(m), tr_msg_size(m));
    tr_msg_free(m);
    return 0;
}

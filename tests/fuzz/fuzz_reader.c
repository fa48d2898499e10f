/*
 * fuzz_reader.c — libFuzzer harness for the msgpack reading helpers every actor uses on payloads
 * from anywhere (troupe.h: tr_reader, tr_read_*, tr_msg_get_u64): the input is a message payload;
 * its first byte picks the reads (objects, integers, strings, bins) so every reader meets every
 * kind of malformed input.
 */
#include <stddef.h>
#include <stdint.h>
#include <troupe.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t plan = data[0];
    tr_msg *m = tr_msg_from_bytes(1, data + 1, size - 1);
    if (m == NULL)
        return 0;
    uint64_t u;
    (void)tr_msg_get_u64(m, &u);
    tr_reader r;
    tr_reader_init(&r, m);
    for (int i = 0; i < 64 && !tr_reader_at_end(&r); i++) {
        int64_t s;
        const char *str;
        const void *bin;
        size_t len;
        const msgpack_object *o;
        int rc;
        switch ((plan >> (2 * (i % 4))) & 3) {
        case 0:
            rc = tr_read_u64(&r, &u);
            break;
        case 1:
            rc = tr_read_i64(&r, &s);
            break;
        case 2:
            rc = tr_read_str(&r, &str, &len);
            if (rc == TR_OK && len > 0)
                u += (unsigned char)str[len - 1]; /* in bounds, or ASan says so */
            break;
        default:
            rc = (i & 4) ? tr_read_bin(&r, &bin, &len) : tr_read_object(&r, &o);
            break;
        }
        if (rc != TR_OK)
            break;
    }
    tr_reader_done(&r);
    tr_msg_free(m);
    return 0;
}

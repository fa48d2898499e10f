/*
 * email.c — the email actor (see actors/email.h): outbox items in, RFC 5322 files out.
 *
 * An item holds [order_id, user, sku, qty] (actors/order.h). The email is written to
 * DIR/tmp/ORDER_ID.eml, fsynced, and renamed to DIR/new/ORDER_ID.eml; only then is the item
 * acknowledged. A crash between the rename and the ack makes the store deliver it again, and the
 * rewrite of the same file is harmless: the sink is idempotent by order id.
 */
#include "actors/email.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct email_state {
    email_args a;
} email_state;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int make_dirs(const char *dir)
{
    char p[4096];
    const char *sub[] = {"", "/tmp", "/new", "/cur"};
    for (int i = 0; i < 4; i++) {
        if ((size_t)snprintf(p, sizeof p, "%s%s", dir, sub[i]) >= sizeof p)
            return TR_EINVAL;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return TR_EIO;
    }
    return TR_OK;
}

static int email_init(tr_ctx *ctx, void *state, const void *arg)
{
    const email_args *a = arg;
    email_state *e = state;
    if (a == NULL || a->store == NULL || a->queue == NULL || a->maildir == NULL ||
        a->from == NULL || strlen(a->maildir) > 3900)
        return TR_EINVAL;
    e->a = *a;
    int rc = make_dirs(a->maildir);
    if (rc != TR_OK) {
        fprintf(stderr, "email: cannot make the maildir %s: %s\n", a->maildir, strerror(errno));
        return rc;
    }
    return tr_outbox_subscribe(a->store, a->queue, tr_self(ctx));
}

/* Only characters an order id or user may hold (actors/order.c checks them; so do we). */
static bool header_safe(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '/' || s[i] == '\0')
            return false;
    return len > 0;
}

/* Writes the email file; TR_OK once it is in new/. */
static int deliver_maildir(email_state *e, const char *id, size_t il, const char *user, size_t ul,
                           const char *sku, size_t sl, uint64_t qty, const struct timespec *handled)
{
    char tmp[4096], dst[4096], date[64];
    snprintf(tmp, sizeof tmp, "%s/tmp/%.*s.eml.%d", e->a.maildir, (int)il, id, (int)getpid());
    snprintf(dst, sizeof dst, "%s/new/%.*s.eml", e->a.maildir, (int)il, id);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    char body[2048];
    int n = snprintf(body, sizeof body,
                     "From: %s\r\n"
                     "To: %.*s\r\n"
                     "Subject: Payment successful: order %.*s\r\n"
                     "Date: %s\r\n"
                     "Message-ID: <%.*s@flashsale.troupe>\r\n"
                     "MIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "X-Troupe-Handled: %lld.%09ld\r\n"
                     "\r\n"
                     "Your payment for order %.*s was successful.\r\n"
                     "Item: %.*s, quantity %llu.\r\n",
                     e->a.from, (int)ul, user, (int)il, id, date, (int)il, id,
                     (long long)handled->tv_sec, handled->tv_nsec, (int)il, id, (int)sl, sku,
                     (unsigned long long)qty);
    if (n < 0 || (size_t)n >= sizeof body)
        return TR_ETOOBIG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return TR_EIO;
    bool ok = write(fd, body, (size_t)n) == n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, dst) != 0) {
        unlink(tmp);
        return TR_EIO;
    }
    return TR_OK;
}

static int email_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    email_state *e = state;
    if (tr_msg_type(m) != TR_MSG_OUTBOX)
        return 0;
    struct timespec handled; /* when the rate limit let it through: written into the email */
    clock_gettime(CLOCK_REALTIME, &handled);
    uint64_t item;
    const void *data;
    size_t len;
    if (tr_outbox_read(m, &item, NULL, NULL, &data, &len, NULL) != TR_OK)
        return 0;
    tr_reader r;
    const char *id, *user, *sku;
    size_t il, ul, sl;
    uint64_t qty;
    tr_reader_init_bytes(&r, data, len);
    const msgpack_object *arr;
    int rc = tr_read_object(&r, &arr);
    /* the item is one array [order_id, user, sku, qty] */
    if (rc != TR_OK || arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size != 4 ||
        arr->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        arr->via.array.ptr[1].type != MSGPACK_OBJECT_STR ||
        arr->via.array.ptr[2].type != MSGPACK_OBJECT_STR ||
        arr->via.array.ptr[3].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        tr_reader_done(&r);
        tr_outbox_ack(e->a.store, item); /* it can never be sent: do not retry it for ever */
        return 0;
    }
    id = arr->via.array.ptr[0].via.str.ptr;
    il = arr->via.array.ptr[0].via.str.size;
    user = arr->via.array.ptr[1].via.str.ptr;
    ul = arr->via.array.ptr[1].via.str.size;
    sku = arr->via.array.ptr[2].via.str.ptr;
    sl = arr->via.array.ptr[2].via.str.size;
    qty = arr->via.array.ptr[3].via.u64;
    if (!header_safe(id, il) || !header_safe(user, ul) || !header_safe(sku, sl) || il > 200) {
        tr_reader_done(&r);
        tr_outbox_ack(e->a.store, item);
        return 0;
    }
    rc = deliver_maildir(e, id, il, user, ul, sku, sl, qty, &handled);
    if (rc == TR_OK) {
        tr_outbox_ack(e->a.store, item);
        if (e->a.stats != NULL)
            atomic_fetch_add(&e->a.stats->sent, 1);
        if (e->a.on_sent != NULL) {
            char oid[256];
            snprintf(oid, sizeof oid, "%.*s", (int)il, id);
            e->a.on_sent(e->a.user, oid, now_ns());
        }
    } else if (e->a.stats != NULL) {
        atomic_fetch_add(&e->a.stats->failed, 1); /* left unacknowledged: sent again later */
    }
    tr_reader_done(&r);
    return 0;
}

const tr_behaviour email_behaviour = {
    .name = "email",
    .state_size = sizeof(email_state),
    .init = email_init,
    .receive = email_receive,
};

/*
 * email.c — the email actor (see actors/email.h): outbox items in, emails out through a provider.
 *
 * An item holds [order_id, user, sku, qty] (actors/order.h). The email is formatted once, then
 * handed to the provider in the actor's turn (so the mailbox's token bucket is the rate the
 * provider sees): maildir writes DIR/tmp/ORDER_ID.eml, fsyncs it and renames it to
 * DIR/new/ORDER_ID.eml; smtp sends it with libcurl. Only then is the item acknowledged. A crash
 * between delivery and ack makes the store deliver it again: the maildir rewrite is harmless, and
 * over SMTP the duplicate carries the same Message-ID. A failure puts the item back for a retry
 * after the provider's backoff (tr_outbox_retry), which doubles per failure and resets on success.
 */
#include "actors/email.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EMAIL_MAX 2048          /* one formatted email */
#define EMAIL_TRACK_MAX 1024    /* items tracked as retrying (the outbox window bounds them) */

typedef struct email_state {
    email_args a;
    CURL *curl;
    char mail_from[256];        /* the address inside From:'s <...> */
    char curl_err[CURL_ERROR_SIZE];
    unsigned backoff_ms;        /* the provider's current backoff; 0 = healthy */
    uint64_t backoff_until_ns;  /* no attempt before this */
    uint64_t retrying[EMAIL_TRACK_MAX];
    size_t nretrying;
    uint32_t rnd;               /* jitter */
} email_state;

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

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* The address in "Name <addr>" (or the whole string). */
static bool address_of(const char *from, char *out, size_t outlen)
{
    const char *lt = strchr(from, '<'), *gt = lt != NULL ? strchr(lt, '>') : NULL;
    const char *p = lt != NULL && gt != NULL ? lt + 1 : from;
    size_t n = lt != NULL && gt != NULL ? (size_t)(gt - p) : strlen(from);
    if (n == 0 || n >= outlen || memchr(p, '@', n) == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\r' || p[i] == '\n' || p[i] == ' ' || p[i] == '<' || p[i] == '>')
            return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static int smtp_setup(email_state *e)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK || (e->curl = curl_easy_init()) == NULL)
        return TR_ENOMEM;
    unsigned t = e->a.timeout_ms ? e->a.timeout_ms : 5000;
    CURL *c = e->curl;
    bool ok = curl_easy_setopt(c, CURLOPT_URL, e->a.smtp_url) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps") == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_MAIL_FROM, e->mail_from) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_UPLOAD, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)t) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)t) == CURLE_OK &&
              curl_easy_setopt(c, CURLOPT_ERRORBUFFER, e->curl_err) == CURLE_OK;
    if (!ok) {
        fprintf(stderr, "email: smtp url %s not usable by libcurl\n", e->a.smtp_url);
        curl_easy_cleanup(c);
        e->curl = NULL;
        return TR_EINVAL;
    }
    return TR_OK;
}

static int email_init(tr_ctx *ctx, void *state, const void *arg)
{
    const email_args *a = arg;
    email_state *e = state;
    if (a == NULL || a->store == NULL || a->queue == NULL || a->from == NULL)
        return TR_EINVAL;
    if (a->provider == EMAIL_MAILDIR && (a->maildir == NULL || strlen(a->maildir) > 3900))
        return TR_EINVAL;
    if (a->provider == EMAIL_SMTP && (a->smtp_url == NULL || a->smtp_url[0] == '\0'))
        return TR_EINVAL;
    if (a->provider != EMAIL_MAILDIR && a->provider != EMAIL_SMTP)
        return TR_EINVAL;
    e->a = *a;
    if (e->a.to_domain == NULL)
        e->a.to_domain = "customers.invalid";
    if (strlen(e->a.to_domain) > 200 || !address_of(a->from, e->mail_from, sizeof e->mail_from)) {
        fprintf(stderr, "email: from \"%s\" holds no usable address\n", a->from);
        return TR_EINVAL;
    }
    e->rnd = (uint32_t)tr_now_ns() | 1u;
    int rc;
    if (a->provider == EMAIL_MAILDIR) {
        rc = make_dirs(a->maildir);
        if (rc != TR_OK) {
            fprintf(stderr, "email: cannot make the maildir %s: %s\n", a->maildir,
                    strerror(errno));
            return rc;
        }
    } else if ((rc = smtp_setup(e)) != TR_OK) {
        return rc;
    }
    rc = tr_outbox_subscribe(a->store, a->queue, tr_self(ctx));
    if (rc != TR_OK && e->curl != NULL) {
        curl_easy_cleanup(e->curl);
        e->curl = NULL;
    }
    return rc;
}

static void email_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    (void)reason;
    email_state *e = state;
    if (e->curl != NULL)
        curl_easy_cleanup(e->curl);
    e->curl = NULL;
}

/* Only characters an order id or user may hold (actors/order.c checks them; so do we). */
static bool header_safe(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '/' || s[i] == '\0' || s[i] == '<' ||
            s[i] == '>' || s[i] == ' ')
            return false;
    return len > 0;
}

typedef struct email_item {
    const char *id, *user, *sku;
    size_t il, ul, sl;
    uint64_t qty;
} email_item;

/* The recipient's address: the user if it holds an '@', USER@to_domain otherwise. */
static void recipient(const email_state *e, const email_item *it, char *out, size_t outlen)
{
    if (memchr(it->user, '@', it->ul) != NULL)
        snprintf(out, outlen, "%.*s", (int)it->ul, it->user);
    else
        snprintf(out, outlen, "%.*s@%s", (int)it->ul, it->user, e->a.to_domain);
}

/* Formats the RFC 5322 message; its length, or -1 if it does not fit. */
static int format_email(const email_state *e, const email_item *it, const char *to,
                        const struct timespec *handled, char *buf, size_t cap)
{
    char date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    int n = snprintf(buf, cap,
                     "From: %s\r\n"
                     "To: <%s>\r\n"
                     "Subject: Payment successful: order %.*s\r\n"
                     "Date: %s\r\n"
                     "Message-ID: <%.*s@flashsale.troupe>\r\n"
                     "MIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "X-Troupe-Handled: %lld.%09ld\r\n"
                     "\r\n"
                     "Your payment for order %.*s was successful.\r\n"
                     "Item: %.*s, quantity %llu.\r\n",
                     e->a.from, to, (int)it->il, it->id, date, (int)it->il, it->id,
                     (long long)handled->tv_sec, handled->tv_nsec, (int)it->il, it->id,
                     (int)it->sl, it->sku, (unsigned long long)it->qty);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* Writes the email file; TR_OK once it is in new/. */
static int deliver_maildir(email_state *e, const email_item *it, const char *body, size_t n)
{
    char tmp[4096], dst[4096];
    snprintf(tmp, sizeof tmp, "%s/tmp/%.*s.eml.%d", e->a.maildir, (int)it->il, it->id,
             (int)getpid());
    snprintf(dst, sizeof dst, "%s/new/%.*s.eml", e->a.maildir, (int)it->il, it->id);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return TR_EIO;
    bool ok = write(fd, body, n) == (ssize_t)n && (e->a.no_fsync || fsync(fd) == 0);
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, dst) != 0) {
        unlink(tmp);
        return TR_EIO;
    }
    return TR_OK;
}

typedef struct upload {
    const char *p;
    size_t left;
} upload;

static size_t upload_read(char *buf, size_t size, size_t nitems, void *user)
{
    upload *u = user;
    size_t n = size * nitems < u->left ? size * nitems : u->left;
    memcpy(buf, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

/* Sends the email over SMTP (MAIL FROM, RCPT TO, DATA); TR_OK once the server took it. */
static int deliver_smtp(email_state *e, const char *to, const char *body, size_t n)
{
    char rcpt_addr[408];
    snprintf(rcpt_addr, sizeof rcpt_addr, "<%s>", to);
    struct curl_slist *rcpt = curl_slist_append(NULL, rcpt_addr);
    if (rcpt == NULL)
        return TR_ENOMEM;
    upload u = {.p = body, .left = n};
    e->curl_err[0] = '\0';
    curl_easy_setopt(e->curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(e->curl, CURLOPT_READFUNCTION, upload_read);
    curl_easy_setopt(e->curl, CURLOPT_READDATA, &u);
    curl_easy_setopt(e->curl, CURLOPT_INFILESIZE, (long)n);
    CURLcode rc = curl_easy_perform(e->curl);
    curl_easy_setopt(e->curl, CURLOPT_MAIL_RCPT, NULL);
    curl_slist_free_all(rcpt);
    if (rc == CURLE_OK)
        return TR_OK;
    long code = 0;
    curl_easy_getinfo(e->curl, CURLINFO_RESPONSE_CODE, &code);
    if (e->backoff_ms == 0) /* once per outage, not once per attempt */
        fprintf(stderr, "email: smtp %s: %s (reply %ld); retrying with backoff\n",
                e->a.smtp_url, e->curl_err[0] ? e->curl_err : curl_easy_strerror(rc), code);
    return TR_EIO;
}

static void track_retrying(email_state *e, uint64_t id, bool retrying)
{
    for (size_t i = 0; i < e->nretrying; i++)
        if (e->retrying[i] == id) {
            if (!retrying)
                e->retrying[i] = e->retrying[--e->nretrying];
            goto out;
        }
    if (retrying && e->nretrying < EMAIL_TRACK_MAX)
        e->retrying[e->nretrying++] = id;
out:
    if (e->a.stats != NULL)
        atomic_store(&e->a.stats->retrying, e->nretrying);
}

/* A spread of up to 1/8 of ms, so put-back items do not all fall due in the same instant. */
static unsigned jitter(email_state *e, unsigned ms)
{
    e->rnd ^= e->rnd << 13;
    e->rnd ^= e->rnd >> 17;
    e->rnd ^= e->rnd << 5;
    return ms / 8 ? e->rnd % (ms / 8) : 0;
}

/* Hands the item to the provider: acknowledges it, or puts it back for after the backoff. */
static void deliver(email_state *e, uint64_t item, const email_item *it,
                    const struct timespec *handled, uint64_t handled_ns)
{
    uint64_t now = tr_now_ns();
    if (now < e->backoff_until_ns) { /* the provider is backing off: not now */
        unsigned wait = (unsigned)((e->backoff_until_ns - now) / 1000000u) + 1;
        tr_outbox_retry(e->a.store, item, wait + jitter(e, e->backoff_ms));
        track_retrying(e, item, true);
        return;
    }
    char to[400], body[EMAIL_MAX];
    recipient(e, it, to, sizeof to);
    int n = format_email(e, it, to, handled, body, sizeof body);
    if (n < 0) { /* it can never be sent: do not retry it for ever */
        tr_outbox_ack(e->a.store, item);
        track_retrying(e, item, false);
        return;
    }
    int rc = e->a.provider == EMAIL_SMTP ? deliver_smtp(e, to, body, (size_t)n)
                                         : deliver_maildir(e, it, body, (size_t)n);
    if (rc == TR_OK) {
        tr_outbox_ack(e->a.store, item);
        track_retrying(e, item, false);
        if (e->backoff_ms != 0 && e->a.provider == EMAIL_SMTP)
            fprintf(stderr, "email: smtp %s: delivering again\n", e->a.smtp_url);
        e->backoff_ms = 0;
        e->backoff_until_ns = 0;
        if (e->a.stats != NULL)
            atomic_fetch_add(&e->a.stats->sent, 1);
        if (e->a.on_sent != NULL) {
            char oid[256];
            snprintf(oid, sizeof oid, "%.*s", (int)it->il, it->id);
            e->a.on_sent(e->a.user, oid, handled_ns);
        }
        return;
    }
    unsigned lo = e->a.retry_min_ms ? e->a.retry_min_ms : 500;
    unsigned hi = e->a.retry_max_ms ? e->a.retry_max_ms : 30000;
    e->backoff_ms = e->backoff_ms == 0 ? lo : (e->backoff_ms > hi / 2 ? hi : e->backoff_ms * 2);
    if (e->backoff_ms > hi)
        e->backoff_ms = hi;
    e->backoff_until_ns = tr_now_ns() + (uint64_t)e->backoff_ms * 1000000u;
    tr_outbox_retry(e->a.store, item, e->backoff_ms + jitter(e, e->backoff_ms));
    track_retrying(e, item, true);
    if (e->a.stats != NULL)
        atomic_fetch_add(&e->a.stats->failed, 1);
}

static int email_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    email_state *e = state;
    if (tr_msg_type(m) != TR_MSG_OUTBOX)
        return 0;
    struct timespec handled; /* when the rate limit let it through: written into the email */
    clock_gettime(CLOCK_REALTIME, &handled);
    uint64_t handled_ns = tr_now_ns();
    uint64_t item;
    const void *data;
    size_t len;
    if (tr_outbox_read(m, &item, NULL, NULL, &data, &len, NULL) != TR_OK)
        return 0;
    tr_reader r;
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
    email_item it = {.id = arr->via.array.ptr[0].via.str.ptr,
                     .il = arr->via.array.ptr[0].via.str.size,
                     .user = arr->via.array.ptr[1].via.str.ptr,
                     .ul = arr->via.array.ptr[1].via.str.size,
                     .sku = arr->via.array.ptr[2].via.str.ptr,
                     .sl = arr->via.array.ptr[2].via.str.size,
                     .qty = arr->via.array.ptr[3].via.u64};
    if (!header_safe(it.id, it.il) || !header_safe(it.user, it.ul) ||
        !header_safe(it.sku, it.sl) || it.il > 200 || it.ul > 200 || it.sl > 200) {
        tr_reader_done(&r);
        tr_outbox_ack(e->a.store, item);
        return 0;
    }
    deliver(e, item, &it, &handled, handled_ns);
    tr_reader_done(&r);
    return 0;
}

const tr_behaviour email_behaviour = {
    .name = "email",
    .state_size = sizeof(email_state),
    .init = email_init,
    .receive = email_receive,
    .terminate = email_terminate,
};

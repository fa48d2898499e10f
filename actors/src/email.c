/*
 * email.c — the email actor (see actors/email.h): outbox items in, emails out through a provider.
 *
 * What an item's email says is the app's format callback's (recipient, id, subject, body); this
 * file checks those, writes the RFC 5322 message once — headers, a subject in RFC 2047 words
 * when it is not ASCII, the body's line ends as CRLF — and hands it to the provider in the
 * actor's turn (so the mailbox's token bucket is the rate the provider sees): maildir writes
 * DIR/tmp/ID.eml, fsyncs it and renames it to DIR/new/ID.eml; smtp sends it with libcurl. Only
 * then is the item acknowledged. A crash
 * between delivery and ack makes the store deliver it again: the maildir rewrite is harmless, and
 * over SMTP the duplicate carries the same Message-ID. A failure puts the item back for a retry
 * after the provider's backoff (tr_outbox_retry), which doubles per failure and resets on success.
 *
 * With args.lease the actor sends only while it holds that store lease: a cluster's singleton may
 * briefly run on two nodes (a move, a partition), and two senders would each keep the rate — twice
 * the rate, and duplicates (found by scripts/chaos: 110 emails in one second at 50/s + 10). It
 * counts its lease from before each renewal (made before an email once a third of the ttl has
 * passed) and stops a third of the ttl before it ends; a new holder waits a second before its
 * first email.
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

#define EMAIL_MAX_DEFAULT (64u * 1024u) /* one formatted email */
#define EMAIL_TRACK_MAX 1024    /* items tracked as retrying (the outbox window bounds them) */
#define EMAIL_ID_MAX 200u
#define EMAIL_ADDR_MAX 254u     /* RFC 5321's path limit */
#define EMAIL_SUBJECT_MAX 900u

typedef struct email_state {
    email_args a;
    CURL *curl;
    char mail_from[256];        /* the address inside From:'s <...> */
    const char *domain;         /* Message-ID's right part */
    size_t max;                 /* max_bytes */
    char *scratch;              /* the format callback's (max bytes) */
    char *msg;                  /* the message being delivered (max bytes) */
    char curl_err[CURL_ERROR_SIZE];
    unsigned backoff_ms;        /* the provider's current backoff; 0 = healthy */
    uint64_t backoff_until_ns;  /* no attempt before this */
    uint64_t retrying[EMAIL_TRACK_MAX];
    size_t nretrying;
    uint64_t sent, failed, dropped; /* its own counts (EMAIL_STATS without args.stats) */
    uint32_t rnd;               /* jitter */
    char holder[64];            /* args.lease: this actor's holder id */
    uint64_t send_from_ns;      /* args.lease: sending allowed in [send_from, lease_until) */
    uint64_t lease_until_ns;
    uint64_t renew_due_ns;
    bool holds;
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
        tr_log(TR_LOG_ERROR, "email", "smtp url %s not usable by libcurl", e->a.smtp_url);
        curl_easy_cleanup(c);
        e->curl = NULL;
        return TR_EINVAL;
    }
    return TR_OK;
}

static void release(email_state *e)
{
    if (e->curl != NULL)
        curl_easy_cleanup(e->curl);
    e->curl = NULL;
    free(e->scratch);
    free(e->msg);
    e->scratch = e->msg = NULL;
}

static int email_init(tr_ctx *ctx, void *state, const void *arg)
{
    const email_args *a = arg;
    email_state *e = state;
    if (a == NULL || a->store == NULL || a->queue == NULL || a->from == NULL || a->format == NULL)
        return TR_EINVAL;
    if (a->provider == EMAIL_MAILDIR && (a->maildir == NULL || strlen(a->maildir) > 3900))
        return TR_EINVAL;
    if (a->provider == EMAIL_SMTP && (a->smtp_url == NULL || a->smtp_url[0] == '\0'))
        return TR_EINVAL;
    if (a->provider != EMAIL_MAILDIR && a->provider != EMAIL_SMTP)
        return TR_EINVAL;
    e->a = *a;
    if (!address_of(a->from, e->mail_from, sizeof e->mail_from) || strchr(a->from, '\r') ||
        strchr(a->from, '\n')) {
        tr_log(TR_LOG_ERROR, "email", "from \"%s\" holds no usable address", a->from);
        return TR_EINVAL;
    }
    e->domain = a->message_id_domain != NULL ? a->message_id_domain
                                             : strchr(e->mail_from, '@') + 1;
    if (e->domain[0] == '\0' || strlen(e->domain) > 200 || strpbrk(e->domain, "\r\n<> ") != NULL) {
        tr_log(TR_LOG_ERROR, "email", "message_id_domain \"%s\" is not usable", e->domain);
        return TR_EINVAL;
    }
    e->max = a->max_bytes ? a->max_bytes : EMAIL_MAX_DEFAULT;
    if (e->max < 1024 || e->max > 64u * 1024u * 1024u)
        return TR_EINVAL;
    e->scratch = malloc(e->max);
    e->msg = malloc(e->max);
    if (e->scratch == NULL || e->msg == NULL) {
        free(e->scratch);
        free(e->msg);
        e->scratch = e->msg = NULL;
        return TR_ENOMEM;
    }
    e->rnd = (uint32_t)tr_now_ns() | 1u;
    int rc;
    if (a->provider == EMAIL_MAILDIR) {
        rc = make_dirs(a->maildir);
        if (rc != TR_OK)
            tr_log(TR_LOG_ERROR, "email", "cannot make the maildir %s: %s", a->maildir,
                   strerror(errno));
    } else {
        rc = smtp_setup(e);
    }
    if (a->lease != NULL) /* an id for this actor's holding */
        snprintf(e->holder, sizeof e->holder, "%016llx-%08x",
                 (unsigned long long)tr_self(ctx), (unsigned)(tr_now_ns() ^ (uintptr_t)e));
    if (rc == TR_OK)
        rc = tr_outbox_subscribe(a->store, a->queue, tr_self(ctx));
    if (rc != TR_OK)
        release(e);
    return rc;
}

/* Takes or renews the lease (args.lease): before an email when a third of its ttl has passed
 * since the last renewal, or when not held. (Not on a timer: a timer's message would wait behind
 * the emails in the rate-limited mailbox. Idle, the lease lapses; another node may take it.) */
static void lease_renew(email_state *e)
{
    unsigned ttl = e->a.lease_ms ? e->a.lease_ms : 3000u;
    uint64_t t0 = tr_now_ns();
    e->renew_due_ns = t0 + (uint64_t)(ttl / 3) * 1000000u;
    bool held = false;
    if (tr_store_lease(e->a.store, e->a.lease, e->holder, ttl, &held) != TR_OK)
        held = false; /* the store cannot be reached: what was held runs out */
    if (held) {
        if (!e->holds || t0 >= e->lease_until_ns) { /* newly held: a second's gap first */
            e->send_from_ns = t0 + 1000000000ull;
            tr_log(TR_LOG_INFO, "email", "holds the lease %s: sending from in a second",
                   e->a.lease);
        }
        e->holds = true;
        e->lease_until_ns = t0 + (uint64_t)(ttl - ttl / 3) * 1000000u;
    } else if (e->holds && t0 >= e->lease_until_ns) {
        e->holds = false;
        tr_log(TR_LOG_WARN, "email", "lost the lease %s: not sending", e->a.lease);
    }
}

static void email_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx;
    (void)reason;
    email_state *e = state;
    if (e->a.lease != NULL && e->holds) { /* the next holder need not wait for the ttl */
        bool held;
        (void)tr_store_lease(e->a.store, e->a.lease, e->holder, 0, &held);
    }
    release(state);
}

/* ---- the message -------------------------------------------------------------------------- */

/* An email id: [A-Za-z0-9._-]{1,200} (a file name and a Message-ID's left part). */
static bool id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > EMAIL_ID_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* A recipient: local@domain, printable ASCII without space, <, >, quotes or parentheses. */
static bool address_ok(const char *s)
{
    size_t n = strlen(s);
    const char *at = strchr(s, '@');
    if (n == 0 || n > EMAIL_ADDR_MAX || at == NULL || at == s || at[1] == '\0' ||
        strchr(at + 1, '@') != NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || strchr("<>()\"\\,;:[]", s[i]) != NULL)
            return false;
    return true;
}

typedef struct out {
    char *p;
    size_t len, cap;
    bool over;
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->over || n > o->cap - o->len) {
        o->over = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void puts_(out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* The subject as it goes in the header: itself when printable ASCII, else RFC 2047 "B" words of
 * whole UTF-8 characters (at most 45 bytes each: 60 base64 characters, under 76 a line), folded. */
static void put_subject(out *o, const char *s)
{
    bool ascii = true;
    for (const char *p = s; *p; p++)
        ascii &= (unsigned char)*p >= ' ' && (unsigned char)*p < 0x7f;
    if (ascii) {
        puts_(o, s);
        return;
    }
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s), at = 0;
    while (at < n) {
        size_t k = n - at > 45 ? 45 : n - at;
        while (at + k < n && ((unsigned char)s[at + k] & 0xc0) == 0x80)
            k--; /* never split a character between words */
        if (at > 0)
            puts_(o, "\r\n "); /* folded: a new word on a continuation line */
        puts_(o, "=?UTF-8?B?");
        const unsigned char *q = (const unsigned char *)s + at;
        for (size_t i = 0; i < k; i += 3) {
            uint32_t v = (uint32_t)q[i] << 16 | (i + 1 < k ? (uint32_t)q[i + 1] << 8 : 0) |
                         (i + 2 < k ? q[i + 2] : 0);
            char c[4] = {b64[v >> 18], b64[(v >> 12) & 63], i + 1 < k ? b64[(v >> 6) & 63] : '=',
                         i + 2 < k ? b64[v & 63] : '='};
            put(o, c, 4);
        }
        puts_(o, "?=");
        at += k;
    }
}

/* Checks what the format callback described and writes the RFC 5322 message into e->msg; its
 * length, or -1 if the email breaks a rule or does not fit (then it is dropped). */
static long build_message(email_state *e, const email_content *c, const struct timespec *handled)
{
    if (c->to == NULL || c->id == NULL || c->subject == NULL || c->body == NULL ||
        !address_ok(c->to) || !id_ok(c->id) || strlen(c->subject) > EMAIL_SUBJECT_MAX ||
        strpbrk(c->subject, "\r\n") != NULL)
        return -1;
    out o = {.p = e->msg, .cap = e->max};
    char line[512], date[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    puts_(&o, "From: ");
    puts_(&o, e->a.from);
    snprintf(line, sizeof line, "\r\nTo: <%s>\r\nSubject: ", c->to);
    puts_(&o, line);
    put_subject(&o, c->subject);
    snprintf(line, sizeof line,
             "\r\nDate: %s\r\n"
             "Message-ID: <%s@%s>\r\n"
             "MIME-Version: 1.0\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n"
             "X-Troupe-Handled: %lld.%09ld\r\n\r\n",
             date, c->id, e->domain, (long long)handled->tv_sec, handled->tv_nsec);
    puts_(&o, line);
    for (const char *p = c->body; *p && !o.over; p++) { /* line ends: CRLF, whatever they were */
        if (*p == '\r' && p[1] == '\n')
            continue;
        if (*p == '\r' || *p == '\n')
            puts_(&o, "\r\n");
        else
            put(&o, p, 1);
    }
    return o.over ? -1 : (long)o.len;
}

/* Writes the email file; TR_OK once it is in new/. */
static int deliver_maildir(email_state *e, const char *id, const char *body, size_t n)
{
    char tmp[4200], dst[4200];
    snprintf(tmp, sizeof tmp, "%s/tmp/%s.eml.%d", e->a.maildir, id, (int)getpid());
    snprintf(dst, sizeof dst, "%s/new/%s.eml", e->a.maildir, id);
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
        tr_log(TR_LOG_WARN, "email", "smtp %s: %s (reply %ld); retrying with backoff",
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

/* The item can never be sent: acknowledged (never retried), counted. */
static void drop(email_state *e, uint64_t item)
{
    tr_outbox_ack(e->a.store, item);
    track_retrying(e, item, false);
    e->dropped++;
    if (e->a.stats != NULL)
        atomic_fetch_add(&e->a.stats->dropped, 1);
}

/* Hands the item to the provider: acknowledges it, or puts it back for after the backoff. */
static void deliver(email_state *e, uint64_t item, const void *data, size_t len,
                    const struct timespec *handled, uint64_t handled_ns)
{
    uint64_t now = tr_now_ns();
    if (e->a.lease != NULL && (!e->holds || now >= e->renew_due_ns)) {
        lease_renew(e);
        now = tr_now_ns();
    }
    if (e->a.lease != NULL && !(e->holds && now >= e->send_from_ns && now < e->lease_until_ns)) {
        /* not this actor's turn to send (args.lease): back to the outbox for a while */
        tr_outbox_retry(e->a.store, item, 500 + jitter(e, 500));
        return;
    }
    if (now < e->backoff_until_ns) { /* the provider is backing off: not now */
        unsigned wait = (unsigned)((e->backoff_until_ns - now) / 1000000u) + 1;
        tr_outbox_retry(e->a.store, item, wait + jitter(e, e->backoff_ms));
        track_retrying(e, item, true);
        return;
    }
    email_content c = {0};
    long n = -1;
    if (e->a.format(e->a.format_user, data, len, e->scratch, e->max, &c) == TR_OK)
        n = build_message(e, &c, handled);
    if (n < 0) {
        drop(e, item);
        return;
    }
    int rc = e->a.provider == EMAIL_SMTP ? deliver_smtp(e, c.to, e->msg, (size_t)n)
                                         : deliver_maildir(e, c.id, e->msg, (size_t)n);
    if (rc == TR_OK) {
        tr_outbox_ack(e->a.store, item);
        track_retrying(e, item, false);
        if (e->backoff_ms != 0 && e->a.provider == EMAIL_SMTP)
            tr_log(TR_LOG_INFO, "email", "smtp %s: delivering again", e->a.smtp_url);
        e->backoff_ms = 0;
        e->backoff_until_ns = 0;
        e->sent++;
        if (e->a.stats != NULL)
            atomic_fetch_add(&e->a.stats->sent, 1);
        if (e->a.on_sent != NULL)
            e->a.on_sent(e->a.user, c.id, handled_ns);
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
    e->failed++;
    if (e->a.stats != NULL)
        atomic_fetch_add(&e->a.stats->failed, 1);
}

/* EMAIL_STATS: [sent, failed, retrying, dropped]. */
static int answer_stats(tr_ctx *ctx, email_state *e, const tr_msg *m)
{
    const email_stats *st = e->a.stats;
    uint64_t v[4] = {st != NULL ? atomic_load(&st->sent) : e->sent,
                     st != NULL ? atomic_load(&st->failed) : e->failed, e->nretrying,
                     st != NULL ? atomic_load(&st->dropped) : e->dropped};
    tr_msg *r = tr_msg_new(EMAIL_STATS, 40);
    for (int i = 0; r != NULL && i < 4; i++)
        tr_msg_put_u64(r, v[i]);
    if (r != NULL)
        (void)tr_reply(ctx, m, r); /* a requester gone is not the email actor's failure */
    return 0;
}

static int email_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    email_state *e = state;
    if (tr_msg_type(m) == EMAIL_STATS && tr_msg_corr(m) != 0)
        return answer_stats(ctx, e, m);
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
    deliver(e, item, data, len, &handled, handled_ns);
    return 0;
}

const tr_behaviour email_behaviour = {
    .name = "email",
    .state_size = sizeof(email_state),
    .init = email_init,
    .receive = email_receive,
    .terminate = email_terminate,
};

/*
 * test_email.c — the email actor (actors/email.h) with content that is not the flash sale's: a
 * format callback of the test's own says what each email says, so the actor's delivery — the
 * RFC 5322 message, the maildir, drops, on_sent — is shown independent of the order actor.
 *
 * Items reach the outbox as the order actor puts them: a producer actor of the test opens a
 * journal and adds each item with tr_journal_outbox, answering once it is committed.
 */
#include "test_util.h"
#include "actors/email.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MSG_PUT = 1, MSG_PUT_OK };

static char g_dir[64];

/* ---- the producer: [key, payload] -> an outbox item of queue "mail", answered after commit --- */

typedef struct producer {
    tr_store *s;
    tr_journal *j;
} producer;

static int producer_apply(void *state, uint64_t seq, const void *event, size_t len)
{
    (void)state, (void)seq, (void)event, (void)len;
    return 0;
}

static int producer_init(tr_ctx *ctx, void *state, const void *arg)
{
    producer *p = state;
    p->s = (tr_store *)arg;
    return tr_journal_open(ctx, p->s, "producer", NULL, producer_apply, p, &p->j);
}

static int producer_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    producer *p = state;
    tr_reader r;
    tr_reader_init(&r, m);
    const char *key;
    size_t kl;
    const void *data;
    size_t len;
    int rc = tr_read_str(&r, &key, &kl);
    if (rc == TR_OK)
        rc = tr_read_bin(&r, &data, &len);
    char k[64];
    snprintf(k, sizeof k, "%.*s", (int)kl, key);
    if (rc == TR_OK)
        rc = tr_journal_outbox(p->j, "mail", k, data, len);
    tr_reader_done(&r);
    if (rc == TR_OK)
        rc = tr_journal_reply(p->j, m, tr_msg_new(MSG_PUT_OK, 0));
    return rc;
}

static void producer_turn_end(tr_ctx *ctx, void *state)
{
    (void)ctx;
    tr_journal_flush(((producer *)state)->j);
}

static void producer_terminate(tr_ctx *ctx, void *state, const tr_reason *reason)
{
    (void)ctx, (void)reason;
    tr_journal_close(((producer *)state)->j);
}

static const tr_behaviour producer_b = {.name = "producer", .state_size = sizeof(producer),
                                        .init = producer_init, .receive = producer_receive,
                                        .turn_end = producer_turn_end,
                                        .terminate = producer_terminate};

/* Puts one item (payload: a C string, the NUL excluded) and waits for its commit. */
static void put(tr_system *sys, tr_pid producer_pid, const char *key, const char *payload)
{
    tr_msg *m = tr_msg_new(MSG_PUT, 64 + strlen(payload));
    msgpack_packer *pk = tr_msg_packer(m);
    msgpack_pack_str(pk, strlen(key));
    msgpack_pack_str_body(pk, key, strlen(key));
    msgpack_pack_bin(pk, strlen(payload));
    msgpack_pack_bin_body(pk, payload, strlen(payload));
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(sys, producer_pid, m, 30000, &reply), TR_OK);
    tr_msg_free(reply);
}

/* ---- the test's content: a payload "TO|ID|SUBJECT|BODY" (or "refuse") ------------------------ */

static int test_format(void *user, const void *data, size_t len, char *buf, size_t cap,
                       email_content *out)
{
    (void)user;
    if (len + 1 > cap || (len == 6 && memcmp(data, "refuse", 6) == 0))
        return TR_EBADMSG;
    memcpy(buf, data, len);
    buf[len] = '\0';
    char *f[4], *save = NULL, *p = buf;
    for (int i = 0; i < 4; i++) {
        f[i] = i < 3 ? strtok_r(p, "|", &save) : save; /* the body may hold '|' */
        p = NULL;
        if (f[i] == NULL)
            return TR_EBADMSG;
    }
    *out = (email_content){.to = f[0], .id = f[1], .subject = f[2], .body = f[3]};
    return TR_OK;
}

static char g_sent[16][64];
static _Atomic unsigned g_nsent;

static void on_sent(void *user, const char *email_id, uint64_t t_ns)
{
    (void)user, (void)t_ns;
    unsigned i = atomic_fetch_add(&g_nsent, 1);
    if (i < 16)
        snprintf(g_sent[i], sizeof g_sent[i], "%s", email_id);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    static char buf[1 << 17];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* A system, a store in g_dir/NAME.db and a producer on it; the maildir is g_dir/NAME. */
typedef struct mail_env {
    tr_system *sys;
    tr_store *store;
    tr_pid producer;
    char maildir[128];
} mail_env;

static void env_up(mail_env *e, const char *name)
{
    char db[128], err[256];
    snprintf(db, sizeof db, "%s/%s.db", g_dir, name);
    snprintf(e->maildir, sizeof e->maildir, "%s/%s", g_dir, name);
    e->sys = tt_system_workers(2);
    tr_store_opts so = {.path = db, .sync = TR_SYNC_NORMAL, .redeliver_ms = 10000};
    assert_int_equal(tr_store_open(e->sys, &so, &e->store, err, sizeof err), TR_OK);
    assert_int_equal(tr_system_spawn(e->sys, &producer_b, e->store, &e->producer), TR_OK);
}

static void env_down(mail_env *e)
{
    tr_system_stop(e->sys);
    tr_system_join(e->sys);
    tr_store_close(e->store);
    tr_system_free(e->sys);
}

static void test_any_content_delivered_and_bad_content_dropped(void **state)
{
    (void)state;
    mail_env env;
    env_up(&env, "mail");
    tr_system *sys = env.sys;
    tr_store *s = env.store;
    tr_pid prod = env.producer, email;
    const char *maildir = env.maildir;
    char path[256];

    /* two good emails, then one of each way to be refused */
    put(sys, prod, "k1", "zoe@example.org|welcome-1|Bienvenue, Zoë — ça marche|Hello Zoë,\n"
                         "line two | with a bar\r\nline three\n");
    put(sys, prod, "k2", "bob@example.org|welcome-2|Plain ASCII subject|one line");
    put(sys, prod, "k3", "refuse");                                      /* the callback says no */
    put(sys, prod, "k4", "eve@example.org\r\nBcc: x@y.z|evil-1|s|b");    /* header injection */
    put(sys, prod, "k5", "eve@example.org|../evil|s|b");                 /* a path in the id */
    put(sys, prod, "k6", "eve@example.org|evil-2|two\nlines|b");         /* CR/LF in the subject */
    put(sys, prod, "k7", "no-at-sign|evil-3|s|b");                       /* not an address */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char item[3100];
    snprintf(item, sizeof item, "eve@example.org|evil-4|too big|%s", big);
    put(sys, prod, "k8", item); /* above max_bytes (2 KiB here) */

    email_stats st = {0};
    email_args ea = {.store = s, .queue = "mail", .maildir = maildir,
                     .from = "Club <hello@club.example>", .format = test_format,
                     .max_bytes = 2048, .stats = &st, .on_sent = on_sent};
    atomic_store(&g_nsent, 0);
    assert_int_equal(tr_system_spawn(sys, &email_behaviour, &ea, &email), TR_OK);
    TT_WAIT_FOR(atomic_load(&st.sent) + atomic_load(&st.dropped) == 8, TT_DEADLINE_MS);
    assert_int_equal(atomic_load(&st.sent), 2);
    assert_int_equal(atomic_load(&st.dropped), 6);
    assert_int_equal(atomic_load(&st.failed), 0);
    /* the actor says the same when asked (EMAIL_STATS: sent, failed, retrying, dropped) */
    tr_msg *reply = NULL;
    assert_int_equal(tr_system_call(sys, email, tr_msg_new(EMAIL_STATS, 0), 30000, &reply), TR_OK);
    uint64_t v[4];
    tr_reader r;
    tr_reader_init(&r, reply);
    for (int i = 0; i < 4; i++)
        assert_int_equal(tr_read_u64(&r, &v[i]), TR_OK);
    tr_reader_done(&r);
    tr_msg_free(reply);
    assert_int_equal(v[0], 2);
    assert_int_equal(v[1], 0);
    assert_int_equal(v[2], 0);
    assert_int_equal(v[3], 6);
    /* every item acknowledged: nothing pending (acks are committed by the next commit) */
    uint64_t pending = 99;
    for (int i = 0; i < 600 && pending != 0; i++) {
        assert_int_equal(tr_outbox_pending(s, "mail", &pending), TR_OK);
        if (pending != 0)
            usleep(100 * 1000);
    }
    assert_int_equal(pending, 0);
    /* the two files, named after the ids; nothing of the refused ones */
    snprintf(path, sizeof path, "%s/new", maildir);
    assert_int_equal(tt_count_files(path), 2);
    assert_int_equal(atomic_load(&g_nsent), 2);
    assert_true((strcmp(g_sent[0], "welcome-1") == 0 && strcmp(g_sent[1], "welcome-2") == 0) ||
                (strcmp(g_sent[1], "welcome-1") == 0 && strcmp(g_sent[0], "welcome-2") == 0));
    snprintf(path, sizeof path, "%s/new/welcome-1.eml", maildir);
    char *mail = slurp(path);
    assert_non_null(mail);
    assert_non_null(strstr(mail, "From: Club <hello@club.example>\r\n"));
    assert_non_null(strstr(mail, "\r\nTo: <zoe@example.org>\r\n"));
    /* the Message-ID's domain is the From address's */
    assert_non_null(strstr(mail, "\r\nMessage-ID: <welcome-1@club.example>\r\n"));
    /* a subject that is not ASCII: RFC 2047 words of UTF-8, base64 */
    assert_non_null(strstr(mail, "\r\nSubject: =?UTF-8?B?"));
    assert_null(strstr(mail, "Zoë — ça"));
    /* the body: every line end CRLF, whatever it was */
    assert_non_null(strstr(mail, "\r\n\r\nHello Zoë,\r\nline two | with a bar\r\nline three\r\n"));
    for (const char *p = mail; (p = strchr(p, '\n')) != NULL; p++)
        assert_true(p > mail && p[-1] == '\r');
    snprintf(path, sizeof path, "%s/new/welcome-2.eml", maildir);
    mail = slurp(path);
    assert_non_null(mail);
    assert_non_null(strstr(mail, "\r\nSubject: Plain ASCII subject\r\n"));
    assert_non_null(strstr(mail, "\r\n\r\none line"));
    env_down(&env);
}

/* The subject's encoded words decode back to the subject (a long one: several folded words,
 * never a character split between two). */
static void test_long_subject_folds_into_whole_characters(void **state)
{
    (void)state;
    mail_env env;
    env_up(&env, "mail2");
    tr_system *sys = env.sys;
    tr_store *s = env.store;
    tr_pid prod = env.producer, email;
    const char *maildir = env.maildir;
    char path[256];
    char subject[400] = "";
    for (int i = 0; i < 40; i++)
        strcat(subject, "é€"); /* 2- and 3-byte characters: 200 bytes */
    char item[600];
    snprintf(item, sizeof item, "a@b.example|long-1|%s|body", subject);
    put(sys, prod, "k1", item);
    email_stats st = {0};
    email_args ea = {.store = s, .queue = "mail", .maildir = maildir,
                     .from = "x@sender.example", .message_id_domain = "ids.example",
                     .format = test_format, .stats = &st};
    assert_int_equal(tr_system_spawn(sys, &email_behaviour, &ea, &email), TR_OK);
    TT_WAIT_FOR(atomic_load(&st.sent) == 1, TT_DEADLINE_MS);
    snprintf(path, sizeof path, "%s/new/long-1.eml", maildir);
    char *mail = slurp(path);
    assert_non_null(mail);
    assert_non_null(strstr(mail, "\r\nMessage-ID: <long-1@ids.example>\r\n"));
    /* decode every word of the Subject header */
    char *h = strstr(mail, "\r\nSubject: ");
    assert_non_null(h);
    h += 11;
    char decoded[400];
    size_t dl = 0;
    int words = 0;
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (;;) {
        assert_int_equal(strncmp(h, "=?UTF-8?B?", 10), 0);
        h += 10;
        char *end = strstr(h, "?=");
        assert_non_null(end);
        assert_true(end - h <= 60);
        uint32_t v = 0;
        int bits = 0;
        for (char *c = h; c < end && *c != '='; c++) {
            v = v << 6 | (uint32_t)(strchr(b64, *c) - b64);
            if ((bits += 6) >= 8) {
                bits -= 8;
                decoded[dl++] = (char)(v >> bits);
            }
        }
        /* each word holds whole characters: it never ends inside one */
        unsigned char last = (unsigned char)decoded[dl - 1];
        assert_true(last < 0x80 || strncmp(decoded + dl - 2, "é", 2) == 0 ||
                    strncmp(decoded + dl - 3, "€", 3) == 0);
        words++;
        h = end + 2;
        if (strncmp(h, "\r\n ", 3) != 0)
            break;
        h += 3;
    }
    decoded[dl] = '\0';
    assert_true(words >= 4);
    assert_string_equal(decoded, subject);
    env_down(&env);
}

/* Arguments the actor cannot work with are refused at spawn (its init fails); good ones work. */
static void test_bad_args_refused(void **state)
{
    (void)state;
    char db[128];
    snprintf(db, sizeof db, "%s/mail3.db", g_dir);
    tr_system *sys = tt_system_workers(1);
    tr_store_opts so = {.path = db, .sync = TR_SYNC_NORMAL};
    tr_store *s;
    char err[256];
    assert_int_equal(tr_store_open(sys, &so, &s, err, sizeof err), TR_OK);
    email_args good = {.store = s, .queue = "mail", .maildir = g_dir, .from = "a@b.example",
                       .format = test_format};
    email_args bad[] = {good, good, good, good};
    bad[0].format = NULL;                       /* nothing says what the emails say */
    bad[1].from = "no address here";
    bad[2].from = "a@b.example\r\nBcc: c@d.example";
    bad[3].max_bytes = 10;
    tr_pid ok;
    assert_int_equal(tr_system_spawn(sys, &email_behaviour, &good, &ok), TR_OK);
    tr_system_stop_actor(sys, ok); /* the queue's one consumer: let the bad ones try */
    TT_WAIT_FOR(!tr_system_alive(sys, ok), TT_DEADLINE_MS);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tr_pid pid = TR_PID_NONE;
        /* init runs inside the spawn: its error is the spawn's */
        assert_int_not_equal(tr_system_spawn(sys, &email_behaviour, &bad[i], &pid), TR_OK);
    }
    tr_system_stop(sys);
    tr_system_join(sys);
    tr_store_close(s);
    tr_system_free(sys);
}

static int setup(void **state)
{
    (void)state;
    return tt_tmpdir(g_dir, sizeof g_dir, "troupe-email");
}

static int teardown(void **state)
{
    (void)state;
    return tt_rm_rf(g_dir);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_any_content_delivered_and_bad_content_dropped),
    cmocka_unit_test(test_long_subject_folds_into_whole_characters),
    cmocka_unit_test(test_bad_args_refused),
};

int main(void)
{
    tt_apply_filter();
    return cmocka_run_group_tests_name("email", tests, setup, teardown);
}

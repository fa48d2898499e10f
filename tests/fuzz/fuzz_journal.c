/*
 * fuzz_journal.c — libFuzzer harness of a journal's recovery from damaged rows of the store's
 * SQLite file (runtime/src/store/sqlite.c, sq_recover): whoever can write the file can put any
 * bytes, of any SQLite type, in a snapshot, an event or an event_batches row. The store must
 * refuse what it cannot read (tr_journal_open fails, the actor's spawn with it) and never read
 * out of bounds; the apps' persistent actors must refuse what their events do not say.
 *
 * Once: a system, the store on a file in a temporary directory, and a second connection of the
 * harness's own to write rows with. Per input: its first byte picks whose journal is recovered —
 * a checker whose callbacks record what they are handed, the flash sale's order actor
 * (actors/order.h), the social network's user or post actor (actors/social.h) — and the rest is a
 * script of rows (row()) for that journal and others, each field of any type (integer, real,
 * text, blob, NULL); then the actor is spawned (its init recovers), stopped, and the rows deleted.
 * The checker's recovery is compared with the same recovery done here on the same rows (the
 * store's format, docs/persistence.md): the same outcome, the same snapshot, the same events in
 * the same order with the same bytes. An event or snapshot whose first byte is 0xEE is refused by
 * the checker's callbacks, so refusals are exercised too.
 */
#include "actors/order.h"
#include "actors/social.h"

#include <ftw.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <troupe.h>
#include <troupe/store.h>
#include <unistd.h>

#define MAX_ROWS 16u
#define REFUSE 0xEE             /* the checker refuses an event or snapshot starting so */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64], g_path[96];
static tr_system *g_sys;
static tr_store *g_store;
static sqlite3 *g_db;
static social_ctx g_soc;

static void die(const char *what)
{
    fprintf(stderr, "fuzz-journal: %s\n", what);
    abort();
}

static void quiet_log(void *user, tr_log_level level, const char *component, const char *msg)
{
    (void)user;
    (void)level;
    (void)component;
    (void)msg; /* a refused journal is logged: expected here, thousands of times */
}

/* ---- what a recovery handed over ----------------------------------------------------------- */

typedef struct got {
    bool restored;
    uint64_t snap_seq;
    unsigned char *snap;
    size_t snap_len;
    size_t n;
    uint64_t seq[4096];
    size_t off[4096], len[4096];
    unsigned char *bytes;       /* the events' bytes, back to back */
    size_t blen, bcap;
    bool overflow;
} got;

static void got_reset(got *g)
{
    free(g->snap);
    free(g->bytes);
    memset(g, 0, sizeof *g);
}

static bool refused(const void *p, size_t len)
{
    return len > 0 && ((const unsigned char *)p)[0] == REFUSE;
}

static int got_restore(got *g, uint64_t seq, const void *p, size_t len)
{
    g->restored = true;
    g->snap_seq = seq;
    g->snap = malloc(len ? len : 1);
    if (g->snap == NULL)
        die("out of memory");
    if (len > 0)
        memcpy(g->snap, p, len);
    g->snap_len = len;
    return refused(p, len) ? 1 : 0;
}

static int got_apply(got *g, uint64_t seq, const void *p, size_t len)
{
    if (g->n == sizeof g->seq / sizeof g->seq[0]) {
        g->overflow = true;
        return 0;
    }
    if (g->blen + len > g->bcap) {
        size_t cap = g->bcap ? g->bcap : 1024;
        while (cap < g->blen + len)
            cap *= 2;
        unsigned char *b = realloc(g->bytes, cap);
        if (b == NULL)
            die("out of memory");
        g->bytes = b;
        g->bcap = cap;
    }
    if (len > 0)
        memcpy(g->bytes + g->blen, p, len);
    g->seq[g->n] = seq;
    g->off[g->n] = g->blen;
    g->len[g->n] = len;
    g->n++;
    g->blen += len;
    return refused(p, len) ? 1 : 0;
}

static got g_actor, g_ref;      /* the checker actor's recovery, the harness's own */

/* ---- the checker actor --------------------------------------------------------------------- */

typedef struct checker {
    tr_journal *j;
} checker;

static int ck_restore(void *state, uint64_t seq, const void *snap, size_t len)
{
    (void)state;
    return got_restore(&g_actor, seq, snap, len);
}

static int ck_apply(void *state, uint64_t seq, const void *ev, size_t len)
{
    (void)state;
    return got_apply(&g_actor, seq, ev, len);
}

static int ck_init(tr_ctx *ctx, void *state, const void *arg)
{
    checker *c = state;
    return tr_journal_open(ctx, g_store, arg, ck_restore, ck_apply, c, &c->j);
}

static int ck_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    return 0;
}

static void ck_terminate(tr_ctx *ctx, void *state, const tr_reason *r)
{
    (void)ctx;
    (void)r;
    tr_journal_close(((checker *)state)->j);
}

static const tr_behaviour checker_b = {.name = "checker",
                                       .state_size = sizeof(checker),
                                       .init = ck_init,
                                       .receive = ck_receive,
                                       .terminate = ck_terminate};

/* ---- the same recovery, done here ---------------------------------------------------------- */

static uint64_t le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static sqlite3_stmt *prep(const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(g_db, sql, -1, &st, NULL) != SQLITE_OK)
        die(sqlite3_errmsg(g_db));
    return st;
}

/* What the store's recovery of journal `pid` must do with the rows there: TR_OK or
 * TR_EBADMSG, and what it hands over (into g_ref). */
static int ref_recover(const char *pid)
{
    int rc = TR_OK;
    uint64_t seq = 0;
    sqlite3_stmt *st = prep("SELECT seq, data FROM snapshots WHERE pid = ?");
    sqlite3_bind_text(st, 1, pid, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        seq = (uint64_t)sqlite3_column_int64(st, 0);
        if (got_restore(&g_ref, seq, sqlite3_column_blob(st, 1),
                        (size_t)sqlite3_column_bytes(st, 1)) != 0)
            rc = TR_EBADMSG;
    }
    sqlite3_finalize(st);
    if (rc != TR_OK)
        return rc;
    st = prep("SELECT seq, data FROM events WHERE pid = ? AND seq > ? ORDER BY seq");
    sqlite3_bind_text(st, 1, pid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
    while (rc == TR_OK && sqlite3_step(st) == SQLITE_ROW) {
        uint64_t s = (uint64_t)sqlite3_column_int64(st, 0);
        if (got_apply(&g_ref, s, sqlite3_column_blob(st, 1),
                      (size_t)sqlite3_column_bytes(st, 1)) != 0)
            rc = TR_EBADMSG;
        else
            seq = s;
    }
    sqlite3_finalize(st);
    if (rc != TR_OK)
        return rc;
    st = prep("SELECT data FROM event_batches WHERE pid = ? AND last_seq > ? ORDER BY last_seq");
    sqlite3_bind_text(st, 1, pid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
    while (rc == TR_OK && sqlite3_step(st) == SQLITE_ROW) {
        /* the row's bytes, copied: what is read past them is read out of bounds */
        size_t len = (size_t)sqlite3_column_bytes(st, 0);
        unsigned char *d = malloc(len ? len : 1);
        if (d == NULL)
            die("out of memory");
        if (len > 0)
            memcpy(d, sqlite3_column_blob(st, 0), len);
        for (size_t off = 0; off < len;) {
            if (len - off < 12 || len - off - 12 < le(d + off + 8, 4)) {
                rc = TR_EBADMSG; /* torn */
                break;
            }
            uint64_t s = le(d + off, 8);
            size_t el = (size_t)le(d + off + 8, 4);
            if (s > seq) {
                if (got_apply(&g_ref, s, d + off + 12, el) != 0) {
                    rc = TR_EBADMSG;
                    break;
                }
                seq = s;
            }
            off += 12 + el;
        }
        free(d);
    }
    sqlite3_finalize(st);
    return rc;
}

static void compare(int rc_actor, int rc_ref)
{
    bool same = (rc_actor == TR_OK) == (rc_ref == TR_OK) && g_actor.restored == g_ref.restored &&
                g_actor.n == g_ref.n && g_actor.overflow == g_ref.overflow;
    if (same && g_ref.restored)
        same = g_actor.snap_seq == g_ref.snap_seq && g_actor.snap_len == g_ref.snap_len &&
               memcmp(g_actor.snap, g_ref.snap, g_ref.snap_len) == 0;
    for (size_t i = 0; same && i < g_ref.n; i++)
        same = g_actor.seq[i] == g_ref.seq[i] && g_actor.len[i] == g_ref.len[i] &&
               (g_ref.len[i] == 0 || memcmp(g_actor.bytes + g_actor.off[i],
                                            g_ref.bytes + g_ref.off[i], g_ref.len[i]) == 0);
    if (!same) {
        fprintf(stderr, "fuzz-journal: recovered %s (%zu events), expected %s (%zu events)\n",
                tr_strerror(rc_actor), g_actor.n, tr_strerror(rc_ref), g_ref.n);
        abort();
    }
    if (rc_actor != TR_OK && rc_actor != TR_EBADMSG) {
        fprintf(stderr, "fuzz-journal: recovery failed with %s\n", tr_strerror(rc_actor));
        abort();
    }
}

/* ---- the rows ------------------------------------------------------------------------------ */

typedef struct in {
    const uint8_t *p;
    size_t n;
} in;

static uint8_t take8(in *s)
{
    if (s->n == 0)
        return 0;
    s->n--;
    return *s->p++;
}

static uint64_t take64(in *s)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)take8(s) << (8 * i);
    return v;
}

/* Bytes of the input: a length byte, then that many (fewer at its end). */
static const uint8_t *take_bytes(in *s, size_t *len)
{
    size_t n = take8(s);
    if (n == 255) /* a longer one: two more bytes of length */
        n = (size_t)take8(s) | (size_t)take8(s) << 8;
    if (n > s->n)
        n = s->n;
    const uint8_t *p = s->p;
    s->p += n;
    s->n -= n;
    *len = n;
    return p;
}

/* Binds parameter i of st as the input says: type (integer, real, text, blob, or a "good" value
 * the caller gives: a sequence number or well-framed events) and value. NULL is refused by the
 * schema (NOT NULL): the row is not written. */
static void bind_field(sqlite3_stmt *st, int i, in *s, uint64_t good, const void *gp, size_t gl)
{
    size_t len;
    const uint8_t *p;
    switch (take8(s) % 6) {
    case 0:
        if (gp != NULL)
            sqlite3_bind_blob(st, i, gp, (int)gl, SQLITE_TRANSIENT);
        else
            sqlite3_bind_int64(st, i, (sqlite3_int64)good);
        break;
    case 1:
        sqlite3_bind_int64(st, i, (sqlite3_int64)take64(s));
        break;
    case 2: {
        uint64_t bits = take64(s);
        double d;
        memcpy(&d, &bits, sizeof d);
        sqlite3_bind_double(st, i, d);
        break;
    }
    case 3:
        p = take_bytes(s, &len);
        sqlite3_bind_text(st, i, (const char *)p, (int)len, SQLITE_TRANSIENT);
        break;
    case 4:
        p = take_bytes(s, &len);
        sqlite3_bind_blob(st, i, p, (int)len, SQLITE_TRANSIENT);
        break;
    default:
        sqlite3_bind_null(st, i);
        break;
    }
}

/* Events framed as the store writes them ([seq u64 LE][len u32 LE][bytes]), seqs counting up
 * from `from`, each event's bytes from the input: a batch that reads, for the actors to judge. */
static size_t frame_events(in *s, uint64_t from, unsigned char *out, size_t cap, uint64_t *last)
{
    size_t n = 0;
    unsigned count = 1 + take8(s) % 8;
    *last = from;
    for (unsigned k = 0; k < count; k++) {
        size_t len;
        const uint8_t *p = take_bytes(s, &len);
        if (n + 12 + len > cap)
            break;
        uint64_t seq = from + k;
        for (int i = 0; i < 8; i++)
            out[n + (size_t)i] = (unsigned char)(seq >> (8 * i));
        for (int i = 0; i < 4; i++)
            out[n + 8 + (size_t)i] = (unsigned char)(len >> (8 * i));
        memcpy(out + n + 12, p, len);
        n += 12 + len;
        *last = seq;
    }
    return n;
}

/* One row, as the input says: which table, whose (this journal's or another's), its fields. */
static void row(in *s, const char *pid)
{
    uint8_t kind = take8(s);
    const char *who = kind & 0x80 ? "other/journal" : pid;
    uint64_t seq = 1 + take8(s);
    static unsigned char framed[1 << 16];
    uint64_t last = seq;
    sqlite3_stmt *st;
    switch (kind % 3) {
    case 0:
        st = prep("INSERT OR REPLACE INTO snapshots(pid, seq, data) VALUES (?, ?, ?)");
        sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC);
        bind_field(st, 2, s, seq, NULL, 0);
        bind_field(st, 3, s, 0, "", 0);
        break;
    case 1:
        st = prep("INSERT OR REPLACE INTO events(pid, seq, data) VALUES (?, ?, ?)");
        sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC);
        bind_field(st, 2, s, seq, NULL, 0);
        bind_field(st, 3, s, 0, "", 0);
        break;
    default: {
        size_t fl = frame_events(s, seq, framed, sizeof framed, &last);
        st = prep("INSERT OR REPLACE INTO event_batches(pid, first_seq, last_seq, data) "
                  "VALUES (?, ?, ?, ?)");
        sqlite3_bind_text(st, 1, who, -1, SQLITE_STATIC);
        bind_field(st, 2, s, seq, NULL, 0);
        bind_field(st, 3, s, last, NULL, 0);
        bind_field(st, 4, s, 0, framed, fl);
        break;
    }
    }
    (void)sqlite3_step(st); /* a constraint (NOT NULL) refuses some: fine */
    sqlite3_finalize(st);
}

static void exec(const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(g_db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "fuzz-journal: %s: %s\n", sql, err);
        abort();
    }
}

/* ---- setup --------------------------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    sqlite3_close(g_db);
    tr_system_stop(g_sys);
    tr_system_join(g_sys);
    tr_store_close(g_store);
    tr_system_free(g_sys);
    social_ctx_free(&g_soc);
    nftw(g_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    tr_log_set(quiet_log, NULL, TR_LOG_ERROR);
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/fuzz-journal-XXXXXX", tmp);
    if (mkdtemp(g_dir) == NULL)
        die("mkdtemp");
    snprintf(g_path, sizeof g_path, "%s/store.db", g_dir);
    tr_system_opts so = {.workers = 1};
    if (tr_system_new(&g_sys, &so) != TR_OK || tr_system_start(g_sys) != TR_OK)
        die("system");
    tr_store_opts o = {.path = g_path, .sync = TR_SYNC_NORMAL};
    char err[256];
    if (tr_store_open(g_sys, &o, &g_store, err, sizeof err) != TR_OK)
        die(err);
    if (sqlite3_open(g_path, &g_db) != SQLITE_OK)
        die("sqlite3_open");
    sqlite3_busy_timeout(g_db, 10000);
    exec("PRAGMA synchronous = OFF");
    g_soc.store = g_store;
    g_soc.sys = g_sys;
    atexit(teardown);
    return 0;
}

static void stop_wait(tr_pid p)
{
    tr_system_stop_actor(g_sys, p);
    for (int i = 0; tr_system_alive(g_sys, p); i++) {
        if (i == 100000)
            die("an actor did not stop");
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in s = {data, size};
    unsigned who = take8(&s) % 4;
    static const char *const pids[] = {"fuzz/checker", "order/SKU-1", "user/u1", "posts/u1"};
    const char *pid = pids[who];
    exec("BEGIN");
    for (unsigned i = 0; i < MAX_ROWS && s.n > 0; i++)
        row(&s, pid);
    exec("COMMIT");

    tr_pid p = TR_PID_NONE;
    int rc;
    got_reset(&g_actor);
    got_reset(&g_ref);
    switch (who) {
    case 0:
        rc = tr_system_spawn(g_sys, &checker_b, pid, &p);
        compare(rc, ref_recover(pid));
        break;
    case 1: {
        order_args a = {.store = g_store, .sku = "SKU-1", .email_queue = "email"};
        rc = tr_system_spawn(g_sys, &order_behaviour, &a, &p);
        break;
    }
    default: {
        social_arg a = {.ctx = &g_soc, .key = "u1"};
        rc = tr_system_spawn(g_sys, who == 2 ? &social_user_behaviour : &social_post_behaviour,
                             &a, &p);
        break;
    }
    }
    if (getenv("FUZZ_JOURNAL_VERBOSE") != NULL) /* what the seeds do */
        fprintf(stderr, "fuzz-journal: %s: %s (checker: %zu events%s)\n", pid, tr_strerror(rc),
                g_actor.n, g_actor.restored ? ", a snapshot" : "");
    if (rc != TR_OK && rc != TR_EBADMSG) {
        fprintf(stderr, "fuzz-journal: spawn: %s\n", tr_strerror(rc));
        abort(); /* a damaged row is refused as such (TR_EBADMSG), nothing else fails */
    }
    if (rc == TR_OK)
        stop_wait(p);
    exec("BEGIN; DELETE FROM snapshots; DELETE FROM events; DELETE FROM event_batches; COMMIT");
    return 0;
}

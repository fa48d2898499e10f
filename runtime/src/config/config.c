/*
 * config.c — supervision trees declared in libconfig files (see troupe/config.h).
 *
 * What it holds: the loader that turns a libconfig group into a tr_sup_spec tree (nested
 * supervisors, children, their restart and shutdown policies and mailbox limits), validated
 * strictly, with every error reported as "file:line: what" so a typo in a deployment's config
 * fails at start with a pointer to the line instead of running a tree other than the one written.
 *
 * Why here and like this: tr_sup_spec is plain C data full of borrowed pointers (ids, args,
 * child arrays, nested specs). The loader copies everything it needs out of the config_t into
 * blocks owned by one tr_sup_tree, then destroys the config_t, so the caller gets a single
 * object to keep while it starts supervisors and a single call to free it. Behaviours are C
 * code: the file names them and they are looked up among the tr_behaviour array the caller
 * passes in (matching tr_behaviour.name).
 *
 * The format (the group's name is the `key` argument, e.g. "supervisor"):
 *
 *   supervisor = {
 *     strategy = "one_for_one";   # one_for_one | one_for_all | rest_for_one | simple_one_for_one
 *                                 #   (default one_for_one)
 *     intensity = 5;              # R: restarts allowed within period_ms, 0..1000000 (default 3)
 *     period_ms = 5000;           # P, >= 1 (default 5000)
 *     backoff = { min_ms = 10; max_ms = 1000; };  # optional; default 0/0 (restart at once);
 *                                 #   max_ms >= min_ms, and 0 when min_ms is 0
 *     children = (                # optional for all but simple_one_for_one (exactly one: the
 *       {                         #   template of the children started at run time)
 *         id = "orders";          # required, non-empty, unique among the supervisor's children
 *         behaviour = "order";    # a tr_behaviour name ...
 *         # supervisor = { ... }; # ... or a nested supervisor (exactly one of the two)
 *         restart = "permanent";  # permanent | transient | temporary (default permanent)
 *         shutdown_ms = 5000;     # or shutdown = "brutal" | "infinity" (default 5000 ms)
 *         arg = "sku-1";          # optional string given to init (copied, arg_len = strlen + 1)
 *         mailbox = {             # optional, every key optional (default unbounded, no limit)
 *           capacity = 10000;     # 0..2^30, 0 = unbounded
 *           overflow = "reject";  # drop_newest | drop_oldest | reject (default drop_newest)
 *           limit = "token";      # none | token | leaky (default none)
 *           rate = 50;            # messages/s, required (>= 1) when limit is token or leaky
 *           burst = 100;          # token bucket only: saved tokens at most
 *         };
 *       }
 *     );
 *   };
 *
 * Strictness: unknown keys in a supervisor, backoff, child or mailbox group are errors (typos are
 * caught), as are values of the wrong type, unknown names, negative or out-of-range integers,
 * rate/burst without a limit, burst or overflow with a leaky bucket (it always drops the newest),
 * arg or mailbox on a child that is a supervisor, and supervisors nested more than 16 deep.
 *
 * libconfig 1.5 (Debian 12) truncates plain integers above 2147483647 without a word: larger
 * values (e.g. rate = 4294967295L) need libconfig's L suffix.
 *
 * Errors are TR_EINVAL (with a message; a file that cannot be read is TR_EINVAL too) or TR_ENOMEM.
 * Nothing aborts and nothing is kept on failure.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

#include "troupe/config.h"

#define MAX_DEPTH 16                 /* supervisors nested deeper than this are refused */
#define MAX_INTENSITY 1000000LL      /* as documented in troupe.h */
#define MAX_CAPACITY (1LL << 30)     /* the runtime refuses bigger mailboxes at spawn */
#define DEFAULT_INTENSITY 3u
#define DEFAULT_PERIOD_MS 5000u
#define DEFAULT_SHUTDOWN_MS 5000u

/* One allocation owned by a tree; all of them are freed together. */
typedef struct block {
    struct block *next;
    alignas(max_align_t) unsigned char data[];
} block;

struct tr_sup_tree {
    block *blocks;
    const tr_sup_spec *root;
};

/* The state of one load: where messages go and what names resolve to. */
typedef struct loader {
    tr_sup_tree *tree;
    const char *file;                  /* name used in messages when a setting has none */
    const tr_behaviour *const *behaviours;
    size_t nbehaviours;
    char *err;
    size_t errlen;
} loader;

/* A name a string setting may hold, and the enum value it stands for. */
typedef struct name_value {
    const char *name;
    int value;
} name_value;

static const name_value strategies[] = {
    {"one_for_one", TR_ONE_FOR_ONE},
    {"one_for_all", TR_ONE_FOR_ALL},
    {"rest_for_one", TR_REST_FOR_ONE},
    {"simple_one_for_one", TR_SIMPLE_ONE_FOR_ONE},
    {NULL, 0},
};
static const name_value restarts[] = {
    {"permanent", TR_PERMANENT},
    {"transient", TR_TRANSIENT},
    {"temporary", TR_TEMPORARY},
    {NULL, 0},
};
static const name_value overflows[] = {
    {"drop_newest", TR_OVERFLOW_DROP_NEWEST},
    {"drop_oldest", TR_OVERFLOW_DROP_OLDEST},
    {"reject", TR_OVERFLOW_REJECT},
    {NULL, 0},
};
static const name_value limits[] = {
    {"none", TR_LIMIT_NONE},
    {"token", TR_LIMIT_TOKEN},
    {"leaky", TR_LIMIT_LEAKY},
    {NULL, 0},
};
static const name_value shutdowns[] = {
    {"brutal", (int)TR_SHUTDOWN_BRUTAL},
    {"infinity", -1}, /* TR_SHUTDOWN_INFINITY does not fit an int: mapped by the caller */
    {NULL, 0},
};

static const char *const sup_keys[] = {"strategy", "intensity", "period_ms", "backoff",
                                       "children", NULL};
static const char *const backoff_keys[] = {"min_ms", "max_ms", NULL};
static const char *const child_keys[] = {"id", "behaviour", "supervisor", "restart", "shutdown",
                                         "shutdown_ms", "arg", "mailbox", NULL};
static const char *const mailbox_keys[] = {"capacity", "overflow", "limit", "rate", "burst", NULL};

/* ---- errors ------------------------------------------------------------------------------- */

static void verr(loader *L, const char *file, unsigned line, const char *fmt, va_list ap)
{
    if (L->err == NULL || L->errlen == 0)
        return;
    int n = line > 0 ? snprintf(L->err, L->errlen, "%s:%u: ", file, line)
                     : snprintf(L->err, L->errlen, "%s: ", file);
    if (n < 0 || (size_t)n >= L->errlen)
        return;
    vsnprintf(L->err + n, L->errlen - (size_t)n, fmt, ap);
}

/* Writes "file:line: message" (the setting's file and line; no line when s is NULL) and returns
 * rc. */
__attribute__((format(printf, 4, 5))) static int fail(loader *L, const config_setting_t *s,
                                                      int rc, const char *fmt, ...)
{
    const char *file = L->file;
    unsigned line = 0;
    if (s != NULL) {
        if (config_setting_source_file(s) != NULL)
            file = config_setting_source_file(s);
        line = config_setting_source_line(s);
    }
    va_list ap;
    va_start(ap, fmt);
    verr(L, file, line, fmt, ap);
    va_end(ap);
    return rc;
}

__attribute__((format(printf, 4, 5))) static int fail_at(loader *L, unsigned line, int rc,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(L, L->file, line, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- memory ------------------------------------------------------------------------------- */

/* Zeroed memory owned by the tree (NULL when out of memory). */
static void *tree_alloc(tr_sup_tree *t, size_t size)
{
    if (size > SIZE_MAX - sizeof(block))
        return NULL;
    block *b = calloc(1, sizeof(block) + size);
    if (b == NULL)
        return NULL;
    b->next = t->blocks;
    t->blocks = b;
    return b->data;
}

static char *tree_strdup(tr_sup_tree *t, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = tree_alloc(t, n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* ---- typed reads -------------------------------------------------------------------------- */

/* Every member of group g must be named in `allowed`. */
static int check_keys(loader *L, const config_setting_t *g, const char *const *allowed,
                      const char *what)
{
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);
        bool ok = false;
        for (size_t k = 0; allowed[k] != NULL && !ok; k++)
            ok = name != NULL && strcmp(name, allowed[k]) == 0;
        if (!ok) {
            char list[200];
            size_t off = 0;
            for (size_t k = 0; allowed[k] != NULL && off < sizeof list; k++) {
                int w = snprintf(list + off, sizeof list - off, "%s%s", k > 0 ? ", " : "",
                                 allowed[k]);
                if (w < 0)
                    break;
                off += (size_t)w;
            }
            return fail(L, m, TR_EINVAL, "unknown key \"%s\" in %s (expected one of: %s)",
                        name != NULL ? name : "?", what, list);
        }
    }
    return TR_OK;
}

/* Reads the integer member `name` of g into *out, if present, checking min <= value <= max. */
static int get_int(loader *L, const config_setting_t *g, const char *name, long long min,
                   long long max, long long *out, bool *present)
{
    const config_setting_t *s = config_setting_get_member(g, name);
    if (present != NULL)
        *present = s != NULL;
    if (s == NULL)
        return TR_OK;
    int ty = config_setting_type(s);
    if (ty != CONFIG_TYPE_INT && ty != CONFIG_TYPE_INT64)
        return fail(L, s, TR_EINVAL, "%s must be an integer", name);
    long long v = config_setting_get_int64(s);
    if (v < min || v > max) {
        if (v < 0 && ty == CONFIG_TYPE_INT)
            return fail(L, s, TR_EINVAL,
                        "%s must be between %lld and %lld, not %lld (values above 2147483647 "
                        "need libconfig's L suffix, e.g. 4294967295L)",
                        name, min, max, v);
        return fail(L, s, TR_EINVAL, "%s must be between %lld and %lld, not %lld", name, min, max,
                    v);
    }
    *out = v;
    return TR_OK;
}

/* Reads an unsigned member (0..max) into *out; leaves *out alone when absent. */
static int get_uint(loader *L, const config_setting_t *g, const char *name, long long min,
                    long long max, unsigned *out)
{
    long long v = 0;
    bool present = false;
    int rc = get_int(L, g, name, min, max, &v, &present);
    if (rc == TR_OK && present)
        *out = (unsigned)v;
    return rc;
}

/* The string member `name` of g (NULL when absent; an error when not a string). */
static int get_str(loader *L, const config_setting_t *g, const char *name, const char **out,
                   const config_setting_t **where)
{
    const config_setting_t *s = config_setting_get_member(g, name);
    *out = NULL;
    if (where != NULL)
        *where = s;
    if (s == NULL)
        return TR_OK;
    if (config_setting_type(s) != CONFIG_TYPE_STRING)
        return fail(L, s, TR_EINVAL, "%s must be a string", name);
    *out = config_setting_get_string(s);
    return TR_OK;
}

/* Reads the name member `name` of g as one of `table`; *present says whether it was there. */
static int get_enum(loader *L, const config_setting_t *g, const char *name,
                    const name_value *table, int *out, bool *present)
{
    const char *str;
    const config_setting_t *s;
    *present = false;
    int rc = get_str(L, g, name, &str, &s);
    if (rc != TR_OK || str == NULL)
        return rc;
    for (size_t i = 0; table[i].name != NULL; i++)
        if (strcmp(str, table[i].name) == 0) {
            *out = table[i].value;
            *present = true;
            return TR_OK;
        }
    char list[200];
    size_t off = 0;
    for (size_t i = 0; table[i].name != NULL && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i > 0 ? ", " : "", table[i].name);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return fail(L, s, TR_EINVAL, "unknown %s \"%s\" (expected one of: %s)", name, str, list);
}

/* The group member `name` of g (NULL when absent; an error when not a group). */
static int get_group(loader *L, const config_setting_t *g, const char *name,
                     const config_setting_t **out)
{
    const config_setting_t *s = config_setting_get_member(g, name);
    *out = s;
    if (s != NULL && config_setting_type(s) != CONFIG_TYPE_GROUP)
        return fail(L, s, TR_EINVAL, "%s must be a group { ... }", name);
    return TR_OK;
}

/* ---- the tree ----------------------------------------------------------------------------- */

static int parse_sup(loader *L, const config_setting_t *g, unsigned depth,
                     const tr_sup_spec **out);

static int parse_mailbox(loader *L, const config_setting_t *g, tr_mailbox_opts *mo)
{
    int rc = check_keys(L, g, mailbox_keys, "a mailbox group");
    if (rc != TR_OK)
        return rc;
    int v = 0;
    bool has_overflow = false, has_limit = false, has_rate = false, has_burst = false;
    long long n = 0;
    if ((rc = get_uint(L, g, "capacity", 0, MAX_CAPACITY, &mo->capacity)) != TR_OK)
        return rc;
    if ((rc = get_enum(L, g, "overflow", overflows, &v, &has_overflow)) != TR_OK)
        return rc;
    if (has_overflow)
        mo->overflow = (tr_overflow)v;
    if ((rc = get_enum(L, g, "limit", limits, &v, &has_limit)) != TR_OK)
        return rc;
    if (has_limit)
        mo->limit = (tr_limit_kind)v;
    if ((rc = get_int(L, g, "rate", 0, UINT32_MAX, &n, &has_rate)) != TR_OK)
        return rc;
    mo->rate = (uint32_t)n;
    n = 0;
    if ((rc = get_int(L, g, "burst", 0, UINT32_MAX, &n, &has_burst)) != TR_OK)
        return rc;
    mo->burst = (uint32_t)n;

    if (mo->limit == TR_LIMIT_NONE && (has_rate || has_burst))
        return fail(L, config_setting_get_member(g, has_rate ? "rate" : "burst"), TR_EINVAL,
                    "%s needs limit = \"token\" or \"leaky\"", has_rate ? "rate" : "burst");
    if (mo->limit != TR_LIMIT_NONE && mo->rate == 0)
        return fail(L, has_rate ? config_setting_get_member(g, "rate") : g, TR_EINVAL,
                    "limit \"%s\" needs a rate of at least 1 message per second",
                    mo->limit == TR_LIMIT_TOKEN ? "token" : "leaky");
    if (mo->limit == TR_LIMIT_LEAKY && has_burst)
        return fail(L, config_setting_get_member(g, "burst"), TR_EINVAL,
                    "burst applies to limit = \"token\" only");
    if (mo->limit == TR_LIMIT_LEAKY && has_overflow && mo->overflow != TR_OVERFLOW_DROP_NEWEST)
        return fail(L, config_setting_get_member(g, "overflow"), TR_EINVAL,
                    "a leaky bucket always drops the newest message: overflow must be "
                    "\"drop_newest\" or absent");
    return TR_OK;
}

static int parse_child(loader *L, const config_setting_t *g, unsigned depth, tr_child_spec *c)
{
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return fail(L, g, TR_EINVAL, "a child must be a group { id = ...; ... }");
    int rc = check_keys(L, g, child_keys, "a child");
    if (rc != TR_OK)
        return rc;

    const char *id;
    const config_setting_t *s;
    if ((rc = get_str(L, g, "id", &id, &s)) != TR_OK)
        return rc;
    if (id == NULL)
        return fail(L, g, TR_EINVAL, "child without an id");
    if (id[0] == '\0')
        return fail(L, s, TR_EINVAL, "a child's id must not be empty");
    if ((c->id = tree_strdup(L->tree, id)) == NULL)
        return fail(L, s, TR_ENOMEM, "out of memory");

    const char *bname;
    const config_setting_t *bs, *sup;
    if ((rc = get_str(L, g, "behaviour", &bname, &bs)) != TR_OK)
        return rc;
    if ((rc = get_group(L, g, "supervisor", &sup)) != TR_OK)
        return rc;
    if (bname == NULL && sup == NULL)
        return fail(L, g, TR_EINVAL, "child \"%s\" needs a behaviour or a supervisor", id);
    if (bname != NULL && sup != NULL)
        return fail(L, sup, TR_EINVAL,
                    "child \"%s\" has both a behaviour and a supervisor (one of them)", id);

    int v = 0;
    bool present = false;
    c->restart = TR_PERMANENT;
    if ((rc = get_enum(L, g, "restart", restarts, &v, &present)) != TR_OK)
        return rc;
    if (present)
        c->restart = (tr_restart)v;

    c->shutdown_ms = DEFAULT_SHUTDOWN_MS;
    bool has_ms = false;
    long long ms = 0;
    if ((rc = get_int(L, g, "shutdown_ms", 0, UINT32_MAX, &ms, &has_ms)) != TR_OK)
        return rc;
    if (has_ms)
        c->shutdown_ms = (unsigned)ms;
    if ((rc = get_enum(L, g, "shutdown", shutdowns, &v, &present)) != TR_OK)
        return rc;
    if (present) {
        if (has_ms)
            return fail(L, config_setting_get_member(g, "shutdown"), TR_EINVAL,
                        "child \"%s\" has both shutdown and shutdown_ms (one of them)", id);
        c->shutdown_ms = v < 0 ? TR_SHUTDOWN_INFINITY : TR_SHUTDOWN_BRUTAL;
    }

    const char *arg;
    const config_setting_t *as, *mb;
    if ((rc = get_str(L, g, "arg", &arg, &as)) != TR_OK)
        return rc;
    if ((rc = get_group(L, g, "mailbox", &mb)) != TR_OK)
        return rc;

    if (sup != NULL) {
        if (as != NULL)
            return fail(L, as, TR_EINVAL, "arg applies to behaviour children only (\"%s\" is a "
                        "supervisor)", id);
        if (mb != NULL)
            return fail(L, mb, TR_EINVAL, "mailbox applies to behaviour children only (\"%s\" "
                        "is a supervisor)", id);
        if (depth >= MAX_DEPTH)
            return fail(L, sup, TR_EINVAL, "supervisors nested deeper than %d levels",
                        MAX_DEPTH);
        return parse_sup(L, sup, depth + 1, &c->supervisor);
    }

    for (size_t i = 0; i < L->nbehaviours && c->behaviour == NULL; i++) {
        const tr_behaviour *b = L->behaviours[i];
        if (b != NULL && b->name != NULL && strcmp(b->name, bname) == 0)
            c->behaviour = b;
    }
    if (c->behaviour == NULL)
        return fail(L, bs, TR_EINVAL, "unknown behaviour \"%s\" (child \"%s\")", bname, id);
    if (arg != NULL) {
        if ((c->arg = tree_strdup(L->tree, arg)) == NULL)
            return fail(L, as, TR_ENOMEM, "out of memory");
        c->arg_len = strlen(arg) + 1;
    }
    if (mb != NULL && (rc = parse_mailbox(L, mb, &c->mailbox)) != TR_OK)
        return rc;
    return TR_OK;
}

static int parse_sup(loader *L, const config_setting_t *g, unsigned depth,
                     const tr_sup_spec **out)
{
    int rc = check_keys(L, g, sup_keys, "a supervisor");
    if (rc != TR_OK)
        return rc;
    tr_sup_spec *sp = tree_alloc(L->tree, sizeof *sp);
    if (sp == NULL)
        return fail(L, g, TR_ENOMEM, "out of memory");
    *out = sp;

    int v = 0;
    bool present = false;
    sp->strategy = TR_ONE_FOR_ONE;
    if ((rc = get_enum(L, g, "strategy", strategies, &v, &present)) != TR_OK)
        return rc;
    if (present)
        sp->strategy = (tr_strategy)v;
    sp->intensity = DEFAULT_INTENSITY;
    if ((rc = get_uint(L, g, "intensity", 0, MAX_INTENSITY, &sp->intensity)) != TR_OK)
        return rc;
    sp->period_ms = DEFAULT_PERIOD_MS;
    if ((rc = get_uint(L, g, "period_ms", 1, UINT32_MAX, &sp->period_ms)) != TR_OK)
        return rc;

    const config_setting_t *bo;
    if ((rc = get_group(L, g, "backoff", &bo)) != TR_OK)
        return rc;
    if (bo != NULL) {
        if ((rc = check_keys(L, bo, backoff_keys, "a backoff group")) != TR_OK)
            return rc;
        if ((rc = get_uint(L, bo, "min_ms", 0, UINT32_MAX, &sp->backoff_min_ms)) != TR_OK ||
            (rc = get_uint(L, bo, "max_ms", 0, UINT32_MAX, &sp->backoff_max_ms)) != TR_OK)
            return rc;
        if (sp->backoff_max_ms < sp->backoff_min_ms)
            return fail(L, bo, TR_EINVAL, "backoff max_ms (%u) is below min_ms (%u)",
                        sp->backoff_max_ms, sp->backoff_min_ms);
        if (sp->backoff_min_ms == 0 && sp->backoff_max_ms != 0)
            return fail(L, bo, TR_EINVAL, "backoff max_ms needs a min_ms of at least 1");
    }

    const config_setting_t *ch = config_setting_get_member(g, "children");
    int n = 0;
    if (ch != NULL) {
        int ty = config_setting_type(ch);
        n = config_setting_length(ch);
        if (ty != CONFIG_TYPE_LIST && !(ty == CONFIG_TYPE_ARRAY && n == 0))
            return fail(L, ch, TR_EINVAL, "children must be a list ( { ... }, { ... } )");
    }
    if (sp->strategy == TR_SIMPLE_ONE_FOR_ONE && n != 1)
        return fail(L, ch != NULL ? ch : g, TR_EINVAL,
                    "a simple_one_for_one supervisor needs exactly one child (its template), "
                    "not %d",
                    n);
    if (n == 0)
        return TR_OK;

    tr_child_spec *cs = tree_alloc(L->tree, (size_t)n * sizeof *cs);
    if (cs == NULL)
        return fail(L, ch, TR_ENOMEM, "out of memory");
    sp->children = cs;
    sp->nchildren = (size_t)n;
    for (int i = 0; i < n; i++) {
        const config_setting_t *cg = config_setting_get_elem(ch, (unsigned)i);
        if ((rc = parse_child(L, cg, depth, &cs[i])) != TR_OK)
            return rc;
        for (int j = 0; j < i; j++)
            if (cs[j].id != NULL && cs[i].id != NULL && strcmp(cs[j].id, cs[i].id) == 0)
                return fail(L, config_setting_get_member(cg, "id"), TR_EINVAL,
                            "duplicate child id \"%s\" (first at line %u)", cs[i].id,
                            config_setting_source_line(config_setting_get_elem(ch, (unsigned)j)));
    }
    return TR_OK;
}

/* Frees a chain of blocks (the memory of a tree or of a config). */
static void blocks_free(block *b)
{
    while (b != NULL) {
        block *next = b->next;
        free(b);
        b = next;
    }
}

void tr_sup_tree_free(tr_sup_tree *t)
{
    if (t == NULL)
        return;
    blocks_free(t->blocks);
    free(t);
}

const tr_sup_spec *tr_sup_tree_spec(const tr_sup_tree *t)
{
    return t != NULL ? t->root : NULL;
}

/* Builds the tree from a config read without error. */
static int build(loader *L, const config_t *cfg, const char *key, tr_sup_tree **out)
{
    const config_setting_t *g = config_lookup(cfg, key);
    if (g == NULL)
        return fail(L, NULL, TR_EINVAL, "no setting \"%s\"", key);
    if (config_setting_type(g) != CONFIG_TYPE_GROUP)
        return fail(L, g, TR_EINVAL, "\"%s\" must be a group { ... }", key);
    tr_sup_tree *t = calloc(1, sizeof *t);
    if (t == NULL)
        return fail(L, NULL, TR_ENOMEM, "out of memory");
    L->tree = t;
    int rc = parse_sup(L, g, 1, &t->root);
    if (rc != TR_OK) {
        tr_sup_tree_free(t);
        return rc;
    }
    *out = t;
    return TR_OK;
}

/* Checks the arguments common to load and parse; sets up the loader. */
static int begin(loader *L, const char *file, const char *key, const tr_behaviour *const *behaviours,
                 size_t n, tr_sup_tree **out, char *err, size_t errlen)
{
    *L = (loader){.file = file, .behaviours = behaviours, .nbehaviours = n, .err = err,
                  .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(L, NULL, TR_EINVAL, "no place for the tree (out is NULL)");
    *out = NULL;
    if (key == NULL || key[0] == '\0')
        return fail(L, NULL, TR_EINVAL, "no key given");
    if (behaviours == NULL && n > 0)
        return fail(L, NULL, TR_EINVAL, "behaviours is NULL but n is %zu", n);
    return TR_OK;
}

/* The literal of integer setting s as written on its line (of text[0..n)), parsed: false when the
 * literal is not found (then nothing is claimed) ; *fits false when it does not fit s's value. */
static bool literal_fits(const config_setting_t *s, const char *text, size_t n, bool *fits)
{
    const char *name = config_setting_name(s);
    unsigned line = config_setting_source_line(s);
    if (name == NULL || line == 0)
        return false;
    const char *p = text, *end = text + n;
    for (unsigned l = 1; l < line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl != NULL ? nl + 1 : end;
    }
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL)
        eol = end;
    size_t nl = strlen(name);
    for (const char *q = p; q + nl <= eol; q++) {
        if (memcmp(q, name, nl) != 0 || (q > p && (isalnum((unsigned char)q[-1]) || q[-1] == '_')))
            continue;
        const char *v = q + nl;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        if (v >= eol || (*v != '=' && *v != ':'))
            continue;
        v++;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        char lit[64];
        size_t k = 0;
        while (v < eol && k + 1 < sizeof lit && (isxdigit((unsigned char)*v) || *v == 'x' ||
                                                 *v == 'X' || *v == '-' || *v == '+'))
            lit[k++] = *v++;
        lit[k] = '\0';
        if (k == 0)
            return false;
        errno = 0;
        char *e;
        long long got = strtoll(lit, &e, 0);
        bool bad = errno == ERANGE || *e != '\0';
        if (!bad && config_setting_type(s) == CONFIG_TYPE_INT)
            bad = got < INT_MIN || got > INT_MAX;
        *fits = !bad && got == config_setting_get_int64(s);
        return true;
    }
    return false;
}

/* Every integer setting under g (from file `path`) holds what its literal says. */
static int check_ints(loader *L, const config_setting_t *g, const char *path, const char *text,
                      size_t n)
{
    int len = config_setting_length(g);
    for (int i = 0; i < len; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        int t = config_setting_type(s);
        if (t == CONFIG_TYPE_GROUP || t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY) {
            int rc = check_ints(L, s, path, text, n);
            if (rc != TR_OK)
                return rc;
        } else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
            const char *f = config_setting_source_file(s);
            bool fits = true;
            if ((f == NULL || strcmp(f, path) == 0) && literal_fits(s, text, n, &fits) && !fits)
                return fail(L, s, TR_EINVAL, "%s: the number does not fit (at most %s)",
                            config_setting_name(s),
                            t == CONFIG_TYPE_INT ? "2147483647; larger ones take an L suffix"
                                                 : "9223372036854775807");
        }
    }
    return TR_OK;
}

/* Reads a libconfig file; on error fills L's message and returns TR_EINVAL. */
static int read_file(loader *L, config_t *cfg, const char *path)
{
    errno = 0;
    if (config_read_file(cfg, path) == CONFIG_TRUE) {
        FILE *f = fopen(path, "r");
        char *text = NULL;
        size_t n = 0;
        if (f != NULL) {
            if (fseek(f, 0, SEEK_END) == 0) {
                long sz = ftell(f);
                if (sz > 0 && sz < (64l << 20) && fseek(f, 0, SEEK_SET) == 0 &&
                    (text = malloc((size_t)sz)) != NULL)
                    n = fread(text, 1, (size_t)sz, f);
            }
            fclose(f);
        }
        int rc = text != NULL ? check_ints(L, config_root_setting(cfg), path, text, n) : TR_OK;
        free(text);
        return rc;
    }
    int e = errno;
    if (config_error_type(cfg) == CONFIG_ERR_FILE_IO) {
        char buf[128];
        return fail(L, NULL, TR_EINVAL, "could not read the file (%s)",
                    e != 0 ? strerror_r(e, buf, sizeof buf) : config_error_text(cfg));
    }
    if (config_error_file(cfg) != NULL)
        L->file = config_error_file(cfg);
    return fail_at(L, (unsigned)config_error_line(cfg), TR_EINVAL, "%s", config_error_text(cfg));
}

int tr_config_read(config_t *cfg, const char *path, char *err, size_t errlen)
{
    loader L = {.file = path != NULL ? path : "(null)", .err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (cfg == NULL || path == NULL)
        return fail(&L, NULL, TR_EINVAL, "no config or no file given");
    return read_file(&L, cfg, path);
}

int tr_sup_tree_load(const char *path, const char *key, const tr_behaviour *const *behaviours,
                     size_t n, tr_sup_tree **out, char *err, size_t errlen)
{
    loader L;
    int rc = begin(&L, path != NULL ? path : "(null)", key, behaviours, n, out, err, errlen);
    if (rc != TR_OK)
        return rc;
    if (path == NULL)
        return fail(&L, NULL, TR_EINVAL, "no file given");
    config_t cfg;
    config_init(&cfg);
    rc = read_file(&L, &cfg, path);
    if (rc == TR_OK)
        rc = build(&L, &cfg, key, out);
    config_destroy(&cfg);
    return rc;
}

int tr_sup_tree_parse(const char *text, const char *key, const tr_behaviour *const *behaviours,
                      size_t n, tr_sup_tree **out, char *err, size_t errlen)
{
    loader L;
    int rc = begin(&L, "<string>", key, behaviours, n, out, err, errlen);
    if (rc != TR_OK)
        return rc;
    if (text == NULL)
        return fail(&L, NULL, TR_EINVAL, "no text given");
    config_t cfg;
    config_init(&cfg);
    if (config_read_string(&cfg, text) != CONFIG_TRUE) {
        if (config_error_file(&cfg) != NULL)
            L.file = config_error_file(&cfg);
        rc = fail_at(&L, (unsigned)config_error_line(&cfg), TR_EINVAL, "%s",
                     config_error_text(&cfg));
        config_destroy(&cfg);
        return rc;
    }
    rc = build(&L, &cfg, key, out);
    config_destroy(&cfg);
    return rc;
}

/* ---- clusters ----------------------------------------------------------------------------- */

static const char *const cluster_keys[] = {"secret", "secret_file", "seeds", "heartbeat_ms",
                                           "down_after_ms", "reconnect", "max_frame",
                                           "peer_queue", "overflow", "batch_bytes", "leave_ms",
                                           "monitors", "idle_close_ms", "tls", "nodes", NULL};
static const char *const tls_keys[] = {"cert", "key", "ca", "verify", "server_name", NULL};
static const name_value tls_verifies[] = {{"required", TR_TLS_VERIFY_REQUIRED},
                                          {"optional", TR_TLS_VERIFY_OPTIONAL},
                                          {"none", TR_TLS_VERIFY_NONE},
                                          {NULL, 0}};
static const char *const cluster_node_keys[] = {"name", "listen", "workers", NULL};
static const char *const reconnect_keys[] = {"min_ms", "max_ms", NULL};
static const name_value node_overflows[] = {
    {"reject", TR_NODE_REJECT}, {"drop", TR_NODE_DROP}, {NULL, 0}};

/* A node config and the arena its strings live in. */
typedef struct cluster_config {
    tr_node_config pub; /* first: the pointer handed out */
    tr_sup_tree arena;
} cluster_config;

static int get_size(loader *L, const config_setting_t *g, const char *name, long long min,
                    long long max, size_t *out)
{
    long long v = 0;
    bool present = false;
    int rc = get_int(L, g, name, min, max, &v, &present);
    if (rc == TR_OK && present)
        *out = (size_t)v;
    return rc;
}

static bool tcp_address(const char *a)
{
    return a != NULL && strncmp(a, "tcp://", 6) == 0 && strrchr(a + 6, ':') != NULL &&
           strlen(a) <= 128;
}

/* The cluster secret: `secret`, or the first line of the file `secret_file` (mode 0600 or
 * stricter), exactly one of them. The secret never appears in a message. */
static int cluster_secret(loader *L, const config_setting_t *g, cluster_config *c)
{
    const char *secret, *file;
    const config_setting_t *where, *fwhere;
    int rc = get_str(L, g, "secret", &secret, &where);
    if (rc == TR_OK)
        rc = get_str(L, g, "secret_file", &file, &fwhere);
    if (rc != TR_OK)
        return rc;
    if (secret != NULL && file != NULL)
        return fail(L, fwhere, TR_EINVAL, "give secret or secret_file, not both");
    if (secret == NULL && file == NULL)
        return fail(L, g, TR_EINVAL, "cluster has no secret (secret = \"...\" or "
                    "secret_file = \"FILE\")");
    if (secret != NULL) {
        if (strlen(secret) < 8)
            return fail(L, where, TR_EINVAL, "secret must be at least 8 bytes long");
        if ((c->pub.node.secret = tree_strdup(&c->arena, secret)) == NULL)
            return fail(L, NULL, TR_ENOMEM, "out of memory");
        return TR_OK;
    }
    char buf[1024], err[300];
    if (tr_config_secret(file, buf, sizeof buf, err, sizeof err) != TR_OK)
        return fail(L, fwhere, TR_EINVAL, "secret_file %s", err);
    if (strlen(buf) < 8)
        rc = fail(L, fwhere, TR_EINVAL, "secret_file %s: the secret must be at least 8 bytes long",
                  file);
    else if ((c->pub.node.secret = tree_strdup(&c->arena, buf)) == NULL)
        rc = fail(L, NULL, TR_ENOMEM, "out of memory");
    memset(buf, 0, sizeof buf);
    return rc;
}

/* A TLS file's path with "{node}" replaced by the node's name (arena-owned; NULL stays NULL). */
static int tls_path(loader *L, cluster_config *c, const char *pattern, const char *node,
                    const char **out)
{
    *out = NULL;
    if (pattern == NULL)
        return TR_OK;
    size_t k = 0;
    for (const char *p = strstr(pattern, "{node}"); p != NULL; p = strstr(p + 6, "{node}"))
        k++;
    size_t len = strlen(pattern) + k * strlen(node) + 1;
    char *path = tree_alloc(&c->arena, len);
    if (path == NULL)
        return fail(L, NULL, TR_ENOMEM, "out of memory");
    char *w = path;
    for (const char *p = pattern; *p != '\0';) {
        if (strncmp(p, "{node}", 6) == 0) {
            memcpy(w, node, strlen(node));
            w += strlen(node);
            p += 6;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    *out = path;
    return TR_OK;
}

/* The `tls` group: TLS between nodes (troupe/node.h, tr_node_tls). The files are read by
 * tr_node_start; here only what the file says is checked. */
static int parse_tls(loader *L, const config_setting_t *t, const char *node, cluster_config *c)
{
    const char *cert, *key, *ca, *server_name;
    const config_setting_t *cw, *kw, *aw, *sw;
    int verify = TR_TLS_VERIFY_REQUIRED;
    bool present;
    int rc;
    if ((rc = check_keys(L, t, tls_keys, "tls")) != TR_OK ||
        (rc = get_str(L, t, "cert", &cert, &cw)) != TR_OK ||
        (rc = get_str(L, t, "key", &key, &kw)) != TR_OK ||
        (rc = get_str(L, t, "ca", &ca, &aw)) != TR_OK ||
        (rc = get_str(L, t, "server_name", &server_name, &sw)) != TR_OK ||
        (rc = get_enum(L, t, "verify", tls_verifies, &verify, &present)) != TR_OK)
        return rc;
    if (cert == NULL || cert[0] == '\0')
        return fail(L, cw != NULL ? cw : t, TR_EINVAL, "tls needs cert = \"FILE\" (PEM; "
                    "{node} stands for the node's name)");
    if (key == NULL || key[0] == '\0')
        return fail(L, kw != NULL ? kw : t, TR_EINVAL, "tls needs key = \"FILE\" (PEM; "
                    "{node} stands for the node's name)");
    if ((ca == NULL || ca[0] == '\0') && verify != TR_TLS_VERIFY_NONE)
        return fail(L, aw != NULL ? aw : t, TR_EINVAL,
                    "tls needs ca = \"FILE\" (PEM) unless verify = \"none\"");
    if (server_name != NULL && (server_name[0] == '\0' || strlen(server_name) > 255))
        return fail(L, sw, TR_EINVAL, "server_name must be 1 to 255 bytes");
    tr_node_tls *o = tree_alloc(&c->arena, sizeof *o);
    if (o == NULL)
        return fail(L, NULL, TR_ENOMEM, "out of memory");
    o->verify = (tr_tls_verify)verify;
    if ((rc = tls_path(L, c, cert, node, &o->cert)) != TR_OK ||
        (rc = tls_path(L, c, key, node, &o->key)) != TR_OK ||
        (rc = tls_path(L, c, ca != NULL && ca[0] != '\0' ? ca : NULL, node, &o->ca)) != TR_OK)
        return rc;
    if (server_name != NULL && (o->server_name = tree_strdup(&c->arena, server_name)) == NULL)
        return fail(L, NULL, TR_ENOMEM, "out of memory");
    c->pub.node.tls = o;
    return TR_OK;
}

static int parse_cluster(loader *L, const config_setting_t *g, const char *want,
                         cluster_config *c)
{
    tr_node_opts *o = &c->pub.node;
    int rc = check_keys(L, g, cluster_keys, "cluster");
    if (rc == TR_OK)
        rc = cluster_secret(L, g, c);
    if (rc != TR_OK)
        return rc;
    int ov = TR_NODE_REJECT;
    bool present;
    const config_setting_t *rec;
    if ((rc = get_uint(L, g, "heartbeat_ms", 1, 600000, &o->heartbeat_ms)) != TR_OK ||
        (rc = get_uint(L, g, "down_after_ms", 1, 3600000, &o->down_after_ms)) != TR_OK ||
        (rc = get_uint(L, g, "leave_ms", 1, 60000, &o->leave_ms)) != TR_OK ||
        (rc = get_uint(L, g, "monitors", 0, 16, &o->monitors)) != TR_OK ||
        (rc = get_uint(L, g, "idle_close_ms", 1, 3600000, &o->idle_close_ms)) != TR_OK ||
        (rc = get_size(L, g, "max_frame", 1024, 1LL << 30, &o->max_frame)) != TR_OK ||
        (rc = get_size(L, g, "peer_queue", 1, 1LL << 30, &o->peer_queue)) != TR_OK ||
        (rc = get_size(L, g, "batch_bytes", 512, 1LL << 26, &o->batch_bytes)) != TR_OK ||
        (rc = get_enum(L, g, "overflow", node_overflows, &ov, &present)) != TR_OK ||
        (rc = get_group(L, g, "reconnect", &rec)) != TR_OK)
        return rc;
    o->overflow = (tr_node_overflow)ov;
    const config_setting_t *tls;
    if ((rc = get_group(L, g, "tls", &tls)) != TR_OK)
        return rc;
    if (rec != NULL &&
        ((rc = check_keys(L, rec, reconnect_keys, "reconnect")) != TR_OK ||
         (rc = get_uint(L, rec, "min_ms", 1, 600000, &o->reconnect_min_ms)) != TR_OK ||
         (rc = get_uint(L, rec, "max_ms", 1, 3600000, &o->reconnect_max_ms)) != TR_OK))
        return rc;
    const config_setting_t *nodes = config_setting_get_member(g, "nodes");
    if (nodes == NULL || config_setting_type(nodes) != CONFIG_TYPE_LIST ||
        config_setting_length(nodes) == 0)
        return fail(L, nodes != NULL ? nodes : g, TR_EINVAL,
                    "nodes must be a non-empty list ( { name = ...; listen = ...; }, ... )");
    unsigned n = (unsigned)config_setting_length(nodes);
    const char **listens = tree_alloc(&c->arena, n * sizeof *listens);
    if (listens == NULL)
        return fail(L, NULL, TR_ENOMEM, "out of memory");
    bool found = false;
    for (unsigned i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(nodes, i);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP)
            return fail(L, e, TR_EINVAL, "each node must be a group { name = ...; listen = ...; }");
        const char *name, *listen;
        const config_setting_t *nw, *lw;
        unsigned workers = 0;
        if ((rc = check_keys(L, e, cluster_node_keys, "a node")) != TR_OK ||
            (rc = get_str(L, e, "name", &name, &nw)) != TR_OK ||
            (rc = get_str(L, e, "listen", &listen, &lw)) != TR_OK ||
            (rc = get_uint(L, e, "workers", 1, 1024, &workers)) != TR_OK)
            return rc;
        if (name == NULL || name[0] == '\0' || strlen(name) > 64)
            return fail(L, nw != NULL ? nw : e, TR_EINVAL, "a node needs a name of 1 to 64 bytes");
        if (!tcp_address(listen))
            return fail(L, lw != NULL ? lw : e, TR_EINVAL,
                        "node %s needs listen = \"tcp://HOST:PORT\"", name);
        for (unsigned k = 0; k < i; k++) {
            const config_setting_t *prev = config_setting_get_elem(nodes, k);
            const char *pn = NULL;
            config_setting_lookup_string(prev, "name", &pn);
            if (pn != NULL && strcmp(pn, name) == 0)
                return fail(L, nw, TR_EINVAL, "two nodes are called %s", name);
        }
        listens[i] = tree_strdup(&c->arena, listen);
        if (listens[i] == NULL)
            return fail(L, NULL, TR_ENOMEM, "out of memory");
        if (want != NULL && strcmp(name, want) == 0) {
            found = true;
            o->name = tree_strdup(&c->arena, name);
            o->listen = listens[i];
            c->pub.workers = workers;
            if (o->name == NULL)
                return fail(L, NULL, TR_ENOMEM, "out of memory");
        }
    }
    if (!found)
        return fail(L, nodes, TR_EINVAL, "no node called %s in the cluster", want);
    if (tls != NULL && (rc = parse_tls(L, tls, o->name, c)) != TR_OK)
        return rc;
    const config_setting_t *seeds = config_setting_get_member(g, "seeds");
    if (seeds == NULL) {
        o->seeds = listens; /* every node: each dials the others it finds up */
        o->nseeds = n;
        return TR_OK;
    }
    if (config_setting_type(seeds) != CONFIG_TYPE_ARRAY &&
        config_setting_type(seeds) != CONFIG_TYPE_LIST)
        return fail(L, seeds, TR_EINVAL, "seeds must be an array of \"tcp://HOST:PORT\"");
    unsigned ns = (unsigned)config_setting_length(seeds);
    const char **list = tree_alloc(&c->arena, (ns + 1) * sizeof *list);
    if (list == NULL)
        return fail(L, NULL, TR_ENOMEM, "out of memory");
    for (unsigned i = 0; i < ns; i++) {
        const config_setting_t *e = config_setting_get_elem(seeds, i);
        const char *a = config_setting_get_string(e);
        if (!tcp_address(a))
            return fail(L, e, TR_EINVAL, "a seed must be \"tcp://HOST:PORT\"");
        if ((list[i] = tree_strdup(&c->arena, a)) == NULL)
            return fail(L, NULL, TR_ENOMEM, "out of memory");
    }
    o->seeds = list;
    o->nseeds = ns;
    return TR_OK;
}

void tr_node_config_free(tr_node_config *pub)
{
    if (pub == NULL)
        return;
    cluster_config *c = (cluster_config *)pub;
    blocks_free(c->arena.blocks);
    free(c);
}

static int node_config(loader *L, const config_t *cfg, const char *node, tr_node_config **out)
{
    cluster_config *c = NULL;
    int rc;
    const config_setting_t *g = config_lookup(cfg, "cluster");
    if (g == NULL || config_setting_type(g) != CONFIG_TYPE_GROUP)
        rc = fail(L, g, TR_EINVAL, "no group \"cluster\" { ... }");
    else if ((c = calloc(1, sizeof *c)) == NULL)
        rc = fail(L, NULL, TR_ENOMEM, "out of memory");
    else
        rc = parse_cluster(L, g, node, c);
    if (rc != TR_OK) {
        tr_node_config_free(c != NULL ? &c->pub : NULL);
        return rc;
    }
    *out = &c->pub;
    return TR_OK;
}

int tr_node_config_from(const config_t *cfg, const char *file, const char *node,
                        tr_node_config **out, char *err, size_t errlen)
{
    loader L = {.file = file != NULL ? file : "(config)", .err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(&L, NULL, TR_EINVAL, "no place for the config (out is NULL)");
    *out = NULL;
    if (cfg == NULL || node == NULL)
        return fail(&L, NULL, TR_EINVAL, "no config or no node name given");
    return node_config(&L, cfg, node, out);
}

int tr_node_config_load(const char *path, const char *node, tr_node_config **out, char *err,
                        size_t errlen)
{
    loader L = {.file = path != NULL ? path : "(null)", .err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(&L, NULL, TR_EINVAL, "no place for the config (out is NULL)");
    *out = NULL;
    if (path == NULL || node == NULL)
        return fail(&L, NULL, TR_EINVAL, "no file or no node name given");
    config_t cfg;
    config_init(&cfg);
    int rc = read_file(&L, &cfg, path);
    if (rc == TR_OK)
        rc = node_config(&L, &cfg, node, out);
    config_destroy(&cfg);
    return rc;
}

/* ---- stores ------------------------------------------------------------------------------- */

static const char *const store_keys[] = {"backend", "path", "sync", "redis", "snapshot_every",
                                         "outbox_window", "redeliver_ms", "max_batch", "commits",
                                         "commit_delay_us", NULL};
static const char *const redis_keys[] = {"host", "port", NULL};
static const name_value backends[] = {
    {"sqlite", TR_STORE_SQLITE}, {"redis", TR_STORE_REDIS}, {NULL, 0}};
static const name_value syncs[] = {{"full", TR_SYNC_FULL}, {"normal", TR_SYNC_NORMAL}, {NULL, 0}};
static const name_value commit_modes[] = {
    {"inline", TR_COMMITS_INLINE}, {"writer", TR_COMMITS_WRITER}, {NULL, 0}};

typedef struct store_config {
    tr_store_config pub; /* first: the pointer handed out */
    tr_sup_tree arena;
} store_config;

static int parse_store(loader *L, const config_setting_t *g, store_config *c)
{
    tr_store_opts *o = &c->pub.store;
    int rc, be = TR_STORE_SQLITE, sy = TR_SYNC_FULL, cm = TR_COMMITS_INLINE;
    bool present;
    const char *path, *host;
    const config_setting_t *pw, *hw, *redis;
    if ((rc = check_keys(L, g, store_keys, "store")) != TR_OK ||
        (rc = get_enum(L, g, "backend", backends, &be, &present)) != TR_OK ||
        (rc = get_enum(L, g, "sync", syncs, &sy, &present)) != TR_OK ||
        (rc = get_enum(L, g, "commits", commit_modes, &cm, &present)) != TR_OK ||
        (rc = get_str(L, g, "path", &path, &pw)) != TR_OK ||
        (rc = get_group(L, g, "redis", &redis)) != TR_OK ||
        (rc = get_uint(L, g, "snapshot_every", 1, 1000000000, &o->snapshot_every)) != TR_OK ||
        (rc = get_uint(L, g, "outbox_window", 1, 1000000, &o->outbox_window)) != TR_OK ||
        (rc = get_uint(L, g, "redeliver_ms", 1, 86400000, &o->redeliver_ms)) != TR_OK ||
        (rc = get_uint(L, g, "max_batch", 1, 1000000, &o->max_batch)) != TR_OK ||
        (rc = get_uint(L, g, "commit_delay_us", 0, 1000000, &o->commit_delay_us)) != TR_OK)
        return rc;
    o->backend = (tr_store_backend)be;
    o->sync = (tr_store_sync)sy;
    o->commits = (tr_store_commits)cm;
    if (be == TR_STORE_SQLITE) {
        if (path == NULL || path[0] == '\0')
            return fail(L, pw != NULL ? pw : g, TR_EINVAL, "the sqlite backend needs a path");
        if ((o->path = tree_strdup(&c->arena, path)) == NULL)
            return fail(L, NULL, TR_ENOMEM, "out of memory");
        return TR_OK;
    }
    if (redis == NULL)
        return fail(L, g, TR_EINVAL, "the redis backend needs redis = { host = ...; port = ...; }");
    if ((rc = check_keys(L, redis, redis_keys, "redis")) != TR_OK ||
        (rc = get_str(L, redis, "host", &host, &hw)) != TR_OK ||
        (rc = get_uint(L, redis, "port", 1, 65535, &o->redis_port)) != TR_OK)
        return rc;
    if (host == NULL || host[0] == '\0')
        return fail(L, hw != NULL ? hw : redis, TR_EINVAL, "redis needs a host");
    if ((o->redis_host = tree_strdup(&c->arena, host)) == NULL)
        return fail(L, NULL, TR_ENOMEM, "out of memory");
    return TR_OK;
}

void tr_store_config_free(tr_store_config *pub)
{
    if (pub == NULL)
        return;
    store_config *c = (store_config *)pub;
    blocks_free(c->arena.blocks);
    free(c);
}

static int store_config_of(loader *L, const config_t *cfg, const char *key, tr_store_config **out)
{
    store_config *c = NULL;
    int rc;
    const config_setting_t *g = config_lookup(cfg, key);
    if (g == NULL || config_setting_type(g) != CONFIG_TYPE_GROUP)
        rc = fail(L, g, TR_EINVAL, "no group \"%s\" { ... }", key);
    else if ((c = calloc(1, sizeof *c)) == NULL)
        rc = fail(L, NULL, TR_ENOMEM, "out of memory");
    else
        rc = parse_store(L, g, c);
    if (rc != TR_OK) {
        tr_store_config_free(c != NULL ? &c->pub : NULL);
        return rc;
    }
    *out = &c->pub;
    return TR_OK;
}

int tr_store_config_from(const config_t *cfg, const char *file, const char *key,
                         tr_store_config **out, char *err, size_t errlen)
{
    loader L = {.file = file != NULL ? file : "(config)", .err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(&L, NULL, TR_EINVAL, "no place for the config (out is NULL)");
    *out = NULL;
    if (cfg == NULL || key == NULL || key[0] == '\0')
        return fail(&L, NULL, TR_EINVAL, "no config or no key given");
    return store_config_of(&L, cfg, key, out);
}

int tr_store_config_load(const char *path, const char *key, tr_store_config **out, char *err,
                         size_t errlen)
{
    loader L = {.file = path != NULL ? path : "(null)", .err = err, .errlen = errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out == NULL)
        return fail(&L, NULL, TR_EINVAL, "no place for the config (out is NULL)");
    *out = NULL;
    if (path == NULL || key == NULL || key[0] == '\0')
        return fail(&L, NULL, TR_EINVAL, "no file or no key given");
    config_t cfg;
    config_init(&cfg);
    int rc = read_file(&L, &cfg, path);
    if (rc == TR_OK)
        rc = store_config_of(&L, &cfg, key, out);
    config_destroy(&cfg);
    return rc;
}

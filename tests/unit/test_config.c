/*
 * test_config.c — supervision trees from libconfig text and files (tr_sup_tree_*).
 *
 * Only specs are built and checked here: nothing is started. A full tree must come out field for
 * field as written (defaults filled in, strings copied); every invalid input must give TR_EINVAL,
 * no tree, and an error "file:line: ..." naming the offending line; the example files in config/
 * must load.
 */
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"
#include <libconfig.h>
#include "troupe/config.h"

#ifndef TROUPE_CONFIG_DIR
#error "TROUPE_CONFIG_DIR must name the config/ directory"
#endif

static int nop_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    (void)state;
    (void)m;
    return 0;
}

static const tr_behaviour b_email = {.name = "email", .receive = nop_receive};
static const tr_behaviour b_order = {.name = "order", .receive = nop_receive};
static const tr_behaviour b_worker = {.name = "worker", .receive = nop_receive};
static const tr_behaviour *const behaviours[] = {&b_email, &b_order, &b_worker};
#define NB (sizeof behaviours / sizeof behaviours[0])

/* Parses text under "supervisor"; asserts rc and, on success, returns the tree. */
static tr_sup_tree *parse_ok(const char *text)
{
    tr_sup_tree *t = NULL;
    char err[256] = "unset";
    int rc = tr_sup_tree_parse(text, "supervisor", behaviours, NB, &t, err, sizeof err);
    if (rc != TR_OK)
        fprintf(stderr, "unexpected error %d: %s\n", rc, err);
    assert_int_equal(rc, TR_OK);
    assert_non_null(t);
    assert_string_equal(err, "");
    assert_non_null(tr_sup_tree_spec(t));
    return t;
}

/* Parses text that must fail with TR_EINVAL and an error at "<string>:line:" containing `what`. */
static void parse_bad(const char *text, unsigned line, const char *what)
{
    tr_sup_tree *t = (tr_sup_tree *)&t; /* must be reset to NULL */
    char err[512] = "";
    int rc = tr_sup_tree_parse(text, "supervisor", behaviours, NB, &t, err, sizeof err);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "<string>:%u: ", line);
    if (rc != TR_EINVAL || strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, what) == NULL)
        fprintf(stderr, "for:\n%s\nexpected TR_EINVAL, \"%s...%s...\"; got %d, \"%s\"\n", text,
                prefix, what, rc, err);
    assert_int_equal(rc, TR_EINVAL);
    assert_null(t);
    assert_true(strncmp(err, prefix, strlen(prefix)) == 0);
    assert_non_null(strstr(err, what));
}

static const char full_text[] =
    "# a full tree\n"                                                         /* 1 */
    "supervisor = {\n"                                                        /* 2 */
    "  strategy = \"rest_for_one\";\n"                                        /* 3 */
    "  intensity = 7;\n"                                                      /* 4 */
    "  period_ms = 3000;\n"                                                   /* 5 */
    "  backoff = { min_ms = 10; max_ms = 1000; };\n"                          /* 6 */
    "  children = (\n"                                                        /* 7 */
    "    { id = \"email\"; behaviour = \"email\"; restart = \"permanent\";\n" /* 8 */
    "      shutdown_ms = 250; arg = \"smtp-1\";\n"                            /* 9 */
    "      mailbox = { capacity = 10000; overflow = \"reject\"; limit = \"token\";\n"
    "                  rate = 50; burst = 100; }; },\n"
    "    { id = \"w1\"; behaviour = \"worker\"; restart = \"transient\"; shutdown = \"brutal\";\n"
    "      mailbox = { capacity = 64; overflow = \"drop_oldest\"; }; },\n"
    "    { id = \"w2\"; behaviour = \"worker\"; restart = \"temporary\"; shutdown = \"infinity\";\n"
    "      mailbox = { limit = \"leaky\"; rate = 4294967295L; }; },\n"
    "    { id = \"orders\"; restart = \"transient\"; shutdown_ms = 0;\n"
    "      supervisor = { strategy = \"simple_one_for_one\"; intensity = 0; period_ms = 1;\n"
    "        children = ( { id = \"order\"; behaviour = \"order\"; arg = \"\"; } ); }; },\n"
    "    { id = \"all\"; supervisor = { strategy = \"one_for_all\"; children = (); }; }\n"
    "  );\n"
    "};\n";

static void check_full(const tr_sup_spec *s)
{
    assert_int_equal(s->strategy, TR_REST_FOR_ONE);
    assert_int_equal(s->intensity, 7);
    assert_int_equal(s->period_ms, 3000);
    assert_int_equal(s->backoff_min_ms, 10);
    assert_int_equal(s->backoff_max_ms, 1000);
    assert_int_equal(s->nchildren, 5);

    const tr_child_spec *c = &s->children[0];
    assert_string_equal(c->id, "email");
    assert_ptr_equal(c->behaviour, &b_email);
    assert_null(c->supervisor);
    assert_int_equal(c->restart, TR_PERMANENT);
    assert_int_equal(c->shutdown_ms, 250);
    assert_string_equal((const char *)c->arg, "smtp-1");
    assert_int_equal(c->arg_len, 7);
    assert_int_equal(c->mailbox.capacity, 10000);
    assert_int_equal(c->mailbox.overflow, TR_OVERFLOW_REJECT);
    assert_int_equal(c->mailbox.limit, TR_LIMIT_TOKEN);
    assert_int_equal(c->mailbox.rate, 50);
    assert_int_equal(c->mailbox.burst, 100);

    c = &s->children[1];
    assert_string_equal(c->id, "w1");
    assert_ptr_equal(c->behaviour, &b_worker);
    assert_int_equal(c->restart, TR_TRANSIENT);
    assert_int_equal(c->shutdown_ms, TR_SHUTDOWN_BRUTAL);
    assert_null(c->arg);
    assert_int_equal(c->arg_len, 0);
    assert_int_equal(c->mailbox.capacity, 64);
    assert_int_equal(c->mailbox.overflow, TR_OVERFLOW_DROP_OLDEST);
    assert_int_equal(c->mailbox.limit, TR_LIMIT_NONE);
    assert_int_equal(c->mailbox.rate, 0);
    assert_int_equal(c->mailbox.burst, 0);

    c = &s->children[2];
    assert_string_equal(c->id, "w2");
    assert_int_equal(c->restart, TR_TEMPORARY);
    assert_int_equal(c->shutdown_ms, TR_SHUTDOWN_INFINITY);
    assert_int_equal(c->mailbox.limit, TR_LIMIT_LEAKY);
    assert_int_equal(c->mailbox.rate, UINT32_MAX);
    assert_int_equal(c->mailbox.capacity, 0);
    assert_int_equal(c->mailbox.overflow, TR_OVERFLOW_DROP_NEWEST);

    c = &s->children[3];
    assert_string_equal(c->id, "orders");
    assert_null(c->behaviour);
    assert_int_equal(c->restart, TR_TRANSIENT);
    assert_int_equal(c->shutdown_ms, 0);
    assert_null(c->arg);
    const tr_sup_spec *sub = c->supervisor;
    assert_non_null(sub);
    assert_int_equal(sub->strategy, TR_SIMPLE_ONE_FOR_ONE);
    assert_int_equal(sub->intensity, 0);
    assert_int_equal(sub->period_ms, 1);
    assert_int_equal(sub->backoff_min_ms, 0);
    assert_int_equal(sub->backoff_max_ms, 0);
    assert_int_equal(sub->nchildren, 1);
    assert_string_equal(sub->children[0].id, "order");
    assert_ptr_equal(sub->children[0].behaviour, &b_order);
    assert_string_equal((const char *)sub->children[0].arg, "");
    assert_int_equal(sub->children[0].arg_len, 1);
    assert_int_equal(sub->children[0].restart, TR_PERMANENT);
    assert_int_equal(sub->children[0].shutdown_ms, 5000);

    c = &s->children[4];
    assert_string_equal(c->id, "all");
    assert_int_equal(c->shutdown_ms, 5000);
    assert_int_equal(c->restart, TR_PERMANENT);
    assert_non_null(c->supervisor);
    assert_int_equal(c->supervisor->strategy, TR_ONE_FOR_ALL);
    assert_int_equal(c->supervisor->nchildren, 0);
    assert_null(c->supervisor->children);
}

/* Every field of a full tree, nested supervisors included; strings are the tree's own copies. */
static void test_full_tree(void **state)
{
    (void)state;
    char *text = strdup(full_text);
    assert_non_null(text);
    tr_sup_tree *t = parse_ok(text);
    memset(text, 'x', strlen(text)); /* the tree must not point into the text */
    free(text);
    const tr_sup_spec *s = tr_sup_tree_spec(t);
    check_full(s);
    /* ids and args are copies, not pointers into anything else */
    assert_ptr_not_equal(s->children[0].id, s->children[0].arg);
    tr_sup_tree_free(t);
}

/* What is left out gets the documented defaults. */
static void test_defaults(void **state)
{
    (void)state;
    tr_sup_tree *t = parse_ok("supervisor = {\n"
                              "  children = ( { id = \"a\"; behaviour = \"worker\"; } );\n"
                              "};\n");
    const tr_sup_spec *s = tr_sup_tree_spec(t);
    assert_int_equal(s->strategy, TR_ONE_FOR_ONE);
    assert_int_equal(s->intensity, 3);
    assert_int_equal(s->period_ms, 5000);
    assert_int_equal(s->backoff_min_ms, 0);
    assert_int_equal(s->backoff_max_ms, 0);
    assert_int_equal(s->nchildren, 1);
    const tr_child_spec *c = &s->children[0];
    assert_string_equal(c->id, "a");
    assert_ptr_equal(c->behaviour, &b_worker);
    assert_null(c->arg);
    assert_int_equal(c->arg_len, 0);
    assert_int_equal(c->restart, TR_PERMANENT);
    assert_int_equal(c->shutdown_ms, 5000);
    assert_null(c->supervisor);
    tr_mailbox_opts zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&c->mailbox, &zero, sizeof zero);
    tr_sup_tree_free(t);

    /* an empty supervisor, an empty mailbox group, an empty array of children */
    t = parse_ok("supervisor = { children = [ ]; };");
    assert_int_equal(tr_sup_tree_spec(t)->nchildren, 0);
    tr_sup_tree_free(t);
    t = parse_ok("supervisor = { };");
    assert_int_equal(tr_sup_tree_spec(t)->nchildren, 0);
    assert_int_equal(tr_sup_tree_spec(t)->intensity, 3);
    tr_sup_tree_free(t);
    t = parse_ok("supervisor = { children = ( { id = \"a\"; behaviour = \"email\"; mailbox = { }; "
                 "} ); };");
    assert_memory_equal(&tr_sup_tree_spec(t)->children[0].mailbox, &zero, sizeof zero);
    tr_sup_tree_free(t);
}

/* The key may be a path; integers at the edges of their ranges are accepted. */
static void test_key_path_and_limits(void **state)
{
    (void)state;
    tr_sup_tree *t = NULL;
    char err[256];
    const char *text = "node = { top = { intensity = 1000000; period_ms = 4294967295L;\n"
                       "  backoff = { min_ms = 4294967295L; max_ms = 4294967295L; };\n"
                       "  children = ( { id = \"a\"; behaviour = \"email\";\n"
                       "    shutdown_ms = 4294967294L;\n"
                       "    mailbox = { capacity = 1073741824; limit = \"token\";\n"
                       "                rate = 4294967295L; burst = 4294967295L; }; } ); }; };";
    assert_int_equal(tr_sup_tree_parse(text, "node.top", behaviours, NB, &t, err, sizeof err),
                     TR_OK);
    const tr_sup_spec *s = tr_sup_tree_spec(t);
    assert_int_equal(s->intensity, 1000000);
    assert_int_equal(s->period_ms, UINT32_MAX);
    assert_int_equal(s->backoff_min_ms, UINT32_MAX);
    assert_int_equal(s->backoff_max_ms, UINT32_MAX);
    assert_int_equal(s->children[0].shutdown_ms, 4294967294u);
    assert_int_equal(s->children[0].mailbox.capacity, 1u << 30);
    assert_int_equal(s->children[0].mailbox.rate, UINT32_MAX);
    assert_int_equal(s->children[0].mailbox.burst, UINT32_MAX);
    tr_sup_tree_free(t);
}

#define CHILD_A "{ id = \"a\"; behaviour = \"email\"; }"

/* Each invalid input: TR_EINVAL, no tree, the line of the culprit in the message. */
static void test_validation_errors(void **state)
{
    (void)state;
    /* unknown names */
    parse_bad("supervisor = {\n strategy = \"one_for_some\";\n};", 2, "unknown strategy");
    parse_bad("supervisor = { children = (\n"
              "  { id = \"a\"; behaviour = \"email\";\n"
              "    restart = \"sometimes\"; } ); };",
              3, "unknown restart \"sometimes\"");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = {\n   overflow = \"drop_all\"; }; } ); };",
              3, "unknown overflow");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { limit = \"bucket\"; }; } ); };",
              2, "unknown limit");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  shutdown = \"gentle\"; } ); };",
              2, "unknown shutdown");
    parse_bad("supervisor = { children = (\n"
              "  { id = \"a\";\n"
              "    behaviour = \"emial\"; } ); };",
              3, "unknown behaviour \"emial\"");
    /* ids */
    parse_bad("supervisor = { children = (\n" CHILD_A ",\n"
              "  { behaviour = \"email\"; } ); };",
              3, "without an id");
    parse_bad("supervisor = { children = (\n { id = \"\"; behaviour = \"email\"; } ); };", 2,
              "must not be empty");
    parse_bad("supervisor = { children = (\n"
              "  { id = \"a\"; behaviour = \"email\"; },\n"
              "  { id = \"b\"; behaviour = \"email\"; },\n"
              "  { id = \"a\"; behaviour = \"order\"; } ); };",
              4, "duplicate child id \"a\"");
    /* the same id in two supervisors is fine */
    tr_sup_tree_free(parse_ok("supervisor = { children = ( " CHILD_A ",\n"
                              "  { id = \"s\"; supervisor = { children = ( " CHILD_A " ); }; } );"
                              " };"));
    /* behaviour / supervisor */
    parse_bad("supervisor = { children = (\n  { id = \"a\"; restart = \"temporary\"; } ); };", 2,
              "needs a behaviour or a supervisor");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  supervisor = { }; } ); };",
              2, "both a behaviour and a supervisor");
    parse_bad("supervisor = { children = ( { id = \"s\"; supervisor = { };\n"
              "  arg = \"x\"; } ); };",
              2, "arg applies to behaviour children only");
    parse_bad("supervisor = { children = ( { id = \"s\"; supervisor = { };\n"
              "  mailbox = { }; } ); };",
              2, "mailbox applies to behaviour children only");
    /* simple_one_for_one */
    parse_bad("supervisor = {\n strategy = \"simple_one_for_one\";\n};", 1, "exactly one child");
    parse_bad("supervisor = { strategy = \"simple_one_for_one\";\n children = ();\n};", 2,
              "exactly one child");
    parse_bad("supervisor = { strategy = \"simple_one_for_one\";\n"
              " children = ( " CHILD_A ", { id = \"b\"; behaviour = \"email\"; } );\n};",
              2, "not 2");
    /* integers: negative, too big, wrong type */
    parse_bad("supervisor = {\n intensity = -1;\n};", 2, "intensity must be between 0 and 1000000");
    parse_bad("supervisor = {\n intensity = 1000001;\n};", 2, "intensity must be between");
    parse_bad("supervisor = {\n period_ms = 0;\n};", 2, "period_ms must be between 1 and");
    parse_bad("supervisor = {\n period_ms = 4294967296L;\n};", 2, "period_ms must be between");
    parse_bad("supervisor = {\n period_ms = \"5000\";\n};", 2, "period_ms must be an integer");
    parse_bad("supervisor = {\n intensity = 2.5;\n};", 2, "intensity must be an integer");
    parse_bad("supervisor = {\n backoff = { min_ms = -5; };\n};", 2, "min_ms must be between");
    parse_bad("supervisor = {\n backoff = { min_ms = 100; max_ms = 10; };\n};", 2,
              "max_ms (10) is below min_ms (100)");
    parse_bad("supervisor = {\n backoff = { max_ms = 10; };\n};", 2, "needs a min_ms");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  shutdown_ms = -1; } ); };",
              2, "shutdown_ms must be between");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { limit = \"token\"; rate = 4294967296L; }; } ); };",
              2, "rate must be between 0 and 4294967295");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { limit = \"token\"; rate = 10;\n burst = -1; }; } ); };",
              3, "burst must be between");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = {\n capacity = 1073741825; }; } ); };",
              3, "capacity must be between 0 and 1073741824");
    /* a plain integer above INT32_MAX is truncated by libconfig 1.5: the message says so */
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { limit = \"token\"; rate = -7; }; } ); };",
              2, "L suffix");
    /* mailbox consistency */
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { rate = 10; }; } ); };",
              2, "rate needs limit");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { limit = \"token\"; }; } ); };",
              2, "needs a rate");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { limit = \"leaky\"; rate = 5; burst = 3; }; } ); };",
              2, "burst applies to limit = \"token\" only");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { limit = \"leaky\"; rate = 5; overflow = \"reject\"; }; } ); };",
              2, "leaky bucket always drops the newest");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  shutdown = \"brutal\"; shutdown_ms = 5; } ); };",
              2, "both shutdown and shutdown_ms");
    /* unknown keys (typos) */
    parse_bad("supervisor = { children = ( { id = \"a\";\n  behavior = \"email\"; } ); };", 2,
              "unknown key \"behavior\" in a child");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = { capacity = 5;\n   ratee = 5; }; } ); };",
              3, "unknown key \"ratee\" in a mailbox group");
    parse_bad("supervisor = {\n  intensty = 5;\n};", 2, "unknown key \"intensty\" in a supervisor");
    parse_bad("supervisor = {\n  backoff = { min = 5; };\n};", 2, "in a backoff group");
    /* wrong shapes */
    parse_bad("supervisor = {\n  children = ( \"a\" );\n};", 2, "a child must be a group");
    parse_bad("supervisor = {\n  children = { };\n};", 2, "children must be a list");
    parse_bad("supervisor = {\n  children = [ 1, 2 ];\n};", 2, "children must be a list");
    parse_bad("supervisor = { children = ( { id = 5; behaviour = \"email\"; } ); };", 1,
              "id must be a string");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  arg = 5; } ); };",
              2, "arg must be a string");
    parse_bad("supervisor = { children = ( { id = \"a\"; behaviour = \"email\";\n"
              "  mailbox = 5; } ); };",
              2, "mailbox must be a group");
    parse_bad("supervisor = { children = ( { id = \"a\";\n  supervisor = 5; } ); };", 2,
              "supervisor must be a group");
    parse_bad("x = 1;\nsupervisor = 5;\n", 2, "\"supervisor\" must be a group");
    /* syntax errors come from libconfig, with their line */
    parse_bad("supervisor = {\n  intensity = 5;\n  period_ms = ;\n};", 3, "syntax error");
    parse_bad("supervisor = {\n  intensity = 5;\n  intensity = 6;\n};", 3, "duplicate setting");
}

/* Builds a chain of `levels` supervisors (the root included), each one child deeper. */
static char *nested(unsigned levels)
{
    size_t cap = 200 + (size_t)levels * 100;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t off = (size_t)snprintf(s, cap, "supervisor = {\n");
    for (unsigned i = 1; i < levels; i++)
        off += (size_t)snprintf(s + off, cap - off,
                                "children = ( { id = \"s%u\"; supervisor = {\n", i);
    off += (size_t)snprintf(s + off, cap - off, "children = ( " CHILD_A " );\n");
    for (unsigned i = 1; i < levels; i++)
        off += (size_t)snprintf(s + off, cap - off, "}; } );\n");
    snprintf(s + off, cap - off, "};\n");
    return s;
}

/* 16 levels of supervisors load; a 17th is refused at its line. */
static void test_nesting_depth(void **state)
{
    (void)state;
    char *text = nested(16);
    tr_sup_tree *t = parse_ok(text);
    const tr_sup_spec *s = tr_sup_tree_spec(t);
    for (unsigned i = 1; i < 16; i++) {
        assert_int_equal(s->nchildren, 1);
        assert_non_null(s->children[0].supervisor);
        s = s->children[0].supervisor;
    }
    assert_int_equal(s->nchildren, 1);
    assert_ptr_equal(s->children[0].behaviour, &b_email);
    tr_sup_tree_free(t);
    free(text);

    text = nested(17);
    parse_bad(text, 17, "nested deeper than 16");
    free(text);
}

/* Bad arguments, a missing key, small error buffers, NULLs. */
static void test_arguments(void **state)
{
    (void)state;
    tr_sup_tree *t = NULL;
    char err[256];
    const char *ok = "supervisor = { children = ( " CHILD_A " ); };";
    assert_int_equal(tr_sup_tree_parse(ok, "supervisor", behaviours, NB, NULL, err, sizeof err),
                     TR_EINVAL);
    assert_int_equal(tr_sup_tree_parse(NULL, "supervisor", behaviours, NB, &t, err, sizeof err),
                     TR_EINVAL);
    assert_null(t);
    assert_int_equal(tr_sup_tree_parse(ok, NULL, behaviours, NB, &t, err, sizeof err), TR_EINVAL);
    assert_int_equal(tr_sup_tree_parse(ok, "", behaviours, NB, &t, err, sizeof err), TR_EINVAL);
    assert_int_equal(tr_sup_tree_parse(ok, "supervisor", NULL, 3, &t, err, sizeof err), TR_EINVAL);
    assert_int_equal(tr_sup_tree_load(NULL, "supervisor", behaviours, NB, &t, err, sizeof err),
                     TR_EINVAL);
    assert_null(t);
    /* no behaviours at all: fine for a tree of supervisors only, an error for a behaviour child */
    assert_int_equal(tr_sup_tree_parse("supervisor = { };", "supervisor", NULL, 0, &t, err,
                                       sizeof err),
                     TR_OK);
    tr_sup_tree_free(t);
    t = NULL;
    assert_int_equal(tr_sup_tree_parse(ok, "supervisor", NULL, 0, &t, err, sizeof err),
                     TR_EINVAL);
    assert_non_null(strstr(err, "unknown behaviour"));
    /* NULL entries and nameless behaviours are skipped */
    const tr_behaviour nameless = {.receive = nop_receive};
    const tr_behaviour *const odd[] = {NULL, &nameless, &b_email};
    assert_int_equal(tr_sup_tree_parse(ok, "supervisor", odd, 3, &t, err, sizeof err), TR_OK);
    assert_ptr_equal(tr_sup_tree_spec(t)->children[0].behaviour, &b_email);
    tr_sup_tree_free(t);
    /* a missing key */
    assert_int_equal(tr_sup_tree_parse(ok, "tree", behaviours, NB, &t, err, sizeof err),
                     TR_EINVAL);
    assert_null(t);
    assert_string_equal(err, "<string>: no setting \"tree\"");
    /* err may be NULL, or too small: truncated, never overrun */
    assert_int_equal(tr_sup_tree_parse("supervisor = 1;", "supervisor", behaviours, NB, &t, NULL,
                                       0),
                     TR_EINVAL);
    char small[6];
    memset(small, 'z', sizeof small);
    assert_int_equal(tr_sup_tree_parse("supervisor = 1;", "supervisor", behaviours, NB, &t,
                                       small, sizeof small),
                     TR_EINVAL);
    assert_string_equal(small, "<stri");
    char tiny[12];
    assert_int_equal(tr_sup_tree_parse("supervisor = 1;", "supervisor", behaviours, NB, &t, tiny,
                                       sizeof tiny),
                     TR_EINVAL);
    assert_string_equal(tiny, "<string>:1:");
    /* NULL is ignored */
    tr_sup_tree_free(NULL);
    assert_null(tr_sup_tree_spec(NULL));
}

/* A file that cannot be read: TR_EINVAL, and the message says so. */
static void test_missing_file(void **state)
{
    (void)state;
    tr_sup_tree *t = (tr_sup_tree *)&t;
    char err[256] = "";
    const char *path = "/nonexistent/troupe/supervision.conf";
    assert_int_equal(tr_sup_tree_load(path, "supervisor", behaviours, NB, &t, err, sizeof err),
                     TR_EINVAL);
    assert_null(t);
    assert_true(strncmp(err, path, strlen(path)) == 0);
    assert_non_null(strstr(err, "could not read"));
    assert_non_null(strstr(err, "No such file"));
}

/* Writes text to a fresh temporary file; returns its path (free it and unlink it). */
static char *temp_file(const char *text)
{
    char *path = strdup("/tmp/test_config_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Files: the full tree loads as from a string; errors name the file and line. */
static void test_load_file(void **state)
{
    (void)state;
    char *path = temp_file(full_text);
    tr_sup_tree *t = NULL;
    char err[512];
    assert_int_equal(tr_sup_tree_load(path, "supervisor", behaviours, NB, &t, err, sizeof err),
                     TR_OK);
    check_full(tr_sup_tree_spec(t));
    tr_sup_tree_free(t);
    unlink(path);
    free(path);

    path = temp_file("# comment\nsupervisor = {\n  children = (\n"
                     "    { id = \"a\"; behaviour = \"nope\"; }\n  );\n};\n");
    assert_int_equal(tr_sup_tree_load(path, "supervisor", behaviours, NB, &t, err, sizeof err),
                     TR_EINVAL);
    assert_null(t);
    char expect[128];
    snprintf(expect, sizeof expect, "%s:4: unknown behaviour \"nope\"", path);
    assert_true(strncmp(err, expect, strlen(expect)) == 0);
    unlink(path);
    free(path);

    path = temp_file("supervisor = {\n  intensity = 5;\n  period_ms = ;\n};\n");
    assert_int_equal(tr_sup_tree_load(path, "supervisor", behaviours, NB, &t, err, sizeof err),
                     TR_EINVAL);
    assert_null(t);
    snprintf(expect, sizeof expect, "%s:3: syntax error", path);
    assert_string_equal(err, expect);
    unlink(path);
    free(path);
}

/* The documented example loads into the tree its comments describe. */
static void test_example_file(void **state)
{
    (void)state;
    tr_sup_tree *t = NULL;
    char err[512] = "";
    int rc = tr_sup_tree_load(TROUPE_CONFIG_DIR "/supervision-example.conf", "supervisor",
                              behaviours, NB, &t, err, sizeof err);
    if (rc != TR_OK)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, TR_OK);
    const tr_sup_spec *s = tr_sup_tree_spec(t);
    assert_int_equal(s->strategy, TR_ONE_FOR_ONE);
    assert_int_equal(s->nchildren, 3);
    const tr_child_spec *email = &s->children[0];
    assert_string_equal(email->id, "email");
    assert_ptr_equal(email->behaviour, &b_email);
    assert_int_equal(email->mailbox.limit, TR_LIMIT_TOKEN);
    assert_int_equal(email->mailbox.rate, 50);
    assert_int_equal(email->mailbox.burst, 50);
    assert_int_equal(email->mailbox.capacity, 10000);
    assert_int_equal(email->mailbox.overflow, TR_OVERFLOW_REJECT);
    const tr_child_spec *orders = &s->children[2];
    assert_string_equal(orders->id, "orders");
    assert_non_null(orders->supervisor);
    assert_int_equal(orders->supervisor->strategy, TR_SIMPLE_ONE_FOR_ONE);
    assert_int_equal(orders->supervisor->nchildren, 1);
    assert_ptr_equal(orders->supervisor->children[0].behaviour, &b_order);
    tr_sup_tree_free(t);
}

/* Every .conf file in config/ with a "supervisor" group loads (others are skipped). */
static void test_all_config_files(void **state)
{
    (void)state;
    DIR *d = opendir(TROUPE_CONFIG_DIR);
    assert_non_null(d);
    unsigned loaded = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".conf") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", TROUPE_CONFIG_DIR, e->d_name);
        tr_sup_tree *t = NULL;
        char err[512] = "";
        int rc = tr_sup_tree_load(path, "supervisor", behaviours, NB, &t, err, sizeof err);
        if (rc != TR_OK && strstr(err, "no setting \"supervisor\"") != NULL)
            continue;
        if (rc != TR_OK)
            fprintf(stderr, "%s\n", err);
        assert_int_equal(rc, TR_OK);
        tr_sup_tree_free(t);
        loaded++;
    }
    closedir(d);
    assert_true(loaded >= 1);
}

/* Cluster files: the shipped one, defaults, and errors with file and line. */
static void test_cluster_files(void **state)
{
    (void)state;
    tr_node_config *c = NULL;
    char err[512] = "";
    int rc = tr_node_config_load(TROUPE_CONFIG_DIR "/cluster-local.conf", "n2", &c, err,
                                 sizeof err);
    if (rc != TR_OK)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, TR_OK);
    assert_string_equal(c->node.name, "n2");
    assert_string_equal(c->node.listen, "tcp://127.0.0.1:7102");
    assert_string_equal(c->node.secret, "troupe-local-demo-secret");
    assert_int_equal(c->node.nseeds, 1);
    assert_string_equal(c->node.seeds[0], "tcp://127.0.0.1:7101");
    assert_int_equal(c->node.heartbeat_ms, 200);
    assert_int_equal(c->node.down_after_ms, 1000);
    assert_int_equal(c->node.reconnect_min_ms, 10);
    assert_int_equal(c->node.reconnect_max_ms, 2000);
    assert_int_equal(c->node.peer_queue, 65536);
    assert_int_equal(c->node.overflow, TR_NODE_REJECT);
    assert_int_equal(c->workers, 2);
    tr_node_config_free(c);

    /* no seeds: every node's listen address; unset options stay 0 (the node's defaults) */
    char *path = temp_file("cluster = {\n  secret = \"12345678\";\n  overflow = \"drop\";\n"
                           "  nodes = ( { name = \"a\"; listen = \"tcp://127.0.0.1:1\"; },\n"
                           "            { name = \"b\"; listen = \"tcp://127.0.0.1:2\"; } );\n};\n");
    assert_int_equal(tr_node_config_load(path, "b", &c, err, sizeof err), TR_OK);
    assert_int_equal(c->node.nseeds, 2);
    assert_string_equal(c->node.seeds[1], "tcp://127.0.0.1:2");
    assert_int_equal(c->node.overflow, TR_NODE_DROP);
    assert_int_equal(c->node.heartbeat_ms, 0);
    assert_int_equal(c->node.monitors, 0); /* the full mesh */
    assert_int_equal(c->workers, 0);
    tr_node_config_free(c);
    unlink(path);
    free(path);

    /* partial monitoring (issue 22) */
    path = temp_file("cluster = {\n  secret = \"12345678\";\n  monitors = 5;\n"
                     "  idle_close_ms = 3000;\n"
                     "  nodes = ( { name = \"a\"; listen = \"tcp://127.0.0.1:1\"; } );\n};\n");
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_OK);
    assert_int_equal(c->node.monitors, 5);
    assert_int_equal(c->node.idle_close_ms, 3000);
    tr_node_config_free(c);
    unlink(path);
    free(path);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"cluster = { nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };", "no secret"},
        {"cluster = { secret = \"short\"; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };",
         "at least 8"},
        {"cluster = { secret = \"12345678\"; colour = 1; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };",
         "unknown key \"colour\""},
        {"cluster = { secret = \"12345678\"; nodes = ( { name = \"a\"; listen = \"udp://h:1\"; } ); };",
         "needs listen"},
        {"cluster = { secret = \"12345678\"; nodes = ( { name = \"b\"; listen = \"tcp://h:1\"; } ); };",
         "no node called a"},
        {"cluster = { secret = \"12345678\"; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; },\n"
         "{ name = \"a\"; listen = \"tcp://h:2\"; } ); };",
         ":2: two nodes are called a"},
        {"cluster = { secret = \"12345678\"; heartbeat_ms = 0; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };",
         "heartbeat_ms must be between"},
        {"cluster = { secret = \"12345678\"; seeds = [ \"x\" ]; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };",
         "a seed must be"},
        {"cluster = { secret = \"12345678\"; monitors = 17; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };",
         "monitors must be between"},
        {"cluster = { secret = \"12345678\"; idle_close_ms = 0; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };",
         "idle_close_ms must be between"},
        {"cluster = { secret = \"12345678\"; nodes = (); };", "non-empty list"},
        {"other = 1;", "no group \"cluster\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        path = temp_file(bad[i].text);
        c = (tr_node_config *)1;
        assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_EINVAL);
        assert_null(c);
        if (strstr(err, bad[i].want) == NULL || strncmp(err, path, strlen(path)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, bad[i].want);
        unlink(path);
        free(path);
    }
    assert_int_equal(tr_node_config_load("/nonexistent/x.conf", "a", &c, err, sizeof err),
                     TR_EINVAL);
    assert_non_null(strstr(err, "could not read"));
    assert_int_equal(tr_node_config_load(NULL, "a", &c, err, sizeof err), TR_EINVAL);
    assert_int_equal(tr_node_config_load(TROUPE_CONFIG_DIR "/cluster-local.conf", "a", NULL, err,
                                         sizeof err),
                     TR_EINVAL);
}

/* cluster.secret_file: read at load, refused when group or others can read it (0644), accepted
 * at 0600; never both secret and secret_file; the secret never appears in an error. */
static void test_cluster_secret_file(void **state)
{
    (void)state;
    char *sf = temp_file("a-secret-from-a-file\n");
    char text[512], err[512] = "";
    snprintf(text, sizeof text,
             "cluster = {\n  secret_file = \"%s\";\n"
             "  nodes = ( { name = \"a\"; listen = \"tcp://127.0.0.1:1\"; } );\n};\n", sf);
    char *path = temp_file(text);
    tr_node_config *c = NULL;
    assert_int_equal(chmod(sf, 0644), 0);
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_EINVAL);
    assert_null(c);
    char want[300];
    snprintf(want, sizeof want, "%s:2: secret_file %s: others can read or write it (mode 644; "
             "chmod 600)", path, sf);
    assert_string_equal(err, want);
    assert_null(strstr(err, "a-secret-from-a-file"));
    assert_int_equal(chmod(sf, 0640), 0); /* the group may not read it either */
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_EINVAL);
    assert_int_equal(chmod(sf, 0600), 0);
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_OK);
    assert_string_equal(c->node.secret, "a-secret-from-a-file");
    tr_node_config_free(c);
    unlink(path);
    free(path);
    /* both, a short one, a missing file */
    snprintf(text, sizeof text,
             "cluster = {\n  secret = \"12345678\";\n  secret_file = \"%s\";\n"
             "  nodes = ( { name = \"a\"; listen = \"tcp://127.0.0.1:1\"; } );\n};\n", sf);
    path = temp_file(text);
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_EINVAL);
    assert_non_null(strstr(err, ":3: give secret or secret_file, not both"));
    unlink(path);
    free(path);
    FILE *f = fopen(sf, "w");
    assert_non_null(f);
    fputs("short\n", f);
    fclose(f);
    snprintf(text, sizeof text,
             "cluster = {\n  secret_file = \"%s\";\n"
             "  nodes = ( { name = \"a\"; listen = \"tcp://127.0.0.1:1\"; } );\n};\n", sf);
    path = temp_file(text);
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_EINVAL);
    assert_non_null(strstr(err, "at least 8 bytes"));
    assert_null(strstr(err, "short"));
    unlink(sf);
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_EINVAL);
    assert_non_null(strstr(err, "No such file"));
    unlink(path);
    free(path);
    free(sf);
}

/* cluster.tls: cert / key / ca with {node} for the node's name, verify, server_name; what is
 * missing or unknown refused with file:line. (The files themselves are read by tr_node_start:
 * test_node_tls.) */
static void test_cluster_tls(void **state)
{
    (void)state;
    char err[512] = "";
    tr_node_config *c = NULL;
    char *path = temp_file(
        "cluster = {\n  secret = \"12345678\";\n"
        "  tls = { cert = \"certs/{node}.pem\"; key = \"certs/{node}.key\"; ca = \"certs/ca.pem\";\n"
        "          verify = \"optional\"; server_name = \"troupe.internal\"; };\n"
        "  nodes = ( { name = \"n1\"; listen = \"tcp://127.0.0.1:1\"; } );\n};\n");
    assert_int_equal(tr_node_config_load(path, "n1", &c, err, sizeof err), TR_OK);
    assert_non_null(c->node.tls);
    assert_string_equal(c->node.tls->cert, "certs/n1.pem");
    assert_string_equal(c->node.tls->key, "certs/n1.key");
    assert_string_equal(c->node.tls->ca, "certs/ca.pem");
    assert_int_equal(c->node.tls->verify, TR_TLS_VERIFY_OPTIONAL);
    assert_string_equal(c->node.tls->server_name, "troupe.internal");
    tr_node_config_free(c);
    unlink(path);
    free(path);
    /* no tls group: plain TCP; verify defaults to required; none needs no CA */
    path = temp_file("cluster = { secret = \"12345678\"; nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };");
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_OK);
    assert_null(c->node.tls);
    tr_node_config_free(c);
    unlink(path);
    free(path);
    path = temp_file("cluster = { secret = \"12345678\"; tls = { cert = \"c\"; key = \"k\"; ca = \"a\"; };\n"
                     "nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };");
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_OK);
    assert_int_equal(c->node.tls->verify, TR_TLS_VERIFY_REQUIRED);
    assert_null(c->node.tls->server_name);
    tr_node_config_free(c);
    unlink(path);
    free(path);
    path = temp_file("cluster = { secret = \"12345678\"; tls = { cert = \"c\"; key = \"k\"; verify = \"none\"; };\n"
                     "nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } ); };");
    assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_OK);
    assert_null(c->node.tls->ca);
    tr_node_config_free(c);
    unlink(path);
    free(path);
    static const struct {
        const char *tls, *want;
    } bad[] = {
        {"tls = { key = \"k\"; ca = \"a\"; };", "tls needs cert"},
        {"tls = { cert = \"c\"; ca = \"a\"; };", "tls needs key"},
        {"tls = { cert = \"c\"; key = \"k\"; };", "tls needs ca"},
        {"tls = { cert = \"c\"; key = \"k\"; ca = \"a\"; verify = \"maybe\"; };",
         "unknown verify \"maybe\" (expected one of: required, optional, none)"},
        {"tls = { cert = \"c\"; key = \"k\"; ca = \"a\"; crl = \"x\"; };", "unknown key \"crl\""},
        {"tls = { cert = \"c\"; key = \"k\"; ca = \"a\"; server_name = \"\"; };",
         "server_name must be"},
        {"tls = \"on\";", "tls must be a group"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, "cluster = {\n  secret = \"12345678\";\n  %s\n"
                 "  nodes = ( { name = \"a\"; listen = \"tcp://h:1\"; } );\n};\n", bad[i].tls);
        path = temp_file(text);
        c = (tr_node_config *)1;
        assert_int_equal(tr_node_config_load(path, "a", &c, err, sizeof err), TR_EINVAL);
        assert_null(c);
        if (strstr(err, bad[i].want) == NULL || strstr(err, ":3:") == NULL)
            fail_msg("case %zu: got \"%s\", want \"%s\" at line 3", i, err, bad[i].want);
        unlink(path);
        free(path);
    }
}

/* Store settings: the example file, a Redis one, errors with file:line. */
static void test_store_files(void **state)
{
    (void)state;
    tr_store_config *c = NULL;
    char err[512] = "";
    int rc = tr_store_config_load(TROUPE_CONFIG_DIR "/store-example.conf", "store", &c, err,
                                  sizeof err);
    if (rc != TR_OK)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, TR_OK);
    assert_int_equal(c->store.backend, TR_STORE_SQLITE);
    assert_string_equal(c->store.path, "data/node.db");
    assert_int_equal(c->store.sync, TR_SYNC_FULL);
    assert_int_equal(c->store.snapshot_every, 1000);
    assert_int_equal(c->store.outbox_window, 64);
    assert_int_equal(c->store.redeliver_ms, 5000);
    assert_int_equal(c->store.max_batch, 4096);
    assert_int_equal(c->store.commits, TR_COMMITS_INLINE);
    assert_int_equal(c->store.commit_delay_us, 0);
    tr_store_config_free(c);
    char *path = temp_file("store = { path = \"x\"; sync = \"normal\"; commits = \"writer\";\n"
                           "  commit_delay_us = 1000; };");
    assert_int_equal(tr_store_config_load(path, "store", &c, err, sizeof err), TR_OK);
    assert_int_equal(c->store.commits, TR_COMMITS_WRITER);
    assert_int_equal(c->store.commit_delay_us, 1000);
    tr_store_config_free(c);
    unlink(path);
    free(path);
    path = temp_file("node = { store = { backend = \"redis\"; sync = \"normal\";\n"
                     "  redis = { host = \"127.0.0.1\"; port = 6380; }; }; };\n");
    assert_int_equal(tr_store_config_load(path, "node.store", &c, err, sizeof err), TR_OK);
    assert_int_equal(c->store.backend, TR_STORE_REDIS);
    assert_string_equal(c->store.redis_host, "127.0.0.1");
    assert_int_equal(c->store.redis_port, 6380);
    assert_int_equal(c->store.sync, TR_SYNC_NORMAL);
    tr_store_config_free(c);
    unlink(path);
    free(path);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"store = { backend = \"sqlite\"; };", "needs a path"},
        {"store = { backend = \"mongo\"; path = \"x\"; };", "unknown backend \"mongo\""},
        {"store = { path = \"x\"; sync = \"sometimes\"; };", "unknown sync"},
        {"store = { path = \"x\"; commits = \"whenever\"; };", "unknown commits"},
        {"store = { backend = \"redis\"; };", "needs redis ="},
        {"store = { backend = \"redis\"; redis = { port = 1; }; };", "needs a host"},
        {"store = { backend = \"redis\"; redis = { host = \"h\"; port = 70000; }; };",
         "port must be between"},
        {"store = { path = \"x\"; colour = 1; };", "unknown key \"colour\""},
        {"store = { path = \"x\"; commit_delay_us = 1000001; };", "commit_delay_us"},
        {"other = 1;", "no group \"store\""},
        /* libconfig wraps integers that do not fit (4294967297 would be 1): refused */
        {"store = { path = \"x\";\n  max_batch = 4294967297; };",
         ":2: max_batch: the number does not fit"},
        {"store = { path = \"x\"; redeliver_ms = 99999999999999999999L; };", "does not fit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        path = temp_file(bad[i].text);
        c = (tr_store_config *)1;
        assert_int_equal(tr_store_config_load(path, "store", &c, err, sizeof err), TR_EINVAL);
        assert_null(c);
        if (strstr(err, bad[i].want) == NULL || strncmp(err, path, strlen(path)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, bad[i].want);
        unlink(path);
        free(path);
    }
}

/* Settings from a parsed config (overridden by the program: no temporary file) name the file they
 * came from; tr_config_read refuses integers libconfig would wrap. */
static void test_config_from_parsed(void **state)
{
    (void)state;
    char err[256];
    char *path = temp_file("store = { backend = \"sqlite\"; path = \"a.db\"; };\n");
    config_t cfg;
    config_init(&cfg);
    assert_int_equal(tr_config_read(&cfg, path, err, sizeof err), TR_OK);
    config_setting_t *g = config_lookup(&cfg, "store");
    config_setting_t *m = config_setting_add(g, "max_batch", CONFIG_TYPE_INT);
    config_setting_set_int(m, 0); /* out of range, added by the program (no line) */
    tr_store_config *c = NULL;
    assert_int_equal(tr_store_config_from(&cfg, path, "store", &c, err, sizeof err), TR_EINVAL);
    assert_null(c);
    assert_int_equal(strncmp(err, path, strlen(path)), 0);
    assert_non_null(strstr(err, "max_batch"));
    config_setting_set_int(m, 10);
    assert_int_equal(tr_store_config_from(&cfg, path, "store", &c, err, sizeof err), TR_OK);
    assert_int_equal(c->store.max_batch, 10);
    tr_store_config_free(c);
    config_destroy(&cfg);
    unlink(path);
    free(path);
    path = temp_file("a = 1;\nb = 4294968320;\n");
    config_init(&cfg);
    assert_int_equal(tr_config_read(&cfg, path, err, sizeof err), TR_EINVAL);
    assert_non_null(strstr(err, ":2: b: the number does not fit"));
    config_destroy(&cfg);
    unlink(path);
    free(path);
}

/* An app's settings: the file, --set overrides, the schema (unknown names with the closest known
 * one, kinds, ranges; where each came from), and a secret file's mode. */
static void test_app_settings(void **state)
{
    (void)state;
    static const tr_setting schema[] = {
        {"app", TR_SETTING_GROUP, 0, 0},
        {"app.port", TR_SETTING_INT, 0, 65535},
        {"app.name", TR_SETTING_STR, 0, 0},
        {"app.http", TR_SETTING_GROUP, 0, 0},
        {"app.http.threads", TR_SETTING_INT, 1, 64},
        {"store", TR_SETTING_FOREIGN, 0, 0},
    };
    const size_t n = sizeof schema / sizeof schema[0];
    char *path = temp_file("app = { port = 80; name = \"x\"; http = { threads = 2; }; };\n"
                           "store = { anything = 1; };\n");
    char err[256];
    config_t cfg;
    /* the file as it is, then with overrides (a later --set wins; quoted digits stay a string) */
    config_init(&cfg);
    assert_int_equal(tr_config_app_load(&cfg, path, NULL, 0, schema, n, err, sizeof err), TR_OK);
    config_destroy(&cfg);
    const char *sets[] = {"app.port=81", "app.port=82", "app.name=\"123\"", "app.http.threads=4"};
    config_init(&cfg);
    assert_int_equal(tr_config_app_load(&cfg, path, sets, 4, schema, n, err, sizeof err), TR_OK);
    int v;
    const char *str;
    assert_true(config_lookup_int(&cfg, "app.port", &v) && v == 82);
    assert_true(config_lookup_string(&cfg, "app.name", &str) && strcmp(str, "123") == 0);
    assert_true(config_lookup_int(&cfg, "app.http.threads", &v) && v == 4);
    config_destroy(&cfg);
    struct {
        const char *set, *want;
    } bad[] = {
        {"app.prot=1", "--set app.prot=1: unknown setting app.prot (did you mean app.port?)"},
        {"port=1", "--set port=1: unknown setting port (did you mean app.port?)"},
        {"app.port=70000", "--set app.port=70000: app.port must be a whole number from 0 to 65535"},
        {"app.port=abc", "app.port must be a whole number"},
        {"app.name=5", "--set app.name=5: app.name must be a string"},
        {"app.http=5", "app.http must be a group"},
        {"app.http.threads=0", "app.http.threads must be a whole number from 1 to 64"},
        {"nothing", "--set wants KEY=VALUE"},
        {"app.port.x=1", "--set app.port.x=1: port is not a group"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        config_init(&cfg);
        err[0] = '\0';
        assert_int_equal(
            tr_config_app_load(&cfg, path, &bad[i].set, 1, schema, n, err, sizeof err),
            TR_EINVAL);
        if (strstr(err, bad[i].want) == NULL)
            print_error("%s: got \"%s\"\n", bad[i].set, err);
        assert_non_null(strstr(err, bad[i].want));
        config_destroy(&cfg);
    }
    /* from the file: FILE:LINE */
    char *typo = temp_file("app = {\n  prot = 1;\n};\n");
    config_init(&cfg);
    assert_int_equal(tr_config_app_load(&cfg, typo, NULL, 0, schema, n, err, sizeof err),
                     TR_EINVAL);
    char want[300];
    snprintf(want, sizeof want, "%s:2: unknown setting app.prot (did you mean app.port?)", typo);
    assert_string_equal(err, want);
    config_destroy(&cfg);
    unlink(typo);
    free(typo);
    /* a secret: only its owner may read it */
    char secret[64];
    char *sf = temp_file("s3cr3t-token-value\n");
    chmod(sf, 0600);
    assert_int_equal(tr_config_secret(sf, secret, sizeof secret, err, sizeof err), TR_OK);
    assert_string_equal(secret, "s3cr3t-token-value");
    chmod(sf, 0644);
    assert_int_equal(tr_config_secret(sf, secret, sizeof secret, err, sizeof err), TR_EINVAL);
    assert_non_null(strstr(err, "chmod 600"));
    unlink(sf);
    free(sf);
    assert_int_equal(tr_config_secret("/nonexistent/secret", secret, sizeof secret, err,
                                      sizeof err),
                     TR_EINVAL);
    unlink(path);
    free(path);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_store_files),
    cmocka_unit_test(test_cluster_files),
    cmocka_unit_test(test_cluster_secret_file),
    cmocka_unit_test(test_cluster_tls),
    cmocka_unit_test(test_full_tree),
    cmocka_unit_test(test_defaults),
    cmocka_unit_test(test_key_path_and_limits),
    cmocka_unit_test(test_validation_errors),
    cmocka_unit_test(test_nesting_depth),
    cmocka_unit_test(test_arguments),
    cmocka_unit_test(test_missing_file),
    cmocka_unit_test(test_load_file),
    cmocka_unit_test(test_example_file),
    cmocka_unit_test(test_all_config_files),
    cmocka_unit_test(test_config_from_parsed),
    cmocka_unit_test(test_app_settings),
};

TT_MAIN_PLAIN(tests)

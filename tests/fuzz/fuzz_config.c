/*
 * fuzz_config.c — libFuzzer harness for the configuration loaders (troupe/config.h): the input is
 * libconfig text (what an operator writes, or a file someone else could edit). The supervision
 * tree, cluster node and store loaders each read it; every refusal must name what is wrong, and
 * nothing may crash, leak or read out of bounds whatever the types, nesting or numbers.
 */
#include <libconfig.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <troupe/config.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int nothing(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx, (void)state, (void)m;
    return 0;
}

static const tr_behaviour worker_b = {.name = "worker", .receive = nothing};
static const tr_behaviour *const behaviours[] = {&worker_b};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char err[256];
    tr_sup_tree *t = NULL;
    err[0] = '\0';
    if (tr_sup_tree_parse(text, "supervisor", behaviours, 1, &t, err, sizeof err) == TR_OK)
        tr_sup_tree_free(t);
    else if (err[0] == '\0')
        abort(); /* a refusal names what is wrong */
    config_t cfg;
    config_init(&cfg);
    if (config_read_string(&cfg, text) == CONFIG_TRUE) {
        tr_node_config *nc = NULL;
        if (tr_node_config_from(&cfg, "fuzz.conf", "n1", &nc, err, sizeof err) == TR_OK)
            tr_node_config_free(nc);
        tr_store_config *sc = NULL;
        if (tr_store_config_from(&cfg, "fuzz.conf", "store", &sc, err, sizeof err) == TR_OK)
            tr_store_config_free(sc);
    }
    config_destroy(&cfg);
    free(text);
    return 0;
}

/*
 * troupe/config.h — what the libconfig files in config/ declare: supervision trees (and their
 * children's mailbox limits), turned into tr_sup_spec trees for tr_sup_start, and clusters of
 * nodes, turned into tr_node_opts for tr_node_start.
 */
#ifndef TROUPE_CONFIG_H
#define TROUPE_CONFIG_H

#include "troupe.h"
#include "troupe/node.h"
#include "troupe/store.h"

#ifdef __cplusplus
extern "C" {
#endif

struct config_t; /* libconfig's (config_t): the loaders below also take one already parsed */

/* Reads the libconfig file `path` into cfg (config_init'ed by the caller) and refuses what
 * libconfig lets through silently: an integer literal that does not fit its type (libconfig
 * wraps 4294968320 to 1024). On error returns TR_EINVAL and writes "file:line: what" into err. */
int tr_config_read(struct config_t *cfg, const char *path, char *err, size_t errlen);

/* A loaded tree: owns every spec, id and argument string it holds. */
typedef struct tr_sup_tree tr_sup_tree;

/* Loads the supervisor declared under setting `key` (e.g. "supervisor") of the libconfig file
 * `path`. Child behaviours are looked up by name among `behaviours[0..n)`. On error returns a
 * TR_E* code and writes "file:line: what" into err (if not NULL). */
int tr_sup_tree_load(const char *path, const char *key, const tr_behaviour *const *behaviours,
                     size_t n, tr_sup_tree **out, char *err, size_t errlen);
/* Same as tr_sup_tree_load, from a string holding the config text. */
int tr_sup_tree_parse(const char *text, const char *key, const tr_behaviour *const *behaviours,
                      size_t n, tr_sup_tree **out, char *err, size_t errlen);
/* The root spec (valid until tr_sup_tree_free; tr_sup_start copies what it needs). */
const tr_sup_spec *tr_sup_tree_spec(const tr_sup_tree *t);
/* Frees a tree (NULL is ignored). */
void tr_sup_tree_free(tr_sup_tree *t);

/* One node of a cluster file (the `cluster` group; see config/cluster-local.conf): options
 * ready for tr_node_start (strings owned by the config), and the system's worker count. */
typedef struct tr_node_config {
    tr_node_opts node;
    unsigned workers;           /* 0: the runtime's default */
} tr_node_config;

/* Loads node `node` of the cluster declared in the libconfig file `path`. Seeds default to every
 * node's listen address. On error returns a TR_E* code and writes "file:line: what" into err. */
int tr_node_config_load(const char *path, const char *node, tr_node_config **out, char *err,
                        size_t errlen);
/* The same from a parsed config (file names its source in messages; settings added by the program,
 * such as command-line overrides, have no line). */
int tr_node_config_from(const struct config_t *cfg, const char *file, const char *node,
                        tr_node_config **out, char *err, size_t errlen);
/* Frees a node config (NULL is ignored). */
void tr_node_config_free(tr_node_config *c);

/* A store's settings (the group at `key`, e.g. "store"; see config/store-example.conf): options
 * ready for tr_store_open (strings owned by the config). */
typedef struct tr_store_config {
    tr_store_opts store;
} tr_store_config;

/* Loads the store settings under `key` of the libconfig file `path`; errors as file:line. */
int tr_store_config_load(const char *path, const char *key, tr_store_config **out, char *err,
                         size_t errlen);
/* The same from a parsed config (see tr_node_config_from). */
int tr_store_config_from(const struct config_t *cfg, const char *file, const char *key,
                         tr_store_config **out, char *err, size_t errlen);
/* Frees a store config (NULL is ignored). */
void tr_store_config_free(tr_store_config *c);

#ifdef __cplusplus
}
#endif
#endif /* TROUPE_CONFIG_H */

/**
 * @file
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
#pragma GCC visibility push(default) /* the API (the library is built with hidden) */

struct config_t; /**< libconfig's (config_t): the loaders below also take one already parsed */

/** Reads the libconfig file `path` into cfg (config_init'ed by the caller) and refuses what
 * libconfig lets through silently: an integer literal that does not fit its type (libconfig
 * wraps 4294968320 to 1024). On error returns TR_EINVAL and writes "file:line: what" into err. */
int tr_config_read(struct config_t *cfg, const char *path, char *err, size_t errlen);

/** A loaded tree: owns every spec, id and argument string it holds. */
typedef struct tr_sup_tree tr_sup_tree;

/** Loads the supervisor declared under setting `key` (e.g. "supervisor") of the libconfig file
 * `path`. Child behaviours are looked up by name among `behaviours[0..n)`. On error returns a
 * TR_E* code and writes "file:line: what" into err (if not NULL). */
int tr_sup_tree_load(const char *path, const char *key, const tr_behaviour *const *behaviours,
                     size_t n, tr_sup_tree **out, char *err, size_t errlen);
/** Same as tr_sup_tree_load, from a string holding the config text. */
int tr_sup_tree_parse(const char *text, const char *key, const tr_behaviour *const *behaviours,
                      size_t n, tr_sup_tree **out, char *err, size_t errlen);
/** The root spec (valid until tr_sup_tree_free; tr_sup_start copies what it needs). */
const tr_sup_spec *tr_sup_tree_spec(const tr_sup_tree *t);
/** Frees a tree (NULL is ignored). */
void tr_sup_tree_free(tr_sup_tree *t);

/** One node of a cluster file (the `cluster` group; see config/cluster-local.conf): options
 * ready for tr_node_start (strings owned by the config), and the system's worker count. */
typedef struct tr_node_config {
    tr_node_opts node;          /**< for tr_node_start */
    unsigned workers;           /**< 0: the runtime's default */
} tr_node_config;

/** Loads node `node` of the cluster declared in the libconfig file `path`. Seeds default to every
 * node's listen address. On error returns a TR_E* code and writes "file:line: what" into err. */
int tr_node_config_load(const char *path, const char *node, tr_node_config **out, char *err,
                        size_t errlen);
/** The same from a parsed config (file names its source in messages; settings added by the program,
 * such as command-line overrides, have no line). */
int tr_node_config_from(const struct config_t *cfg, const char *file, const char *node,
                        tr_node_config **out, char *err, size_t errlen);
/** Frees a node config (NULL is ignored). */
void tr_node_config_free(tr_node_config *c);

/** A store's settings (the group at `key`, e.g. "store"; see config/store-example.conf): options
 * ready for tr_store_open (strings owned by the config). */
typedef struct tr_store_config {
    tr_store_opts store;        /**< for tr_store_open */
} tr_store_config;

/** Loads the store settings under `key` of the libconfig file `path`; errors as file:line. */
int tr_store_config_load(const char *path, const char *key, tr_store_config **out, char *err,
                         size_t errlen);
/** The same from a parsed config (see tr_node_config_from). */
int tr_store_config_from(const struct config_t *cfg, const char *file, const char *key,
                         tr_store_config **out, char *err, size_t errlen);
/** Frees a store config (NULL is ignored). */
void tr_store_config_free(tr_store_config *c);

/* ---- an application's settings --------------------------------------------------------------
 * An app declares every setting it reads (a schema); tr_config_app_load reads its file, applies
 * the command line's KEY=VALUE overrides, and refuses anything the schema does not know (naming
 * where it came from, FILE:LINE or the --set, and the closest known name), a value of the wrong
 * kind, or a number out of range: nothing is silently ignored or defaulted. */

/** The kind of value a setting holds. */
typedef enum tr_setting_kind {
    TR_SETTING_GROUP,       /**< a group { ... } whose members are checked too */
    TR_SETTING_INT,         /**< a whole number within [min, max] */
    TR_SETTING_STR,         /**< a string */
    TR_SETTING_LIST,        /**< a list ( ... ) (its elements are the app's to check) */
    TR_SETTING_FOREIGN,     /**< a group checked by someone else (the store's, the cluster's) */
} tr_setting_kind;

/** One setting an application knows: its path, its kind, and (numbers) its range. */
typedef struct tr_setting {
    const char *path;       /**< e.g. "social.http.port" */
    tr_setting_kind kind;   /**< what it holds */
    long long min;          /**< TR_SETTING_INT: the least value */
    long long max;          /**< TR_SETTING_INT: the greatest value */
} tr_setting;

/** Sets path=value (e.g. "social.http.port=8090") in cfg, creating groups as needed: digits are
 * a number, anything else a string, and "..." a string always (the quotes dropped). TR_EINVAL,
 * with the reason in err, when kv is not KEY=VALUE or cannot be set. */
int tr_config_set(struct config_t *cfg, const char *kv, char *err, size_t errlen);

/** Reads `file` into cfg (tr_config_read), applies sets[0..nsets) (tr_config_set; a later one
 * wins), and checks every setting against schema[0..n). TR_OK, or TR_EINVAL with one line in err
 * ("FILE:LINE: unknown setting a.b (did you mean a.c?)", "--set a.b=x: a.b must be a whole
 * number from 1 to 9", ...). */
int tr_config_app_load(struct config_t *cfg, const char *file, const char *const *sets,
                       int nsets, const tr_setting *schema, size_t n, char *err, size_t errlen);

/** Reads a secret from a file only its owner may read (mode 0600 or stricter): its first line,
 * the line end removed, into out (cap bytes). TR_OK, or TR_EINVAL with the reason in err (missing,
 * readable or writable by others, empty, longer than cap - 2 bytes). */
int tr_config_secret(const char *path, char *out, size_t cap, char *err, size_t errlen);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif /* TROUPE_CONFIG_H */

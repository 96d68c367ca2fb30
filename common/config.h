/* config.h: configuration from YAML files (libcyaml), EMBER_* environment variables and
 * `--set key=value` overrides, in that order of precedence (later wins), over built-in defaults.
 *
 * Each module describes its settings once, as a config_section: a struct of its own and a table of
 * fields (name, type, offset into the struct, range, default, help). A YAML file is a mapping of
 * sections to mappings of keys:
 *
 *   replay:
 *     capacity: 1000000
 *
 * the same key as an environment variable is EMBER_REPLAY_CAPACITY, and on the command line
 * `--set replay.capacity=1000000`. An unknown section or key, a value of the wrong type, or a value
 * out of range is an error that names the key and where the value came from (file and line, the
 * variable, or the --set argument).
 *
 * Ownership: config_load writes into the caller's structs. String fields are char arrays inside
 * those structs (CONFIG_STRING_MAX bytes), so a loaded config owns no heap memory and needs no free.
 * Not thread-safe while loading; the loaded structs are plain data.
 */
#ifndef EMBER_CONFIG_H
#define EMBER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "err.h"

#define CONFIG_STRING_MAX 256

typedef enum {
  CONFIG_INT,    /* int64_t in the struct */
  CONFIG_FLOAT,  /* double in the struct */
  CONFIG_BOOL,   /* bool in the struct */
  CONFIG_STRING, /* char[CONFIG_STRING_MAX] in the struct */
} config_type;

typedef struct {
  const char *name;          /* key within the section, e.g. "capacity" */
  config_type type;
  size_t offset;             /* offsetof(struct, member) */
  double min, max;           /* inclusive range for INT and FLOAT; ignored otherwise */
  const char *default_value; /* parsed like a --set value */
  const char *help;          /* one line for `ember config` and docs */
} config_field;

typedef struct {
  const char *name;          /* section name, e.g. "replay" */
  const config_field *fields;
  size_t nfields;
} config_section;

/* Where a section's values live: the section and the caller's struct. `set`, when not NULL, is the
 * caller's array of section->nfields flags, in the order of the fields: config_defaults clears them
 * and every value from a file, a variable or config_set raises its key's flag, so a caller can tell
 * a key the user set (even to its default's value) from one left at its default. */
typedef struct {
  const config_section *section;
  void *target;
  bool *set;
} config_binding;

/* Fills every field of every binding with its default. Defaults are ember's own, so a bad default
 * is a programmer error: returns EMBER_EINVAL naming it (a test loads every section's defaults). */
int config_defaults(const config_binding *bindings, size_t n, ember_err *err);

/* Loads, in order: defaults; the YAML file at path (skipped when path is NULL); every EMBER_*
 * variable in envp (NULL-terminated, usually `environ`; EMBER_CONFIG, EMBER_SOURCE_DIR and
 * EMBER_BINARY_DIR are not settings and are skipped); then each "key=value" in sets. */
int config_load(const config_binding *bindings, size_t n, const char *path, char *const *envp,
                const char *const *sets, size_t nsets, ember_err *err);

/* Sets one value from text: key is "section.name". `source` names where it came from, for errors. */
int config_set(const config_binding *bindings, size_t n, const char *key, const char *value,
               const char *source, ember_err *err);

/* Whether "section.name" was given a value by a file, a variable or config_set since the last
 * config_defaults; false when the key is unknown or its binding does not track (set is NULL). */
bool config_is_set(const config_binding *bindings, size_t n, const char *key);

/* Writes the effective configuration as YAML (for a run directory: what this run really used). */
int config_write_yaml(const config_binding *bindings, size_t n, FILE *out);

#endif

/* settings.h: every config section the `ember` programs know, loaded together, plus the command-line
 * flags they share and the per-task presets of `ember train`.
 *
 * One YAML file can hold every section (run, learner, train, replay, actor, and each algorithm's);
 * each program binds all of them, so the same file configures all three processes of a run.
 *
 * Flags (in the order given; later wins, all above YAML and EMBER_* variables):
 *   --config FILE          YAML file (also EMBER_CONFIG)
 *   --set section.key=V    any setting, repeatable
 *   --task T, --algo A, --steps N, --seed S, --run-dir D   shorthands for run.<key>
 *   --actors N             shorthand for train.actors
 *
 * Presets: a task may come with defaults of its own (pendulum: smaller networks and batches, so
 * that `make run` finishes in minutes). A preset replaces the built-in defaults of its keys, below
 * the file, the variables and the flags: any of those still wins, even with the built-in value.
 * (The task is read first, then everything is loaded again over the preset's defaults.)
 *
 * Ownership: app_settings owns the algorithm settings buffers; app_settings_free releases them.
 * Not thread-safe (start-up only).
 */
#ifndef EMBER_APP_SETTINGS_H
#define EMBER_APP_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "actor.h"
#include "algo.h"
#include "config.h"
#include "learner.h"
#include "log.h"
#include "replay_server.h"

/* The "train" section: what only `ember train` uses. */
typedef struct {
  int64_t actors;               /* actor threads */
  bool evaluator;               /* an evaluator thread (actor.role eval) */
  double progress_interval_s;   /* progress line period; 0 = none */
  double updates_per_step;      /* learner updates per env step, enforced by replay's rate limiter */
  int64_t lead_steps;           /* how far actors may run ahead of (or behind) that ratio, in env steps */
  char log_level[CONFIG_STRING_MAX]; /* components' log lines: debug, info, warn, error, off */
} train_config;

extern const config_section train_config_section;

/* The "metrics" section: where each program serves Prometheus /metrics (port -1 = not served,
 * 0 = any free port, logged at start). */
typedef struct {
  char address[CONFIG_STRING_MAX];
  int64_t replay_port, learner_port, actor_port, train_port;
} metrics_config;
extern const config_section metrics_config_section;

/* The "security" section: CurveZMQ across machines (docs/operations.md). Empty = plain tcp. */
typedef struct {
  char key_file[CONFIG_STRING_MAX];        /* this program's key pair (NAME.key from `ember keygen`) */
  char server_key_file[CONFIG_STRING_MAX]; /* the servers' public key (.pub), for programs that connect */
  char allow_dir[CONFIG_STRING_MAX];       /* servers: directory of the .pub files of admitted clients */
} security_config;
extern const config_section security_config_section;

#define APP_MAX_SECTIONS 32
#define APP_MAX_FIELDS 128 /* keys per section */

typedef struct {
  run_config run;
  learner_config learner;
  train_config train;
  replay_config replay;
  actor_config actor;
  metrics_config metrics;
  security_config security;
  void *algo_settings[APP_MAX_SECTIONS]; /* in algo_all() order */
  size_t n_algos;
  config_binding bindings[APP_MAX_SECTIONS];
  size_t n_bindings;
  config_section patched[APP_MAX_SECTIONS];     /* sections whose defaults a task preset changed */
  config_field *patched_fields[APP_MAX_SECTIONS];
  bool set_flags[APP_MAX_SECTIONS][APP_MAX_FIELDS]; /* per binding: keys a file, variable or flag set */
} app_settings;

/* Parsed flags. sets[] point into argv or into owned strings (freed by app_flags_free). */
typedef struct {
  const char *config_path;
  char **sets;
  size_t nsets;
  char **owned;
  size_t nowned;
} app_flags;

int app_settings_init(app_settings *s, ember_err *err);
void app_settings_free(app_settings *s);

/* Parses argv[first..argc). Unknown flags: EMBER_EINVAL naming them. --help sets *help. */
int app_flags_parse(int argc, char **argv, int first, app_flags *f, bool *help, ember_err *err);
void app_flags_free(app_flags *f);

/* Defaults (with the task's preset, see above), the file, EMBER_* variables, the flags. */
int app_settings_load(app_settings *s, const app_flags *f, char *const *envp, ember_err *err);

/* Whether the file, an EMBER_* variable or a flag gave "section.key" a value, even one equal to its
 * default; a task preset's value counts as a default (false). */
bool app_setting_is_set(const app_settings *s, const char *key);

/* The settings struct of the algorithm run.algo (NULL when unknown). */
const void *app_algo_settings(const app_settings *s);

/* Prints every setting: key, default, range, help (`ember config`); markdown = a table. */
void app_print_settings(const app_settings *s, FILE *out, bool markdown);

/* Log level and format from EMBER_LOG_LEVEL / EMBER_LOG_FORMAT (fallback: the given level). */
void app_setup_logging(log_level fallback);

#endif

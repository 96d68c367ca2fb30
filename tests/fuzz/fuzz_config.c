/* fuzz_config: a YAML config file, as every ember program reads it (--config, EMBER_CONFIG).
 *
 * The path (app/settings.c app_settings_load, common/config.c config_load): every section the
 * programs bind (run, learner, train, replay, actor, metrics, security and each algorithm's),
 * defaults, the file through libcyaml, a task preset when run.task has one (then the file again over
 * it), then replay_config_validate's cross-field checks. The input is written to an in-memory file
 * and loaded by path, as a user's file is.
 *
 * Properties: a refusal says why; an accepted file's effective configuration, written as YAML by
 * config_write_yaml (what `ember train` leaves in a run directory as config.yaml), loads again and
 * writes out the same text: a run directory's config.yaml reproduces the run's settings. */
#include <string.h>

#include "config.h"
#include "fuzz.h"
#include "replay_server.h"
#include "settings.h"

/* Loads path into s; 0 or the error. The settings are initialised here and freed by the caller. */
static int load(app_settings *s, const char *path, ember_err *err) {
  FUZZ_ASSERT(app_settings_init(s, err) == 0, "app_settings_init: %s", err->msg);
  app_flags flags = {.config_path = path};
  char *no_environment[] = {NULL};
  return app_settings_load(s, &flags, no_environment, err);
}

/* The effective configuration as YAML, malloc'd (the caller frees). */
static char *effective_yaml(const app_settings *s, size_t *len) {
  char *text = NULL;
  FILE *out = open_memstream(&text, len);
  FUZZ_ASSERT(out != NULL, "open_memstream");
  FUZZ_ASSERT(config_write_yaml(s->bindings, s->n_bindings, out) == 0, "config_write_yaml");
  fclose(out);
  return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  app_settings s;
  ember_err err = {0};
  int rc = load(&s, fuzz_input_file(0, data, size), &err);
  if (rc != 0) {
    FUZZ_ASSERT(err.msg[0], "refused (%d) without a message", rc);
    app_settings_free(&s);
    return 0;
  }
  ember_err verr = {0};
  if (replay_config_validate(&s.replay, &verr) != 0) FUZZ_ASSERT(verr.msg[0], "replay_config_validate: no message");

  size_t len1 = 0, len2 = 0;
  char *first = effective_yaml(&s, &len1);
  app_settings_free(&s);
  app_settings again;
  rc = load(&again, fuzz_input_file(1, (const uint8_t *)first, len1), &err);
  FUZZ_ASSERT(rc == 0, "the effective configuration does not load again: %s\n--- it was:\n%s", err.msg, first);
  char *second = effective_yaml(&again, &len2);
  app_settings_free(&again);
  FUZZ_ASSERT(len1 == len2 && memcmp(first, second, len1) == 0,
              "the effective configuration changed on a second load\n--- first:\n%s\n--- second:\n%s", first, second);
  free(first), free(second);
  return 0;
}

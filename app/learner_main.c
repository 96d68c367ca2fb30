/* ember-learner: the learner as its own process (tcp:// or ipc://), for multi-process and
 * multi-machine runs; `ember train` runs the same learner as a thread.
 *
 *   ember-learner [--task T] [--algo A] [--steps N] [--seed S] [--run-dir D]
 *                 [--config FILE] [--set section.key=value ...] [--ready-file PATH]
 *
 * --ready-file receives the bound endpoints (params, then control, one per line) once both listen,
 * for scripts and tests that bind ephemeral ports (tcp://127.0.0.1:*). SIGTERM and SIGINT stop it
 * cleanly (CSV row and state written). Exit code 0 when it stopped by itself or by a signal, 1 on a
 * failure, 2 on bad usage or settings. */
#include <stdio.h>
#include <sys/stat.h>

#include "learner.h"
#include "log.h"
#include "program.h"

static void stop(void *learner) { learner_stop(learner); /* an atomic store */ }

static void usage(FILE *out) {
  fprintf(out, "usage: ember-learner [--task T] [--algo A] [--steps N] [--seed S] [--run-dir D]\n"
               "                     [--config FILE] [--set section.key=value ...] [--ready-file PATH]\n"
               "Runs the learner: samples from replay (learner.replay_endpoint), publishes Params on\n"
               "learner.params_endpoint, serves learner.control_endpoint. `ember config` lists every key.\n");
}

/* The configuration this run really used, beside its curves. */
static void write_effective_config(const app_settings *s) {
  if (!s->run.run_dir[0]) return;
  mkdir(s->run.run_dir, 0755);
  char path[CONFIG_STRING_MAX + 32];
  snprintf(path, sizeof path, "%s/config.yaml", s->run.run_dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    log_event(LOG_WARN, "learner", "config_not_written", LF_STR("path", path));
    return;
  }
  config_write_yaml(s->bindings, s->n_bindings, f);
  fclose(f);
}

int main(int argc, char **argv) {
  program p;
  int exit_code = program_init(&p, "learner", argc, argv, usage);
  if (exit_code >= 0) return exit_code;
  write_effective_config(&p.settings);
  ember_err err = {0};
  int rc = 1;
  learner_t *l = learner_new(&p.settings.run, &p.settings.learner, app_algo_settings(&p.settings), p.zmq, p.metrics,
                             &err);
  if (!l) {
    log_event(LOG_ERROR, "learner", "start_failed", LF_STR("error", err.msg));
  } else if (program_serve_metrics(&p, p.settings.metrics.learner_port) == 0) {
    program_on_stop(stop, l);
    const char *lines[] = {learner_params_endpoint(l), learner_control_endpoint(l)};
    program_write_ready_file(&p, lines, 2);
    rc = learner_run(l, &err) == 0 ? 0 : 1;
    program_on_stop(NULL, NULL);
    if (rc) log_event(LOG_ERROR, "learner", "failed", LF_STR("error", err.msg));
  }
  learner_destroy(&l);
  program_fini(&p);
  return rc;
}

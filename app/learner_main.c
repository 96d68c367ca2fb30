/* ember-learner: the learner as its own process (tcp:// or ipc://), for multi-process and
 * multi-machine runs; `ember train` runs the same learner as a thread.
 *
 *   ember-learner [--task T] [--algo A] [--steps N] [--seed S] [--run-dir D]
 *                 [--config FILE] [--set section.key=value ...] [--ready-file PATH]
 *
 * --ready-file writes the bound endpoints (params, then control, one per line) once both listen,
 * for scripts and tests that bind ephemeral ports (tcp://127.0.0.1:*).
 * It binds every section (run, learner, the algorithms, and replay/actor/train too), so one YAML
 * file can configure all three programs. SIGTERM and SIGINT stop it cleanly (CSV row and state
 * written). Exit code 0 when it stopped by itself or by a signal, 1 on a failure, 2 on bad usage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "settings.h"

extern char **environ;

static learner_t *volatile g_learner;

static void on_signal(int sig) {
  (void)sig;
  if (g_learner) learner_stop(g_learner); /* an atomic store */
}

static void usage(FILE *out) {
  fprintf(out, "usage: ember-learner [--task T] [--algo A] [--steps N] [--seed S] [--run-dir D]\n"
               "                     [--config FILE] [--set section.key=value ...] [--ready-file PATH]\n"
               "Runs the learner: samples from replay (learner.replay_endpoint), publishes Params on\n"
               "learner.params_endpoint, serves learner.control_endpoint. `ember config` lists every key.\n");
}

int main(int argc, char **argv) {
  app_settings s;
  app_flags flags;
  ember_err err = {0};
  bool help;
  const char *ready_file = NULL;
  for (int i = 1; i + 1 < argc; i++) /* our own flag; the shared parser must not see it */
    if (strcmp(argv[i], "--ready-file") == 0) {
      ready_file = argv[i + 1];
      for (int j = i; j + 2 <= argc; j++) argv[j] = argv[j + 2];
      argc -= 2;
      break;
    }
  if (app_settings_init(&s, &err) != 0) {
    fprintf(stderr, "ember-learner: %s\n", err.msg);
    return 2;
  }
  if (app_flags_parse(argc, argv, 1, &flags, &help, &err) != 0 || help) {
    if (!help) fprintf(stderr, "ember-learner: %s\n", err.msg);
    usage(help ? stdout : stderr);
    app_flags_free(&flags);
    app_settings_free(&s);
    return help ? 0 : 2;
  }
  app_setup_logging(LOG_INFO);
  if (app_settings_load(&s, &flags, environ, &err) != 0) {
    log_event(LOG_ERROR, "learner", "config_error", LF_STR("error", err.msg));
    app_flags_free(&flags);
    app_settings_free(&s);
    return 2;
  }
  if (s.run.run_dir[0]) {
    mkdir(s.run.run_dir, 0755);
    char path[CONFIG_STRING_MAX + 32];
    snprintf(path, sizeof path, "%s/config.yaml", s.run.run_dir);
    FILE *f = fopen(path, "w");
    if (f) {
      config_write_yaml(s.bindings, s.n_bindings, f);
      fclose(f);
    }
  }
  void *zmq = zmq_ctx_new();
  int rc = 1;
  learner_t *l = learner_new(&s.run, &s.learner, app_algo_settings(&s), zmq, NULL, &err);
  if (!l) {
    log_event(LOG_ERROR, "learner", "start_failed", LF_STR("error", err.msg));
  } else {
    g_learner = l;
    if (ready_file) {
      char tmp[4096];
      snprintf(tmp, sizeof tmp, "%s.tmp", ready_file);
      FILE *f = fopen(tmp, "w");
      if (!f || fprintf(f, "%s\n%s\n", learner_params_endpoint(l), learner_control_endpoint(l)) < 0 ||
          fclose(f) != 0 || rename(tmp, ready_file) != 0)
        log_event(LOG_ERROR, "learner", "ready_file_failed", LF_STR("path", ready_file));
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    rc = learner_run(l, &err) == 0 ? 0 : 1;
    if (rc) log_event(LOG_ERROR, "learner", "failed", LF_STR("error", err.msg));
    g_learner = NULL;
    learner_destroy(&l);
  }
  zmq_ctx_term(zmq);
  app_flags_free(&flags);
  app_settings_free(&s);
  return rc;
}

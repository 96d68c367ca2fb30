/* ember-actor: one actor as its own process (actor.h), configured by --config FILE, EMBER_ACTOR_*
 * variables and --set actor.key=value; SIGTERM and SIGINT stop it cleanly (the partial batch is
 * handed over and acks are awaited for up to actor.drain_ms). */
#include <cblas.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "actor.h"
#include "http.h"
#include "log.h"

extern char **environ;

static actor_t *volatile running_actor;

static void on_signal(int sig) {
  (void)sig;
  actor_t *a = running_actor;
  if (a) actor_stop(a);
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: ember-actor [--config FILE] [--set actor.key=value ...]\n"
          "Runs one actor: K environments of a task, acting with the learner's latest Params and\n"
          "streaming transitions to the replay server. Keys (section 'actor'):\n");
  for (size_t i = 0; i < actor_config_section.nfields; i++) {
    const config_field *f = &actor_config_section.fields[i];
    fprintf(out, "  actor.%-22s %s (default %s)\n", f->name, f->help, f->default_value);
  }
}

int main(int argc, char **argv) {
  const char *config_path = getenv("EMBER_CONFIG");
  const char **sets = calloc((size_t)argc, sizeof *sets);
  size_t nsets = 0;
  if (!sets) return 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      free(sets);
      return 0;
    } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      config_path = argv[++i];
    } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
      sets[nsets++] = argv[++i];
    } else {
      fprintf(stderr, "ember-actor: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      free(sets);
      return 2;
    }
  }
  const char *level = getenv("EMBER_LOG_LEVEL"), *format = getenv("EMBER_LOG_FORMAT");
  log_level lv;
  log_format lf;
  if (level && log_parse_level(level, &lv) == 0) log_set_level(lv);
  if (format && log_parse_format(format, &lf) == 0) log_set_format(lf);

  actor_config cfg;
  config_binding binding = {&actor_config_section, &cfg};
  ember_err err = {0};
  if (config_load(&binding, 1, config_path && config_path[0] ? config_path : NULL, environ, sets, nsets, &err)) {
    fprintf(stderr, "ember-actor: %s\n", err.msg);
    free(sets);
    return 2;
  }
  free(sets);
  /* The policy forward is a small GEMM per step: threads would cost more than they save, and the
   * env loop is this process's one busy thread. */
  openblas_set_num_threads(1);

  void *ctx = zmq_ctx_new();
  metrics_registry *metrics = metrics_new();
  if (!ctx || !metrics) {
    fprintf(stderr, "ember-actor: out of memory\n");
    return 1;
  }
  int rc = 1;
  http_server *http = NULL;
  actor_t *a = actor_new(&cfg, ctx, metrics, &err);
  if (!a) {
    log_event(LOG_ERROR, "actor", "start_failed", LF_STR("error", err.msg));
    goto out;
  }
  if (cfg.metrics_port >= 0) {
    http = http_server_start(metrics, cfg.metrics_address, (int)cfg.metrics_port, &err);
    if (!http) {
      log_event(LOG_ERROR, "actor", "start_failed", LF_STR("error", err.msg));
      goto out;
    }
    log_event(LOG_INFO, "actor", "metrics", LF_STR("address", cfg.metrics_address),
              LF_I64("port", http_server_port(http)));
  }
  running_actor = a;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  rc = actor_run(a, &err) == 0 ? 0 : 1;
  running_actor = NULL;
out:
  http_server_stop(&http);
  actor_destroy(&a);
  metrics_destroy(&metrics);
  zmq_ctx_term(ctx);
  return rc;
}

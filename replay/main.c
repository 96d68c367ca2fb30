/* ember-replay: the replay server as its own process (tcp:// or ipc://), for multi-process and
 * multi-machine runs. The same server runs as a thread inside `ember train`.
 *
 *   ember-replay [--config FILE] [--set replay.key=value ...] [--ready-file PATH]
 *
 * SIGTERM and SIGINT stop the loop; the server then writes a final snapshot (when snapshot_dir is
 * set) and exits 0. --ready-file writes the bound endpoints (one per line: insert, then sample)
 * once both sockets listen, for scripts and tests that ask for an ephemeral port (tcp://host:*).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "config.h"
#include "log.h"
#include "replay_server.h"

extern char **environ;

static replay_server *volatile g_server;

static void on_signal(int sig) {
  (void)sig;
  if (g_server) replay_server_stop(g_server); /* an atomic store: async-signal-safe */
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: ember-replay [--config FILE] [--set replay.KEY=VALUE ...] [--ready-file PATH]\n"
          "settings (section replay; also EMBER_REPLAY_<KEY> variables):\n");
  for (size_t i = 0; i < replay_config_section.nfields; i++) {
    const config_field *f = &replay_config_section.fields[i];
    fprintf(out, "  %-22s %-22s %s\n", f->name, f->default_value[0] ? f->default_value : "\"\"", f->help);
  }
}

static int write_ready_file(const char *path, const replay_server *s) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "%s\n%s\n", replay_server_insert_endpoint(s), replay_server_sample_endpoint(s));
  if (fclose(f) != 0) return -1;
  return rename(tmp, path);
}

int main(int argc, char **argv) {
  const char *config_path = getenv("EMBER_CONFIG"), *ready_file = NULL;
  const char **sets = calloc((size_t)argc, sizeof *sets);
  size_t nsets = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config_path = argv[++i];
    else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) sets[nsets++] = argv[++i];
    else if (strcmp(argv[i], "--ready-file") == 0 && i + 1 < argc) ready_file = argv[++i];
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      free(sets);
      return 0;
    } else {
      fprintf(stderr, "ember-replay: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      free(sets);
      return 2;
    }
  }
  log_level level;
  log_format format;
  if (getenv("EMBER_LOG_LEVEL") && log_parse_level(getenv("EMBER_LOG_LEVEL"), &level) == 0) log_set_level(level);
  if (getenv("EMBER_LOG_FORMAT") && log_parse_format(getenv("EMBER_LOG_FORMAT"), &format) == 0)
    log_set_format(format);

  replay_config cfg;
  config_binding binding = {&replay_config_section, &cfg};
  ember_err err = {0};
  if (config_load(&binding, 1, config_path, environ, sets, nsets, &err) != 0) {
    log_event(LOG_ERROR, "replay", "config_error", LF_STR("error", err.msg));
    free(sets);
    return 2;
  }
  free(sets);

  void *ctx = zmq_ctx_new();
  metrics_registry *metrics = metrics_new();
  replay_server *server = replay_server_new(&cfg, ctx, metrics, &err);
  if (!server) {
    log_event(LOG_ERROR, "replay", "start_failed", LF_STR("code", ember_strerror(err.code)), LF_STR("error", err.msg));
    metrics_destroy(&metrics);
    zmq_ctx_term(ctx);
    return 1;
  }
  g_server = server;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  if (ready_file && write_ready_file(ready_file, server) != 0)
    log_event(LOG_WARN, "replay", "ready_file_failed", LF_STR("path", ready_file));

  int rc = replay_server_run(server);
  g_server = NULL;
  if (cfg.snapshot_dir[0] && replay_server_snapshot(server, &err) != 0) rc = rc ? rc : err.code;
  replay_server_destroy(&server);
  metrics_destroy(&metrics);
  zmq_ctx_term(ctx);
  return rc == 0 ? 0 : 1;
}

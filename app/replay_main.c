/* ember-replay: the replay server as its own process (tcp:// or ipc://), for multi-process and
 * multi-machine runs. The same server runs as a thread inside `ember train`.
 *
 *   ember-replay [--config FILE] [--set section.key=value ...] [--ready-file PATH]
 *
 * SIGTERM and SIGINT stop the loop; the server then writes a final snapshot (when
 * replay.snapshot_dir is set) and exits 0. --ready-file receives the bound endpoints (insert, then
 * sample) once both sockets listen, for scripts and tests that bind an ephemeral port (tcp://host:*).
 */
#include <stdio.h>

#include "log.h"
#include "program.h"
#include "replay_server.h"

static void stop(void *server) { replay_server_stop(server); /* an atomic store: async-signal-safe */ }

static void usage(FILE *out) {
  fprintf(out, "usage: ember-replay [--config FILE] [--set section.key=value ...] [--ready-file PATH]\n"
               "Runs the replay server: TransitionBatches in on replay.insert_endpoint, SampleBatches out on\n"
               "replay.sample_endpoint. `ember config` lists every setting (section replay, metrics, security).\n");
}

int main(int argc, char **argv) {
  program p;
  int exit_code = program_init(&p, "replay", argc, argv, usage);
  if (exit_code >= 0) return exit_code;
  ember_err err = {0};
  replay_config *cfg = &p.settings.replay;
  replay_server *server = replay_server_new(cfg, p.zmq, p.metrics, &err);
  if (!server) {
    log_event(LOG_ERROR, "replay", "start_failed", LF_STR("code", ember_strerror(err.code)), LF_STR("error", err.msg));
    program_fini(&p);
    return 1;
  }
  int rc = program_serve_metrics(&p, p.settings.metrics.replay_port);
  if (rc == 0) {
    program_on_stop(stop, server);
    const char *lines[] = {replay_server_insert_endpoint(server), replay_server_sample_endpoint(server)};
    program_write_ready_file(&p, lines, 2);
    rc = replay_server_run(server);
    program_on_stop(NULL, NULL);
    if (cfg->snapshot_dir[0] && replay_server_snapshot(server, &err) != 0) {
      log_event(LOG_ERROR, "replay", "final_snapshot_failed", LF_STR("error", err.msg));
      rc = rc ? rc : err.code;
    }
  }
  replay_server_destroy(&server);
  program_fini(&p);
  return rc == 0 ? 0 : 1;
}

/* program.h: what ember's standalone programs share (ember-replay, ember-learner, ember-actor):
 * the flags and every settings section (so one YAML file configures all three), logging from the
 * environment, CurveZMQ security, the Prometheus endpoint, stop signals and the ready file.
 *
 * Life of a program:
 *   program p;
 *   int exit_code = program_init(&p, "ember-replay", argc, argv, usage);
 *   if (exit_code >= 0) return exit_code;          (--help, bad flags or settings, no keys)
 *   ... make the component with p.zmq and p.metrics ...
 *   program_serve_metrics(&p, p.settings.metrics.replay_port);
 *   program_on_stop(stop_fn, component);           (SIGTERM / SIGINT call stop_fn(component))
 *   program_write_ready_file(&p, lines, n);
 *   ... run ...
 *   program_fini(&p);
 *
 * Ownership: program owns the zmq context, the metrics registry, the HTTP server and the ZAP handler;
 * program_fini frees them (the caller destroys its component first). Start-up only: not thread-safe.
 */
#ifndef EMBER_APP_PROGRAM_H
#define EMBER_APP_PROGRAM_H

#include <stdint.h>
#include <stdio.h>

#include "auth.h"
#include "http.h"
#include "metrics.h"
#include "settings.h"

typedef struct {
  const char *name;
  app_settings settings;
  app_flags flags;
  const char *ready_file;
  void *zmq;
  metrics_registry *metrics;
  http_server *http;
  auth_zap *zap;
} program;

/* Returns -1 when the program should go on, else the exit code to return: 0 after --help, 2 for bad
 * flags or settings (the message names what was wrong), 1 when keys or sockets cannot be set up. */
int program_init(program *p, const char *name, int argc, char **argv, void (*usage)(FILE *out));

/* Serves p->metrics on settings.metrics.address:port (-1 = not at all). 0 or an error logged. */
int program_serve_metrics(program *p, int64_t port);

/* SIGTERM and SIGINT call stop(arg); stop must be async-signal-safe (an atomic store). */
void program_on_stop(void (*stop)(void *arg), void *arg);

/* Writes lines (one per line) to --ready-file, atomically, when one was given. */
int program_write_ready_file(const program *p, const char *const *lines, size_t n);

void program_fini(program *p);

#endif

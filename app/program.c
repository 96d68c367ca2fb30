#include "program.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "checkpoint.h"
#include "log.h"
#include "net.h"

extern char **environ;

static void (*stop_fn)(void *);
static void *volatile stop_arg;

static void on_signal(int sig) {
  (void)sig;
  if (stop_fn && stop_arg) stop_fn(stop_arg);
}

void program_on_stop(void (*stop)(void *arg), void *arg) {
  stop_fn = stop;
  stop_arg = arg;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = arg ? on_signal : SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
}

/* Loads the security section: the process-wide CURVE keys for every tcp/ipc socket, and the ZAP
 * handler that admits only the listed clients. */
static int setup_security(program *p, ember_err *err) {
  const security_config *sc = &p->settings.security;
  /* registered whether or not Curve is on, so that a dashboard's refusal panel reads 0 rather than
   * no data on plain tcp (the ZAP handler counts in the same series when it runs) */
  metrics_counter(p->metrics, "auth_refused_total", NULL, "CURVE handshakes refused (key not allowed)");
  metrics_counter(p->metrics, "auth_admitted_total", NULL, "CURVE handshakes admitted");
  if (!sc->key_file[0]) {
    if (sc->server_key_file[0] || sc->allow_dir[0])
      return ember_fail(err, EMBER_EINVAL, "security.server_key_file and security.allow_dir need security.key_file");
    return 0;
  }
  net_security keys;
  memset(&keys, 0, sizeof keys);
  int rc = auth_load_keys(sc->key_file, keys.public_key, keys.secret_key, err);
  if (rc) return ember_err_prefix(err, "security.key_file: ");
  if (sc->server_key_file[0] && (rc = auth_load_keys(sc->server_key_file, keys.server_key, NULL, err)) != 0)
    return ember_err_prefix(err, "security.server_key_file: ");
  net_set_default_security(&keys);
  if (sc->allow_dir[0]) {
    p->zap = auth_zap_start(p->zmq, sc->allow_dir, p->metrics, err);
    if (!p->zap) return ember_err_prefix(err, "security.allow_dir: ");
    log_event(LOG_INFO, p->name, "curve", LF_STR("public_key", keys.public_key),
              LF_I64("clients_allowed", auth_zap_allowed_count(p->zap)));
  } else {
    log_event(LOG_INFO, p->name, "curve", LF_STR("public_key", keys.public_key),
              LF_STR("note", "no security.allow_dir: a server here admits any client that knows its public key"));
  }
  return 0;
}

int program_init(program *p, const char *name, int argc, char **argv, void (*usage)(FILE *out)) {
  memset(p, 0, sizeof *p);
  p->name = name;
  ember_err err = {0};
  for (int i = 1; i + 1 < argc; i++) /* our own flag; the shared parser must not see it */
    if (strcmp(argv[i], "--ready-file") == 0) {
      p->ready_file = argv[i + 1];
      for (int j = i; j + 2 <= argc; j++) argv[j] = argv[j + 2];
      argc -= 2;
      break;
    }
  if (app_settings_init(&p->settings, &err) != 0) {
    fprintf(stderr, "%s: %s\n", name, err.msg);
    return 2;
  }
  bool help = false;
  if (app_flags_parse(argc, argv, 1, &p->flags, &help, &err) != 0 || help) {
    if (!help) fprintf(stderr, "%s: %s\n", name, err.msg);
    usage(help ? stdout : stderr);
    program_fini(p);
    return help ? 0 : 2;
  }
  app_setup_logging(LOG_INFO);
  if (app_settings_load(&p->settings, &p->flags, environ, &err) != 0) {
    log_event(LOG_ERROR, name, "config_error", LF_STR("error", err.msg));
    program_fini(p);
    return 2;
  }
  p->zmq = zmq_ctx_new();
  p->metrics = metrics_new();
  if (!p->zmq || !p->metrics) {
    log_event(LOG_ERROR, name, "start_failed", LF_STR("error", "out of memory"));
    program_fini(p);
    return 1;
  }
  if (setup_security(p, &err) != 0) {
    log_event(LOG_ERROR, name, "security_error", LF_STR("error", err.msg));
    program_fini(p);
    return err.code == EMBER_ENOENT || err.code == EMBER_EINVAL ? 2 : 1;
  }
  return -1;
}

int program_serve_metrics(program *p, int64_t port) {
  if (port < 0) return 0;
  ember_err err = {0};
  p->http = http_server_start(p->metrics, p->settings.metrics.address, (int)port, &err);
  if (!p->http) {
    log_event(LOG_ERROR, p->name, "metrics_failed", LF_STR("error", err.msg));
    return err.code;
  }
  log_event(LOG_INFO, p->name, "metrics", LF_STR("address", p->settings.metrics.address),
            LF_I64("port", http_server_port(p->http)));
  return 0;
}

int program_write_ready_file(const program *p, const char *const *lines, size_t n) {
  if (!p->ready_file) return 0;
  char text[4096];
  size_t len = 0;
  for (size_t i = 0; i < n && len < sizeof text; i++) {
    int w = snprintf(text + len, sizeof text - len, "%s\n", lines[i]);
    if (w > 0) len += (size_t)w;
  }
  if (len > sizeof text) len = sizeof text;
  ember_err err = {0};
  int rc = atomic_write_file(p->ready_file, text, len, &err);
  if (rc) log_event(LOG_ERROR, p->name, "ready_file_failed", LF_STR("error", err.msg));
  return rc;
}

void program_fini(program *p) {
  program_on_stop(NULL, NULL);
  net_set_default_security(NULL);
  http_server_stop(&p->http);
  auth_zap_stop(&p->zap);
  if (p->zmq) zmq_ctx_term(p->zmq);
  p->zmq = NULL;
  metrics_destroy(&p->metrics);
  app_flags_free(&p->flags);
  app_settings_free(&p->settings);
}

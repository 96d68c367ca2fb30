#include "http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

struct http_server {
  struct MHD_Daemon *daemon;
  metrics_registry *metrics;
  int port;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type, char *body,
                             size_t len, enum MHD_ResponseMemoryMode mode) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
  if (!resp) {
    if (mode == MHD_RESPMEM_MUST_FREE) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(resp, "Content-Type", type);
  enum MHD_Result r = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return r;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_size, void **req_cls) {
  (void)version, (void)upload_data, (void)upload_size, (void)req_cls;
  http_server *s = cls;
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "only GET\n", 9, MHD_RESPMEM_PERSISTENT);
  if (strcmp(url, "/metrics") == 0) {
    char *text;
    size_t len;
    if (metrics_render(s->metrics, &text, &len) != 0)
      return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
    return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len, MHD_RESPMEM_MUST_FREE);
  }
  if (strcmp(url, "/healthz") == 0) return reply(conn, MHD_HTTP_OK, "text/plain", "ok\n", 3, MHD_RESPMEM_PERSISTENT);
  return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", "not found: try /metrics\n", 24, MHD_RESPMEM_PERSISTENT);
}

http_server *http_server_start(metrics_registry *metrics, const char *bind_address, int port, ember_err *err) {
  if (port < 0 || port > 65535) {
    ember_fail(err, EMBER_EINVAL, "metrics port %d is out of range [0, 65535]", port);
    return NULL;
  }
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  const char *host = bind_address && *bind_address ? bind_address : "0.0.0.0";
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    ember_fail(err, EMBER_EINVAL, "metrics bind address '%s' is not an IPv4 address", host);
    return NULL;
  }
  http_server *s = calloc(1, sizeof *s);
  if (!s) {
    ember_fail(err, EMBER_ENOMEM, "out of memory");
    return NULL;
  }
  s->metrics = metrics;
  s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL, handle, s,
                               MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_TIMEOUT,
                               (unsigned)10, MHD_OPTION_END);
  if (!s->daemon) {
    free(s);
    ember_fail(err, EMBER_EIO, "cannot serve metrics on %s:%d (address in use, or not allowed)", host, port);
    return NULL;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : port;
  return s;
}

int http_server_port(const http_server *s) { return s ? s->port : 0; }

void http_server_stop(http_server **p) {
  if (!p || !*p) return;
  MHD_stop_daemon((*p)->daemon);
  free(*p);
  *p = NULL;
}

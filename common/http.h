/* http.h: the HTTP endpoint every ember program serves (libmicrohttpd): Prometheus metrics at
 * /metrics, liveness at /healthz.
 *
 * The server runs on its own libmicrohttpd thread and reads the registry through metrics_render,
 * which is safe alongside metric updates from any thread. The caller owns the registry and must
 * keep it alive until http_server_stop returns. http_server_start returns an object the caller
 * owns; http_server_stop(&p) stops the thread, frees it, and sets p to NULL.
 */
#ifndef EMBER_HTTP_H
#define EMBER_HTTP_H

#include "err.h"
#include "metrics.h"

typedef struct http_server http_server;

/* Listens on bind_address ("0.0.0.0", "127.0.0.1") and port (0 = any free port: ask
 * http_server_port). An address or port that cannot be bound is EMBER_EIO/EMBER_EINVAL naming it. */
http_server *http_server_start(metrics_registry *metrics, const char *bind_address, int port, ember_err *err);
int http_server_port(const http_server *server);
void http_server_stop(http_server **server_p);

#endif

/* auth.h: CurveZMQ across machines: key files, and a ZAP handler that admits only listed clients.
 *
 * A key pair file (`NAME.key`, mode 0600) holds both Z85 keys; a public key file (`NAME.pub`)
 * only the public one. Both are text:
 *     # ember CurveZMQ ...
 *     public-key = "<40 Z85 characters>"
 *     secret-key = "<40 Z85 characters>"        (.key only)
 * A server's allow list is a directory of .pub files or one file of such lines.
 *
 * auth_zap_start runs the ZAP handler (ZeroMQ RFC 27) of one zmq context on its own thread: every
 * CURVE handshake on that context's server sockets is admitted only when the client's public key
 * is listed, and each refusal is logged and counted in `auth_refused_total`. The caller owns the
 * returned handler and stops it with auth_zap_stop(&p) before terminating the context.
 *
 * auth_watch observes a client socket for refused handshakes (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH),
 * so an actor with the wrong key learns it was refused instead of waiting forever.
 */
#ifndef EMBER_AUTH_H
#define EMBER_AUTH_H

#include "err.h"
#include "metrics.h"

#define AUTH_KEY_LEN 40 /* Z85 characters of a CurveZMQ key */

/* Writes DIR/NAME.key (0600) and DIR/NAME.pub with a fresh key pair. Refuses to overwrite. */
int auth_keygen(const char *dir, const char *name, ember_err *err);

/* Reads a key file; secret_out may be NULL (a .pub file has none). Buffers hold AUTH_KEY_LEN + 1. */
int auth_load_keys(const char *path, char *public_out, char *secret_out, ember_err *err);

typedef struct auth_zap auth_zap;
/* allow_path: a directory of .pub files or a file of public-key lines. */
auth_zap *auth_zap_start(void *zmq_context, const char *allow_path, metrics_registry *metrics, ember_err *err);
int auth_zap_allowed_count(const auth_zap *zap);
void auth_zap_stop(auth_zap **zap_p);

typedef struct auth_watch auth_watch;
/* Starts watching sock (a client socket, before or after connect) for authentication failures. */
auth_watch *auth_watch_new(void *zmq_context, void *sock, ember_err *err);
/* Number of refused handshakes seen so far (drains pending events without blocking). */
int auth_watch_refusals(auth_watch *w);
void auth_watch_destroy(auth_watch **w_p);

#endif

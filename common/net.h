/* net.h: ZeroMQ sockets that carry ember's protobuf Envelope (proto/ember.proto).
 *
 * Every message on an ember socket is one Envelope frame, preceded by one routing-id frame on
 * ROUTER sockets. net_send stamps the schema version; net_recv refuses bytes that are not a valid
 * Envelope (EMBER_EDECODE), an Envelope with a missing or newer schema version (EMBER_ESCHEMA), one
 * with no body (EMBER_EDECODE), or one over the size limit (EMBER_ETOOBIG), with a message naming
 * what was wrong. None of these crash, and the socket stays usable.
 *
 * Ownership: a received Envelope is owned by the caller and freed with net_envelope_free. Sockets
 * are plain libzmq sockets (void *): close them with zmq_close. Not thread-safe per socket (ZeroMQ's
 * rule); different sockets may be used from different threads.
 */
#ifndef EMBER_NET_H
#define EMBER_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ember.pb-c.h"
#include "err.h"

#define EMBER_SCHEMA_VERSION 1u
#define NET_DEFAULT_MAX_MESSAGE_BYTES (256u << 20)

typedef struct {
  int64_t max_message_bytes; /* ZMQ_MAXMSGSIZE on tcp/ipc, and the decode limit everywhere; 0 = default */
  int send_hwm, recv_hwm;    /* 0 = libzmq's default (1000 messages) */
  int linger_ms;             /* -1 = libzmq's default; ember's default is 0 (never hang on exit) */
  int send_timeout_ms, recv_timeout_ms; /* 0 = no timeout (-1 in libzmq terms) */
  const char *subscribe;     /* SUB sockets: prefix to subscribe to ("" = everything) */
  bool immediate;            /* ZMQ_IMMEDIATE: queue nothing for peers that are not connected */
  /* CurveZMQ: 40-character Z85 keys. A server sets curve_secret_key (and curve_public_key); a
   * client sets all three, curve_server_key being the server's public key. NULL = plain. */
  const char *curve_public_key, *curve_secret_key, *curve_server_key;
  bool curve_server;
} net_socket_opts;

/* Process-wide CurveZMQ defaults. A program that runs across machines calls this once at start-up,
 * before making sockets; from then on every tcp:// and ipc:// socket that net_socket makes without
 * keys of its own uses CURVE: a socket that binds is a CURVE server with this process's key pair,
 * a socket that connects is a CURVE client that expects server_key. inproc:// sockets stay plain
 * (they never leave the process). Keys are copied. NULL turns the defaults off. Not thread-safe:
 * call it before any other thread makes sockets. */
typedef struct {
  char public_key[41], secret_key[41]; /* this process's key pair, Z85 */
  char server_key[41];                 /* the servers' public key; empty on a process that only binds */
} net_security;
void net_set_default_security(const net_security *security);
/* Whether net_socket applies those defaults (to tcp:// and ipc:// endpoints). */
bool net_default_security_enabled(void);

/* A ROUTER peer's routing id (the first frame). */
typedef struct {
  unsigned char id[255];
  size_t len;
} net_route;

/* Creates a socket of `type` (ZMQ_PUSH, ZMQ_ROUTER, ...), applies opts (NULL = defaults), then binds
 * (bind = true) or connects to endpoint. An endpoint libzmq rejects is EMBER_EINVAL naming it.
 * Returns the socket or NULL with err set. */
void *net_socket(void *zmq_context, int type, const char *endpoint, bool bind, const net_socket_opts *opts,
                 ember_err *err);

/* Sends env (schema_version is set here). route != NULL sends the routing-id frame first (ROUTER).
 * flags: 0 or ZMQ_DONTWAIT (then EMBER_EAGAIN when the peer's queue is full). */
int net_send(void *sock, Ember__Envelope *env, const net_route *route, int flags, ember_err *err);

/* Convenience: wraps `body` (a pointer to the message named by body_case) in an Envelope and sends. */
int net_send_body(void *sock, Ember__Envelope__BodyCase body_case, void *body, const net_route *route, int flags,
                  ember_err *err);

/* Receives one message. On success *out is owned by the caller. route != NULL reads the routing-id
 * frame first (ROUTER). flags: 0 or ZMQ_DONTWAIT (EMBER_EAGAIN when nothing is waiting). A message
 * that fails to decode is consumed (all its frames) and reported, so the next call sees the next one. */
int net_recv(void *sock, Ember__Envelope **out, net_route *route, int flags, ember_err *err);

/* Decodes bytes into an owned Envelope with the same checks as net_recv. max_bytes 0 = default. */
int net_decode(const void *data, size_t len, size_t max_bytes, Ember__Envelope **out, ember_err *err);

/* As net_decode, but protobuf-c allocates through `allocator` (e.g. an arena a server resets per
 * message). The Envelope then belongs to that allocator: free it through it, not net_envelope_free.
 * A message with no body is EMBER_EDECODE, and one of another schema version EMBER_ESCHEMA, both
 * with *out still set (the caller frees it): a caller can tell "no body" (*out != NULL) from "not
 * protobuf" (*out == NULL), and can name the batch or request it refuses for its version (its
 * actor_id/sequence or request_id, read as this build understands them). */
int net_decode_with(const void *data, size_t len, size_t max_bytes, ProtobufCAllocator *allocator,
                    Ember__Envelope **out, ember_err *err);

/* Encodes env into a malloc'd buffer (caller frees); stamps the schema version. */
int net_encode(Ember__Envelope *env, uint8_t **out, size_t *len, ember_err *err);

void net_envelope_free(Ember__Envelope *env);

/* Name of an Envelope body ("transition_batch"), for logs and metric labels. */
const char *net_body_name(Ember__Envelope__BodyCase body_case);

/* Checks a TransitionBatch's internal consistency: count > 0, every array the length count and the
 * dims imply, every float finite. When expect_obs_dim/expect_act_dim are non-zero they must match.
 * Errors name the field and both lengths (EMBER_ESHAPE) or the first non-finite index (EMBER_ENONFINITE). */
int net_check_transitions(const Ember__TransitionBatch *b, uint32_t expect_obs_dim, uint32_t expect_act_dim,
                          ember_err *err);

#endif

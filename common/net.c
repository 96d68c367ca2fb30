#include "net.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static size_t effective_limit(size_t max_bytes) { return max_bytes ? max_bytes : NET_DEFAULT_MAX_MESSAGE_BYTES; }

static int set_int(void *sock, int option, int value, const char *name, ember_err *err) {
  if (zmq_setsockopt(sock, option, &value, sizeof value) != 0)
    return ember_fail(err, EMBER_EIO, "zmq_setsockopt(%s=%d): %s", name, value, zmq_strerror(zmq_errno()));
  return 0;
}

static int apply_curve(void *sock, const net_socket_opts *o, ember_err *err) {
  if (!o->curve_secret_key) return 0;
  if (strlen(o->curve_secret_key) != 40 || (o->curve_public_key && strlen(o->curve_public_key) != 40) ||
      (o->curve_server_key && strlen(o->curve_server_key) != 40))
    return ember_fail(err, EMBER_EINVAL, "CurveZMQ keys must be 40-character Z85 strings");
  if (o->curve_server) {
    if (set_int(sock, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER", err)) return err ? err->code : EMBER_EIO;
  } else if (!o->curve_server_key || !o->curve_public_key) {
    return ember_fail(err, EMBER_EINVAL, "a CurveZMQ client needs its public key, secret key and the server's key");
  }
  if (zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, o->curve_secret_key, 40) != 0 ||
      (o->curve_public_key && zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, o->curve_public_key, 40) != 0) ||
      (o->curve_server_key && zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, o->curve_server_key, 40) != 0))
    return ember_fail(err, EMBER_EINVAL, "CurveZMQ key rejected by libzmq: %s (is libzmq built with CURVE?)",
                      zmq_strerror(zmq_errno()));
  return 0;
}

static net_security default_security;
static bool default_security_on;

void net_set_default_security(const net_security *security) {
  default_security_on = security != NULL;
  if (security) default_security = *security;
}

bool net_default_security_enabled(void) { return default_security_on; }

void *net_socket(void *zmq_context, int type, const char *endpoint, bool bind, const net_socket_opts *opts,
                 ember_err *err) {
  net_socket_opts defaults = {0};
  const net_socket_opts *o = opts ? opts : &defaults;
  net_socket_opts secured;
  if (default_security_on && !o->curve_secret_key && endpoint && strncmp(endpoint, "inproc://", 9) != 0) {
    secured = *o;
    secured.curve_public_key = default_security.public_key;
    secured.curve_secret_key = default_security.secret_key;
    secured.curve_server = bind;
    secured.curve_server_key = bind ? NULL : default_security.server_key;
    if (!bind && !default_security.server_key[0]) {
      ember_fail(err, EMBER_EINVAL, "cannot connect to '%s' with CurveZMQ: no server public key configured", endpoint);
      return NULL;
    }
    o = &secured;
  }
  if (!endpoint || !*endpoint) {
    ember_fail(err, EMBER_EINVAL, "empty endpoint");
    return NULL;
  }
  void *sock = zmq_socket(zmq_context, type);
  if (!sock) {
    ember_fail(err, EMBER_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    return NULL;
  }
  int64_t max_bytes = o->max_message_bytes > 0 ? o->max_message_bytes : (int64_t)NET_DEFAULT_MAX_MESSAGE_BYTES;
  int linger = o->linger_ms >= 0 ? o->linger_ms : 0;
  int rc = 0;
  if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_bytes, sizeof max_bytes) != 0)
    rc = ember_fail(err, EMBER_EIO, "zmq_setsockopt(ZMQ_MAXMSGSIZE): %s", zmq_strerror(zmq_errno()));
  if (!rc) rc = set_int(sock, ZMQ_LINGER, linger, "ZMQ_LINGER", err);
  if (!rc && o->send_hwm > 0) rc = set_int(sock, ZMQ_SNDHWM, o->send_hwm, "ZMQ_SNDHWM", err);
  if (!rc && o->recv_hwm > 0) rc = set_int(sock, ZMQ_RCVHWM, o->recv_hwm, "ZMQ_RCVHWM", err);
  if (!rc && o->send_timeout_ms > 0) rc = set_int(sock, ZMQ_SNDTIMEO, o->send_timeout_ms, "ZMQ_SNDTIMEO", err);
  if (!rc && o->recv_timeout_ms > 0) rc = set_int(sock, ZMQ_RCVTIMEO, o->recv_timeout_ms, "ZMQ_RCVTIMEO", err);
  if (!rc && o->immediate) rc = set_int(sock, ZMQ_IMMEDIATE, 1, "ZMQ_IMMEDIATE", err);
  if (!rc && type == ZMQ_SUB) {
    const char *prefix = o->subscribe ? o->subscribe : "";
    if (zmq_setsockopt(sock, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) != 0)
      rc = ember_fail(err, EMBER_EIO, "zmq_setsockopt(ZMQ_SUBSCRIBE): %s", zmq_strerror(zmq_errno()));
  }
  if (!rc) rc = apply_curve(sock, o, err);
  if (!rc) {
    int r = bind ? zmq_bind(sock, endpoint) : zmq_connect(sock, endpoint);
    if (r != 0)
      rc = ember_fail(err, EMBER_EINVAL, "cannot %s endpoint '%s': %s", bind ? "bind" : "connect", endpoint,
                      zmq_strerror(zmq_errno()));
  }
  if (rc) {
    zmq_close(sock);
    return NULL;
  }
  return sock;
}

int net_encode(Ember__Envelope *env, uint8_t **out, size_t *len, ember_err *err) {
  env->schema_version = EMBER_SCHEMA_VERSION;
  size_t n = ember__envelope__get_packed_size(env);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return ember_fail(err, EMBER_ENOMEM, "out of memory encoding a %zu-byte message", n);
  ember__envelope__pack(env, buf);
  *out = buf;
  *len = n;
  return 0;
}

static void free_msg_data(void *data, void *hint) {
  (void)hint;
  free(data);
}

static int send_route(void *sock, const net_route *route, int flags, ember_err *err) {
  if (!route) return 0;
  if (zmq_send(sock, route->id, route->len, flags | ZMQ_SNDMORE) < 0) {
    int e = zmq_errno();
    if (e == EAGAIN) return ember_fail(err, EMBER_EAGAIN, "peer queue full");
    if (e == EHOSTUNREACH) return ember_fail(err, EMBER_ENOENT, "peer is gone (routing id unknown)");
    return ember_fail(err, EMBER_EIO, "zmq_send (routing id): %s", zmq_strerror(e));
  }
  return 0;
}

int net_send(void *sock, Ember__Envelope *env, const net_route *route, int flags, ember_err *err) {
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc = net_encode(env, &buf, &len, err);
  if (rc) return rc;
  rc = send_route(sock, route, flags, err);
  if (rc) {
    free(buf);
    return rc;
  }
  zmq_msg_t msg;
  zmq_msg_init_data(&msg, buf, len, free_msg_data, NULL); /* zmq owns buf from here */
  if (zmq_msg_send(&msg, sock, flags) < 0) {
    int e = zmq_errno();
    zmq_msg_close(&msg);
    if (e == EAGAIN) return ember_fail(err, EMBER_EAGAIN, "peer queue full");
    if (e == EHOSTUNREACH) return ember_fail(err, EMBER_ENOENT, "peer is gone (routing id unknown)");
    return ember_fail(err, EMBER_EIO, "zmq_msg_send: %s", zmq_strerror(e));
  }
  return 0;
}

int net_send_body(void *sock, Ember__Envelope__BodyCase body_case, void *body, const net_route *route, int flags,
                  ember_err *err) {
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = body_case;
  switch (body_case) {
    case EMBER__ENVELOPE__BODY_TRANSITION_BATCH: env.transition_batch = body; break;
    case EMBER__ENVELOPE__BODY_INSERT_ACK: env.insert_ack = body; break;
    case EMBER__ENVELOPE__BODY_PARAMS: env.params = body; break;
    case EMBER__ENVELOPE__BODY_PARAMS_REQUEST: env.params_request = body; break;
    case EMBER__ENVELOPE__BODY_SAMPLE_REQUEST: env.sample_request = body; break;
    case EMBER__ENVELOPE__BODY_SAMPLE_BATCH: env.sample_batch = body; break;
    case EMBER__ENVELOPE__BODY_PRIORITY_UPDATE: env.priority_update = body; break;
    case EMBER__ENVELOPE__BODY_HELLO: env.hello = body; break;
    case EMBER__ENVELOPE__BODY_HEARTBEAT: env.heartbeat = body; break;
    case EMBER__ENVELOPE__BODY_STATS_REQUEST: env.stats_request = body; break;
    case EMBER__ENVELOPE__BODY_STATS: env.stats = body; break;
    case EMBER__ENVELOPE__BODY_EPISODE: env.episode = body; break;
    case EMBER__ENVELOPE__BODY_ERROR: env.error = body; break;
    case EMBER__ENVELOPE__BODY_EVALUATION: env.evaluation = body; break;
    default: return ember_fail(err, EMBER_EINVAL, "net_send_body: unknown body case %d", (int)body_case);
  }
  return net_send(sock, &env, route, flags, err);
}

int net_decode_with(const void *data, size_t len, size_t max_bytes, ProtobufCAllocator *allocator,
                    Ember__Envelope **out, ember_err *err) {
  *out = NULL;
  size_t limit = effective_limit(max_bytes);
  if (len > limit) return ember_fail(err, EMBER_ETOOBIG, "message of %zu bytes is over the %zu-byte limit", len, limit);
  Ember__Envelope *env = ember__envelope__unpack(allocator, len, data);
  if (!env) return ember_fail(err, EMBER_EDECODE, "%zu bytes are not a valid ember Envelope (protobuf decode failed)", len);
  if (env->schema_version == 0 || env->schema_version > EMBER_SCHEMA_VERSION) {
    unsigned v = env->schema_version;
    *out = env; /* the caller may still read who sent it, to name what it refuses */
    if (v == 0) return ember_fail(err, EMBER_ESCHEMA, "message carries no schema version");
    return ember_fail(err, EMBER_ESCHEMA, "message has schema version %u, newer than this build's %u", v,
                      EMBER_SCHEMA_VERSION);
  }
  *out = env;
  if (env->body_case == EMBER__ENVELOPE__BODY__NOT_SET)
    return ember_fail(err, EMBER_EDECODE, "message has no body (empty Envelope, or a body type this build does not know)");
  return 0;
}

int net_decode(const void *data, size_t len, size_t max_bytes, Ember__Envelope **out, ember_err *err) {
  int rc = net_decode_with(data, len, max_bytes, NULL, out, err);
  if (rc && *out) {
    ember__envelope__free_unpacked(*out, NULL);
    *out = NULL;
  }
  return rc;
}

/* Discards the remaining frames of a multi-part message so the next receive starts clean. */
static void drain_frames(void *sock) {
  int more = 1;
  size_t sz = sizeof more;
  while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, sock, 0);
    zmq_msg_close(&m);
  }
}

static int recv_error(int e, ember_err *err) {
  if (e == EAGAIN) return ember_fail(err, EMBER_EAGAIN, "no message waiting");
  if (e == ETERM) return ember_fail(err, EMBER_ESTATE, "context terminated");
  if (e == EINTR) return ember_fail(err, EMBER_EAGAIN, "interrupted");
  return ember_fail(err, EMBER_EIO, "zmq_msg_recv: %s", zmq_strerror(e));
}

int net_recv(void *sock, Ember__Envelope **out, net_route *route, int flags, ember_err *err) {
  *out = NULL;
  zmq_msg_t msg;
  if (route) {
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, sock, flags) < 0) {
      int e = zmq_errno();
      zmq_msg_close(&msg);
      return recv_error(e, err);
    }
    size_t n = zmq_msg_size(&msg);
    int more = zmq_msg_more(&msg);
    if (n > sizeof route->id || !more) {
      zmq_msg_close(&msg);
      drain_frames(sock);
      return ember_fail(err, EMBER_EDECODE, "malformed routed message (routing id of %zu bytes, %s)", n,
                        more ? "more frames" : "no payload frame");
    }
    memcpy(route->id, zmq_msg_data(&msg), n);
    route->len = n;
    zmq_msg_close(&msg);
    flags &= ~ZMQ_DONTWAIT; /* the payload frame of a started message is already here */
  }
  zmq_msg_init(&msg);
  if (zmq_msg_recv(&msg, sock, flags) < 0) {
    int e = zmq_errno();
    zmq_msg_close(&msg);
    return recv_error(e, err);
  }
  int extra = zmq_msg_more(&msg);
  int rc;
  if (extra) {
    drain_frames(sock);
    rc = ember_fail(err, EMBER_EDECODE, "message has more than one payload frame");
  } else {
    rc = net_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), 0, out, err);
  }
  zmq_msg_close(&msg);
  return rc;
}

void net_envelope_free(Ember__Envelope *env) {
  if (env) ember__envelope__free_unpacked(env, NULL);
}

const char *net_body_name(Ember__Envelope__BodyCase c) {
  switch (c) {
    case EMBER__ENVELOPE__BODY_TRANSITION_BATCH: return "transition_batch";
    case EMBER__ENVELOPE__BODY_INSERT_ACK: return "insert_ack";
    case EMBER__ENVELOPE__BODY_PARAMS: return "params";
    case EMBER__ENVELOPE__BODY_PARAMS_REQUEST: return "params_request";
    case EMBER__ENVELOPE__BODY_SAMPLE_REQUEST: return "sample_request";
    case EMBER__ENVELOPE__BODY_SAMPLE_BATCH: return "sample_batch";
    case EMBER__ENVELOPE__BODY_PRIORITY_UPDATE: return "priority_update";
    case EMBER__ENVELOPE__BODY_HELLO: return "hello";
    case EMBER__ENVELOPE__BODY_HEARTBEAT: return "heartbeat";
    case EMBER__ENVELOPE__BODY_STATS_REQUEST: return "stats_request";
    case EMBER__ENVELOPE__BODY_STATS: return "stats";
    case EMBER__ENVELOPE__BODY_EPISODE: return "episode";
    case EMBER__ENVELOPE__BODY_ERROR: return "error";
    case EMBER__ENVELOPE__BODY_EVALUATION: return "evaluation";
    default: return "none";
  }
}

static int check_len(const char *field, size_t have, size_t want, ember_err *err) {
  if (have != want)
    return ember_fail(err, EMBER_ESHAPE, "TransitionBatch.%s has %zu values, expected %zu", field, have, want);
  return 0;
}

/* Whether any of v[0..n) is NaN or Inf: all exponent bits set. Branch-free over the whole array so
 * the compiler vectorises it (this runs on every transition the replay server receives); the slow
 * loop below runs only to name the culprit. */
static bool any_nonfinite(const float *v, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, v + i, sizeof bits);
    bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad != 0;
}

static int check_finite(const char *field, const float *v, size_t n, size_t row_len, ember_err *err) {
  if (!any_nonfinite(v, n)) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i]))
      return ember_fail(err, EMBER_ENONFINITE, "TransitionBatch.%s[%zu] (transition %zu) is %s", field, i,
                        i / (row_len ? row_len : 1), isnan(v[i]) ? "NaN" : "Inf");
  return 0;
}

int net_check_transitions(const Ember__TransitionBatch *b, uint32_t expect_obs_dim, uint32_t expect_act_dim,
                          ember_err *err) {
  if (b->count == 0) return ember_fail(err, EMBER_ESHAPE, "TransitionBatch has count 0");
  if (b->obs_dim == 0 || b->act_dim == 0)
    return ember_fail(err, EMBER_ESHAPE, "TransitionBatch has obs_dim %u, act_dim %u (both must be > 0)", b->obs_dim,
                      b->act_dim);
  if (expect_obs_dim && b->obs_dim != expect_obs_dim)
    return ember_fail(err, EMBER_ESHAPE, "TransitionBatch obs_dim %u does not match the expected %u", b->obs_dim,
                      expect_obs_dim);
  if (expect_act_dim && b->act_dim != expect_act_dim)
    return ember_fail(err, EMBER_ESHAPE, "TransitionBatch act_dim %u does not match the expected %u", b->act_dim,
                      expect_act_dim);
  size_t n = b->count, od = b->obs_dim, ad = b->act_dim;
  int rc;
  if ((rc = check_len("obs", b->n_obs, n * od, err)) || (rc = check_len("action", b->n_action, n * ad, err)) ||
      (rc = check_len("reward", b->n_reward, n, err)) || (rc = check_len("next_obs", b->n_next_obs, n * od, err)) ||
      (rc = check_len("terminated", b->n_terminated, n, err)) ||
      (rc = check_len("truncated", b->n_truncated, n, err)))
    return rc;
  if (b->n_behaviour_log_prob != 0 && (rc = check_len("behaviour_log_prob", b->n_behaviour_log_prob, n, err)))
    return rc;
  if ((rc = check_finite("obs", b->obs, b->n_obs, od, err)) ||
      (rc = check_finite("action", b->action, b->n_action, ad, err)) ||
      (rc = check_finite("reward", b->reward, b->n_reward, 1, err)) ||
      (rc = check_finite("next_obs", b->next_obs, b->n_next_obs, od, err)) ||
      (rc = check_finite("behaviour_log_prob", b->behaviour_log_prob, b->n_behaviour_log_prob, 1, err)))
    return rc;
  return 0;
}

/* replay_server_receive.c: receiving (replay_server_impl.h): one message off a socket, its frames
 * checked, its Envelope decoded and its body handed to the insert, sample or control path. A message
 * refused for its envelope (extra frames, another schema version, over the size limit) is answered
 * as the batch or request it is whenever that can be read from it: a TransitionBatch gets its own
 * InsertAck (rejected, naming actor and sequence), a SampleRequest an ErrorReply with its
 * request_id. Bytes that do not decode name nothing: they get an ErrorReply with request_id 0.
 * Who a message is (decoded or scanned) is read by replay_server_checks.c. Either thread, each on its own socket and arena. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "replay_server_impl.h"

/* The identity of one frame: decoded (any schema version) when it is within the size limit, else
 * scanned. The arena is reset afterwards (only the identity's plain values are kept). */
static srv_identity identify_frame(replay_server *s, arena *ar, const void *data, size_t len) {
  if ((int64_t)len > s->cfg.max_message_bytes) return srv_scan_identity(data, len);
  Ember__Envelope *env = NULL;
  net_decode_with(data, len, (size_t)s->cfg.max_message_bytes, arena_allocator(ar), &env, NULL);
  srv_identity id = env ? srv_identity_of(env) : ar->failed ? srv_scan_identity(data, len) : SRV_NOBODY;
  arena_reset(ar);
  return id;
}

/* ---- refusing -------------------------------------------------------------------------------- */

/* Refuses a message for `reason`, answered as what it is: a TransitionBatch on the insert socket
 * gets its own InsertAck (rejected = its count), anything else an ErrorReply carrying the request
 * id when the message is a SampleRequest (0 otherwise). */
static void refuse(replay_server *s, void *sock, const peer *from, reject_reason reason, const char *why,
                   const srv_identity *id) {
  if (id->body == EMBER__ENVELOPE__BODY_TRANSITION_BATCH && sock == s->insert_sock) {
    Ember__TransitionBatch b = EMBER__TRANSITION_BATCH__INIT;
    b.actor_id = id->actor_id, b.sequence = id->sequence, b.count = id->count;
    b.dropped_before = id->dropped_before;
    srv_refuse_batch(s, from, &b, reason, why);
    return;
  }
  uint64_t request_id = id->body == EMBER__ENVELOPE__BODY_SAMPLE_REQUEST ? id->request_id : 0;
  srv_reject_with_error(s, sock, from, reason, why, request_id);
}

/* A message with more than one payload frame: every frame is read (so the next message starts
 * clean), the first that names a batch or request names the refusal. */
static void refuse_extra_frames(replay_server *s, void *sock, const peer *from, zmq_msg_t *first, arena *ar) {
  srv_identity id = identify_frame(s, ar, zmq_msg_data(first), zmq_msg_size(first));
  size_t frames = 1;
  for (int more = 1; more;) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, 0) < 0) { /* the rest of a started message is always there */
      zmq_msg_close(&m);
      break;
    }
    frames++;
    more = zmq_msg_more(&m);
    if (id.body == EMBER__ENVELOPE__BODY__NOT_SET) id = identify_frame(s, ar, zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
  }
  char why[96];
  snprintf(why, sizeof why, "message has %zu payload frames, ember sends one", frames);
  refuse(s, sock, from, R_BAD_FRAMING, why, &id);
}

/* ---- one message ----------------------------------------------------------------------------- */

int srv_handle_one(replay_server *s, void *sock) {
  arena *ar = sock == s->insert_sock ? &s->insert_arena : &s->sample_arena;
  const char *sock_name = sock == s->insert_sock ? "insert" : "sample";
  peer from = {.delimiter = false};
  zmq_msg_t frame;
  zmq_msg_init(&frame);
  if (zmq_msg_recv(&frame, sock, ZMQ_DONTWAIT) < 0) {
    int e = zmq_errno();
    zmq_msg_close(&frame);
    if (e == EAGAIN || e == EINTR) return EMBER_EAGAIN;
    return EMBER_EIO;
  }
  size_t idlen = zmq_msg_size(&frame);
  int more = zmq_msg_more(&frame);
  if (idlen > sizeof from.route.id) idlen = sizeof from.route.id; /* libzmq ids are at most 255 bytes */
  memcpy(from.route.id, zmq_msg_data(&frame), idlen);
  from.route.len = idlen;
  zmq_msg_close(&frame);
  if (!more) return 0; /* a ROUTER always delivers an id and at least one frame; nothing to answer */
  zmq_msg_t body;
  zmq_msg_init(&body);
  if (zmq_msg_recv(&body, sock, 0) < 0) {
    zmq_msg_close(&body);
    return 0;
  }
  if (zmq_msg_size(&body) == 0 && zmq_msg_more(&body)) { /* REQ envelope delimiter */
    from.delimiter = true;
    zmq_msg_close(&body);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&body, sock, 0) < 0) {
      zmq_msg_close(&body);
      return 0;
    }
  }
  char why[256];
  if (zmq_msg_more(&body)) {
    refuse_extra_frames(s, sock, &from, &body, ar);
    goto out;
  }
  size_t len = zmq_msg_size(&body);
  if ((int64_t)len > s->cfg.max_message_bytes) {
    snprintf(why, sizeof why, "message of %zu bytes is over the %" PRId64 "-byte limit", len,
             s->cfg.max_message_bytes);
    srv_identity id = srv_scan_identity(zmq_msg_data(&body), len);
    refuse(s, sock, &from, R_TOO_BIG, why, &id);
    goto out;
  }
  Ember__Envelope *env = NULL;
  ember_err derr = {0};
  int drc = net_decode_with(zmq_msg_data(&body), len, (size_t)s->cfg.max_message_bytes, arena_allocator(ar), &env,
                            &derr);
  if (drc == EMBER_ESCHEMA) { /* decoded as this build reads it: enough to name the batch or request */
    srv_identity id = srv_identity_of(env);
    refuse(s, sock, &from, R_SCHEMA_VERSION, derr.msg, &id);
    goto out;
  }
  if (drc && !env) { /* a body-less Envelope decodes (env set) and is refused in the switch below */
    if (ar->failed) { /* the decoder ran out of memory: refused as too big, named if the bytes say */
      srv_identity id = srv_scan_identity(zmq_msg_data(&body), len);
      refuse(s, sock, &from, R_TOO_BIG, derr.msg, &id);
    } else { /* nothing in bytes that do not decode can be trusted to name a batch */
      refuse(s, sock, &from, R_NOT_PROTOBUF, derr.msg, &SRV_NOBODY);
    }
    goto out;
  }
  switch (env->body_case) {
    case EMBER__ENVELOPE__BODY_TRANSITION_BATCH:
      if (sock != s->insert_sock) goto unexpected;
      srv_handle_insert(s, &from, env->transition_batch);
      break;
    case EMBER__ENVELOPE__BODY_SAMPLE_REQUEST:
      if (sock != s->sample_sock) goto unexpected;
      srv_handle_sample_request(s, &from, env->sample_request);
      break;
    case EMBER__ENVELOPE__BODY_PRIORITY_UPDATE:
      if (sock != s->sample_sock) goto unexpected;
      srv_handle_priority_update(s, &from, env->priority_update);
      break;
    case EMBER__ENVELOPE__BODY_STATS_REQUEST:
      if (sock == s->insert_sock) srv_flush_peer(s, &from);
      srv_send_stats(s, sock, &from);
      break;
    case EMBER__ENVELOPE__BODY_HELLO:
      srv_handle_hello(s, sock, &from, env->hello);
      break;
    case EMBER__ENVELOPE__BODY_HEARTBEAT:
      break;
    case EMBER__ENVELOPE__BODY__NOT_SET:
      refuse(s, sock, &from, R_NO_BODY, "Envelope has no body (or one this build does not know)", &SRV_NOBODY);
      break;
    default:
    unexpected: { /* a SampleRequest's id is echoed; a TransitionBatch here gets an ErrorReply, not an ack */
      snprintf(why, sizeof why, "%s is not served on the %s socket", net_body_name(env->body_case), sock_name);
      srv_identity id = srv_identity_of(env);
      refuse(s, sock, &from, R_UNEXPECTED_MESSAGE, why, &id);
      break;
    }
  }
out:
  zmq_msg_close(&body);
  arena_reset(ar);
  return 0;
}

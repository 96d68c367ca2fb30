/* replay_server_receive.c: receiving (replay_server_impl.h): one message off a socket, its frames
 * checked, its Envelope decoded and its body handed to the insert, sample or control path. A message
 * refused for its envelope (extra frames, another schema version, over the size limit) is answered
 * as the batch or request it is whenever that can be read from it: a TransitionBatch gets its own
 * InsertAck (rejected, naming actor and sequence), a SampleRequest an ErrorReply with its
 * request_id. Bytes that do not decode name nothing: they get an ErrorReply with request_id 0.
 * Either thread, each on its own socket and arena. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "replay_server_impl.h"

/* What a refused message says about itself, when that can be read. */
typedef struct {
  Ember__Envelope__BodyCase body; /* TRANSITION_BATCH, SAMPLE_REQUEST, or NOT_SET: nothing known */
  uint64_t actor_id, sequence, dropped_before; /* a TransitionBatch's */
  uint32_t count;
  uint64_t request_id;                         /* a SampleRequest's */
} identity;

static const identity NOBODY = {.body = EMBER__ENVELOPE__BODY__NOT_SET};

static identity identity_of(const Ember__Envelope *env) {
  identity id = NOBODY;
  if (env && env->body_case == EMBER__ENVELOPE__BODY_TRANSITION_BATCH && env->transition_batch) {
    const Ember__TransitionBatch *b = env->transition_batch;
    id = (identity){.body = env->body_case, .actor_id = b->actor_id, .sequence = b->sequence,
                    .dropped_before = b->dropped_before, .count = b->count};
  } else if (env && env->body_case == EMBER__ENVELOPE__BODY_SAMPLE_REQUEST && env->sample_request) {
    id = (identity){.body = env->body_case, .request_id = env->sample_request->request_id};
  }
  return id;
}

/* ---- reading identity fields without decoding ------------------------------------------------ */
/* For a message too big to decode (only seen on inproc://, where libzmq applies no limit): the
 * protobuf wire format is walked field by field, skipping length-delimited fields by their length, to
 * read the few identity fields and nothing else. Strict: a malformed field anywhere in the Envelope
 * or in the body's field framing means nothing is known. Costs a few bytes of reading per field. */

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t c = *(*p)++;
    x |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = x;
      return true;
    }
  }
  return false;
}

typedef struct {
  uint32_t number, wire_type;
  uint64_t varint;           /* wire type 0 */
  const uint8_t *bytes;      /* wire type 2 */
  size_t len;
} wire_field;

/* The next field in [*p, end): 1, 0 at the end, -1 when malformed. */
static int next_field(const uint8_t **p, const uint8_t *end, wire_field *f) {
  if (*p == end) return 0;
  uint64_t tag, n;
  if (!read_varint(p, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return -1;
  *f = (wire_field){.number = (uint32_t)(tag >> 3), .wire_type = (uint32_t)(tag & 7)};
  switch (f->wire_type) {
    case 0: return read_varint(p, end, &f->varint) ? 1 : -1;
    case 1: if (end - *p < 8) return -1; *p += 8; return 1;
    case 5: if (end - *p < 4) return -1; *p += 4; return 1;
    case 2:
      if (!read_varint(p, end, &n) || n > (uint64_t)(end - *p)) return -1;
      f->bytes = *p, f->len = (size_t)n, *p += n;
      return 1;
    default: return -1; /* groups and reserved wire types: not in ember's schema */
  }
}

/* Reads the identity fields (varints) of a TransitionBatch or SampleRequest body. */
static bool scan_body(const wire_field *body, identity *id) {
  const uint8_t *p = body->bytes, *end = p + body->len;
  wire_field f;
  int r;
  *id = (identity){.body = body->number == 10 ? EMBER__ENVELOPE__BODY_TRANSITION_BATCH
                                               : EMBER__ENVELOPE__BODY_SAMPLE_REQUEST};
  while ((r = next_field(&p, end, &f)) == 1) {
    bool is_batch = id->body == EMBER__ENVELOPE__BODY_TRANSITION_BATCH;
    bool wanted = is_batch ? (f.number == 4 || f.number == 5 || f.number == 6 || f.number == 15) : f.number == 1;
    if (!wanted) continue;
    if (f.wire_type != 0) return false;
    if (!is_batch) id->request_id = f.varint;
    else if (f.number == 4) {
      if (f.varint > UINT32_MAX) return false;
      id->count = (uint32_t)f.varint;
    } else if (f.number == 5) id->actor_id = f.varint;
    else if (f.number == 6) id->sequence = f.varint;
    else id->dropped_before = f.varint;
  }
  return r == 0;
}

/* The identity in an encoded Envelope, read without decoding it; NOBODY when the bytes are not
 * well-formed or carry neither a TransitionBatch (field 10) nor a SampleRequest (field 14). */
static identity scan_identity(const void *data, size_t len) {
  const uint8_t *p = data, *end = p + len;
  wire_field f, body = {.number = 0};
  int r;
  while ((r = next_field(&p, end, &f)) == 1)
    if (f.wire_type == 2 && (f.number == 10 || f.number == 14)) body = f; /* oneof: the last one wins */
    else if (f.number >= 10) body.number = 0; /* another body (all are fields >= 10) replaced it */
  identity id = NOBODY;
  if (r != 0 || body.number == 0 || !scan_body(&body, &id)) return NOBODY;
  return id;
}

/* The identity of one frame: decoded (any schema version) when it is within the size limit, else
 * scanned. The arena is reset afterwards (only the identity's plain values are kept). */
static identity identify_frame(replay_server *s, arena *ar, const void *data, size_t len) {
  if ((int64_t)len > s->cfg.max_message_bytes) return scan_identity(data, len);
  Ember__Envelope *env = NULL;
  net_decode_with(data, len, (size_t)s->cfg.max_message_bytes, arena_allocator(ar), &env, NULL);
  identity id = env ? identity_of(env) : ar->failed ? scan_identity(data, len) : NOBODY;
  arena_reset(ar);
  return id;
}

/* ---- refusing -------------------------------------------------------------------------------- */

/* Refuses a message for `reason`, answered as what it is: a TransitionBatch on the insert socket
 * gets its own InsertAck (rejected = its count), anything else an ErrorReply carrying the request
 * id when the message is a SampleRequest (0 otherwise). */
static void refuse(replay_server *s, void *sock, const peer *from, reject_reason reason, const char *why,
                   const identity *id) {
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
  identity id = identify_frame(s, ar, zmq_msg_data(first), zmq_msg_size(first));
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
    identity id = scan_identity(zmq_msg_data(&body), len);
    refuse(s, sock, &from, R_TOO_BIG, why, &id);
    goto out;
  }
  Ember__Envelope *env = NULL;
  ember_err derr = {0};
  int drc = net_decode_with(zmq_msg_data(&body), len, (size_t)s->cfg.max_message_bytes, arena_allocator(ar), &env,
                            &derr);
  if (drc == EMBER_ESCHEMA) { /* decoded as this build reads it: enough to name the batch or request */
    identity id = identity_of(env);
    refuse(s, sock, &from, R_SCHEMA_VERSION, derr.msg, &id);
    goto out;
  }
  if (drc && !env) { /* a body-less Envelope decodes (env set) and is refused in the switch below */
    if (ar->failed) { /* the decoder ran out of memory: refused as too big, named if the bytes say */
      identity id = scan_identity(zmq_msg_data(&body), len);
      refuse(s, sock, &from, R_TOO_BIG, derr.msg, &id);
    } else { /* nothing in bytes that do not decode can be trusted to name a batch */
      refuse(s, sock, &from, R_NOT_PROTOBUF, derr.msg, &NOBODY);
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
      refuse(s, sock, &from, R_NO_BODY, "Envelope has no body (or one this build does not know)", &NOBODY);
      break;
    default:
    unexpected: { /* a SampleRequest's id is echoed; a TransitionBatch here gets an ErrorReply, not an ack */
      snprintf(why, sizeof why, "%s is not served on the %s socket", net_body_name(env->body_case), sock_name);
      identity id = identity_of(env);
      refuse(s, sock, &from, R_UNEXPECTED_MESSAGE, why, &id);
      break;
    }
  }
out:
  zmq_msg_close(&body);
  arena_reset(ar);
  return 0;
}

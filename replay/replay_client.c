#include "replay_client.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "arena.h"
#include "net.h"

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A DEALER connected to endpoint. ZMQ_IMMEDIATE keeps libzmq from queueing messages for a server
 * that is not connected, so a vanished server shows up as credits that do not come back. */
static void *dealer(void *ctx, const char *endpoint, int64_t max_bytes, int sndhwm, const char *const curve[3],
                    ember_err *err) {
  if (!endpoint || !*endpoint) {
    ember_fail(err, EMBER_EINVAL, "replay client: empty endpoint");
    return NULL;
  }
  net_socket_opts o = {.max_message_bytes = max_bytes, .send_hwm = sndhwm, .recv_hwm = 100000, .linger_ms = 0,
                       .immediate = true, .curve_public_key = curve[0], .curve_secret_key = curve[1],
                       .curve_server_key = curve[2]};
  void *sock = net_socket(ctx, ZMQ_DEALER, endpoint, false, &o, err);
  if (!sock) ember_err_prefix(err, "replay client: ");
  return sock;
}

/* Receives one Envelope (non-blocking) into the arena; NULL when none is waiting or it is invalid. */
static Ember__Envelope *recv_envelope(void *sock, arena *a, int *got_any) {
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  *got_any = 0;
  if (zmq_msg_recv(&msg, sock, ZMQ_DONTWAIT) < 0) {
    zmq_msg_close(&msg);
    return NULL;
  }
  *got_any = 1;
  Ember__Envelope *env = NULL;
  if (!zmq_msg_more(&msg)) {
    if (net_decode_with(zmq_msg_data(&msg), zmq_msg_size(&msg), 0, arena_allocator(a), &env, NULL) != 0) env = NULL;
  } else { /* not ember framing: discard the rest */
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      zmq_msg_recv(&m, sock, 0);
      zmq_msg_close(&m);
    }
  }
  zmq_msg_close(&msg);
  return env;
}

/* ---- insert client --------------------------------------------------------------------------- */

typedef struct {
  uint8_t *buf;
  size_t cap, len;
  uint64_t sequence;
  uint32_t count;
} queued_batch;

typedef struct {
  uint64_t sequence;
  uint32_t count;
  int64_t sent_ms;
} flight;

struct replay_insert_client {
  replay_insert_opts o;
  void *sock;
  arena arena;
  queued_batch *queue; /* ring */
  size_t q_head, q_len, q_cap;
  flight *flights;     /* ring, in send order */
  size_t f_head, f_len, f_cap;
  uint64_t next_sequence;
  replay_insert_stats st;
};

replay_insert_client *replay_insert_client_new(void *ctx, const replay_insert_opts *opts, ember_err *err) {
  replay_insert_client *c = calloc(1, sizeof *c);
  if (!c) {
    ember_fail(err, EMBER_ENOMEM, "replay insert client: out of memory");
    return NULL;
  }
  c->o = *opts;
  if (c->o.max_in_flight <= 0) c->o.max_in_flight = 8;
  if (c->o.queue_batches <= 0) c->o.queue_batches = 64;
  if (c->o.ack_timeout_ms <= 0) c->o.ack_timeout_ms = 5000;
  if (c->o.max_message_bytes <= 0) c->o.max_message_bytes = 64 << 20;
  c->q_cap = (size_t)c->o.queue_batches;
  c->f_cap = (size_t)c->o.max_in_flight;
  c->queue = calloc(c->q_cap, sizeof *c->queue);
  c->flights = calloc(c->f_cap, sizeof *c->flights);
  arena_init(&c->arena, 4096);
  c->next_sequence = 1;
  if (!c->queue || !c->flights) {
    ember_fail(err, EMBER_ENOMEM, "replay insert client: out of memory");
    replay_insert_client_destroy(&c);
    return NULL;
  }
  if (!(c->sock = dealer(ctx, c->o.endpoint, c->o.max_message_bytes, c->o.max_in_flight + 1,
                         (const char *const[3]){c->o.curve_public_key, c->o.curve_secret_key, c->o.curve_server_key}, err))) {
    replay_insert_client_destroy(&c);
    return NULL;
  }
  c->o.endpoint = NULL; /* not kept: the caller's string */
  return c;
}

void replay_insert_client_destroy(replay_insert_client **self_p) {
  if (!self_p || !*self_p) return;
  replay_insert_client *c = *self_p;
  if (c->sock) zmq_close(c->sock);
  for (size_t i = 0; c->queue && i < c->q_cap; i++) free(c->queue[i].buf);
  free(c->queue);
  free(c->flights);
  arena_free(&c->arena);
  free(c);
  *self_p = NULL;
}

static void flight_pop(replay_insert_client *c) {
  c->st.transitions_in_flight -= c->flights[c->f_head].count;
  c->f_head = (c->f_head + 1) % c->f_cap;
  c->f_len--;
}

/* An ack this client could have been sent: its own actor id (0 = not named), a range of sequences it
 * sent, and no more rows than those batches held (in flight now, or written off as unconfirmed and
 * acknowledged late). Anything else would move transitions between the accounting's terms that never
 * were there, so it is refused and counted instead. */
static bool ack_is_plausible(const replay_insert_client *c, const Ember__InsertAck *a) {
  uint64_t first = a->first_sequence ? a->first_sequence : a->sequence;
  if (a->actor_id && a->actor_id != c->o.actor_id) return false;
  if (a->sequence == 0 || a->sequence >= c->next_sequence || first > a->sequence) return false;
  uint64_t room = c->st.transitions_unconfirmed;
  for (size_t i = 0; i < c->f_len; i++) {
    const flight *f = &c->flights[(c->f_head + i) % c->f_cap];
    if (f->sequence >= first && f->sequence <= a->sequence) room += f->count;
  }
  return (uint64_t)a->accepted + a->rejected <= room;
}

static void handle_ack(replay_insert_client *c, const Ember__InsertAck *a) {
  if (!ack_is_plausible(c, a)) {
    c->st.acks_refused++;
    snprintf(c->st.last_error, sizeof c->st.last_error,
             "refused an InsertAck for actor %llu, sequences %llu-%llu, %u + %u rows: not this client's",
             (unsigned long long)a->actor_id, (unsigned long long)a->first_sequence, (unsigned long long)a->sequence,
             a->accepted, a->rejected);
    return;
  }
  if (a->error && a->error[0]) snprintf(c->st.last_error, sizeof c->st.last_error, "%s", a->error);
  uint64_t first = a->first_sequence ? a->first_sequence : a->sequence;
  /* acks come back in send order on one connection: batches older than this ack's range that are
   * still waiting were lost with a connection (their ack will never come) */
  while (c->f_len > 0 && c->flights[c->f_head].sequence < first) {
    c->st.transitions_unconfirmed += c->flights[c->f_head].count;
    flight_pop(c);
  }
  uint64_t covered = 0, n = (uint64_t)a->accepted + a->rejected;
  while (c->f_len > 0 && c->flights[c->f_head].sequence <= a->sequence) {
    covered += c->flights[c->f_head].count;
    flight_pop(c);
  }
  if (n > covered) { /* (part of) it arrived late: it had been written off as unconfirmed */
    uint64_t late = n - covered;
    c->st.transitions_unconfirmed -= late < c->st.transitions_unconfirmed ? late : c->st.transitions_unconfirmed;
  }
  c->st.transitions_stored += a->accepted;
  c->st.transitions_rejected += a->rejected;
}

static int read_acks(replay_insert_client *c) {
  int acks = 0, got;
  for (;;) {
    Ember__Envelope *env = recv_envelope(c->sock, &c->arena, &got);
    if (!got) break;
    if (env && env->body_case == EMBER__ENVELOPE__BODY_INSERT_ACK) {
      handle_ack(c, env->insert_ack);
      acks++;
    } else if (env && env->body_case == EMBER__ENVELOPE__BODY_ERROR) {
      c->st.error_replies++;
      snprintf(c->st.last_error, sizeof c->st.last_error, "%s", env->error->message ? env->error->message : "");
    }
    arena_reset(&c->arena);
  }
  return acks;
}

static void expire(replay_insert_client *c, int64_t now) {
  while (c->f_len > 0 && now - c->flights[c->f_head].sent_ms >= c->o.ack_timeout_ms) {
    c->st.transitions_unconfirmed += c->flights[c->f_head].count;
    flight_pop(c);
  }
}

static void send_queued(replay_insert_client *c, int64_t now) {
  while (c->q_len > 0 && c->f_len < c->f_cap) {
    queued_batch *q = &c->queue[c->q_head];
    if (zmq_send(c->sock, q->buf, q->len, ZMQ_DONTWAIT) < 0) break; /* EAGAIN: no server connected */
    c->flights[(c->f_head + c->f_len) % c->f_cap] = (flight){q->sequence, q->count, now};
    c->f_len++;
    c->st.transitions_in_flight += q->count;
    c->st.transitions_queued -= q->count;
    c->st.batches_sent++;
    c->st.transitions_sent += q->count;
    c->q_head = (c->q_head + 1) % c->q_cap;
    c->q_len--;
  }
}

static void pump(replay_insert_client *c) {
  read_acks(c);
  int64_t now = mono_ms();
  expire(c, now);
  send_queued(c, now);
}

int replay_insert_client_send(replay_insert_client *c, Ember__TransitionBatch *b, ember_err *err) {
  read_acks(c); /* free credits first */
  b->actor_id = c->o.actor_id;
  b->sequence = c->next_sequence++;
  b->dropped_before = c->st.transitions_dropped;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.schema_version = EMBER_SCHEMA_VERSION;
  env.body_case = EMBER__ENVELOPE__BODY_TRANSITION_BATCH;
  env.transition_batch = b;
  size_t n = ember__envelope__get_packed_size(&env);
  if ((int64_t)n > c->o.max_message_bytes) {
    c->st.transitions_dropped += b->count;
    pump(c);
    return ember_fail(err, EMBER_ETOOBIG, "TransitionBatch of %zu bytes is over the %lld-byte limit (dropped)", n,
                      (long long)c->o.max_message_bytes);
  }
  if (c->q_len == c->q_cap) { /* full: the oldest queued batch goes, fresher data stays */
    queued_batch *old = &c->queue[c->q_head];
    c->st.transitions_dropped += old->count;
    c->st.transitions_queued -= old->count;
    c->q_head = (c->q_head + 1) % c->q_cap;
    c->q_len--;
  }
  queued_batch *q = &c->queue[(c->q_head + c->q_len) % c->q_cap];
  if (q->cap < n) {
    uint8_t *nb = realloc(q->buf, n);
    if (!nb) {
      c->st.transitions_dropped += b->count;
      return ember_fail(err, EMBER_ENOMEM, "replay insert client: out of memory for a %zu-byte batch", n);
    }
    q->buf = nb, q->cap = n;
  }
  q->len = ember__envelope__pack(&env, q->buf);
  q->sequence = b->sequence;
  q->count = b->count;
  c->q_len++;
  c->st.transitions_queued += b->count;
  pump(c);
  return 0;
}

int replay_insert_client_poll(replay_insert_client *c, int timeout_ms) {
  int acks = read_acks(c);
  if (acks == 0 && timeout_ms > 0 && c->f_len > 0) {
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) > 0) acks = read_acks(c);
  }
  int64_t now = mono_ms();
  expire(c, now);
  send_queued(c, now);
  return acks;
}

int replay_insert_client_wait_for_room(replay_insert_client *c, int timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  for (;;) {
    pump(c);
    if (c->q_len < c->q_cap) return 1;
    int64_t now = mono_ms(), left = deadline - now;
    if (left <= 0) return 0;
    /* Wake for an ack, for the link taking a message while a credit is free (the pipe was full), or
     * when the oldest batch in flight times out and frees its credit. */
    if (c->f_len > 0) {
      int64_t expiry = c->flights[c->f_head].sent_ms + c->o.ack_timeout_ms - now;
      if (expiry < left) left = expiry < 1 ? 1 : expiry;
    }
    zmq_pollitem_t it = {c->sock, 0, (short)(ZMQ_POLLIN | (c->f_len < c->f_cap ? ZMQ_POLLOUT : 0)), 0};
    if (zmq_poll(&it, 1, (long)left) < 0 && zmq_errno() == EINTR) return 0;
  }
}

int replay_insert_client_flush(replay_insert_client *c, int timeout_ms) {
  int64_t deadline = mono_ms() + timeout_ms;
  while (c->q_len > 0 || c->f_len > 0) {
    int64_t left = deadline - mono_ms();
    if (left <= 0) return EMBER_ETIMEOUT;
    if (replay_insert_client_poll(c, left < 20 ? (int)left : 20) == 0 && c->f_len == 0 && c->q_len > 0) {
      struct timespec ts = {0, 2000000}; /* no server connected yet: don't spin */
      nanosleep(&ts, NULL);
    }
  }
  return 0;
}

void replay_insert_client_stats(const replay_insert_client *c, replay_insert_stats *out) {
  *out = c->st;
  out->in_flight = (uint32_t)c->f_len;
  out->queued = (uint32_t)c->q_len;
}

/* ---- sample client --------------------------------------------------------------------------- */

struct replay_sample_client {
  replay_sample_opts o;
  void *sock;
  arena arena;
  int outstanding;
  uint64_t next_request_id;
  int64_t last_activity_ms;
  uint8_t *send_buf;
  size_t send_cap;
};

replay_sample_client *replay_sample_client_new(void *ctx, const replay_sample_opts *opts, ember_err *err) {
  if (!opts || opts->batch_size == 0) {
    ember_fail(err, EMBER_EINVAL, "replay sample client: batch_size must be > 0");
    return NULL;
  }
  replay_sample_client *c = calloc(1, sizeof *c);
  if (!c) {
    ember_fail(err, EMBER_ENOMEM, "replay sample client: out of memory");
    return NULL;
  }
  c->o = *opts;
  if (c->o.prefetch <= 0) c->o.prefetch = 2;
  if (c->o.request_timeout_ms <= 0) c->o.request_timeout_ms = 30000;
  if (c->o.max_message_bytes <= 0) c->o.max_message_bytes = (int64_t)NET_DEFAULT_MAX_MESSAGE_BYTES;
  c->next_request_id = 1;
  arena_init(&c->arena, 1 << 20);
  if (!(c->sock = dealer(ctx, c->o.endpoint, c->o.max_message_bytes, 1000,
                         (const char *const[3]){c->o.curve_public_key, c->o.curve_secret_key, c->o.curve_server_key}, err))) {
    replay_sample_client_destroy(&c);
    return NULL;
  }
  c->o.endpoint = NULL;
  c->last_activity_ms = mono_ms();
  return c;
}

void replay_sample_client_destroy(replay_sample_client **self_p) {
  if (!self_p || !*self_p) return;
  replay_sample_client *c = *self_p;
  if (c->sock) zmq_close(c->sock);
  arena_free(&c->arena);
  free(c->send_buf);
  free(c);
  *self_p = NULL;
}

static int send_small(replay_sample_client *c, Ember__Envelope *env) {
  env->schema_version = EMBER_SCHEMA_VERSION;
  size_t n = ember__envelope__get_packed_size(env);
  if (n > c->send_cap) {
    uint8_t *nb = realloc(c->send_buf, n);
    if (!nb) return EMBER_ENOMEM;
    c->send_buf = nb, c->send_cap = n;
  }
  ember__envelope__pack(env, c->send_buf);
  return zmq_send(c->sock, c->send_buf, n, ZMQ_DONTWAIT) < 0 ? EMBER_EAGAIN : 0;
}

static void top_up(replay_sample_client *c) {
  while (c->outstanding < c->o.prefetch) {
    Ember__SampleRequest r = EMBER__SAMPLE_REQUEST__INIT;
    r.request_id = c->next_request_id;
    r.batch_size = c->o.batch_size;
    Ember__Envelope env = EMBER__ENVELOPE__INIT;
    env.body_case = EMBER__ENVELOPE__BODY_SAMPLE_REQUEST;
    env.sample_request = &r;
    if (send_small(c, &env) != 0) break; /* no server connected yet: retried on the next call */
    c->next_request_id++;
    c->outstanding++;
  }
}

int replay_sample_client_next(replay_sample_client *c, int timeout_ms, const Ember__SampleBatch **out,
                              ember_err *err) {
  *out = NULL;
  arena_reset(&c->arena);
  int64_t deadline = timeout_ms < 0 ? INT64_MAX : mono_ms() + timeout_ms;
  for (;;) {
    int64_t now = mono_ms();
    if (c->outstanding > 0 && now - c->last_activity_ms > c->o.request_timeout_ms) {
      c->outstanding = 0; /* presumed lost with a server restart; late answers are still welcome */
      c->last_activity_ms = now;
    }
    top_up(c);
    int got;
    Ember__Envelope *env = recv_envelope(c->sock, &c->arena, &got);
    if (got) {
      c->last_activity_ms = mono_ms();
      if (env && env->body_case == EMBER__ENVELOPE__BODY_SAMPLE_BATCH) {
        if (c->outstanding > 0) c->outstanding--;
        top_up(c); /* the next batch is requested before this one is used */
        *out = env->sample_batch;
        return 0;
      }
      if (env && env->body_case == EMBER__ENVELOPE__BODY_ERROR) {
        const Ember__ErrorReply *e = env->error;
        if (e->request_id != 0 && c->outstanding > 0) c->outstanding--;
        int code = e->code ? -(int)e->code : EMBER_EIO;
        ember_fail(err, code, "replay server refused: %s", e->message ? e->message : "");
        arena_reset(&c->arena);
        return code;
      }
      arena_reset(&c->arena);
      continue;
    }
    now = mono_ms();
    if (now >= deadline) return ember_fail(err, EMBER_ETIMEOUT, "no SampleBatch within %d ms", timeout_ms);
    int64_t wait = deadline - now;
    if (wait > 50) wait = 50; /* wake up to re-send requests if none could be sent yet */
    zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
    zmq_poll(&it, 1, (long)wait);
  }
}

int replay_sample_client_update_priorities(replay_sample_client *c, const uint64_t *keys, const float *priorities,
                                           size_t n, ember_err *err) {
  Ember__PriorityUpdate u = EMBER__PRIORITY_UPDATE__INIT;
  u.n_keys = u.n_priorities = n;
  u.keys = (uint64_t *)keys;
  u.priorities = (float *)priorities;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_PRIORITY_UPDATE;
  env.priority_update = &u;
  int rc = send_small(c, &env);
  if (rc != 0) return ember_fail(err, rc, "PriorityUpdate not sent (no server connected)");
  return 0;
}

/* ---- stats ----------------------------------------------------------------------------------- */

int replay_client_stats(void *ctx, const char *endpoint, int timeout_ms, Ember__Envelope **out, ember_err *err) {
  *out = NULL;
  net_socket_opts o = {.linger_ms = 0, .recv_timeout_ms = timeout_ms};
  void *sock = net_socket(ctx, ZMQ_DEALER, endpoint, false, &o, err);
  if (!sock) return err ? err->code : EMBER_EINVAL;
  Ember__StatsRequest req = EMBER__STATS_REQUEST__INIT;
  int rc = net_send_body(sock, EMBER__ENVELOPE__BODY_STATS_REQUEST, &req, NULL, 0, err);
  int64_t deadline = mono_ms() + timeout_ms;
  while (rc == 0) {
    Ember__Envelope *env = NULL;
    rc = net_recv(sock, &env, NULL, 0, err);
    if (rc == EMBER_EAGAIN) rc = ember_fail(err, EMBER_ETIMEOUT, "no Stats from %s within %d ms", endpoint, timeout_ms);
    if (rc != 0) break;
    if (env->body_case == EMBER__ENVELOPE__BODY_STATS) {
      *out = env;
      break;
    }
    net_envelope_free(env);
    if (mono_ms() > deadline) rc = ember_fail(err, EMBER_ETIMEOUT, "no Stats from %s within %d ms", endpoint, timeout_ms);
  }
  zmq_close(sock);
  return rc;
}

double replay_stats_get(const Ember__Stats *stats, const char *name, const char *labels) {
  for (size_t i = 0; stats && i < stats->n_metrics; i++) {
    const Ember__Metric *m = stats->metrics[i];
    if (strcmp(m->name, name) == 0 && strcmp(m->labels ? m->labels : "", labels ? labels : "") == 0) return m->value;
  }
  return NAN;
}

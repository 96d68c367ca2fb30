#include "replay_server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "arena.h"
#include "log.h"
#include "net.h"
#include "rate_limiter.h"
#include "replay_snapshot.h"
#include "replay_table.h"
#include "rng.h"

/* ---- configuration --------------------------------------------------------------------------- */

#define F(name, type, member, lo, hi, def, help) {name, type, offsetof(replay_config, member), lo, hi, def, help}
static const config_field replay_fields[] = {
    F("capacity", CONFIG_INT, capacity, 1, 4e9, "1000000", "transitions held; the oldest are evicted first"),
    F("task", CONFIG_STRING, task, 0, 0, "", "task the table accepts; empty = the first accepted insert's"),
    F("obs_dim", CONFIG_INT, obs_dim, 0, 1048576, "0", "observation size; 0 = from the first accepted insert"),
    F("act_dim", CONFIG_INT, act_dim, 0, 1048576, "0", "action size; 0 = from the first accepted insert"),
    F("sampler", CONFIG_STRING, sampler, 0, 0, "uniform", "uniform | prioritized"),
    F("alpha", CONFIG_FLOAT, alpha, 0, 10, "0.6", "prioritized: sampling probability ~ priority^alpha"),
    F("beta", CONFIG_FLOAT, beta, 0, 1, "0.4", "prioritized: importance weight exponent"),
    F("min_size_to_sample", CONFIG_INT, min_size_to_sample, 1, 4e9, "1000",
      "rate limiter: no sample until the table holds this many transitions"),
    F("samples_per_insert", CONFIG_FLOAT, samples_per_insert, 0, 1e9, "0",
      "rate limiter: target sampled/inserted transitions ratio; 0 = off"),
    F("error_buffer", CONFIG_FLOAT, error_buffer, 0, 1e15, "100000",
      "rate limiter: tolerated deviation from the ratio, in sampled transitions"),
    F("max_pending_samples", CONFIG_INT, max_pending_samples, 1, 1e6, "1024",
      "sample requests parked by the rate limiter beyond which new ones are refused"),
    F("insert_endpoint", CONFIG_STRING, insert_endpoint, 0, 0, "tcp://127.0.0.1:5560",
      "ROUTER the actors send TransitionBatches to"),
    F("sample_endpoint", CONFIG_STRING, sample_endpoint, 0, 0, "tcp://127.0.0.1:5561",
      "ROUTER the learner sends SampleRequests and PriorityUpdates to"),
    F("max_message_bytes", CONFIG_INT, max_message_bytes, 1024, 2147483647, "67108864",
      "largest inbound message (ZMQ_MAXMSGSIZE on tcp/ipc)"),
    F("snapshot_dir", CONFIG_STRING, snapshot_dir, 0, 0, "", "directory for snapshots; empty = none"),
    F("snapshot_interval_s", CONFIG_FLOAT, snapshot_interval_s, 0, 1e9, "300",
      "seconds between periodic snapshots; 0 = only on request"),
    F("snapshot_keep", CONFIG_INT, snapshot_keep, 1, 1000, "2", "snapshot files kept"),
    F("snapshot_zstd_level", CONFIG_INT, snapshot_zstd_level, -5, 19, "1", "zstd level of snapshots"),
    F("restore", CONFIG_BOOL, restore, 0, 0, "true", "restore the newest valid snapshot at start"),
    F("seed", CONFIG_INT, seed, 0, 9.2e18, "0", "sampling seed"),
    F("poll_interval_ms", CONFIG_INT, poll_interval_ms, 1, 10000, "50", "how often the loop checks stop and timers"),
    F("log_interval_s", CONFIG_FLOAT, log_interval_s, 0, 1e9, "10", "seconds between progress lines; 0 = off"),
};
#undef F
const config_section replay_config_section = {"replay", replay_fields, sizeof replay_fields / sizeof *replay_fields};

static int parse_sampler(const char *s, replay_sampler *out) {
  if (strcmp(s, "uniform") == 0) *out = REPLAY_SAMPLER_UNIFORM;
  else if (strcmp(s, "prioritized") == 0) *out = REPLAY_SAMPLER_PRIORITIZED;
  else return EMBER_EINVAL;
  return 0;
}

int replay_config_validate(const replay_config *c, ember_err *err) {
  replay_sampler s;
  if (parse_sampler(c->sampler, &s) != 0)
    return ember_fail(err, EMBER_EINVAL, "replay.sampler = '%s': expected uniform or prioritized", c->sampler);
  if (c->capacity < 1) return ember_fail(err, EMBER_EINVAL, "replay.capacity must be >= 1");
  if (c->min_size_to_sample > c->capacity)
    return ember_fail(err, EMBER_EINVAL,
                      "replay.min_size_to_sample = %" PRId64 " is larger than replay.capacity = %" PRId64
                      " (sampling could never start)",
                      c->min_size_to_sample, c->capacity);
  if ((c->obs_dim == 0) != (c->act_dim == 0))
    return ember_fail(err, EMBER_EINVAL, "replay.obs_dim and replay.act_dim are given together (or both 0)");
  if (strlen(c->task) >= REPLAY_TASK_MAX)
    return ember_fail(err, EMBER_EINVAL, "replay.task is longer than %d characters", REPLAY_TASK_MAX - 1);
  rate_limiter rl;
  int rc = rate_limiter_init(&rl, c->samples_per_insert, (uint64_t)c->min_size_to_sample, c->error_buffer, err);
  if (rc != 0) return ember_err_prefix(err, "replay config: ");
  if (!c->insert_endpoint[0] || !c->sample_endpoint[0])
    return ember_fail(err, EMBER_EINVAL, "replay.insert_endpoint and replay.sample_endpoint must be set");
  return 0;
}

/* ---- rejection reasons ----------------------------------------------------------------------- */

typedef enum {
  R_NOT_PROTOBUF, R_SCHEMA_VERSION, R_NO_BODY, R_BAD_FRAMING, R_TOO_BIG, R_TASK_MISMATCH, R_DIMS_MISMATCH,
  R_INCONSISTENT_LENGTHS, R_NONFINITE, R_EMPTY_BATCH, R_BAD_BATCH_SIZE, R_BATCH_TOO_LARGE,
  R_BATCH_EXCEEDS_RATE_LIMITER, R_TOO_MANY_PENDING, R_BAD_PRIORITY, R_UNEXPECTED_MESSAGE, R_COUNT
} reject_reason;

static const char *reason_names[R_COUNT] = {
    "not_protobuf", "schema_version", "no_body", "bad_framing", "too_big", "task_mismatch", "dims_mismatch",
    "inconsistent_lengths", "nonfinite", "empty_batch", "bad_batch_size", "batch_too_large",
    "batch_exceeds_rate_limiter", "too_many_pending", "bad_priority", "unexpected_message"};

static const int reason_codes[R_COUNT] = {
    EMBER_EDECODE, EMBER_ESCHEMA, EMBER_EDECODE, EMBER_EDECODE, EMBER_ETOOBIG, EMBER_ESHAPE, EMBER_ESHAPE,
    EMBER_ESHAPE, EMBER_ENONFINITE, EMBER_ESHAPE, EMBER_EINVAL, EMBER_ETOOBIG,
    EMBER_EINVAL, EMBER_EAGAIN, EMBER_EINVAL, EMBER_EINVAL};

#define LOG_EVERY_MS 10000

/* ---- state ----------------------------------------------------------------------------------- */

typedef struct {
  net_route route;
  bool delimiter;       /* REQ peer: the reply needs the empty frame */
} peer;

typedef struct {
  peer from;
  uint64_t request_id;
  uint32_t batch_size;
} pending_sample;

/* Acks for consecutive stored batches of one peer, held until the end of an insert burst and sent
 * as one InsertAck covering first..last (fewer messages and wake-ups under load; at light load a
 * burst is one batch, so every batch is acked at once). */
#define MAX_ACK_RUNS 32
typedef struct {
  peer to;
  uint64_t actor_id, first, last;
  uint64_t accepted;
} ack_run;

/* What each actor last told us: its latest dropped_before (cumulative, per the protocol) and batch
 * sequence, so the server can export how much actors dropped and notice sequence gaps (batches lost
 * in flight). Open addressing; actors beyond MAX_ACTORS are not tracked (counted once in a log). */
#define MAX_ACTORS 4096
typedef struct {
  uint64_t actor_id, dropped_before, last_sequence;
  bool used;
} actor_entry;

typedef struct {
  metric *size, *capacity, *inserted, *insert_batches, *evicted, *sampled, *sample_batches;
  metric *rejected[R_COUNT];
  metric *sample_waits, *insert_waits, *pending, *priority_updates, *priority_stale, *undeliverable;
  metric *snapshot_age, *snapshots_written, *snapshot_failures, *restored, *actor_dropped, *memory_bytes;
  metric *sequence_gaps, *table_inserted, *table_sampled, *snap_inserted, *snap_sampled;
} server_metrics;

/* Threads: replay_server_run's thread serves the insert socket (and the timers: snapshots, progress
 * lines); a second thread, started by run, serves the sample socket. They share the table, the rate
 * limiter and the counters below under `lock`. Each thread owns its socket, arena and what is
 * marked as its own. Two threads rather than one: the learner's requests never wait behind a burst
 * of inserts, the two paths run in parallel on a multi-core host, and on a loaded host the server
 * is not one thread among many competing for a single fair share of the CPU. */
struct replay_server {
  replay_config cfg;
  void *ctx;
  void *insert_sock, *sample_sock;
  char insert_ep[CONFIG_STRING_MAX], sample_ep[CONFIG_STRING_MAX];
  atomic_int stop;
  pthread_mutex_t lock;          /* table, rl, rng, counters, snapshot state */
  pthread_mutex_t log_lock;      /* rejection log rate limiting, rejected_total */
  replay_table *table;
  atomic_bool spec_ready;        /* set once (release) by the insert thread after the spec is set */
  replay_spec spec;              /* a copy, immutable once spec_ready */
  rate_limiter rl;
  rng_t rng;
  arena insert_arena, sample_arena;
  metrics_registry *metrics, *own_metrics;
  server_metrics m;
  /* sample thread's own: parked sample requests (a ring) and scratch */
  pending_sample *pending;
  size_t pending_cap, pending_head, pending_len;
  atomic_size_t pending_count;   /* pending_len, readable from other threads */
  atomic_bool inserts_waiting;   /* the insert thread is held back by the rate limiter */
  /* wake-ups between the threads (inproc PAIRs): the insert thread tells the sample thread that
   * parked requests may be servable now, the sample thread tells the insert thread that inserts
   * may be allowed again */
  void *kick_sample_tx, *kick_sample_rx, *kick_insert_tx, *kick_insert_rx;
  pthread_t sample_thread;
  int sample_rc;
  /* scratch for building SampleBatches; grows to the largest batch served, then stays */
  size_t scratch_rows;
  float *s_obs, *s_next_obs, *s_action, *s_reward, *s_logp, *s_weights;
  protobuf_c_boolean *s_term, *s_trunc;
  uint64_t *s_keys, *s_pv, *s_aid;
  /* counters beside the table's own */
  uint64_t samples, sample_batches, insert_batches, rejected_total, restored, actor_dropped;
  uint64_t snapshot_seq;
  double last_snapshot_s, started_s, last_log_s;
  uint64_t snap_inserts, snap_samples, snap_updates, priority_updates; /* what the last snapshot saw */
  /* the periodic snapshot being written by a child process (insert thread's own; see maybe_snapshot) */
  pid_t snap_child;              /* 0 = none */
  int snap_child_err;            /* read end of a pipe the child writes its error message to */
  double snap_child_started_s, snap_retry_s;
  uint64_t child_inserts, child_samples, child_updates, child_size;
  bool inserts_blocked;
  uint64_t last_log_inserts, last_log_samples;
  ack_run runs[MAX_ACK_RUNS];
  int n_runs;
  actor_entry *actors;
  size_t n_actors;
  double reason_last_log_s[R_COUNT];
  uint64_t reason_suppressed[R_COUNT];
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- sending --------------------------------------------------------------------------------- */

/* Sends env to a peer: routing id, the empty delimiter for REQ peers, then the Envelope packed
 * straight into the message buffer (no intermediate copy). */
static int send_envelope(replay_server *s, void *sock, const peer *to, Ember__Envelope *env) {
  env->schema_version = EMBER_SCHEMA_VERSION;
  size_t n = ember__envelope__get_packed_size(env);
  zmq_msg_t msg;
  if (zmq_msg_init_size(&msg, n) != 0) return EMBER_ENOMEM;
  ember__envelope__pack(env, zmq_msg_data(&msg));
  if (zmq_send(sock, to->route.id, to->route.len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      (to->delimiter && zmq_send(sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) ||
      zmq_msg_send(&msg, sock, ZMQ_DONTWAIT) < 0) {
    /* the peer is gone (ROUTER_MANDATORY: EHOSTUNREACH) or its queue is full (EAGAIN) */
    zmq_msg_close(&msg);
    metric_inc(s->m.undeliverable);
    return EMBER_EIO;
  }
  return 0;
}

static void send_error(replay_server *s, void *sock, const peer *to, int code, const char *text,
                       uint64_t request_id) {
  Ember__ErrorReply e = EMBER__ERROR_REPLY__INIT;
  e.code = (uint32_t)(code < 0 ? -code : code);
  e.message = (char *)text;
  e.request_id = request_id;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_ERROR;
  env.error = &e;
  send_envelope(s, sock, to, &env);
}

/* Counts a rejection, logs it (at most once per reason per LOG_EVERY_MS, with how many were
 * suppressed in between). */
static void count_reject(replay_server *s, reject_reason r, const char *socket_name, const char *why) {
  metric_inc(s->m.rejected[r]);
  pthread_mutex_lock(&s->log_lock);
  s->rejected_total++;
  double t = now_s();
  if (s->reason_last_log_s[r] == 0 || t - s->reason_last_log_s[r] >= LOG_EVERY_MS / 1000.0) {
    log_event(LOG_WARN, "replay", "rejected", LF_STR("reason", reason_names[r]), LF_STR("socket", socket_name),
              LF_STR("detail", why), LF_U64("suppressed_since_last_log", s->reason_suppressed[r]));
    s->reason_last_log_s[r] = t;
    s->reason_suppressed[r] = 0;
  } else {
    s->reason_suppressed[r]++;
  }
  pthread_mutex_unlock(&s->log_lock);
}

/* Rejects a request that has no InsertAck form: ErrorReply to the peer. */
static void flush_peer(replay_server *s, const peer *to);

static void reject_with_error(replay_server *s, void *sock, const peer *to, reject_reason r, const char *why,
                              uint64_t request_id) {
  if (sock == s->insert_sock) flush_peer(s, to);
  char text[640];
  snprintf(text, sizeof text, "%s: %s", reason_names[r], why);
  count_reject(s, r, sock == s->insert_sock ? "insert" : "sample", why);
  send_error(s, sock, to, reason_codes[r], text, request_id);
}

/* ---- stats ----------------------------------------------------------------------------------- */

typedef struct {
  Ember__Metric *items;
  Ember__Metric **ptrs;
  size_t n, cap;
} stats_build;

static void stats_visit(void *ctx, const char *name, const char *labels, metric_kind kind, double value) {
  (void)kind;
  stats_build *b = ctx;
  if (strncmp(name, "replay_", 7) != 0 || b->n == b->cap) return;
  Ember__Metric *m = &b->items[b->n];
  ember__metric__init(m);
  m->name = strdup(name);
  m->labels = strdup(labels ? labels : "");
  m->value = value;
  b->ptrs[b->n++] = m;
}

static void update_gauges(replay_server *s) {
  pthread_mutex_lock(&s->lock);
  metric_set(s->m.size, (double)replay_table_size(s->table));
  metric_set(s->m.memory_bytes, (double)replay_table_memory_bytes(s->table));
  metric_set(s->m.table_inserted, (double)replay_table_inserts(s->table));
  metric_set(s->m.table_sampled, (double)s->samples);
  double age = now_s() - (s->last_snapshot_s > 0 ? s->last_snapshot_s : s->started_s);
  pthread_mutex_unlock(&s->lock);
  metric_set(s->m.pending, (double)atomic_load(&s->pending_count));
  metric_set(s->m.snapshot_age, age);
}

static void send_stats(replay_server *s, void *sock, const peer *to) {
  update_gauges(s);
  stats_build b = {.cap = 256};
  b.items = calloc(b.cap, sizeof *b.items);
  b.ptrs = calloc(b.cap, sizeof *b.ptrs);
  if (!b.items || !b.ptrs) goto done;
  metrics_foreach(s->metrics, stats_visit, &b);
  Ember__Stats st = EMBER__STATS__INIT;
  st.role = "replay";
  st.n_metrics = b.n;
  st.metrics = b.ptrs;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_STATS;
  env.stats = &st;
  send_envelope(s, sock, to, &env);
done:
  for (size_t i = 0; i < b.n; i++) free(b.items[i].name), free(b.items[i].labels);
  free(b.items);
  free(b.ptrs);
}

/* ---- inserts --------------------------------------------------------------------------------- */

static void send_ack(replay_server *s, const peer *to, const Ember__TransitionBatch *b, uint32_t accepted,
                     uint32_t rejected, const char *error) {
  Ember__InsertAck ack = EMBER__INSERT_ACK__INIT;
  ack.actor_id = b->actor_id;
  ack.sequence = b->sequence;
  ack.accepted = accepted;
  ack.rejected = rejected;
  ack.error = (char *)(error ? error : "");
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_INSERT_ACK;
  env.insert_ack = &ack;
  send_envelope(s, s->insert_sock, to, &env);
}

static void note_actor(replay_server *s, const Ember__TransitionBatch *b);

static bool same_peer(const peer *a, const peer *b) {
  return a->route.len == b->route.len && memcmp(a->route.id, b->route.id, a->route.len) == 0;
}

static void flush_run(replay_server *s, int i) {
  ack_run *r = &s->runs[i];
  Ember__InsertAck ack = EMBER__INSERT_ACK__INIT;
  ack.actor_id = r->actor_id;
  ack.sequence = r->last;
  ack.first_sequence = r->first == r->last ? 0 : r->first;
  ack.accepted = (uint32_t)r->accepted;
  ack.error = "";
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_INSERT_ACK;
  env.insert_ack = &ack;
  send_envelope(s, s->insert_sock, &r->to, &env);
  s->runs[i] = s->runs[--s->n_runs]; /* order between peers does not matter */
}

static void flush_acks(replay_server *s) {
  while (s->n_runs > 0) flush_run(s, s->n_runs - 1);
}

/* Flushes the held ack of this peer, if any (before anything else is sent to it, to keep order). */
static void flush_peer(replay_server *s, const peer *to) {
  for (int i = 0; i < s->n_runs; i++)
    if (same_peer(&s->runs[i].to, to)) return flush_run(s, i);
}

static void ack_stored(replay_server *s, const peer *to, const Ember__TransitionBatch *b) {
  for (int i = 0; i < s->n_runs; i++) {
    ack_run *r = &s->runs[i];
    if (!same_peer(&r->to, to)) continue;
    if (r->actor_id == b->actor_id && b->sequence == r->last + 1 && r->accepted + b->count <= UINT32_MAX) {
      r->last = b->sequence;
      r->accepted += b->count;
      return;
    }
    flush_run(s, i);
    break;
  }
  if (s->n_runs == MAX_ACK_RUNS) flush_acks(s);
  s->runs[s->n_runs++] = (ack_run){.to = *to, .actor_id = b->actor_id, .first = b->sequence, .last = b->sequence,
                                   .accepted = b->count};
}

static void reject_batch(replay_server *s, const peer *to, const Ember__TransitionBatch *b, reject_reason r,
                         const char *why) {
  flush_peer(s, to);
  note_actor(s, b); /* a refused batch still tells us its sequence and its actor's drops */
  char text[640];
  snprintf(text, sizeof text, "%s: %s", reason_names[r], why);
  count_reject(s, r, "insert", why);
  send_ack(s, to, b, 0, b->count, text);
}

static void note_actor(replay_server *s, const Ember__TransitionBatch *b) {
  size_t h = (size_t)(b->actor_id * 0x9e3779b97f4a7c15ULL >> 52) % MAX_ACTORS;
  for (size_t probe = 0; probe < MAX_ACTORS; probe++, h = (h + 1) % MAX_ACTORS) {
    actor_entry *e = &s->actors[h];
    if (!e->used) {
      if (s->n_actors + 1 >= MAX_ACTORS) return;
      *e = (actor_entry){.actor_id = b->actor_id, .used = true};
      s->n_actors++;
      log_event(LOG_INFO, "replay", "actor_seen", LF_U64("actor_id", b->actor_id), LF_U64("sequence", b->sequence));
    } else if (e->actor_id != b->actor_id) {
      continue;
    } else if (b->sequence <= e->last_sequence) { /* the actor restarted: its counters start over */
      log_event(LOG_INFO, "replay", "actor_restarted", LF_U64("actor_id", b->actor_id),
                LF_U64("sequence", b->sequence), LF_U64("previous_sequence", e->last_sequence));
      e->last_sequence = 0;
      e->dropped_before = 0;
    } else if (b->sequence > e->last_sequence + 1 && e->last_sequence != 0) {
      metric_add(s->m.sequence_gaps, (double)(b->sequence - e->last_sequence - 1));
    }
    if (b->dropped_before > e->dropped_before) {
      s->actor_dropped += b->dropped_before - e->dropped_before;
      e->dropped_before = b->dropped_before;
      metric_set(s->m.actor_dropped, (double)s->actor_dropped);
    }
    e->last_sequence = b->sequence;
    return;
  }
}

static void handle_insert(replay_server *s, const peer *from, const Ember__TransitionBatch *b) {
  char why[512];
  if (b->count == 0) return reject_batch(s, from, b, R_EMPTY_BATCH, "TransitionBatch has count 0");
  const char *task = b->task ? b->task : "";
  if (strlen(task) >= REPLAY_TASK_MAX) return reject_batch(s, from, b, R_TASK_MISMATCH, "task name too long");
  bool have_spec = atomic_load_explicit(&s->spec_ready, memory_order_acquire);
  if (have_spec) {
    const replay_spec *sp = &s->spec;
    if (sp->task[0] && task[0] && strcmp(sp->task, task) != 0) {
      snprintf(why, sizeof why, "batch is for task '%s', the table holds '%s'", task, sp->task);
      return reject_batch(s, from, b, R_TASK_MISMATCH, why);
    }
    if (b->obs_dim != sp->obs_dim || b->act_dim != sp->act_dim) {
      snprintf(why, sizeof why, "batch has obs_dim %u act_dim %u, the table holds obs_dim %u act_dim %u",
               b->obs_dim, b->act_dim, sp->obs_dim, sp->act_dim);
      return reject_batch(s, from, b, R_DIMS_MISMATCH, why);
    }
  } else if (b->obs_dim == 0 || b->act_dim == 0) {
    snprintf(why, sizeof why, "batch has obs_dim %u act_dim %u (both must be > 0)", b->obs_dim, b->act_dim);
    return reject_batch(s, from, b, R_DIMS_MISMATCH, why);
  }
  ember_err err = {0};
  int rc = net_check_transitions(b, b->obs_dim, b->act_dim, &err);
  if (rc != 0)
    return reject_batch(s, from, b, rc == EMBER_ENONFINITE ? R_NONFINITE : R_INCONSISTENT_LENGTHS, err.msg);
  if (!have_spec) { /* only this thread sets the spec: no race with itself */
    replay_spec sp = {.obs_dim = b->obs_dim, .act_dim = b->act_dim};
    memcpy(sp.task, task, strlen(task)); /* checked shorter than REPLAY_TASK_MAX above */
    pthread_mutex_lock(&s->lock);
    rc = replay_table_set_spec(s->table, &sp, &err);
    pthread_mutex_unlock(&s->lock);
    if (rc != 0) {
      log_event(LOG_ERROR, "replay", "spec_failed", LF_STR("error", err.msg));
      return reject_batch(s, from, b, R_DIMS_MISMATCH, err.msg);
    }
    s->spec = sp;
    atomic_store_explicit(&s->spec_ready, true, memory_order_release);
    log_event(LOG_INFO, "replay", "spec_set", LF_STR("task", sp.task), LF_U64("obs_dim", sp.obs_dim),
              LF_U64("act_dim", sp.act_dim), LF_U64("actor_id", b->actor_id),
              LF_U64("memory_bytes", replay_table_memory_bytes(s->table)));
  }
  uint64_t evicted = 0;
  pthread_mutex_lock(&s->lock);
  replay_table_insert(s->table, b, &evicted);
  rate_limiter_on_insert(&s->rl, b->count);
  rate_limiter_on_delete(&s->rl, evicted);
  s->insert_batches++;
  pthread_mutex_unlock(&s->lock);
  metric_add(s->m.inserted, b->count);
  metric_inc(s->m.insert_batches);
  note_actor(s, b);
  if (evicted) metric_add(s->m.evicted, (double)evicted);
  ack_stored(s, from, b);
}

/* ---- samples --------------------------------------------------------------------------------- */

static int ensure_scratch(replay_server *s, size_t rows) {
  if (rows <= s->scratch_rows) return 0;
  size_t od = s->spec.obs_dim, ad = s->spec.act_dim;
#define GROW(p, n) do { void *q = realloc((p), (n)); if (!q) return EMBER_ENOMEM; (p) = q; } while (0)
  GROW(s->s_obs, rows * od * sizeof(float));
  GROW(s->s_next_obs, rows * od * sizeof(float));
  GROW(s->s_action, rows * ad * sizeof(float));
  GROW(s->s_reward, rows * sizeof(float));
  GROW(s->s_logp, rows * sizeof(float));
  GROW(s->s_weights, rows * sizeof(float));
  GROW(s->s_term, rows * sizeof(protobuf_c_boolean));
  GROW(s->s_trunc, rows * sizeof(protobuf_c_boolean));
  GROW(s->s_keys, rows * sizeof(uint64_t));
  GROW(s->s_pv, rows * sizeof(uint64_t));
  GROW(s->s_aid, rows * sizeof(uint64_t));
#undef GROW
  s->scratch_rows = rows;
  return 0;
}

static bool can_serve(const replay_server *s, uint32_t n) {
  return replay_table_size(s->table) > 0 && rate_limiter_can_sample(&s->rl, n);
}

/* Serves one request if the rate limiter allows it now: samples and gathers under the lock, packs
 * and sends outside it. Returns false (nothing done) when it must wait. The sample is counted when
 * taken and uncounted if the peer turns out to be gone, so the limiter only counts delivered ones. */
static bool try_serve(replay_server *s, const peer *to, uint64_t request_id, uint32_t n) {
  if (!atomic_load_explicit(&s->spec_ready, memory_order_acquire)) return false;
  if (ensure_scratch(s, n) != 0) {
    send_error(s, s->sample_sock, to, EMBER_ENOMEM, "replay server out of memory for this batch size", request_id);
    return true;
  }
  ember_err err = {0};
  pthread_mutex_lock(&s->lock);
  if (!can_serve(s, n)) {
    pthread_mutex_unlock(&s->lock);
    return false;
  }
  int rc = replay_table_sample(s->table, &s->rng, n, s->s_keys, s->s_weights, &err);
  replay_rows rows = {s->s_obs, s->s_action, s->s_reward, s->s_next_obs, s->s_logp,
                      s->s_term, s->s_trunc, s->s_pv, s->s_aid};
  if (rc == 0) {
    replay_table_gather(s->table, s->s_keys, n, &rows);
    rate_limiter_on_sample(&s->rl, n);
    s->samples += n;
    s->sample_batches++;
  }
  uint64_t table_size = replay_table_size(s->table);
  pthread_mutex_unlock(&s->lock);
  if (rc != 0) {
    send_error(s, s->sample_sock, to, err.code, err.msg, request_id);
    return true;
  }
  size_t od = s->spec.obs_dim, ad = s->spec.act_dim;
  Ember__TransitionBatch tb = EMBER__TRANSITION_BATCH__INIT;
  tb.task = s->spec.task;
  tb.obs_dim = s->spec.obs_dim, tb.act_dim = s->spec.act_dim, tb.count = n;
  tb.n_obs = tb.n_next_obs = n * od, tb.obs = s->s_obs, tb.next_obs = s->s_next_obs;
  tb.n_action = n * ad, tb.action = s->s_action;
  tb.n_reward = tb.n_behaviour_log_prob = tb.n_terminated = tb.n_truncated = n;
  tb.reward = s->s_reward, tb.behaviour_log_prob = s->s_logp, tb.terminated = s->s_term, tb.truncated = s->s_trunc;
  Ember__SampleBatch sb = EMBER__SAMPLE_BATCH__INIT;
  sb.request_id = request_id;
  sb.transitions = &tb;
  sb.n_keys = sb.n_weights = sb.n_policy_versions = sb.n_actor_ids = n;
  sb.keys = s->s_keys, sb.weights = s->s_weights, sb.policy_versions = s->s_pv, sb.actor_ids = s->s_aid;
  sb.table_size = table_size;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_SAMPLE_BATCH;
  env.sample_batch = &sb;
  if (send_envelope(s, s->sample_sock, to, &env) != 0) {
    pthread_mutex_lock(&s->lock);
    s->rl.samples -= n;
    s->samples -= n;
    s->sample_batches--;
    pthread_mutex_unlock(&s->lock);
    return true;
  }
  metric_add(s->m.sampled, n);
  metric_inc(s->m.sample_batches);
  return true;
}

static void serve_pending(replay_server *s) {
  while (s->pending_len > 0) {
    pending_sample *p = &s->pending[s->pending_head];
    if (!try_serve(s, &p->from, p->request_id, p->batch_size)) break;
    s->pending_head = (s->pending_head + 1) % s->pending_cap;
    s->pending_len--;
    atomic_store(&s->pending_count, s->pending_len);
  }
}

static void handle_sample_request(replay_server *s, const peer *from, const Ember__SampleRequest *r) {
  char why[256];
  if (r->batch_size == 0)
    return reject_with_error(s, s->sample_sock, from, R_BAD_BATCH_SIZE, "SampleRequest.batch_size is 0",
                             r->request_id);
  if (r->batch_size > replay_table_capacity(s->table)) {
    snprintf(why, sizeof why, "batch_size %u is more than the table can hold (capacity %zu)", r->batch_size,
             replay_table_capacity(s->table));
    return reject_with_error(s, s->sample_sock, from, R_BATCH_TOO_LARGE, why, r->request_id);
  }
  if (!rate_limiter_sample_feasible(&s->rl, r->batch_size)) {
    snprintf(why, sizeof why, "batch_size %u is more than 2 x error_buffer (%g): the rate limiter could never allow it",
             r->batch_size, s->rl.max_diff - s->rl.min_diff);
    return reject_with_error(s, s->sample_sock, from, R_BATCH_EXCEEDS_RATE_LIMITER, why, r->request_id);
  }
  if (s->pending_len == 0 && try_serve(s, from, r->request_id, r->batch_size)) return;
  if (s->pending_len == s->pending_cap) {
    snprintf(why, sizeof why, "%zu sample requests are already waiting for the rate limiter", s->pending_len);
    return reject_with_error(s, s->sample_sock, from, R_TOO_MANY_PENDING, why, r->request_id);
  }
  pending_sample *p = &s->pending[(s->pending_head + s->pending_len) % s->pending_cap];
  p->from = *from;
  p->request_id = r->request_id;
  p->batch_size = r->batch_size;
  s->pending_len++;
  atomic_store(&s->pending_count, s->pending_len);
  metric_inc(s->m.sample_waits);
}

static void handle_priority_update(replay_server *s, const peer *from, const Ember__PriorityUpdate *u) {
  char why[256];
  if (u->n_keys != u->n_priorities) {
    snprintf(why, sizeof why, "PriorityUpdate has %zu keys and %zu priorities", u->n_keys, u->n_priorities);
    return reject_with_error(s, s->sample_sock, from, R_INCONSISTENT_LENGTHS, why, 0);
  }
  for (size_t i = 0; i < u->n_priorities; i++) {
    float p = u->priorities[i];
    if (!isfinite(p) || p < 0) {
      snprintf(why, sizeof why, "priority[%zu] (key %" PRIu64 ") is %g; priorities must be finite and >= 0", i,
               u->keys[i], (double)p);
      return reject_with_error(s, s->sample_sock, from, R_BAD_PRIORITY, why, 0);
    }
  }
  uint64_t stale = 0;
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < u->n_keys; i++)
    if (replay_table_update_priority(s->table, u->keys[i], u->priorities[i]) == EMBER_ENOENT) stale++;
  s->priority_updates += u->n_keys;
  pthread_mutex_unlock(&s->lock);
  metric_add(s->m.priority_updates, (double)(u->n_keys - stale));
  if (stale) metric_add(s->m.priority_stale, (double)stale);
}

/* A peer introduces itself: logged, and refused early when it announces another task or other
 * dims than the table holds (its batches would all be refused). Nothing is sent when it matches. */
static void handle_hello(replay_server *s, void *sock, const peer *from, const Ember__Hello *h) {
  char why[256];
  const char *task = h->task ? h->task : "";
  if (atomic_load_explicit(&s->spec_ready, memory_order_acquire)) {
    const replay_spec *sp = &s->spec;
    if (sp->task[0] && task[0] && strcmp(sp->task, task) != 0) {
      snprintf(why, sizeof why, "peer announces task '%s', the table holds '%s'", task, sp->task);
      return reject_with_error(s, sock, from, R_TASK_MISMATCH, why, 0);
    }
    if ((h->obs_dim && h->obs_dim != sp->obs_dim) || (h->act_dim && h->act_dim != sp->act_dim)) {
      snprintf(why, sizeof why, "peer announces obs_dim %u act_dim %u, the table holds obs_dim %u act_dim %u",
               h->obs_dim, h->act_dim, sp->obs_dim, sp->act_dim);
      return reject_with_error(s, sock, from, R_DIMS_MISMATCH, why, 0);
    }
  }
  log_event(LOG_INFO, "replay", "hello", LF_STR("role", h->role ? h->role : ""), LF_U64("id", h->id),
            LF_STR("task", task), LF_STR("host", h->hostname ? h->hostname : ""), LF_U64("pid", h->pid),
            LF_STR("version", h->software_version ? h->software_version : ""));
}

/* ---- receiving ------------------------------------------------------------------------------- */

static void drain(void *sock) {
  int more = 1;
  size_t sz = sizeof more;
  while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, sock, 0);
    zmq_msg_close(&m);
  }
}

/* Handles one message waiting on sock. Returns 0, EMBER_EAGAIN when none was waiting, EMBER_EIO. */
static int handle_one(replay_server *s, void *sock) {
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
    drain(sock);
    reject_with_error(s, sock, &from, R_BAD_FRAMING, "message has more than one payload frame", 0);
    goto out;
  }
  size_t len = zmq_msg_size(&body);
  if ((int64_t)len > s->cfg.max_message_bytes) {
    snprintf(why, sizeof why, "message of %zu bytes is over the %" PRId64 "-byte limit", len,
             s->cfg.max_message_bytes);
    reject_with_error(s, sock, &from, R_TOO_BIG, why, 0);
    goto out;
  }
  Ember__Envelope *env = NULL;
  ember_err derr = {0};
  int drc = net_decode_with(zmq_msg_data(&body), len, (size_t)s->cfg.max_message_bytes, arena_allocator(ar), &env,
                            &derr);
  if (drc == EMBER_ESCHEMA) {
    reject_with_error(s, sock, &from, R_SCHEMA_VERSION, derr.msg, 0);
    goto out;
  }
  if (drc && !env) { /* a body-less Envelope decodes (env set) and is refused in the switch below */
    reject_with_error(s, sock, &from, ar->failed ? R_TOO_BIG : R_NOT_PROTOBUF, derr.msg, 0);
    goto out;
  }
  switch (env->body_case) {
    case EMBER__ENVELOPE__BODY_TRANSITION_BATCH:
      if (sock != s->insert_sock) goto unexpected;
      handle_insert(s, &from, env->transition_batch);
      break;
    case EMBER__ENVELOPE__BODY_SAMPLE_REQUEST:
      if (sock != s->sample_sock) goto unexpected;
      handle_sample_request(s, &from, env->sample_request);
      break;
    case EMBER__ENVELOPE__BODY_PRIORITY_UPDATE:
      if (sock != s->sample_sock) goto unexpected;
      handle_priority_update(s, &from, env->priority_update);
      break;
    case EMBER__ENVELOPE__BODY_STATS_REQUEST:
      if (sock == s->insert_sock) flush_peer(s, &from);
      send_stats(s, sock, &from);
      break;
    case EMBER__ENVELOPE__BODY_HELLO:
      handle_hello(s, sock, &from, env->hello);
      break;
    case EMBER__ENVELOPE__BODY_HEARTBEAT:
      break;
    case EMBER__ENVELOPE__BODY__NOT_SET:
      reject_with_error(s, sock, &from, R_NO_BODY, "Envelope has no body (or one this build does not know)", 0);
      break;
    default:
    unexpected:
      snprintf(why, sizeof why, "%s is not served on the %s socket", net_body_name(env->body_case), sock_name);
      reject_with_error(s, sock, &from, R_UNEXPECTED_MESSAGE, why, 0);
      break;
  }
out:
  zmq_msg_close(&body);
  arena_reset(ar);
  return 0;
}

/* ---- snapshots ------------------------------------------------------------------------------- */

/* A snapshot file is complete: advance the sequence, record what it holds, prune older files. */
static void snapshot_done(replay_server *s, const char *path, uint64_t inserts, uint64_t samples, uint64_t updates,
                          uint64_t size, double seconds, const char *how) {
  s->snapshot_seq++;
  s->last_snapshot_s = now_s();
  s->snap_inserts = inserts;
  s->snap_samples = samples;
  s->snap_updates = updates;
  metric_inc(s->m.snapshots_written);
  metric_set(s->m.snap_inserted, (double)s->snap_inserts);
  metric_set(s->m.snap_sampled, (double)s->snap_samples);
  ember_err perr = {0};
  if (replay_snapshot_prune(s->cfg.snapshot_dir, (int)s->cfg.snapshot_keep, &perr) != 0)
    log_event(LOG_WARN, "replay", "snapshot_prune_failed", LF_STR("error", perr.msg));
  log_event(LOG_INFO, "replay", "snapshot_written", LF_STR("path", path), LF_U64("transitions", size),
            LF_U64("inserts", inserts), LF_U64("samples", samples), LF_F64("seconds", seconds),
            LF_STR("writer", how));
}

/* Writes a snapshot; the caller holds s->lock (the table must not change while it is written). */
static int snapshot_locked(replay_server *s, ember_err *err) {
  replay_snapshot_meta meta = {.sequence = s->snapshot_seq, .created_unix_ms = unix_ms(), .samples = s->samples,
                               .sample_batches = s->sample_batches, .insert_batches = s->insert_batches};
  char path[4096];
  double t0 = now_s();
  int rc = replay_snapshot_write(s->cfg.snapshot_dir, s->table, &meta, (int)s->cfg.snapshot_zstd_level, path,
                                 sizeof path, err);
  if (rc != 0) {
    metric_inc(s->m.snapshot_failures);
    log_event(LOG_ERROR, "replay", "snapshot_failed", LF_STR("dir", s->cfg.snapshot_dir),
              LF_STR("error", err ? err->msg : ember_strerror(rc)));
    return rc;
  }
  snapshot_done(s, path, replay_table_inserts(s->table), s->samples, s->priority_updates,
                replay_table_size(s->table), now_s() - t0, "server");
  return 0;
}

/* Periodic snapshots are written by a forked child: fork() gives it a copy-on-write image of the
 * table as of one instant (taken under the lock, a few milliseconds for the page tables), and both
 * server threads go on serving while it compresses and writes. The price is memory: pages the server
 * changes meanwhile are copied, at most one more table's worth. The child only writes the file (no
 * logging, no ZeroMQ: other threads' locks may have been held at the fork) and reports failure as
 * text on a pipe; it dies with the server (PR_SET_PDEATHSIG), so a killed server leaves no writer
 * behind that could rename an old image over a newer file. The insert thread reaps it. */
static void reap_snapshot_child(replay_server *s, bool wait) {
  if (s->snap_child <= 0) return;
  int status = 0;
  pid_t r;
  do r = waitpid(s->snap_child, &status, wait ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return; /* still writing */
  char msg[sizeof(((ember_err *)0)->msg)] = "";
  ssize_t n = read(s->snap_child_err, msg, sizeof msg - 1);
  msg[n > 0 ? n : 0] = 0;
  close(s->snap_child_err);
  s->snap_child = 0;
  double seconds = now_s() - s->snap_child_started_s;
  pthread_mutex_lock(&s->lock);
  if (r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/replay-%020" PRIu64 ".snap", s->cfg.snapshot_dir, s->snapshot_seq);
    snapshot_done(s, path, s->child_inserts, s->child_samples, s->child_updates, s->child_size, seconds, "child");
  } else {
    char why[96];
    if (r < 0) snprintf(why, sizeof why, "waitpid: %s", strerror(errno));
    else if (WIFSIGNALED(status)) snprintf(why, sizeof why, "killed by signal %d", WTERMSIG(status));
    else snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(status));
    metric_inc(s->m.snapshot_failures);
    s->snap_retry_s = now_s() + (s->cfg.snapshot_interval_s < 10 ? s->cfg.snapshot_interval_s : 10);
    log_event(LOG_ERROR, "replay", "snapshot_failed", LF_STR("dir", s->cfg.snapshot_dir),
              LF_STR("error", msg[0] ? msg : why), LF_STR("writer", "child"));
  }
  pthread_mutex_unlock(&s->lock);
}

/* Starts a child writing snapshot s->snapshot_seq; the caller holds s->lock. 0 = started. */
static int start_snapshot_child(replay_server *s) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  /* close-on-exec, so a program another thread starts meanwhile holds no end of it, and a reader
   * that never blocks: the child has written (or not) by the time it is reaped */
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  replay_snapshot_meta meta = {.sequence = s->snapshot_seq, .created_unix_ms = unix_ms(), .samples = s->samples,
                               .sample_batches = s->sample_batches, .insert_batches = s->insert_batches};
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    if (getppid() != parent) _exit(3); /* the server died before the line above */
    close(fds[0]);
    ember_err err = {0};
    int rc = replay_snapshot_write(s->cfg.snapshot_dir, s->table, &meta, (int)s->cfg.snapshot_zstd_level, NULL, 0,
                                   &err);
    if (rc != 0) {
      ssize_t w = write(fds[1], err.msg, strlen(err.msg)); /* nothing to do if even this fails */
      (void)w;
    }
    _exit(rc == 0 ? 0 : 1);
  }
  close(fds[1]);
  s->snap_child = pid;
  s->snap_child_err = fds[0];
  s->snap_child_started_s = now_s();
  s->child_inserts = replay_table_inserts(s->table);
  s->child_samples = s->samples;
  s->child_updates = s->priority_updates;
  s->child_size = replay_table_size(s->table);
  return 0;
}

int replay_server_snapshot(replay_server *s, ember_err *err) {
  if (!s->cfg.snapshot_dir[0]) return 0;
  reap_snapshot_child(s, true); /* a periodic one in flight finishes first: sequences stay in order */
  pthread_mutex_lock(&s->lock);
  int rc = snapshot_locked(s, err);
  pthread_mutex_unlock(&s->lock);
  return rc;
}

static void maybe_snapshot(replay_server *s, double t) {
  if (!s->cfg.snapshot_dir[0] || s->cfg.snapshot_interval_s <= 0) return;
  reap_snapshot_child(s, false);
  if (s->snap_child > 0 || t < s->snap_retry_s) return; /* one writer at a time; a failure backs off */
  pthread_mutex_lock(&s->lock);
  double since = t - (s->last_snapshot_s > 0 ? s->last_snapshot_s : s->started_s);
  if (since >= s->cfg.snapshot_interval_s) {
    if (replay_table_inserts(s->table) == s->snap_inserts && s->samples == s->snap_samples &&
        s->priority_updates == s->snap_updates) {
      s->last_snapshot_s = t; /* nothing changed: the newest file is still current */
    } else if (start_snapshot_child(s) != 0) {
      /* no fork (out of memory or processes): write in place, holding both threads meanwhile */
      log_event(LOG_WARN, "replay", "snapshot_fork_failed", LF_STR("error", strerror(errno)));
      ember_err err = {0};
      if (snapshot_locked(s, &err) != 0)
        s->snap_retry_s = t + (s->cfg.snapshot_interval_s < 10 ? s->cfg.snapshot_interval_s : 10);
    }
  }
  pthread_mutex_unlock(&s->lock);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static void register_metrics(replay_server *s) {
  metrics_registry *r = s->metrics;
  server_metrics *m = &s->m;
  m->size = metrics_gauge(r, "replay_size", NULL, "transitions in the table");
  m->capacity = metrics_gauge(r, "replay_capacity", NULL, "transitions the table can hold");
  m->inserted = metrics_counter(r, "replay_inserted_transitions_total", NULL, "transitions stored");
  m->insert_batches = metrics_counter(r, "replay_insert_batches_total", NULL, "TransitionBatches stored");
  m->evicted = metrics_counter(r, "replay_evicted_transitions_total", NULL, "transitions evicted (FIFO)");
  m->sampled = metrics_counter(r, "replay_sampled_transitions_total", NULL, "transitions served in samples");
  m->sample_batches = metrics_counter(r, "replay_sample_batches_total", NULL, "SampleBatches served");
  for (int i = 0; i < R_COUNT; i++) {
    char labels[96];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason_names[i]);
    m->rejected[i] = metrics_counter(r, "replay_rejected_total", labels, "messages refused, by reason");
  }
  m->sample_waits = metrics_counter(r, "replay_rate_limiter_sample_waits_total", NULL,
                                    "sample requests parked until the rate limiter allowed them");
  m->insert_waits = metrics_counter(r, "replay_rate_limiter_insert_waits_total", NULL,
                                    "times the rate limiter paused reading inserts");
  m->pending = metrics_gauge(r, "replay_pending_sample_requests", NULL, "sample requests parked now");
  m->priority_updates = metrics_counter(r, "replay_priority_updates_total", NULL, "priorities updated");
  m->priority_stale = metrics_counter(r, "replay_priority_updates_stale_total", NULL,
                                      "priority updates for evicted keys (ignored)");
  m->undeliverable = metrics_counter(r, "replay_replies_undeliverable_total", NULL,
                                     "replies the peer was gone for (or whose queue was full)");
  m->snapshot_age = metrics_gauge(r, "replay_snapshot_age_seconds", NULL, "seconds since the last snapshot");
  m->snapshots_written = metrics_counter(r, "replay_snapshots_written_total", NULL, "snapshots written");
  m->snapshot_failures = metrics_counter(r, "replay_snapshot_failures_total", NULL, "snapshots that failed");
  m->restored = metrics_gauge(r, "replay_restored_transitions", NULL, "transitions restored at start");
  m->actor_dropped = metrics_gauge(r, "replay_actor_reported_dropped_transitions", NULL,
                                   "transitions actors reported dropping (sum of the latest dropped_before)");
  m->sequence_gaps = metrics_counter(r, "replay_actor_sequence_gaps_total", NULL,
                                     "batches missing between an actor's sequence numbers (lost in flight)");
  m->table_inserted = metrics_gauge(r, "replay_table_inserted_transitions", NULL,
                                    "transitions inserted over the table's life (survives restarts; = next key)");
  m->table_sampled = metrics_gauge(r, "replay_table_sampled_transitions", NULL,
                                   "transitions sampled over the table's life (the rate limiter's count)");
  m->snap_inserted = metrics_gauge(r, "replay_last_snapshot_inserted_transitions", NULL,
                                   "replay_table_inserted_transitions captured by the last snapshot");
  m->snap_sampled = metrics_gauge(r, "replay_last_snapshot_sampled_transitions", NULL,
                                  "replay_table_sampled_transitions captured by the last snapshot");
  m->memory_bytes = metrics_gauge(r, "replay_table_memory_bytes", NULL, "bytes the table holds");
}

static int bind_router(replay_server *s, const char *endpoint, void **sock, char *bound, ember_err *err) {
  net_socket_opts o = {.max_message_bytes = s->cfg.max_message_bytes, .linger_ms = 0,
                       .send_hwm = 100000, .recv_hwm = 100000};
  *sock = net_socket(s->ctx, ZMQ_ROUTER, endpoint, true, &o, err);
  if (!*sock) return err ? err->code : EMBER_EINVAL;
  int one = 1;
  zmq_setsockopt(*sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
  size_t len = CONFIG_STRING_MAX;
  if (zmq_getsockopt(*sock, ZMQ_LAST_ENDPOINT, bound, &len) != 0 || !bound[0])
    snprintf(bound, CONFIG_STRING_MAX, "%s", endpoint);
  return 0;
}

/* The name is unique for the process's lifetime, not only among live servers: libzmq releases an inproc
 * name after zmq_close asynchronously, so a name built from the server's address alone was refused
 * ("Address already in use") when a new server in the same context got a freed server's memory. */
static atomic_ullong kick_pairs_made;

static int make_kick_pair(replay_server *s, const char *name, void **tx, void **rx, ember_err *err) {
  char ep[112];
  snprintf(ep, sizeof ep, "inproc://ember-replay-kick-%s-%p-%llu", name, (void *)s,
           (unsigned long long)atomic_fetch_add(&kick_pairs_made, 1));
  int zero = 0, hwm = 4;
  *rx = zmq_socket(s->ctx, ZMQ_PAIR);
  *tx = zmq_socket(s->ctx, ZMQ_PAIR);
  if (!*rx || !*tx) return ember_fail(err, EMBER_EIO, "zmq_socket(PAIR): %s", zmq_strerror(zmq_errno()));
  zmq_setsockopt(*rx, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(*tx, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(*tx, ZMQ_SNDHWM, &hwm, sizeof hwm);
  if (zmq_bind(*rx, ep) != 0 || zmq_connect(*tx, ep) != 0)
    return ember_fail(err, EMBER_EIO, "binding %s: %s", ep, zmq_strerror(zmq_errno()));
  return 0;
}

/* A wake-up; dropped when one is already waiting (that one will do). */
static void kick(void *tx) { zmq_send(tx, "", 0, ZMQ_DONTWAIT); }

static void drain_kicks(void *rx) {
  char b;
  while (zmq_recv(rx, &b, 1, ZMQ_DONTWAIT) >= 0) {
  }
}

replay_server *replay_server_new(const replay_config *cfg, void *zmq_ctx, metrics_registry *metrics, ember_err *err) {
  if (replay_config_validate(cfg, err) != 0) return NULL;
  replay_server *s = calloc(1, sizeof *s);
  if (!s) {
    ember_fail(err, EMBER_ENOMEM, "replay server: out of memory");
    return NULL;
  }
  s->cfg = *cfg;
  s->ctx = zmq_ctx;
  atomic_init(&s->stop, 0);
  s->started_s = now_s();
  s->snapshot_seq = 1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_mutex_init(&s->log_lock, NULL);
  atomic_init(&s->spec_ready, false);
  atomic_init(&s->pending_count, 0);
  atomic_init(&s->inserts_waiting, false);
  arena_init(&s->insert_arena, 1 << 20);
  arena_init(&s->sample_arena, 64 << 10);
  s->metrics = metrics;
  if (!s->metrics) s->metrics = s->own_metrics = metrics_new();
  if (!s->metrics) goto oom;
  register_metrics(s);
  rng_seed(&s->rng, (uint64_t)cfg->seed, RNG_STREAM_REPLAY);
  rate_limiter_init(&s->rl, cfg->samples_per_insert, (uint64_t)cfg->min_size_to_sample, cfg->error_buffer, NULL);
  s->pending_cap = (size_t)cfg->max_pending_samples;
  s->pending = calloc(s->pending_cap, sizeof *s->pending);
  s->actors = calloc(MAX_ACTORS, sizeof *s->actors);
  if (!s->pending || !s->actors) goto oom;

  replay_spec spec = {.obs_dim = (uint32_t)cfg->obs_dim, .act_dim = (uint32_t)cfg->act_dim};
  memcpy(spec.task, cfg->task, strnlen(cfg->task, REPLAY_TASK_MAX - 1)); /* validated shorter */
  replay_table_opts topts = {.capacity = (size_t)cfg->capacity, .alpha = cfg->alpha, .beta = cfg->beta,
                             .spec = cfg->obs_dim > 0 ? &spec : NULL};
  parse_sampler(cfg->sampler, &topts.sampler);
  if (!(s->table = replay_table_new(&topts, err))) goto fail;
  metric_set(s->m.capacity, (double)cfg->capacity);
  if (cfg->obs_dim > 0) {
    s->spec = spec;
    atomic_store(&s->spec_ready, true);
  }

  if (cfg->snapshot_dir[0] && cfg->restore) {
    replay_snapshot_info info;
    int restored = 0;
    double t0 = now_s();
    if (replay_snapshot_restore_newest(cfg->snapshot_dir, s->table, &info, &restored, &s->snapshot_seq, err) != 0)
      goto fail;
    if (restored) {
      if (!atomic_load(&s->spec_ready)) {
        s->spec = *replay_table_spec(s->table);
        atomic_store(&s->spec_ready, replay_table_has_spec(s->table));
      }
      s->samples = info.meta.samples;
      s->sample_batches = info.meta.sample_batches;
      s->insert_batches = info.meta.insert_batches;
      s->restored = replay_table_size(s->table);
      s->rl.inserts = replay_table_inserts(s->table);
      s->rl.deletes = replay_table_evicted(s->table);
      s->rl.samples = s->samples;
      s->snap_inserts = replay_table_inserts(s->table);
      s->snap_samples = s->samples;
      s->last_snapshot_s = now_s();
      metric_set(s->m.snap_inserted, (double)s->snap_inserts);
      metric_set(s->m.snap_sampled, (double)s->snap_samples);
    }
    metric_set(s->m.restored, (double)s->restored);
    log_event(LOG_INFO, "replay", "restored", LF_STR("dir", cfg->snapshot_dir), LF_BOOL("from_snapshot", restored),
              LF_U64("snapshot", restored ? info.meta.sequence : 0), LF_U64("transitions", s->restored),
              LF_U64("inserts", replay_table_inserts(s->table)), LF_U64("samples", s->samples),
              LF_F64("seconds", now_s() - t0));
  }
  if (bind_router(s, cfg->insert_endpoint, &s->insert_sock, s->insert_ep, err) != 0 ||
      bind_router(s, cfg->sample_endpoint, &s->sample_sock, s->sample_ep, err) != 0 ||
      make_kick_pair(s, "sample", &s->kick_sample_tx, &s->kick_sample_rx, err) != 0 ||
      make_kick_pair(s, "insert", &s->kick_insert_tx, &s->kick_insert_rx, err) != 0)
    goto fail;
  update_gauges(s);
  log_event(LOG_INFO, "replay", "listening", LF_STR("insert_endpoint", s->insert_ep),
            LF_STR("sample_endpoint", s->sample_ep), LF_U64("capacity", cfg->capacity), LF_STR("sampler", cfg->sampler),
            LF_F64("samples_per_insert", cfg->samples_per_insert), LF_U64("min_size_to_sample", cfg->min_size_to_sample),
            LF_F64("error_buffer", cfg->error_buffer));
  return s;
oom:
  ember_fail(err, EMBER_ENOMEM, "replay server: out of memory");
fail:
  replay_server_destroy(&s);
  return NULL;
}

void replay_server_destroy(replay_server **self_p) {
  if (!self_p || !*self_p) return;
  replay_server *s = *self_p;
  reap_snapshot_child(s, true);
  if (s->insert_sock) zmq_close(s->insert_sock);
  if (s->sample_sock) zmq_close(s->sample_sock);
  if (s->kick_sample_tx) zmq_close(s->kick_sample_tx);
  if (s->kick_sample_rx) zmq_close(s->kick_sample_rx);
  if (s->kick_insert_tx) zmq_close(s->kick_insert_tx);
  if (s->kick_insert_rx) zmq_close(s->kick_insert_rx);
  replay_table_destroy(&s->table);
  arena_free(&s->insert_arena);
  arena_free(&s->sample_arena);
  pthread_mutex_destroy(&s->lock);
  pthread_mutex_destroy(&s->log_lock);
  free(s->pending);
  free(s->actors);
  free(s->s_obs), free(s->s_next_obs), free(s->s_action), free(s->s_reward), free(s->s_logp), free(s->s_weights);
  free(s->s_term), free(s->s_trunc), free(s->s_keys), free(s->s_pv), free(s->s_aid);
  metrics_destroy(&s->own_metrics);
  free(s);
  *self_p = NULL;
}

void replay_server_stop(replay_server *s) { atomic_store(&s->stop, 1); }

const char *replay_server_insert_endpoint(const replay_server *s) { return s->insert_ep; }
const char *replay_server_sample_endpoint(const replay_server *s) { return s->sample_ep; }

void replay_server_get_counters(const replay_server *s, replay_server_counters *out) {
  replay_server *w = (replay_server *)s; /* the locks are not part of the value */
  pthread_mutex_lock(&w->lock);
  pthread_mutex_lock(&w->log_lock);
  *out = (replay_server_counters){.size = replay_table_size(s->table),
                                  .capacity = replay_table_capacity(s->table),
                                  .inserts = replay_table_inserts(s->table),
                                  .evicted = replay_table_evicted(s->table),
                                  .samples = s->samples,
                                  .sample_batches = s->sample_batches,
                                  .insert_batches = s->insert_batches,
                                  .rejected = s->rejected_total,
                                  .restored = s->restored,
                                  .pending_samples = atomic_load(&w->pending_count)};
  pthread_mutex_unlock(&w->log_lock);
  pthread_mutex_unlock(&w->lock);
}

static void log_progress(replay_server *s, double t) {
  double dt = t - s->last_log_s;
  replay_server_counters k;
  replay_server_get_counters(s, &k);
  log_event(LOG_INFO, "replay", "progress", LF_U64("size", k.size), LF_U64("inserts", k.inserts),
            LF_U64("samples", k.samples), LF_F64("insert_per_s", (double)(k.inserts - s->last_log_inserts) / dt),
            LF_F64("sample_per_s", (double)(k.samples - s->last_log_samples) / dt),
            LF_U64("pending_samples", k.pending_samples), LF_BOOL("inserts_blocked", s->inserts_blocked),
            LF_U64("rejected", k.rejected));
  s->last_log_s = t;
  s->last_log_inserts = k.inserts;
  s->last_log_samples = k.samples;
}

#define SAMPLE_BURST 64  /* sample-socket messages per round */
#define INSERT_BURST 16  /* insert messages between ack flushes */
#define INSERT_ROUNDS 32 /* bursts per poll */

static bool can_insert_now(replay_server *s) {
  pthread_mutex_lock(&s->lock);
  bool ok = rate_limiter_can_insert(&s->rl);
  pthread_mutex_unlock(&s->lock);
  return ok;
}

static int poll_failed(const char *who) {
  if (zmq_errno() == EINTR) return 0;
  if (zmq_errno() == ETERM) return 1;
  log_event(LOG_ERROR, "replay", "poll_failed", LF_STR("thread", who), LF_STR("error", zmq_strerror(zmq_errno())));
  return 2;
}

/* The sample thread: SampleRequests, PriorityUpdates, Stats on the sample socket, and parked
 * requests whenever the insert thread says inserts happened. */
static void *sample_main(void *arg) {
  replay_server *s = arg;
  pthread_setname_np(pthread_self(), "replay-sample"); /* for top -H, perf, and the benchmark */
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
    zmq_pollitem_t items[2] = {{s->sample_sock, 0, ZMQ_POLLIN, 0}, {s->kick_sample_rx, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 2, (long)s->cfg.poll_interval_ms) < 0) {
      int f = poll_failed("sample");
      if (f == 0) continue;
      if (f == 2) s->sample_rc = EMBER_EIO;
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) drain_kicks(s->kick_sample_rx);
    uint64_t served_before = s->sample_batches;
    if (items[0].revents & ZMQ_POLLIN)
      for (int i = 0; i < SAMPLE_BURST; i++)
        if (handle_one(s, s->sample_sock) == EMBER_EAGAIN) break;
    serve_pending(s);
    /* samples move the rate limiter: a held-back insert thread may go on now */
    if (atomic_load(&s->inserts_waiting) && s->sample_batches != served_before) kick(s->kick_insert_tx);
  }
  return NULL;
}

int replay_server_run(replay_server *s) {
  replay_server_counters k;
  replay_server_get_counters(s, &k);
  s->last_log_s = now_s();
  s->last_log_inserts = k.inserts;
  s->last_log_samples = k.samples;
  s->sample_rc = 0;
  if (pthread_create(&s->sample_thread, NULL, sample_main, s) != 0) {
    log_event(LOG_ERROR, "replay", "thread_failed", LF_STR("error", "cannot start the sample thread"));
    return EMBER_EIO;
  }
  int rc = 0;
  while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
    bool can_insert = can_insert_now(s);
    if (!can_insert && !s->inserts_blocked) metric_inc(s->m.insert_waits);
    s->inserts_blocked = !can_insert;
    atomic_store(&s->inserts_waiting, !can_insert);
    zmq_pollitem_t items[2] = {{s->insert_sock, 0, can_insert ? ZMQ_POLLIN : 0, 0},
                               {s->kick_insert_rx, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 2, (long)s->cfg.poll_interval_ms) < 0) {
      int f = poll_failed("insert");
      if (f == 0) continue;
      if (f == 2) rc = EMBER_EIO;
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) drain_kicks(s->kick_insert_rx);
    bool ready = items[0].revents & ZMQ_POLLIN;
    for (int round = 0; round < INSERT_ROUNDS && ready; round++) {
      for (int i = 0; i < INSERT_BURST; i++) {
        if (!can_insert_now(s) || handle_one(s, s->insert_sock) == EMBER_EAGAIN) {
          ready = false;
          break;
        }
      }
      flush_acks(s);
      if (atomic_load(&s->pending_count) > 0) kick(s->kick_sample_tx); /* parked requests may go now */
    }
    double t = now_s();
    maybe_snapshot(s, t);
    if (s->cfg.log_interval_s > 0 && t - s->last_log_s >= s->cfg.log_interval_s) {
      update_gauges(s);
      log_progress(s, t);
    }
  }
  atomic_store(&s->stop, 1);
  pthread_join(s->sample_thread, NULL);
  reap_snapshot_child(s, true); /* a periodic snapshot in flight is finished and counted */
  if (rc == 0) rc = s->sample_rc;
  update_gauges(s);
  replay_server_get_counters(s, &k);
  log_event(LOG_INFO, "replay", "stopped", LF_U64("size", k.size), LF_U64("inserts", k.inserts),
            LF_U64("samples", k.samples));
  return rc;
}

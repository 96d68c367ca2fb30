/* replay_server_control.c: stats and control (replay_server_impl.h): replies, refusal accounting,
 * metrics and gauges, Stats, Hello, counters and progress lines. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "replay_server_impl.h"

/* ---- refusal reasons ------------------------------------------------------------------------- */

/* Keyed by the enum, so order cannot slip; srv_register_metrics checks that none is missing. */
const char *const srv_reason_names[R_COUNT] = {
    [R_NOT_PROTOBUF] = "not_protobuf",
    [R_SCHEMA_VERSION] = "schema_version",
    [R_NO_BODY] = "no_body",
    [R_BAD_FRAMING] = "bad_framing",
    [R_TOO_BIG] = "too_big",
    [R_TASK_MISMATCH] = "task_mismatch",
    [R_DIMS_MISMATCH] = "dims_mismatch",
    [R_INCONSISTENT_LENGTHS] = "inconsistent_lengths",
    [R_NONFINITE] = "nonfinite",
    [R_EMPTY_BATCH] = "empty_batch",
    [R_BAD_BATCH_SIZE] = "bad_batch_size",
    [R_BATCH_TOO_LARGE] = "batch_too_large",
    [R_BATCH_EXCEEDS_RATE_LIMITER] = "batch_exceeds_rate_limiter",
    [R_TOO_MANY_PENDING] = "too_many_pending",
    [R_BAD_PRIORITY] = "bad_priority",
    [R_UNEXPECTED_MESSAGE] = "unexpected_message",
    [R_MISSING_LOG_PROB] = "missing_log_prob",
    [R_ACTION_OUT_OF_RANGE] = "action_out_of_range",
    [R_TERMINATED_AND_TRUNCATED] = "terminated_and_truncated",
};

const int srv_reason_codes[R_COUNT] = {
    [R_NOT_PROTOBUF] = EMBER_EDECODE,
    [R_SCHEMA_VERSION] = EMBER_ESCHEMA,
    [R_NO_BODY] = EMBER_EDECODE,
    [R_BAD_FRAMING] = EMBER_EDECODE,
    [R_TOO_BIG] = EMBER_ETOOBIG,
    [R_TASK_MISMATCH] = EMBER_ESHAPE,
    [R_DIMS_MISMATCH] = EMBER_ESHAPE,
    [R_INCONSISTENT_LENGTHS] = EMBER_ESHAPE,
    [R_NONFINITE] = EMBER_ENONFINITE,
    [R_EMPTY_BATCH] = EMBER_ESHAPE,
    [R_BAD_BATCH_SIZE] = EMBER_EINVAL,
    [R_BATCH_TOO_LARGE] = EMBER_ETOOBIG,
    [R_BATCH_EXCEEDS_RATE_LIMITER] = EMBER_EINVAL,
    [R_TOO_MANY_PENDING] = EMBER_EAGAIN,
    [R_BAD_PRIORITY] = EMBER_EINVAL,
    [R_UNEXPECTED_MESSAGE] = EMBER_EINVAL,
    [R_MISSING_LOG_PROB] = EMBER_EINVAL,
    [R_ACTION_OUT_OF_RANGE] = EMBER_EINVAL,
    [R_TERMINATED_AND_TRUNCATED] = EMBER_EINVAL,
};

/* ---- sending --------------------------------------------------------------------------------- */

/* Sends env to a peer: routing id, the empty delimiter for REQ peers, then the Envelope packed
 * straight into the message buffer (no intermediate copy). */
int srv_send_envelope(replay_server *s, void *sock, const peer *to, Ember__Envelope *env) {
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

void srv_send_error(replay_server *s, void *sock, const peer *to, int code, const char *text, uint64_t request_id) {
  Ember__ErrorReply e = EMBER__ERROR_REPLY__INIT;
  e.code = (uint32_t)(code < 0 ? -code : code);
  e.message = (char *)text;
  e.request_id = request_id;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_ERROR;
  env.error = &e;
  srv_send_envelope(s, sock, to, &env);
}

/* Counts a rejection, logs it (at most once per reason per LOG_EVERY_MS, with how many were
 * suppressed in between). */
void srv_count_reject(replay_server *s, reject_reason r, const char *socket_name, const char *why) {
  metric_inc(s->m.rejected[r]);
  pthread_mutex_lock(&s->log_lock);
  s->rejected_total++;
  double t = srv_now_s();
  if (s->reason_last_log_s[r] == 0 || t - s->reason_last_log_s[r] >= LOG_EVERY_MS / 1000.0) {
    log_event(LOG_WARN, "replay", "rejected", LF_STR("reason", srv_reason_names[r]), LF_STR("socket", socket_name),
              LF_STR("detail", why), LF_U64("suppressed_since_last_log", s->reason_suppressed[r]));
    s->reason_last_log_s[r] = t;
    s->reason_suppressed[r] = 0;
  } else {
    s->reason_suppressed[r]++;
  }
  pthread_mutex_unlock(&s->log_lock);
}

/* Rejects a request that has no InsertAck form: ErrorReply to the peer. */
void srv_reject_with_error(replay_server *s, void *sock, const peer *to, reject_reason r, const char *why,
                           uint64_t request_id) {
  if (sock == s->insert_sock) srv_flush_peer(s, to);
  char text[640];
  snprintf(text, sizeof text, "%s: %s", srv_reason_names[r], why);
  srv_count_reject(s, r, sock == s->insert_sock ? "insert" : "sample", why);
  srv_send_error(s, sock, to, srv_reason_codes[r], text, request_id);
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

void srv_update_gauges(replay_server *s) {
  pthread_mutex_lock(&s->lock);
  metric_set(s->m.size, (double)replay_table_size(s->table));
  metric_set(s->m.memory_bytes, (double)replay_table_memory_bytes(s->table));
  metric_set(s->m.table_inserted, (double)replay_table_inserts(s->table));
  metric_set(s->m.table_sampled, (double)s->samples);
  double age = srv_now_s() - (s->last_snapshot_s > 0 ? s->last_snapshot_s : s->started_s);
  pthread_mutex_unlock(&s->lock);
  metric_set(s->m.pending, (double)atomic_load(&s->pending_count));
  metric_set(s->m.snapshot_age, age);
}

void srv_send_stats(replay_server *s, void *sock, const peer *to) {
  srv_update_gauges(s);
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
  srv_send_envelope(s, sock, to, &env);
done:
  for (size_t i = 0; i < b.n; i++) free(b.items[i].name), free(b.items[i].labels);
  free(b.items);
  free(b.ptrs);
}

/* A peer introduces itself: logged, and refused early when it announces another task or other
 * dims than the table holds (its batches would all be refused). Nothing is sent when it matches. */
void srv_handle_hello(replay_server *s, void *sock, const peer *from, const Ember__Hello *h) {
  char why[256];
  const char *task = h->task ? h->task : "";
  bool have_spec = atomic_load_explicit(&s->spec_ready, memory_order_acquire);
  reject_reason reason;
  if (srv_check_hello(h, have_spec ? &s->spec : NULL, &reason, why, sizeof why) != 0)
    return srv_reject_with_error(s, sock, from, reason, why, 0);
  log_event(LOG_INFO, "replay", "hello", LF_STR("role", h->role ? h->role : ""), LF_U64("id", h->id),
            LF_STR("task", task), LF_STR("host", h->hostname ? h->hostname : ""), LF_U64("pid", h->pid),
            LF_STR("version", h->software_version ? h->software_version : ""));
}

/* ---- metrics and counters ------------------------------------------------------------------- */

void srv_register_metrics(replay_server *s) {
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
    assert(srv_reason_names[i] && srv_reason_codes[i] < 0); /* a reason added to the enum only */
    char labels[96];
    snprintf(labels, sizeof labels, "reason=\"%s\"", srv_reason_names[i]);
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

void srv_log_progress(replay_server *s, double t) {
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


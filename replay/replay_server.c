/* replay_server.c: the replay server's lifecycle and its two threads' loops (how the files of the
 * server divide the work: replay_server_impl.h). */
#include "replay_server.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"
#include "replay_server_impl.h"

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
    F("snapshot_keep", CONFIG_INT, snapshot_keep, 1, 1000, "2",
      "valid snapshot files kept (corrupt ones are moved aside, not counted)"),
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

/* ---- lifecycle ------------------------------------------------------------------------------- */

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
  s->started_s = srv_now_s();
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
  srv_register_metrics(s);
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

  if (srv_snapshots_at_start(s, err) != 0) goto fail;
  if (bind_router(s, cfg->insert_endpoint, &s->insert_sock, s->insert_ep, err) != 0 ||
      bind_router(s, cfg->sample_endpoint, &s->sample_sock, s->sample_ep, err) != 0 ||
      make_kick_pair(s, "sample", &s->kick_sample_tx, &s->kick_sample_rx, err) != 0 ||
      make_kick_pair(s, "insert", &s->kick_insert_tx, &s->kick_insert_rx, err) != 0)
    goto fail;
  srv_update_gauges(s);
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
  srv_reap_snapshot_child(s, true);
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

/* ---- the two threads' loops ------------------------------------------------------------------ */

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
        if (srv_handle_one(s, s->sample_sock) == EMBER_EAGAIN) break;
    srv_serve_pending(s);
    /* samples move the rate limiter: a held-back insert thread may go on now */
    if (atomic_load(&s->inserts_waiting) && s->sample_batches != served_before) kick(s->kick_insert_tx);
  }
  return NULL;
}

int replay_server_run(replay_server *s) {
  replay_server_counters k;
  replay_server_get_counters(s, &k);
  s->last_log_s = srv_now_s();
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
        if (!can_insert_now(s) || srv_handle_one(s, s->insert_sock) == EMBER_EAGAIN) {
          ready = false;
          break;
        }
      }
      srv_flush_acks(s);
      if (atomic_load(&s->pending_count) > 0) kick(s->kick_sample_tx); /* parked requests may go now */
    }
    double t = srv_now_s();
    srv_maybe_snapshot(s, t);
    if (s->cfg.log_interval_s > 0 && t - s->last_log_s >= s->cfg.log_interval_s) {
      srv_update_gauges(s);
      srv_log_progress(s, t);
    }
  }
  atomic_store(&s->stop, 1);
  pthread_join(s->sample_thread, NULL);
  srv_reap_snapshot_child(s, true); /* a periodic snapshot in flight is finished and counted */
  if (rc == 0) rc = s->sample_rc;
  srv_update_gauges(s);
  replay_server_get_counters(s, &k);
  log_event(LOG_INFO, "replay", "stopped", LF_U64("size", k.size), LF_U64("inserts", k.inserts),
            LF_U64("samples", k.samples));
  return rc;
}

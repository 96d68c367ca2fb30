/* replay_server_sample.c: the sample path (replay_server_impl.h): SampleRequests served, parked or
 * refused; PriorityUpdates. Sample thread only. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "replay_server_impl.h"

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
    srv_send_error(s, s->sample_sock, to, EMBER_ENOMEM, "replay server out of memory for this batch size", request_id);
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
    srv_send_error(s, s->sample_sock, to, err.code, err.msg, request_id);
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
  if (srv_send_envelope(s, s->sample_sock, to, &env) != 0) {
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

void srv_serve_pending(replay_server *s) {
  while (s->pending_len > 0) {
    pending_sample *p = &s->pending[s->pending_head];
    if (!try_serve(s, &p->from, p->request_id, p->batch_size)) break;
    s->pending_head = (s->pending_head + 1) % s->pending_cap;
    s->pending_len--;
    atomic_store(&s->pending_count, s->pending_len);
  }
}

void srv_handle_sample_request(replay_server *s, const peer *from, const Ember__SampleRequest *r) {
  char why[256];
  reject_reason reason;
  if (srv_check_sample_request(r, replay_table_capacity(s->table), &s->rl, &reason, why, sizeof why) != 0)
    return srv_reject_with_error(s, s->sample_sock, from, reason, why, r->request_id);
  if (s->pending_len == 0 && try_serve(s, from, r->request_id, r->batch_size)) return;
  if (s->pending_len == s->pending_cap) {
    snprintf(why, sizeof why, "%zu sample requests are already waiting for the rate limiter", s->pending_len);
    return srv_reject_with_error(s, s->sample_sock, from, R_TOO_MANY_PENDING, why, r->request_id);
  }
  pending_sample *p = &s->pending[(s->pending_head + s->pending_len) % s->pending_cap];
  p->from = *from;
  p->request_id = r->request_id;
  p->batch_size = r->batch_size;
  s->pending_len++;
  atomic_store(&s->pending_count, s->pending_len);
  metric_inc(s->m.sample_waits);
}

void srv_handle_priority_update(replay_server *s, const peer *from, const Ember__PriorityUpdate *u) {
  char why[256];
  reject_reason reason;
  if (srv_check_priority_update(u, &reason, why, sizeof why) != 0)
    return srv_reject_with_error(s, s->sample_sock, from, reason, why, 0);
  uint64_t stale = 0;
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < u->n_keys; i++)
    if (replay_table_update_priority(s->table, u->keys[i], u->priorities[i]) == EMBER_ENOENT) stale++;
  s->priority_updates += u->n_keys;
  pthread_mutex_unlock(&s->lock);
  metric_add(s->m.priority_updates, (double)(u->n_keys - stale));
  if (stale) metric_add(s->m.priority_stale, (double)stale);
}


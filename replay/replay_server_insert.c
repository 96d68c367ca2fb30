/* replay_server_insert.c: the insert path (replay_server_impl.h): TransitionBatch checks, inserts,
 * coalesced acks, per-actor bookkeeping. Insert thread only. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "replay_server_impl.h"

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
  srv_send_envelope(s, s->insert_sock, to, &env);
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
  srv_send_envelope(s, s->insert_sock, &r->to, &env);
  s->runs[i] = s->runs[--s->n_runs]; /* order between peers does not matter */
}

void srv_flush_acks(replay_server *s) {
  while (s->n_runs > 0) flush_run(s, s->n_runs - 1);
}

/* Flushes the held ack of this peer, if any (before anything else is sent to it, to keep order). */
void srv_flush_peer(replay_server *s, const peer *to) {
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
  if (s->n_runs == MAX_ACK_RUNS) srv_flush_acks(s);
  s->runs[s->n_runs++] = (ack_run){.to = *to, .actor_id = b->actor_id, .first = b->sequence, .last = b->sequence,
                                   .accepted = b->count};
}

void srv_refuse_batch(replay_server *s, const peer *to, const Ember__TransitionBatch *b, reject_reason r,
                      const char *why) {
  srv_flush_peer(s, to);
  note_actor(s, b); /* a refused batch still tells us its sequence and its actor's drops */
  char text[640];
  snprintf(text, sizeof text, "%s: %s", srv_reason_names[r], why);
  srv_count_reject(s, r, "insert", why);
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

/* Whether any action is outside [-1, 1] (the policy's scale; NaN was refused before). Branch-free
 * over the whole column so it vectorises: it runs on every transition inserted; the loop in
 * check_values runs only to name the culprit. */
static bool any_action_out_of_range(const float *v, size_t n) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) bad |= (v[i] < -1.0f) | (v[i] > 1.0f);
  return bad != 0;
}

/* What the protocol says of values beyond their types: actions in [-1, 1], and a row is ended by the
 * task (terminated) or by the time limit (truncated), never both: the two mean opposite things to
 * the learner (no bootstrap / bootstrap), so such a row has no right target. 0, or the reason with
 * `why` naming the row and the field. */
static int check_values(const Ember__TransitionBatch *b, reject_reason *reason, char *why, size_t cap) {
  size_t ad = b->act_dim;
  if (any_action_out_of_range(b->action, b->n_action)) {
    for (size_t i = 0; i < b->n_action; i++)
      if (b->action[i] < -1.0f || b->action[i] > 1.0f) {
        snprintf(why, cap, "TransitionBatch.action[%zu] (transition %zu, action dimension %zu) is %g, outside [-1, 1]",
                 i, i / ad, i % ad, (double)b->action[i]);
        *reason = R_ACTION_OUT_OF_RANGE;
        return EMBER_EINVAL;
      }
  }
  for (size_t i = 0; i < b->count; i++)
    if (b->terminated[i] && b->truncated[i]) {
      snprintf(why, cap,
               "TransitionBatch.terminated[%zu] and .truncated[%zu] are both set (transition %zu): a transition "
               "ends by the task or by the time limit, not both",
               i, i, i);
      *reason = R_TERMINATED_AND_TRUNCATED;
      return EMBER_EINVAL;
    }
  return 0;
}

void srv_handle_insert(replay_server *s, const peer *from, const Ember__TransitionBatch *b) {
  char why[512];
  if (b->count == 0) return srv_refuse_batch(s, from, b, R_EMPTY_BATCH, "TransitionBatch has count 0");
  const char *task = b->task ? b->task : "";
  if (strlen(task) >= REPLAY_TASK_MAX) return srv_refuse_batch(s, from, b, R_TASK_MISMATCH, "task name too long");
  bool have_spec = atomic_load_explicit(&s->spec_ready, memory_order_acquire);
  if (have_spec) {
    const replay_spec *sp = &s->spec;
    if (sp->task[0] && task[0] && strcmp(sp->task, task) != 0) {
      snprintf(why, sizeof why, "batch is for task '%s', the table holds '%s'", task, sp->task);
      return srv_refuse_batch(s, from, b, R_TASK_MISMATCH, why);
    }
    if (b->obs_dim != sp->obs_dim || b->act_dim != sp->act_dim) {
      snprintf(why, sizeof why, "batch has obs_dim %u act_dim %u, the table holds obs_dim %u act_dim %u",
               b->obs_dim, b->act_dim, sp->obs_dim, sp->act_dim);
      return srv_refuse_batch(s, from, b, R_DIMS_MISMATCH, why);
    }
  } else if (b->obs_dim == 0 || b->act_dim == 0) {
    snprintf(why, sizeof why, "batch has obs_dim %u act_dim %u (both must be > 0)", b->obs_dim, b->act_dim);
    return srv_refuse_batch(s, from, b, R_DIMS_MISMATCH, why);
  }
  ember_err err = {0};
  int rc = net_check_transitions(b, b->obs_dim, b->act_dim, &err);
  if (rc != 0)
    return srv_refuse_batch(s, from, b, rc == EMBER_ENONFINITE ? R_NONFINITE : R_INCONSISTENT_LENGTHS, err.msg);
  /* An empty behaviour_log_prob means uniform random actions, and is stored as their density
   * (replay_table_insert); a batch that says a policy chose its actions must carry their log-probs,
   * or an off-policy correction would read the uniform density for them. */
  if (b->n_behaviour_log_prob == 0 && b->policy_version != 0) {
    snprintf(why, sizeof why,
             "behaviour_log_prob is empty but policy_version is %" PRIu64
             "; only uniform random actions (policy_version 0) may leave it out",
             b->policy_version);
    return srv_refuse_batch(s, from, b, R_MISSING_LOG_PROB, why);
  }
  reject_reason reason;
  if (check_values(b, &reason, why, sizeof why) != 0) return srv_refuse_batch(s, from, b, reason, why);
  if (!have_spec) { /* only this thread sets the spec: no race with itself */
    replay_spec sp = {.obs_dim = b->obs_dim, .act_dim = b->act_dim};
    memcpy(sp.task, task, strlen(task)); /* checked shorter than REPLAY_TASK_MAX above */
    pthread_mutex_lock(&s->lock);
    rc = replay_table_set_spec(s->table, &sp, &err);
    pthread_mutex_unlock(&s->lock);
    if (rc != 0) {
      log_event(LOG_ERROR, "replay", "spec_failed", LF_STR("error", err.msg));
      return srv_refuse_batch(s, from, b, R_DIMS_MISMATCH, err.msg);
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


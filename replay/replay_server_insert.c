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

void srv_handle_insert(replay_server *s, const peer *from, const Ember__TransitionBatch *b) {
  char why[512];
  bool have_spec = atomic_load_explicit(&s->spec_ready, memory_order_acquire);
  reject_reason reason;
  if (srv_check_batch(b, have_spec ? &s->spec : NULL, &reason, why, sizeof why) != 0)
    return srv_refuse_batch(s, from, b, reason, why);
  const char *task = b->task ? b->task : "";
  ember_err err = {0};
  int rc;
  if (!have_spec) { /* only this thread sets the spec: no race with itself */
    replay_spec sp = {.obs_dim = b->obs_dim, .act_dim = b->act_dim};
    memcpy(sp.task, task, strlen(task)); /* srv_check_batch: shorter than REPLAY_TASK_MAX */
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


/* actor_insert.c: the actor's side of replay (actor_internal.h): transitions into TransitionBatches
 * (physics faults left out, counted and logged per burst), handed to the insert client, and the hold
 * of the training envs while replay takes no more (pacing to its rate limiter). */
#include <math.h>
#include <string.h>

#include "actor_internal.h"
#include "log.h"

void actor_hand_over_batch(actor_t *a) {
  if (a->rows == 0) return;
  Ember__TransitionBatch *b = &a->batch;
  size_t n = (size_t)a->rows, O = (size_t)a->obs_dim, A = (size_t)a->act_dim;
  b->count = (uint32_t)n;
  b->n_obs = b->n_next_obs = n * O;
  b->n_action = n * A;
  b->n_reward = b->n_terminated = b->n_truncated = b->n_behaviour_log_prob = n;
  ember_err err = {0};
  if (replay_insert_client_send(a->insert, b, &err) != 0)
    actor_log_refusal(a, &a->insert_log, "batch_dropped", err.msg); /* the client counted it as dropped */
  a->st.batches_made++;
  a->rows = 0;
}

/* Logs a burst of physics faults once: when it starts, and when no fault has come for
 * PHYSICS_FAULT_QUIET_MS (with the burst's count). Called every step, n = this step's faults. */
static void note_physics_faults(actor_t *a, int n, int first_env, const char *why, int64_t t) {
  fault_burst *b = &a->faults;
  if (n == 0) {
    if (b->active && t - b->last_ms >= PHYSICS_FAULT_QUIET_MS) {
      log_event(LOG_INFO, COMPONENT, "physics_faults_ended", LF_U64("actor_id", a->cfg.id),
                LF_U64("transitions_dropped", b->transitions), LF_I64("duration_ms", b->last_ms - b->start_ms),
                LF_U64("physics_fault_transitions_total", a->st.transitions_physics_fault));
      b->active = false;
    }
    return;
  }
  if (!b->active) {
    log_event(LOG_WARN, COMPONENT, "physics_fault", LF_U64("actor_id", a->cfg.id), LF_STR("task", a->cfg.task),
              LF_I64("env", first_env), LF_STR("error", why),
              LF_STR("action", "transition dropped and counted in actor_physics_fault_transitions_total, env "
                               "reset; logged once per burst"),
              LF_U64("env_steps", a->st.env_steps));
    *b = (fault_burst){.active = true, .start_ms = t};
  }
  b->transitions += (uint64_t)n;
  b->last_ms = t;
}

/* Appends the K transitions of one step, leaving out physics faults; a batch is handed over when
 * full, and before the first row of another policy version. */
void actor_append_transitions(actor_t *a, uint64_t version, int64_t t) {
  if (a->rows > 0 && a->batch.policy_version != version) actor_hand_over_batch(a);
  const size_t O = (size_t)a->obs_dim, A = (size_t)a->act_dim;
  const uint8_t *faults = env_vec_physics_faults(a->vec);
  int n_faults = 0, first_fault = -1;
  const char *why = NULL;
  for (int k = 0; k < a->K; k++) {
    int flagged = faults[k] != 0;
    if (flagged || !isfinite(a->reward[k]) || !actor_all_finite(a->obs + (size_t)k * O, O) ||
        !actor_all_finite(a->next_obs + (size_t)k * O, O)) {
      a->st.transitions_physics_fault++;
      if (n_faults++ == 0) {
        first_fault = k;
        why = flagged ? "MuJoCo found the step unstable (NaN/Inf state, or contact/constraint buffer full)"
                      : "non-finite observation or reward";
      }
      continue;
    }
    if (a->rows == 0) a->batch.policy_version = version;
    size_t r = (size_t)a->rows;
    memcpy(a->b_obs + r * O, a->obs + (size_t)k * O, O * sizeof(float));
    memcpy(a->b_next_obs + r * O, a->next_obs + (size_t)k * O, O * sizeof(float));
    memcpy(a->b_action + r * A, a->actions + (size_t)k * A, A * sizeof(float));
    a->b_reward[r] = a->reward[k];
    a->b_terminated[r] = a->terminated[k] != 0;
    a->b_truncated[r] = a->truncated[k] != 0;
    a->b_log_prob[r] = a->log_probs[k];
    a->rows++;
    if (a->rows == a->B) actor_hand_over_batch(a);
  }
  note_physics_faults(a, n_faults, first_fault, why, t);
}

/* With replay_wait_ms: a full queue means replay is not taking inserts as fast as the actor makes
 * them (its rate limiter, a link still backed up, or no replay at all); hold the training envs, up to
 * replay_wait_ms per step, rather than make transitions only to drop them. Waiting only while batches
 * were in flight was not enough: once a short ack_timeout_ms had written them off, the loop ran on at
 * full speed and dropped nearly everything until the link drained. The hold is waited in slices of at
 * most PACE_SLICE_MS, each followed by the rest of the loop (Params, heartbeats, actor_stop).
 * (Evaluations are the eval role's, which no replay holds back.) Returns true when the training envs may step (room, or the hold ran out: the
 * step then drops the oldest queued batch, counted). */
#define PACE_SLICE_MS 50
bool actor_pace_to_replay(actor_t *a) {
  replay_insert_stats is;
  replay_insert_client_stats(a->insert, &is);
  if (is.queued < (uint32_t)a->cfg.queue_batches) {
    a->held_since_us = 0;
    return true;
  }
  int64_t t0 = actor_now_us();
  if (!a->held_since_us) a->held_since_us = t0;
  int64_t left_ms = a->cfg.replay_wait_ms - (t0 - a->held_since_us) / 1000;
  if (left_ms <= 0) {
    a->held_since_us = 0;
    return true; /* held long enough: step, even if that drops a batch */
  }
  bool room =
      replay_insert_client_wait_for_room(a->insert, (int)(left_ms < PACE_SLICE_MS ? left_ms : PACE_SLICE_MS)) == 1;
  a->st.replay_wait_us += (uint64_t)(actor_now_us() - t0);
  if (room) a->held_since_us = 0;
  return room;
}


/* actor_internal.h: the actor's state and the functions its files share (not part of the API).
 *
 * The actor is four files along what it does:
 *   actor.c          lifecycle: config checks, envs, buffers, sockets, metrics, actor_run, stats
 *   actor_learner.c  the learner's side: Params intake (and what the eval role evaluates), Hello,
 *                    heartbeats, requests, episode and evaluation reports
 *   actor_insert.c   the replay side: transitions into TransitionBatches, physics faults, the
 *                    insert client, pacing to replay's rate limiter
 *   actor_loop.c     one loop iteration per role: train (act, step, record, send) and eval (step an
 *                    evaluation under way, or wait for Params), and what both do between steps
 * Everything here is owned by the actor_t (see actor.h for ownership and thread-safety).
 */
#ifndef EMBER_ACTOR_INTERNAL_H
#define EMBER_ACTOR_INTERNAL_H

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "actor.h"
#include "auth.h"
#include "env.h"
#include "evaluation.h"
#include "net.h"
#include "policy.h"
#include "replay_client.h"
#include "rng.h"

#define COMPONENT "actor"
/* Messages taken from each learner socket per loop iteration: bounds the time the loop spends on
 * the learner when a backlog has built up (the rest wait for the next iteration). */
#define MAX_MESSAGES_PER_STEP 8
/* A refusal is logged at once, then at most once per this many ms (with a count of the suppressed). */
#define REFUSAL_LOG_INTERVAL_MS 10000
/* The eval envs draw their reset noise from a seed of their own, so their streams never meet the
 * training envs' (env.h numbers streams by env id only). */
#define EVAL_SEED_SALT 0x9E3779B97F4A7C15ull
/* Physics faults this close together are one burst: logged when it starts and when it ends. */
#define PHYSICS_FAULT_QUIET_MS 1000
/* The eval role, idle, waits this long for Params at a time (then does its housekeeping). */
#define EVAL_IDLE_POLL_MS 50

typedef struct {
  metric *made, *sent, *stored, *rejected, *dropped, *unconfirmed, *pending;
  metric *batches, *episodes, *eval_episodes, *evaluations, *evaluations_skipped, *evaluations_abandoned;
  metric *params_received, *params_refused, *params_stale, *messages_refused, *reports_dropped;
  metric *nonfinite_actions, *replay_wait, *auth_refused, *physics_faults;
  metric *policy_version, *last_return, *eval_return, *eval_version;
} actor_metrics_t;

/* What has been added to the counters already, so that sync_metrics adds only the difference. */
typedef struct {
  uint64_t made, sent, stored, rejected, dropped, unconfirmed, batches, episodes, eval_episodes, evaluations;
  uint64_t evaluations_skipped, evaluations_abandoned;
  uint64_t params_received, params_refused, params_stale, messages_refused, reports_dropped, nonfinite_actions;
  uint64_t replay_wait_us, physics_faults;
} published_t;

/* The burst of physics faults under way, if any (see note_physics_faults). */
typedef struct {
  bool active;
  int64_t start_ms, last_ms;
  uint64_t transitions;
} fault_burst;

typedef struct {
  int64_t last_ms;
  uint64_t suppressed;
} refusal_log;

struct actor {
  actor_config cfg;
  bool eval_role;  /* cfg.role "eval": no training envs, no replay, only evaluations */
  void *ctx;
  metrics_registry *metrics, *own_metrics;
  atomic_int stop;

  env_model_t *model;
  const env_spec *spec;
  env_vec_t *vec; /* the K training envs (train role; NULL in the eval role) */
  int K, obs_dim, act_dim;
  float uniform_log_prob; /* -act_dim * log 2 */

  policy_t *policy;
  rng_t rng; /* eps of the stochastic policy and the uniform actions */

  void *sub, *dealer;
  auth_watch *watch_sub, *watch_dealer; /* CurveZMQ refusals of our key, when security is on */
  replay_insert_client *insert;         /* train role only */

  /* one step of the K training envs */
  float *obs, *actions, *log_probs, *next_obs, *reward;
  uint8_t *terminated, *truncated;
  double *episode_return;
  int32_t *episode_length;

  /* the eval role: the evaluation under way, and the Params of the next one when a boundary was
   * crossed while it ran (the envelope is kept whole: its Params point into it) */
  evaluation_t *eval;
  Ember__Envelope *eval_pending;
  uint64_t next_eval_steps; /* the next multiple of eval_every_steps to evaluate at */

  /* the TransitionBatch being filled: columns of B rows */
  Ember__TransitionBatch batch;
  int B, rows;
  float *b_obs, *b_action, *b_reward, *b_next_obs, *b_log_prob;
  protobuf_c_boolean *b_terminated, *b_truncated;

  /* timers (CLOCK_MONOTONIC ms) */
  int64_t start_ms, last_heartbeat_ms, last_params_ms, last_request_ms, last_log_ms, last_sync_ms;
  /* the progress line's interval */
  uint64_t log_steps, log_episodes;
  double log_return_sum, log_length_sum;

  actor_stats st;
  actor_metrics_t m;
  published_t pub;
  refusal_log params_log, message_log, insert_log;
  fault_burst faults;
  int64_t held_since_us; /* the training envs held for replay since then (pace_to_replay); 0 = not held */
  char hostname[256];
};

static inline int64_t actor_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t actor_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline bool actor_all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return false;
  return true;
}

/* actor.c */
void actor_log_refusal(actor_t *a, refusal_log *rl, const char *event, const char *why);
void actor_sync_metrics(actor_t *a);

/* actor_learner.c */
void actor_send_hello(actor_t *a);
void actor_send_params_request(actor_t *a, int64_t t);
void actor_send_heartbeat(actor_t *a, int64_t t);
void actor_send_episode(actor_t *a, uint64_t version, double ret, int32_t length, bool terminated);
void actor_send_evaluation(actor_t *a, const evaluation_result *r);
/* Takes what waits on the socket (at most MAX_MESSAGES_PER_STEP messages). */
void actor_poll_learner(actor_t *a, void *sock, bool from_dealer, int64_t t);
/* Eval role: starts the pending evaluation, if one waits and none runs. */
void actor_start_pending_evaluation(actor_t *a);

/* actor_insert.c */
void actor_hand_over_batch(actor_t *a);
void actor_append_transitions(actor_t *a, uint64_t version, int64_t t);
/* With replay_wait_ms: true when the training envs may step (see the definition). */
bool actor_pace_to_replay(actor_t *a);

/* actor_loop.c */
int actor_step_train(actor_t *a, ember_err *err);
int actor_step_eval(actor_t *a, ember_err *err);

#endif

/* actor_loop.c: one iteration of the actor's loop, per role (actor_internal.h). */
#include <math.h>
#include <string.h>
#include <zmq.h>

#include "actor_internal.h"
#include "log.h"

static void uniform_actions(actor_t *a, int first_env, int count) {
  for (int i = first_env * a->act_dim; i < (first_env + count) * a->act_dim; i++)
    a->actions[i] = 2.0f * rng_uniform_f(&a->rng) - 1.0f;
  for (int k = first_env; k < first_env + count; k++) a->log_probs[k] = a->uniform_log_prob;
}

static void finish_episodes(actor_t *a, uint64_t version) {
  for (int k = 0; k < a->K; k++) {
    if (!a->terminated[k] && !a->truncated[k]) continue;
    double ret = a->episode_return[k];
    int32_t len = a->episode_length[k];
    a->st.episodes++;
    a->st.last_episode_return = ret;
    a->log_episodes++;
    a->log_return_sum += ret;
    a->log_length_sum += len;
    actor_send_episode(a, version, ret, len, a->terminated[k] != 0);
    if (log_get_level() <= LOG_DEBUG)
      log_event(LOG_DEBUG, COMPONENT, "episode", LF_U64("actor_id", a->cfg.id), LF_U64("policy_version", version),
                LF_F64("return", ret), LF_I64("length", len), LF_BOOL("terminated", a->terminated[k]));
  }
}

/* Eval role: one step of the evaluation under way; when it completes, its report goes to the learner
 * (and the next evaluation, if one waits, starts). A policy that gives non-finite actions, or an
 * env that fails, abandons the evaluation: logged, counted, nothing reported for that version. */
static void eval_step(actor_t *a) {
  ember_err err = {0};
  int rc = evaluation_step(a->eval, &err);
  if (rc == 1) {
    evaluation_result r;
    evaluation_get_result(a->eval, &r);
    a->st.evaluations++;
    a->st.eval_episodes += (uint64_t)r.episodes;
    a->st.last_eval_return = r.mean;
    a->st.last_eval_version = r.version;
    actor_send_evaluation(a, &r);
    log_event(LOG_INFO, COMPONENT, "evaluation", LF_U64("actor_id", a->cfg.id), LF_U64("policy_version", r.version),
              LF_U64("env_steps", r.env_steps), LF_I64("episodes", r.episodes), LF_F64("mean_return", r.mean),
              LF_F64("std_return", r.std));
  } else if (rc < 0) {
    if (rc == EMBER_ENONFINITE) a->st.nonfinite_actions++;
    a->st.evaluations_abandoned++;
    log_event(LOG_WARN, COMPONENT, "evaluation_abandoned", LF_U64("actor_id", a->cfg.id), LF_STR("error", err.msg));
  }
  if (rc != 0) actor_start_pending_evaluation(a);
}

static void log_progress(actor_t *a, int64_t t) {
  double seconds = (double)(t - a->last_log_ms) / 1000.0;
  actor_stats s;
  actor_get_stats(a, &s);
  log_event(LOG_INFO, COMPONENT, "progress", LF_U64("actor_id", a->cfg.id), LF_U64("env_steps", s.env_steps),
            LF_F64("env_steps_per_s", seconds > 0 ? (double)a->log_steps / seconds : 0.0),
            LF_U64("episodes", a->log_episodes),
            LF_F64("mean_return", a->log_episodes ? a->log_return_sum / (double)a->log_episodes : NAN),
            LF_F64("mean_length", a->log_episodes ? a->log_length_sum / (double)a->log_episodes : NAN),
            LF_U64("policy_version", s.policy_version), LF_U64("stored", s.transitions_stored),
            LF_U64("dropped", s.transitions_dropped), LF_U64("physics_faults", s.transitions_physics_fault),
            LF_U64("params_refused", s.params_refused));
  a->last_log_ms = t;
  a->log_steps = a->log_episodes = 0;
  a->log_return_sum = a->log_length_sum = 0.0;
}

/* Learner messages, heartbeats, a ParamsRequest when Params are overdue, progress and metrics: the part
 * of a loop iteration that goes on while the training envs are held. */
static int housekeeping(actor_t *a, int64_t t, ember_err *err) {
  if (a->insert) replay_insert_client_poll(a->insert, 0);
  if (t - a->last_heartbeat_ms >= a->cfg.heartbeat_ms) {
    actor_send_heartbeat(a, t);
    if (a->watch_dealer && (auth_watch_refusals(a->watch_dealer) || auth_watch_refusals(a->watch_sub))) {
      metric_inc(a->m.auth_refused);
      return ember_fail(err, EMBER_EAUTH,
                        "the learner at %s refused this actor's CurveZMQ key (is its .pub in the servers' "
                        "security.allow_dir, and security.server_key_file the servers' key?)",
                        a->cfg.control_endpoint);
    }
  }
  int64_t silent_since = a->last_params_ms > a->last_request_ms ? a->last_params_ms : a->last_request_ms;
  if (t - silent_since >= a->cfg.params_request_ms) actor_send_params_request(a, t);
  if (a->cfg.log_interval_s > 0 && t - a->last_log_ms >= a->cfg.log_interval_s * 1000) log_progress(a, t);
  if (t - a->last_sync_ms >= 100) {
    actor_sync_metrics(a);
    a->last_sync_ms = t;
  }
  return EMBER_OK;
}

/* One iteration of the train role: learner messages, act, step, record, send, timers (or, held for
 * replay, all but the training step). */
int actor_step_train(actor_t *a, ember_err *err) {
  int rc = EMBER_OK;
  const bool step = a->cfg.replay_wait_ms <= 0 || actor_pace_to_replay(a);
  int64_t t = actor_now_ms();
  actor_poll_learner(a, a->sub, false, t);
  actor_poll_learner(a, a->dealer, true, t);
  if (!step) return housekeeping(a, t, err); /* held for replay */

  const size_t OK = (size_t)a->K * a->obs_dim;
  memcpy(a->obs, env_vec_obs(a->vec), OK * sizeof(float));
  uint64_t version = a->policy ? a->st.policy_version : 0;
  if (a->policy) {
    rc = policy_act(a->policy, a->obs, a->K, false, &a->rng, a->actions, a->log_probs, err);
    if (rc) return rc;
    if (!actor_all_finite(a->actions, (size_t)a->K * a->act_dim)) {
      a->st.nonfinite_actions++;
      uniform_actions(a, 0, a->K);
    }
  } else {
    uniform_actions(a, 0, a->K);
  }
  env_step_out out = {a->next_obs, a->reward, a->terminated, a->truncated, a->episode_return, a->episode_length};
  rc = env_vec_step(a->vec, a->actions, &out, err);
  if (rc) return rc;
  a->st.env_steps += (uint64_t)a->K;
  a->log_steps += (uint64_t)a->K;
  actor_append_transitions(a, version, t);
  finish_episodes(a, version);
  return housekeeping(a, t, err);
}

/* One iteration of the eval role: learner messages, one step of the evaluation under way (or, idle,
 * a wait of up to EVAL_IDLE_POLL_MS for Params), timers. Evaluations run as fast as the envs go:
 * nothing here waits for replay or for the training actors. */
int actor_step_eval(actor_t *a, ember_err *err) {
  if (!evaluation_active(a->eval) && !a->eval_pending) {
    zmq_pollitem_t items[2] = {{a->sub, 0, ZMQ_POLLIN, 0}, {a->dealer, 0, ZMQ_POLLIN, 0}};
    zmq_poll(items, 2, EVAL_IDLE_POLL_MS);
  }
  int64_t t = actor_now_ms();
  actor_poll_learner(a, a->sub, false, t);
  actor_poll_learner(a, a->dealer, true, t);
  actor_start_pending_evaluation(a);
  if (evaluation_active(a->eval)) eval_step(a);
  return housekeeping(a, t, err);
}


/* actor: a real actor thread against a fake replay (ROUTER) and a fake learner (PUB + ROUTER) over
 * inproc://: the columns of the transitions it streams, the version tags, Params by broadcast and
 * by request, refusals, evaluation, physics faults left out, pacing to a slow or backed-up replay,
 * the env thread's niceness, the accounting when replay misbehaves or is gone, and actor.ctrl_noise_std
 * reaching the training and the evaluation envs. */
#include <math.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "actor_harness.h"
#include "actor_internal.h"
#include "env.h"
#include "env_test_models.h"
#include "evaluation.h"
#include "log.h"
#include "nn_dist.h"
#include "policy.h"

#define DEADLINE_MS 15000

static harness h;

static void teardown(void) { harness_free(&h); }

/* Serves until cond holds (checked after every pump) or the deadline passes. */
#define PUMP_UNTIL(cond, what)                                              \
  do {                                                                      \
    int64_t until_ = harness_ms() + DEADLINE_MS;                            \
    while (!(cond)) {                                                       \
      ck_assert_msg(harness_ms() < until_, "timed out waiting for %s", what); \
      harness_pump(&h, 10);                                                 \
    }                                                                       \
  } while (0)

static const Ember__TransitionBatch *kept_batch(int i) { return h.kept[i]->transition_batch; }

/* The row of transition `index` (in arrival order) across the kept batches. */
static const Ember__TransitionBatch *find_row(uint64_t index, uint32_t *row) {
  for (int i = 0; i < h.nkept; i++) {
    const Ember__TransitionBatch *b = kept_batch(i);
    if (index < b->count) {
      *row = (uint32_t)index;
      return b;
    }
    index -= b->count;
  }
  return NULL;
}

START_TEST(transitions_flow_with_correct_columns) {
  harness_init(&h, "pendulum", 4, REPLAY_ACK);
  harness_start(&h);
  PUMP_UNTIL(h.transitions >= 400, "400 transitions");
  harness_join(&h);
  harness_pump(&h, 50);

  const int K = 4, O = h.spec->obs_dim, A = h.spec->act_dim;
  ck_assert_int_eq(h.hellos, 1);
  ck_assert_str_eq(h.first_hello.role, "actor");
  ck_assert_str_eq(h.first_hello.task, "pendulum");
  ck_assert_uint_eq(h.first_hello.id, 1);
  ck_assert_uint_eq(h.first_hello.obs_dim, (uint32_t)O);
  ck_assert_uint_eq(h.first_hello.act_dim, (uint32_t)A);
  ck_assert_uint_eq(h.sequence_errors, 0); /* nothing lost: the actor waited for this slow thread */
  ck_assert_int_ge(h.params_requests, 1);

  ember_err err = {0};
  uint64_t total = 0;
  for (int i = 0; i < h.nkept; i++) {
    const Ember__TransitionBatch *b = kept_batch(i);
    ck_assert_msg(net_check_transitions(b, (uint32_t)O, (uint32_t)A, &err) == 0, "batch %d: %s", i, err.msg);
    ck_assert_str_eq(b->task, "pendulum");
    ck_assert_uint_eq(b->actor_id, 1);
    ck_assert_uint_eq(b->policy_version, 0);
    ck_assert_uint_eq(b->n_behaviour_log_prob, b->count);
    ck_assert_uint_eq(b->dropped_before, 0);
    for (uint32_t r = 0; r < b->count; r++) {
      ck_assert_float_eq_tol(b->behaviour_log_prob[r], (float)(-A * log(2.0)), 1e-6f);
      for (int j = 0; j < A; j++) ck_assert(b->action[r * A + j] >= -1.0f && b->action[r * A + j] <= 1.0f);
      /* the reward belongs to this row's obs, action and next_obs */
      float reward;
      env_spec_reward(h.spec, 1, b->obs + r * O, b->action + r * A, b->next_obs + r * O, &reward);
      ck_assert_float_eq_tol(b->reward[r], reward, 1e-4f * (1.0f + fabsf(reward)));
      ck_assert(!b->terminated[r]); /* pendulum never terminates */
    }
    total += b->count;
  }
  ck_assert_uint_eq(total, h.transitions);

  /* Row t*K + k is env k at step t (no version change in this run). Within an episode next_obs is
   * the following obs; at the time limit (every 10 steps) the episode is truncated and next_obs is
   * the final observation, not the first one of the new episode. */
  uint64_t steps = total / K;
  int truncations = 0, continuations = 0;
  for (uint64_t t = 0; t + 1 < steps; t++) {
    for (int k = 0; k < K; k++) {
      uint32_t r0 = 0, r1 = 0;
      const Ember__TransitionBatch *b0 = find_row(t * K + k, &r0), *b1 = find_row((t + 1) * K + k, &r1);
      ck_assert(b0 && b1);
      int ends = (t % 10) == 9;
      ck_assert_int_eq(b0->truncated[r0], ends);
      int same = memcmp(b0->next_obs + r0 * O, b1->obs + r1 * O, O * sizeof(float)) == 0;
      if (ends) {
        ck_assert_msg(!same, "step %llu env %d: next_obs at the time limit is the reset observation",
                      (unsigned long long)t, k);
        truncations++;
      } else {
        ck_assert_msg(same, "step %llu env %d: next_obs is not the next obs", (unsigned long long)t, k);
        continuations++;
      }
    }
  }
  ck_assert_int_ge(truncations, K * 9);
  ck_assert_int_ge(continuations, 100);

  /* one report per finished episode, all training, length 10, not terminated */
  int train = 0;
  for (int i = 0; i < h.nepisodes; i++) {
    ck_assert(!h.episodes[i].evaluation);
    ck_assert(!h.episodes[i].terminated);
    ck_assert_uint_eq(h.episodes[i].length, 10);
    ck_assert_uint_eq(h.episodes[i].version, 0);
    train++;
  }
  ck_assert_int_ge(train, (int)(total / 10) - K);

  actor_stats s;
  actor_get_stats(h.actor, &s);
  harness_check_accounting(&s);
  ck_assert_uint_eq(s.transitions_stored, h.accepted);
  ck_assert_uint_eq(s.transitions_rejected, 0);
  ck_assert_uint_eq(s.transitions_dropped, 0);
  ck_assert_uint_eq(s.policy_version, 0);
  ck_assert_uint_eq(s.episodes, (uint64_t)h.nepisodes);
  /* metrics carry the same numbers after the run */
  ck_assert_double_eq(harness_metric(&h, "actor_transitions_made_total", 0), (double)s.env_steps);
  ck_assert_double_eq(harness_metric(&h, "actor_transitions_stored_total", 0), (double)s.transitions_stored);
  ck_assert_double_eq(harness_metric(&h, "actor_episodes_total", 0), (double)s.episodes);
}
END_TEST

START_TEST(terminated_is_not_truncated_and_next_obs_is_final) {
  /* the hopper falls under random actions: the task ends it (terminated) before the time limit */
  harness_init(&h, "hopper", 4, REPLAY_ACK);
  h.cfg.max_episode_steps = 40;
  harness_start(&h);
  PUMP_UNTIL(h.transitions >= 1200, "1200 hopper transitions");
  harness_join(&h);
  harness_pump(&h, 50);
  const int O = h.spec->obs_dim;
  int terminated = 0, truncated = 0;
  for (int i = 0; i < h.nkept; i++) {
    const Ember__TransitionBatch *b = kept_batch(i);
    for (uint32_t r = 0; r < b->count; r++) {
      ck_assert(!(b->terminated[r] && b->truncated[r]));
      /* next_obs is the state the action led to: termination is a property of it (the reset obs
       * of the next episode would never satisfy it) */
      uint8_t ends;
      env_spec_terminated(h.spec, 1, b->next_obs + r * O, &ends);
      ck_assert_int_eq(b->terminated[r], ends);
      terminated += b->terminated[r];
      truncated += b->truncated[r];
    }
  }
  ck_assert_int_gt(terminated, 0);
  ck_assert_int_gt(truncated, 0);
  int reported_terminated = 0;
  for (int i = 0; i < h.nepisodes; i++) {
    reported_terminated += h.episodes[i].terminated;
    if (!h.episodes[i].terminated) ck_assert_uint_eq(h.episodes[i].length, 40);
    else ck_assert_uint_lt(h.episodes[i].length, 40);
  }
  ck_assert_int_gt(reported_terminated, 0);
}
END_TEST

/* The highest policy_version among the kept batches. */
static uint64_t newest_version(void) {
  uint64_t v = 0;
  for (int i = 0; i < h.nkept; i++)
    if (kept_batch(i)->policy_version > v) v = kept_batch(i)->policy_version;
  return v;
}

START_TEST(version_tag_changes_after_params_arrive) {
  harness_init(&h, "pendulum", 4, REPLAY_ACK);
  harness_start(&h);
  PUMP_UNTIL(h.transitions >= 64, "random transitions");
  params_fixture p;
  harness_params(&h, &p, 3, 11);
  int64_t until = harness_ms() + DEADLINE_MS;
  while (newest_version() != 3) {
    ck_assert_msg(harness_ms() < until, "no batch tagged with version 3");
    harness_publish(&h, &p.params);
    harness_pump(&h, 20);
  }
  PUMP_UNTIL(h.heartbeat_version == 3, "a heartbeat with version 3");
  harness_join(&h);
  harness_pump(&h, 50);

  /* versions never go back, each batch has one version, and the policy's rows carry its log-probs:
   * the behaviour log-prob is the density of the stored action under the version-3 policy */
  policy_config pc = {"pendulum", h.spec->obs_dim, h.spec->act_dim, 64};
  ember_err err = {0};
  policy_t *pol = policy_new(&p.params, &pc, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  nn_mlp_ws *ws = nn_mlp_ws_new(policy_net(pol), 1, &err);
  ck_assert_ptr_nonnull(ws);
  uint64_t last = 0;
  int checked = 0;
  const int O = h.spec->obs_dim, A = h.spec->act_dim;
  for (int i = 0; i < h.nkept; i++) {
    const Ember__TransitionBatch *b = kept_batch(i);
    ck_assert_uint_ge(b->policy_version, last);
    last = b->policy_version;
    if (b->policy_version != 3) continue;
    for (uint32_t r = 0; r < b->count; r++) {
      const float *out = nn_mlp_forward(policy_net(pol), ws, b->obs + r * O, 1, NN_INPUT_SHARED);
      float mean[8], log_std[8], lp;
      nn_policy_head_forward(mean, log_std, out, 1, A, p.params.log_std_min, p.params.log_std_max);
      int saturated = 0;
      for (int j = 0; j < A; j++) saturated |= fabsf(b->action[r * A + j]) > 0.999f;
      if (saturated) continue; /* atanh of a float near +-1 loses the digits to compare */
      nn_tanh_gaussian_log_prob(&lp, b->action + r * A, mean, log_std, 1, A);
      ck_assert_msg(fabsf(lp - b->behaviour_log_prob[r]) < 2e-3f * (1.0f + fabsf(lp)),
                    "row %u of batch %d: behaviour log-prob %g, the policy gives %g", r, i,
                    (double)b->behaviour_log_prob[r], (double)lp);
      checked++;
    }
  }
  ck_assert_int_gt(checked, 0);
  nn_mlp_ws_destroy(&ws);
  policy_destroy(&pol);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.policy_version, 3);
  ck_assert_uint_eq(s.params_applied, 1);
  ck_assert_uint_eq(s.params_refused, 0);
  ck_assert_uint_ge(s.params_received, 1);
  ck_assert_uint_eq(s.params_stale, s.params_received - 1);
  ck_assert_double_eq(harness_metric(&h, "actor_policy_version", 1), 3.0);
  harness_check_accounting(&s);
  fixture_free(&p);
}
END_TEST

START_TEST(late_joiner_gets_params_by_request) {
  harness_init(&h, "pendulum", 2, REPLAY_ACK);
  params_fixture p;
  harness_params(&h, &p, 5, 12);
  h.reply_params = &p.params; /* nothing is ever broadcast */
  harness_start(&h);
  PUMP_UNTIL(newest_version() == 5, "a batch tagged with version 5");
  harness_join(&h);
  ck_assert_int_ge(h.params_replies, 1);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.policy_version, 5);
  ck_assert_uint_eq(s.params_applied, 1);
  fixture_free(&p);
}
END_TEST

START_TEST(bad_params_are_refused_and_counted) {
  harness_init(&h, "pendulum", 2, REPLAY_ACK);
  harness_start(&h);
  params_fixture bad;
  harness_params(&h, &bad, 2, 13);
  snprintf(bad.task, sizeof bad.task, "hopper"); /* another task */
  int64_t until = harness_ms() + DEADLINE_MS;
  while (harness_metric(&h, "actor_params_refused_total", 0) < 1) {
    ck_assert_msg(harness_ms() < until, "Params for another task were not refused");
    harness_publish(&h, &bad.params);
    harness_pump(&h, 20);
  }
  fixture_free(&bad);
  PUMP_UNTIL(h.transitions >= 64, "transitions after the refusal");
  ck_assert_uint_eq(newest_version(), 0); /* still acting, randomly */

  params_fixture good;
  harness_params(&h, &good, 4, 14);
  until = harness_ms() + DEADLINE_MS;
  while (newest_version() != 4) {
    ck_assert_msg(harness_ms() < until, "good Params after bad ones were not taken");
    harness_publish(&h, &good.params);
    harness_pump(&h, 20);
  }
  /* valid Params of another shape (wider hidden layers): refused, the version-4 policy keeps acting */
  static const int wider[2] = {16, 8};
  params_fixture other;
  fixture_build(&other, "pendulum", h.spec->obs_dim, h.spec->act_dim, wider, 2, "tanh", 6, 15, 0.5f);
  double refused_before = harness_metric(&h, "actor_params_refused_total", 0);
  until = harness_ms() + DEADLINE_MS;
  while (harness_metric(&h, "actor_params_refused_total", 0) < refused_before + 1) {
    ck_assert_msg(harness_ms() < until, "Params of another shape were not refused");
    harness_publish(&h, &other.params);
    harness_pump(&h, 20);
  }
  uint64_t seen = h.transitions;
  PUMP_UNTIL(h.transitions >= seen + 64, "transitions after the second refusal");
  harness_join(&h);
  harness_pump(&h, 50);
  ck_assert_uint_eq(newest_version(), 4);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.policy_version, 4);
  ck_assert_uint_eq(s.params_applied, 1);
  ck_assert_uint_ge(s.params_refused, 2);
  harness_check_accounting(&s);
  fixture_free(&good);
  fixture_free(&other);
}
END_TEST

/* Publishes p with env_steps until the actor reports holding its version. */
static void publish_until_held(params_fixture *p, uint64_t env_steps) {
  p->params.env_steps = env_steps;
  int64_t until = harness_ms() + DEADLINE_MS;
  while (h.heartbeat_version != p->params.version) {
    ck_assert_msg(harness_ms() < until, "version %llu never reached the actor", (unsigned long long)p->params.version);
    harness_publish(&h, &p->params);
    harness_pump(&h, 20);
  }
}

/* The eval role evaluates the first version published at or after each multiple of eval_every_steps
 * (here 100): of versions published at 50, 120, 150, 230 env steps, versions 2 and 4. Each is one
 * report of eval_episodes whole episodes, with the version's env steps; no transitions, no training
 * episodes. Training actors never evaluate. */
START_TEST(eval_role_evaluates_the_first_version_past_each_step_boundary) {
  harness_init(&h, "pendulum", 2, REPLAY_ABSENT);
  snprintf(h.cfg.role, sizeof h.cfg.role, "eval");
  h.cfg.eval_every_steps = 100;
  h.cfg.eval_episodes = 3;
  harness_start(&h);
  const uint64_t steps[5] = {0, 50, 120, 150, 230};
  for (uint64_t v = 1; v <= 4; v++) {
    params_fixture p;
    harness_params(&h, &p, v, 20 + v);
    publish_until_held(&p, steps[v]);
    fixture_free(&p);
    harness_pump(&h, 50); /* 10-step episodes: an evaluation started is over by now */
  }
  PUMP_UNTIL(h.nevaluations >= 2, "evaluations");
  harness_pump(&h, 100);
  harness_join(&h);
  ck_assert_int_eq(h.nevaluations, 2);
  const uint64_t want_version[2] = {2, 4}, want_steps[2] = {120, 230};
  for (int i = 0; i < 2; i++) {
    const evaluation_record *r = &h.evaluations[i];
    ck_assert_uint_eq(r->version, want_version[i]);
    ck_assert_uint_eq(r->env_steps, want_steps[i]);
    ck_assert_uint_eq(r->actor_id, 1);
    ck_assert_int_eq(r->episodes, 3);
    for (int e = 0; e < 3; e++) {
      ck_assert_uint_eq(r->lengths[e], 10);
      ck_assert(isfinite(r->returns[e]));
      ck_assert_int_eq(r->terminated[e], 0);
    }
  }
  ck_assert_uint_eq(h.batches, 0);
  ck_assert_int_eq(h.nepisodes, 0);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.evaluations, 2);
  ck_assert_uint_eq(s.eval_episodes, 6);
  ck_assert_uint_eq(s.last_eval_version, 4);
  ck_assert_uint_eq(s.env_steps, 0);
  ck_assert_uint_eq(s.evaluations_skipped, 0);
  ck_assert(isfinite(s.last_eval_return));
}
END_TEST

/* actor.ctrl_noise_std reaches the training envs. Pendulum's dynamics give the torque each transition
 * was driven by: thetaddot = 15 sin(theta) + 3 u (docs/tasks.md), integrated by semi-implicit Euler,
 * so u = ((thdot' - thdot) / dt - 15 sin(theta)) / 3 from obs and next_obs (unless the speed clip at
 * 8 acted). Without noise it is the commanded 2 * clip(a); with sigma 0.5 it strays by about one
 * N m (0.5 of the half range 2, before the clip to [-2, 2]). The reward stays the learner's function
 * of (obs, act, next_obs) either way. */
START_TEST(ctrl_noise_reaches_the_training_envs) {
  const double sigma = _i ? 0.5 : 0.0;
  harness_init(&h, "pendulum", 2, REPLAY_ACK);
  h.cfg.ctrl_noise_std = sigma;
  h.cfg.max_episode_steps = 50;
  harness_start(&h);
  PUMP_UNTIL(h.transitions >= 400, "400 transitions");
  harness_join(&h);
  const int O = 3;
  double dev_sq = 0, dev_max = 0;
  int n = 0;
  for (int i = 0; i < h.nkept; i++) {
    const Ember__TransitionBatch *b = kept_batch(i);
    for (uint32_t r = 0; r < b->count; r++) {
      const float *o = b->obs + r * O, *o2 = b->next_obs + r * O;
      float a = b->action[r], reward;
      env_spec_reward(h.spec, 1, o, &a, o2, &reward);
      ck_assert_float_eq_tol(b->reward[r], reward, 1e-4f * (1.0f + fabsf(reward)));
      if (fabsf(o2[2]) >= 7.999f) continue; /* the speed clip acted */
      double u = (((double)o2[2] - o[2]) / 0.05 - 15.0 * o[1]) / 3.0;
      double commanded = 2.0 * (a < -1 ? -1 : (a > 1 ? 1 : a));
      double dev = fabs(u - commanded);
      dev_sq += dev * dev, n++;
      if (dev > dev_max) dev_max = dev;
    }
  }
  ck_assert_int_ge(n, 300);
  double rms = sqrt(dev_sq / n);
  if (sigma == 0) ck_assert_msg(dev_max < 1e-3, "no noise, yet a torque strayed by %g", dev_max);
  else ck_assert_msg(rms > 0.5 && rms < 1.2, "sigma %g: the torques strayed by %g N m rms, want about 0.9", sigma, rms);
}
END_TEST

/* actor.ctrl_noise_std reaches the eval role's envs: its report is what an evaluation of the same
 * version gives in envs with the actor's eval streams and that noise, and not what it gives without. */
START_TEST(ctrl_noise_reaches_the_evaluation_envs) {
  harness_init(&h, "pendulum", 2, REPLAY_ABSENT);
  snprintf(h.cfg.role, sizeof h.cfg.role, "eval");
  h.cfg.eval_every_steps = 100;
  h.cfg.eval_episodes = 3;
  h.cfg.ctrl_noise_std = 0.3;
  harness_start(&h);
  params_fixture p;
  harness_params(&h, &p, 1, 21);
  publish_until_held(&p, 120);
  PUMP_UNTIL(h.nevaluations >= 1, "an evaluation");
  harness_join(&h);
  const evaluation_record *got = &h.evaluations[0];
  ck_assert_int_eq(got->episodes, 3);

  ember_err err = {0};
  env_model_t *model = NULL;
  ck_assert_msg(env_model_load("pendulum", NULL, &model, &err) == 0, "%s", err.msg);
  double returns[2][3];
  for (int v = 0; v < 2; v++) {
    evaluation_config ec = {.episodes = 3, .seed = (uint64_t)h.cfg.seed ^ EVAL_SEED_SALT,
                            .first_env_id = (uint64_t)h.cfg.id * 3, .max_episode_steps = 10,
                            .ctrl_noise_std = v ? 0.3 : 0.0};
    evaluation_t *ev = evaluation_new(model, &ec, &err);
    ck_assert_msg(ev != NULL, "%s", err.msg);
    ck_assert_double_eq(env_vec_ctrl_noise_std(evaluation_envs(ev)), ec.ctrl_noise_std);
    ck_assert_msg(evaluation_start(ev, &p.params, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(evaluation_run(ev, &err), 1);
    evaluation_result r;
    evaluation_get_result(ev, &r);
    for (int e = 0; e < 3; e++) returns[v][e] = r.returns[e];
    evaluation_destroy(&ev);
  }
  env_model_destroy(&model);
  fixture_free(&p);
  for (int e = 0; e < 3; e++) {
    ck_assert_msg(fabs(got->returns[e] - returns[1][e]) <= 1e-9 * (1 + fabs(returns[1][e])),
                  "episode %d: the eval role reported %.9g, an evaluation with the noise gives %.9g", e,
                  got->returns[e], returns[1][e]);
    ck_assert_msg(fabs(got->returns[e] - returns[0][e]) > 1e-6,
                  "episode %d: %.9g is also the return without noise: the comparison shows nothing", e,
                  got->returns[e]);
  }
}
END_TEST

/* An evaluation runs to its end whatever arrives meanwhile: versions 2 and 3 become due while
 * version 1's long episodes (20,000 steps) are played; version 1 is still reported whole, version 3
 * (the newest due) after it, and version 2 is counted as skipped. */
START_TEST(eval_role_never_cuts_an_evaluation_short) {
  harness_init(&h, "pendulum", 2, REPLAY_ABSENT);
  snprintf(h.cfg.role, sizeof h.cfg.role, "eval");
  h.cfg.eval_every_steps = 100;
  h.cfg.eval_episodes = 2;
  h.cfg.max_episode_steps = 20000;
  harness_start(&h);
  params_fixture p[3];
  for (int i = 0; i < 3; i++) harness_params(&h, &p[i], (uint64_t)i + 1, 40 + (uint64_t)i);
  for (int i = 0; i < 3; i++) p[i].params.env_steps = 100 * ((uint64_t)i + 1);
  int64_t until = harness_ms() + DEADLINE_MS;
  while (h.heartbeat_version != 3) { /* all three back to back, until the actor holds the last */
    ck_assert_msg(harness_ms() < until, "the versions never reached the actor");
    for (int i = 0; i < 3; i++) harness_publish(&h, &p[i].params);
    harness_pump(&h, 20);
  }
  PUMP_UNTIL(h.nevaluations >= 2, "evaluations");
  harness_join(&h);
  for (int i = 0; i < 3; i++) fixture_free(&p[i]);
  ck_assert_int_eq(h.nevaluations, 2);
  ck_assert_uint_eq(h.evaluations[0].version, 1);
  ck_assert_uint_eq(h.evaluations[1].version, 3);
  for (int i = 0; i < 2; i++)
    for (int e = 0; e < 2; e++) ck_assert_uint_eq(h.evaluations[i].lengths[e], 20000);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.evaluations_skipped, 1);
  ck_assert_double_eq(harness_metric(&h, "actor_evaluations_skipped_total", 0), 1.0);
}
END_TEST

/* A training actor never evaluates: only training episodes, with the stochastic policy's versions. */
START_TEST(train_role_never_evaluates) {
  harness_init(&h, "pendulum", 2, REPLAY_ACK);
  h.cfg.eval_every_steps = 10;
  harness_start(&h);
  params_fixture p;
  harness_params(&h, &p, 1, 7);
  publish_until_held(&p, 500);
  fixture_free(&p);
  uint64_t steps = h.transitions;
  PUMP_UNTIL(h.transitions >= steps + 200, "transitions");
  harness_join(&h);
  ck_assert_int_eq(h.nevaluations, 0);
  ck_assert_int_gt(h.nepisodes, 0);
  for (int i = 0; i < h.nepisodes; i++) ck_assert_int_eq(h.episodes[i].evaluation, 0);
}
END_TEST

START_TEST(replay_gone_means_bounded_queue_and_counted_drops) {
  /* nothing listens at the replay endpoint, nor is there a learner: the loop must still run */
  harness_init(&h, "pendulum", 4, REPLAY_ABSENT);
  h.cfg.max_env_steps = 4000;
  h.cfg.queue_batches = 4;
  h.cfg.max_in_flight = 2;
  h.cfg.drain_ms = 50;
  h.cfg.ack_timeout_ms = 20;
  h.cfg.replay_wait_ms = 0;
  zmq_close(h.control); /* no learner either */
  h.control = net_socket(h.ctx, ZMQ_ROUTER, "inproc://unused", true, &(net_socket_opts){.linger_ms = 0}, NULL);
  ck_assert_ptr_nonnull(h.control);
  harness_start(&h);
  harness_wait(&h); /* max_env_steps ends the run by itself */
  ck_assert_int_eq(h.run_rc, 0);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.env_steps, 4000);
  ck_assert_uint_eq(s.transitions_stored, 0);
  /* at most the queue, the credits and the partial batch escape dropping */
  ck_assert_uint_ge(s.transitions_dropped + s.transitions_unconfirmed, 4000 - (4 + 2 + 1) * 16);
  ck_assert_uint_gt(s.transitions_dropped, 0);
  ck_assert_uint_le(s.transitions_queued, 4 * 16); /* the queue stayed bounded */
  harness_check_accounting(&s);
  ck_assert_double_eq(harness_metric(&h, "actor_transitions_dropped_total", 0), (double)s.transitions_dropped);
}
END_TEST

START_TEST(silent_replay_is_written_off_and_counted) {
  harness_init(&h, "pendulum", 4, REPLAY_SILENT);
  h.cfg.max_env_steps = 3000;
  h.cfg.queue_batches = 4;
  h.cfg.max_in_flight = 2;
  h.cfg.ack_timeout_ms = 50;
  h.cfg.drain_ms = 100;
  h.cfg.replay_wait_ms = 0;
  harness_start(&h);
  harness_wait(&h); /* serves the learner side; the run ends by itself at max_env_steps */
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.env_steps, 3000);
  ck_assert_uint_eq(s.transitions_stored, 0);
  ck_assert_uint_gt(s.transitions_sent, 0);
  ck_assert_uint_gt(s.transitions_dropped + s.transitions_unconfirmed, 0);
  harness_check_accounting(&s);
}
END_TEST

START_TEST(replay_wait_paces_the_actor_to_a_slow_replay) {
  harness_init(&h, "pendulum", 4, REPLAY_SLOW);
  h.cfg.queue_batches = 2;
  h.cfg.max_in_flight = 2;
  h.cfg.replay_wait_ms = 2000;
  harness_start(&h);
  PUMP_UNTIL(h.accepted >= 20 * 16, "20 batches through a slow replay");
  harness_join(&h);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.transitions_dropped, 0); /* it waited instead of dropping */
  ck_assert_uint_gt(s.replay_wait_us, 0);
  ck_assert_uint_eq(s.transitions_stored, h.accepted);
  harness_check_accounting(&s);
}
END_TEST

/* The flaw this guards against: with a short ack_timeout_ms, everything in flight is written off while
 * the link is still backed up (the server reads slowly, the pipe is full); pacing waited only while
 * something was in flight, so the loop ran on and dropped nearly everything until the link drained.
 * The actor must wait for room in its queue instead. */
START_TEST(backed_up_link_with_short_ack_timeout_is_paced_not_dropped) {
  harness_init(&h, "pendulum", 4, REPLAY_SLOW);
  h.slow_ms = 30;          /* one batch per 30 ms ... */
  h.cfg.ack_timeout_ms = 10; /* ... acked long after the actor wrote it off */
  h.cfg.queue_batches = 2;
  h.cfg.max_in_flight = 2;
  h.cfg.replay_wait_ms = 2000;
  /* a replay that reads slowly with a short inbound queue: the link backs up after a few batches
   * (an inproc pipe holds the sender's SNDHWM plus the RCVHWM the receiver had when it bound) */
  zmq_close(h.replay);
  snprintf(h.cfg.replay_endpoint, CONFIG_STRING_MAX, "inproc://replay-backed-up-%d", (int)getpid());
  ember_err err = {0};
  net_socket_opts o = {.linger_ms = 0, .recv_hwm = 1};
  h.replay = net_socket(h.ctx, ZMQ_ROUTER, h.cfg.replay_endpoint, true, &o, &err);
  ck_assert_msg(h.replay != NULL, "%s", err.msg);
  harness_start(&h);
  PUMP_UNTIL(h.batches >= 12, "12 batches through a backed-up link");
  harness_join(&h);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_gt(s.transitions_unconfirmed + s.transitions_stored, 0);
  ck_assert_msg(s.transitions_dropped == 0, "dropped %llu of %llu transitions made (stored %llu)",
                (unsigned long long)s.transitions_dropped, (unsigned long long)s.env_steps,
                (unsigned long long)s.transitions_stored);
  ck_assert_uint_eq(h.sequence_errors, 0); /* no gap in what reached replay either */
  ck_assert_uint_gt(s.replay_wait_us, 0);
  harness_check_accounting(&s);
}
END_TEST

/* With no replay at all, a paced actor still steps, once per replay_wait_ms once its queue is full
 * (rather than at full speed, making transitions only to drop them), and accounts for everything. */
START_TEST(replay_gone_with_replay_wait_steps_at_the_wait) {
  harness_init(&h, "pendulum", 4, REPLAY_ABSENT);
  h.cfg.max_env_steps = 4 * 60;   /* 60 loop iterations */
  h.cfg.queue_batches = 4;        /* full after 16 iterations (4 batches of 16 rows) */
  h.cfg.max_in_flight = 2;
  h.cfg.drain_ms = 50;
  h.cfg.ack_timeout_ms = 20;
  h.cfg.replay_wait_ms = 20;
  int64_t t0 = harness_ms();
  harness_start(&h);
  harness_wait(&h);
  int64_t took = harness_ms() - t0;
  ck_assert_int_eq(h.run_rc, 0);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.env_steps, 240);
  ck_assert_uint_eq(s.transitions_stored, 0);
  ck_assert_uint_gt(s.transitions_dropped, 0);
  /* about 44 waits of 20 ms: it was paced, and it was not stuck */
  ck_assert_uint_ge(s.replay_wait_us, 30 * 20000);
  ck_assert_msg(took < 20000, "240 steps with replay gone took %lld ms", (long long)took);
  ck_assert_int_ge(h.heartbeats, 2); /* the learner still hears from it */
  harness_check_accounting(&s);
}
END_TEST

START_TEST(slow_replay_without_wait_drops_and_counts) {
  harness_init(&h, "pendulum", 4, REPLAY_SLOW);
  h.cfg.queue_batches = 2;
  h.cfg.max_in_flight = 2;
  h.cfg.replay_wait_ms = 0;
  harness_start(&h);
  PUMP_UNTIL(h.accepted >= 20 * 16, "20 batches through a slow replay");
  harness_join(&h);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_gt(s.transitions_dropped, 0); /* the loop ran on: the default never waits */
  ck_assert_uint_eq(s.replay_wait_us, 0);
  harness_check_accounting(&s);
}
END_TEST

/* A model dir whose half_cheetah has room for one contact: under random actions the cheetah touches
 * the floor with more, MuJoCo drops contacts and warns, and env.h flags those steps as faults. */
static char fault_dir[64];
static void write_fault_dir(void) {
  char dst[128];
  snprintf(fault_dir, sizeof fault_dir, "/tmp/ember_actor_faults_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(fault_dir));
  snprintf(dst, sizeof dst, "%s/half_cheetah.xml", fault_dir);
  write_cheetah_with_one_contact(dst);
}

static int count_of(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

START_TEST(physics_faults_are_left_out_counted_and_logged_once_per_burst) {
  write_fault_dir();
  FILE *log = tmpfile();
  ck_assert_ptr_nonnull(log);
  log_set_output(log);
  log_set_format(LOG_FORMAT_JSON);
  log_set_level(LOG_INFO);
  harness_init(&h, "half_cheetah", 4, REPLAY_ACK);
  snprintf(h.cfg.model_dir, sizeof h.cfg.model_dir, "%s", fault_dir);
  h.cfg.max_episode_steps = 1000000; /* no time limit in this run: a truncated row could only be a fault */
  harness_start(&h);
  PUMP_UNTIL(h.transitions >= 400 && harness_metric(&h, "actor_physics_fault_transitions_total", 0) >= 20,
             "400 transitions and 20 physics faults");
  harness_join(&h);
  harness_pump(&h, 50);
  log_set_output(NULL);

  const int O = h.spec->obs_dim;
  for (int i = 0; i < h.nkept; i++) {
    const Ember__TransitionBatch *b = kept_batch(i);
    for (uint32_t r = 0; r < b->count; r++) {
      ck_assert_msg(!b->truncated[r], "batch %d row %u: a faulted (truncated) step was shipped", i, r);
      ck_assert(isfinite(b->reward[r]));
      for (int j = 0; j < O; j++) ck_assert(isfinite(b->obs[r * O + j]) && isfinite(b->next_obs[r * O + j]));
    }
  }
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_ge(s.transitions_physics_fault, 20);
  ck_assert_uint_eq(s.transitions_dropped, s.transitions_physics_fault); /* replay took all the rest */
  ck_assert_uint_eq(s.transitions_stored + s.transitions_physics_fault + s.transitions_in_flight +
                        s.transitions_queued + s.transitions_unconfirmed,
                    s.env_steps);
  harness_check_accounting(&s);
  ck_assert_double_eq(harness_metric(&h, "actor_physics_fault_transitions_total", 0),
                      (double)s.transitions_physics_fault);
  ck_assert_double_eq(harness_metric(&h, "actor_transitions_dropped_total", 0), (double)s.transitions_dropped);
  ck_assert_int_gt(s.episodes, 0); /* the faulted episodes ended (truncated) and the envs went on */

  /* one line per burst, not per transition: faults come every few steps here, so one burst */
  static char text[1 << 16];
  rewind(log);
  size_t n = fread(text, 1, sizeof text - 1, log);
  text[n] = 0;
  fclose(log);
  int lines = count_of(text, "\"msg\":\"physics_fault\"");
  ck_assert_msg(lines >= 1 && lines <= 3, "%d physics_fault lines for %llu faulted transitions", lines,
                (unsigned long long)s.transitions_physics_fault);
  char path[128];
  snprintf(path, sizeof path, "%s/half_cheetah.xml", fault_dir);
  unlink(path);
  rmdir(fault_dir);
}
END_TEST

/* actor.nice: the thread that runs actor_run runs at that niceness; other threads are untouched. */
static int nice_seen_by_thread = -100;
static void *nice_thread(void *arg) {
  harness *hh = arg;
  hh->run_rc = actor_run(hh->actor, &hh->run_err);
  errno = 0;
  int v = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  nice_seen_by_thread = errno ? -100 : v;
  atomic_store(&hh->finished, 1);
  return NULL;
}

START_TEST(nice_sets_the_env_thread_niceness) {
  errno = 0;
  int base = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
  ck_assert_int_eq(errno, 0);
  /* an unprivileged thread cannot go below what it inherited (root can: the suite may run under nice) */
  int want = base > 5 && geteuid() != 0 ? base : 5;
  harness_init(&h, "pendulum", 2, REPLAY_ACK);
  h.cfg.nice = 5;
  h.cfg.max_env_steps = 200;
  ember_err err = {0};
  h.actor = actor_new(&h.cfg, h.ctx, h.metrics, &err);
  ck_assert_msg(h.actor != NULL, "%s", err.msg);
  ck_assert_int_eq(pthread_create(&h.thread, NULL, nice_thread, &h), 0);
  h.started = 1;
  harness_wait(&h);
  ck_assert_int_eq(h.run_rc, 0);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_int_eq(s.nice, want);
  ck_assert_int_eq(nice_seen_by_thread, want);
  ck_assert_int_eq(getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)), base); /* this thread: unchanged */

  /* the key is range-checked by the loader */
  actor_config cfg;
  config_binding b = {&actor_config_section, &cfg, NULL};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  ck_assert_int_eq(cfg.nice, 0);
  const char *sets[] = {"actor.nice=20"};
  ck_assert_int_ne(config_load(&b, 1, NULL, NULL, sets, 1, &err), 0);
  ck_assert_msg(strstr(err.msg, "actor.nice"), "%s", err.msg);
}
END_TEST

START_TEST(rejecting_replay_is_counted) {
  harness_init(&h, "pendulum", 4, REPLAY_REJECT);
  harness_start(&h);
  PUMP_UNTIL(h.rejected >= 320, "320 rejected transitions");
  harness_join(&h);
  harness_pump(&h, 50);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.transitions_stored, 0);
  ck_assert_uint_ge(s.transitions_rejected, 320);
  ck_assert_uint_le(s.transitions_rejected, h.rejected);
  harness_check_accounting(&s);
}
END_TEST

START_TEST(bad_messages_from_the_learner_are_refused) {
  harness_init(&h, "pendulum", 2, REPLAY_ACK);
  harness_start(&h);
  PUMP_UNTIL(h.hellos == 1 && h.transitions >= 32, "the actor to start");
  /* garbage bytes on the Params broadcast, and an unexpected message kind */
  int64_t until = harness_ms() + DEADLINE_MS;
  while (harness_metric(&h, "actor_messages_refused_total", 0) < 2) {
    ck_assert_msg(harness_ms() < until, "bad messages were not refused");
    ck_assert_int_eq(zmq_send(h.pub, "\x08\x01\xff\xff", 4, 0), 4);
    Ember__SampleRequest req = EMBER__SAMPLE_REQUEST__INIT;
    ember_err err = {0};
    ck_assert_int_eq(net_send_body(h.pub, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req, NULL, 0, &err), 0);
    harness_pump(&h, 20);
  }
  uint64_t seen = h.transitions;
  PUMP_UNTIL(h.transitions >= seen + 64, "transitions after bad messages");
  harness_join(&h);
  ck_assert_int_eq(h.run_rc, 0);
}
END_TEST

START_TEST(actor_new_refuses_bad_setups) {
  void *ctx = zmq_ctx_new();
  actor_config cfg;
  config_binding b = {&actor_config_section, &cfg, NULL};
  ember_err err = {0};
  ck_assert_msg(config_defaults(&b, 1, &err) == 0, "%s", err.msg);
  cfg.id = 1;
  snprintf(cfg.task, sizeof cfg.task, "no_such_task");
  ck_assert_ptr_null(actor_new(&cfg, ctx, NULL, &err));
  ck_assert_int_eq(err.code, EMBER_ENOENT);
  ck_assert_msg(strstr(err.msg, "no_such_task"), "%s", err.msg);

  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  cfg.id = 1;
  snprintf(cfg.task, sizeof cfg.task, "pendulum");
  snprintf(cfg.replay_endpoint, sizeof cfg.replay_endpoint, "bogus://x");
  ck_assert_ptr_null(actor_new(&cfg, ctx, NULL, &err));
  ck_assert_msg(strstr(err.msg, "replay_endpoint"), "%s", err.msg);

  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  snprintf(cfg.task, sizeof cfg.task, "pendulum");
  cfg.id = 0; /* "derive one" is ember-actor's job; the library refuses it */
  ck_assert_ptr_null(actor_new(&cfg, ctx, NULL, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
  ck_assert_msg(strstr(err.msg, "actor.id"), "%s", err.msg);

  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  cfg.id = 1;
  snprintf(cfg.task, sizeof cfg.task, "pendulum");
  snprintf(cfg.role, sizeof cfg.role, "evaluate");
  ck_assert_ptr_null(actor_new(&cfg, ctx, NULL, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
  ck_assert_msg(strstr(err.msg, "actor.role") && strstr(err.msg, "evaluate"), "%s", err.msg);

  /* the eval role needs no replay: an empty replay endpoint is refused only for training */
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  cfg.id = 1;
  snprintf(cfg.task, sizeof cfg.task, "pendulum");
  cfg.replay_endpoint[0] = 0;
  ck_assert_ptr_null(actor_new(&cfg, ctx, NULL, &err));
  ck_assert_msg(strstr(err.msg, "replay_endpoint"), "%s", err.msg);
  snprintf(cfg.role, sizeof cfg.role, "eval");
  actor_t *ev = actor_new(&cfg, ctx, NULL, &err);
  ck_assert_msg(ev != NULL, "%s", err.msg);
  actor_destroy(&ev);

  /* config keys are checked by the loader with their ranges */
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  const char *sets[] = {"actor.num_envs=0"};
  ck_assert_int_ne(config_load(&b, 1, NULL, NULL, sets, 1, &err), 0);
  ck_assert_msg(strstr(err.msg, "actor.num_envs"), "%s", err.msg);

  /* actor.ctrl_noise_std: negative or non-finite values are refused by name, by the loader and, for a
   * config built by hand, by actor_new */
  const char *bad_noise[] = {"actor.ctrl_noise_std=-0.1", "actor.ctrl_noise_std=nan", "actor.ctrl_noise_std=inf",
                             "actor.ctrl_noise_std=-inf", "actor.ctrl_noise_std=lots"};
  for (size_t k = 0; k < sizeof bad_noise / sizeof *bad_noise; k++) {
    ck_assert_int_ne(config_load(&b, 1, NULL, NULL, &bad_noise[k], 1, &err), 0);
    ck_assert_msg(strstr(err.msg, "actor.ctrl_noise_std"), "%s: %s", bad_noise[k], err.msg);
  }
  const char *good_noise[] = {"actor.ctrl_noise_std=0.25"};
  ck_assert_msg(config_load(&b, 1, NULL, NULL, good_noise, 1, &err) == 0, "%s", err.msg);
  ck_assert_double_eq(cfg.ctrl_noise_std, 0.25);
  const double bad_values[] = {-0.5, NAN, INFINITY};
  for (size_t k = 0; k < sizeof bad_values / sizeof *bad_values; k++) {
    ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
    cfg.id = 1;
    snprintf(cfg.task, sizeof cfg.task, "pendulum");
    cfg.ctrl_noise_std = bad_values[k];
    ck_assert_ptr_null(actor_new(&cfg, ctx, NULL, &err));
    ck_assert_int_eq(err.code, EMBER_EINVAL);
    ck_assert_msg(strstr(err.msg, "actor.ctrl_noise_std"), "%s", err.msg);
  }
  zmq_ctx_term(ctx);
}
END_TEST

START_TEST(stop_before_run_returns_at_once) {
  harness_init(&h, "pendulum", 2, REPLAY_ACK);
  ember_err err = {0};
  h.actor = actor_new(&h.cfg, h.ctx, h.metrics, &err);
  ck_assert_msg(h.actor != NULL, "%s", err.msg);
  actor_stop(h.actor);
  ck_assert_int_eq(actor_run(h.actor, &err), 0);
  actor_stats s;
  actor_get_stats(h.actor, &s);
  ck_assert_uint_eq(s.env_steps, 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("actor");
  TCase *tc = tcase_create("loop");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, NULL, teardown);
  tcase_add_test(tc, transitions_flow_with_correct_columns);
  tcase_add_test(tc, terminated_is_not_truncated_and_next_obs_is_final);
  tcase_add_test(tc, version_tag_changes_after_params_arrive);
  tcase_add_test(tc, late_joiner_gets_params_by_request);
  tcase_add_test(tc, bad_params_are_refused_and_counted);
  tcase_add_test(tc, eval_role_evaluates_the_first_version_past_each_step_boundary);
  tcase_add_test(tc, eval_role_never_cuts_an_evaluation_short);
  tcase_add_test(tc, train_role_never_evaluates);
  tcase_add_loop_test(tc, ctrl_noise_reaches_the_training_envs, 0, 2);
  tcase_add_test(tc, ctrl_noise_reaches_the_evaluation_envs);
  tcase_add_test(tc, replay_gone_means_bounded_queue_and_counted_drops);
  tcase_add_test(tc, silent_replay_is_written_off_and_counted);
  tcase_add_test(tc, replay_wait_paces_the_actor_to_a_slow_replay);
  tcase_add_test(tc, backed_up_link_with_short_ack_timeout_is_paced_not_dropped);
  tcase_add_test(tc, replay_gone_with_replay_wait_steps_at_the_wait);
  tcase_add_test(tc, slow_replay_without_wait_drops_and_counts);
  tcase_add_test(tc, physics_faults_are_left_out_counted_and_logged_once_per_burst);
  tcase_add_test(tc, nice_sets_the_env_thread_niceness);
  tcase_add_test(tc, rejecting_replay_is_counted);
  tcase_add_test(tc, bad_messages_from_the_learner_are_refused);
  tcase_add_test(tc, stop_before_run_returns_at_once);
  suite_add_tcase(s, tc);
  TCase *setup = tcase_create("setup");
  tcase_add_test(setup, actor_new_refuses_bad_setups);
  suite_add_tcase(s, setup);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

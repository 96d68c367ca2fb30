/* env control noise (env_vec_config.ctrl_noise_std, env.h): sigma 0 leaves every task bit for bit as it
 * was before the option existed; the noise follows the seed and each env has its own stream; the
 * applied control has the commanded mean and sigma * half range as its standard deviation, Gaussian,
 * a fresh draw per env step held over its physics substeps, and never leaves the ctrlrange; the
 * reward's control cost is of the commanded control, so the learner's exact reward functions stay
 * exact; start states do not depend on sigma; snapshots carry the noise stream; bad sigmas and env
 * ids are refused. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mujoco/mujoco.h>

#include "env.h"
#include "rng.h"

enum { MAX_K = 2, MAX_OBS = 376, MAX_ACT = 17 };

typedef struct {
  env_model_t *model;
  env_vec_t *vec;
  const env_spec *spec;
  const mjModel *m;
  float next_obs[MAX_K * MAX_OBS];
  float reward[MAX_K];
  uint8_t terminated[MAX_K], truncated[MAX_K];
  env_step_out out;
} rig;

static void rig_open(rig *r, const char *task, int k, uint64_t seed, int max_steps, double sigma) {
  memset(r, 0, sizeof *r);
  ember_err err = {0};
  ck_assert_msg(env_model_load(task, NULL, &r->model, &err) == EMBER_OK, "%s", err.msg);
  env_vec_config cfg = {.n_envs = k, .seed = seed, .max_episode_steps = max_steps, .ctrl_noise_std = sigma};
  ck_assert_msg(env_vec_new(r->model, &cfg, &r->vec, &err) == EMBER_OK, "%s", err.msg);
  r->spec = env_model_spec(r->model);
  r->m = env_model_mj(r->model);
  r->out = (env_step_out){.next_obs = r->next_obs, .reward = r->reward, .terminated = r->terminated,
                          .truncated = r->truncated};
}

static void rig_close(rig *r) {
  env_vec_destroy(&r->vec);
  env_model_destroy(&r->model);
}

static void rig_step(rig *r, const float *actions) {
  ember_err err = {0};
  ck_assert_msg(env_vec_step(r->vec, actions, &r->out, &err) == EMBER_OK, "%s", err.msg);
}

/* Actions in [-scale, scale]: beyond [-1, 1] when scale > 1, to exercise the action clip. */
static void random_actions(rng_t *g, float *a, int n, double scale) {
  for (int i = 0; i < n; i++) a[i] = (float)(scale * (2.0 * rng_uniform(g) - 1.0));
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

/* ---- sigma 0: the tasks as they were ---- */

/* FNV-1a of 150 steps of two envs (seed 7, episodes cut at 60 steps, actions uniform in [-1.2, 1.2]
 * from test stream 3): every observation, reward, flag and post-reset observation. Computed with the
 * env code as it was before ctrl_noise_std existed (commit 9584ae1), MuJoCo 2.2.2 on x86-64. */
static const struct {
  const char *task;
  uint64_t hash;
} BEFORE_THE_OPTION[] = {
    {"pendulum", 0x77355e55898d180eULL},     {"reacher", 0xcc23854f0d479570ULL},
    {"reacher7dof", 0x18b8fcc039d6769bULL},  {"half_cheetah", 0x4770d60985b84329ULL},
    {"hopper", 0xb6c83b22bebf95dbULL},       {"walker2d", 0x5c3e06243696990eULL},
    {"ant", 0x3be6c7cfd900e081ULL},          {"humanoid", 0xc8279b01287a0499ULL},
};

START_TEST(sigma_zero_is_the_task_as_before_bit_for_bit) {
  const char *task = env_spec_at(_i)->name;
  rig r;
  rig_open(&r, task, 2, 7, 60, 0.0);
  const int od = r.spec->obs_dim, ad = r.spec->act_dim;
  const mjModel *m = r.m;
  rng_t g;
  rng_seed(&g, 3, RNG_STREAM_TEST);
  float act[MAX_K * MAX_ACT];
  uint64_t h = fnv1a(0xcbf29ce484222325ULL, env_vec_obs(r.vec), sizeof(float) * 2 * (size_t)od);
  for (int t = 0; t < 150; t++) {
    random_actions(&g, act, 2 * ad, 1.2);
    rig_step(&r, act);
    h = fnv1a(h, r.next_obs, sizeof(float) * 2 * (size_t)od);
    h = fnv1a(h, r.reward, sizeof r.reward);
    h = fnv1a(h, r.terminated, 2);
    h = fnv1a(h, r.truncated, 2);
    h = fnv1a(h, env_vec_obs(r.vec), sizeof(float) * 2 * (size_t)od);
    /* the applied control is exactly the scaled action, on any platform (mj_resetData has zeroed it
     * in an env that just reset) */
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < m->nu && !(r.terminated[i] || r.truncated[i]); j++) {
        const mjtNum *range = m->actuator_ctrlrange + 2 * j;
        double a = act[i * ad + j] < -1.0f ? -1.0 : (act[i * ad + j] > 1.0f ? 1.0 : (double)act[i * ad + j]);
        double want = 0.5 * (range[0] + range[1]) + 0.5 * (range[1] - range[0]) * a;
        ck_assert_msg(env_vec_data(r.vec, i)->ctrl[j] == want, "%s step %d env %d ctrl %d: %.17g, not %.17g",
                      task, t, i, j, env_vec_data(r.vec, i)->ctrl[j], want);
      }
  }
#if defined(__x86_64__) && mjVERSION_HEADER == 222
  ck_assert_str_eq(BEFORE_THE_OPTION[_i].task, task);
  ck_assert_msg(h == BEFORE_THE_OPTION[_i].hash, "%s: trajectory hash %016llx, before the option %016llx", task,
                (unsigned long long)h, (unsigned long long)BEFORE_THE_OPTION[_i].hash);
#endif
  rig_close(&r);
}
END_TEST

/* ---- the noise follows the seed, each env its own stream ---- */

/* Both envs of each vector start from the same hand-set state and take the same actions, so only the
 * control noise can make trajectories differ; compared until an episode ends (its reset state is of
 * the env's own reset stream). */
START_TEST(noise_follows_the_seed_and_each_env_has_its_own) {
  const char *task = env_spec_at(_i)->name;
  rig a, b, c, quiet;
  rig_open(&a, task, 2, 7, 0, 0.3);
  rig_open(&b, task, 2, 7, 0, 0.3);
  rig_open(&c, task, 2, 8, 0, 0.3);
  rig_open(&quiet, task, 2, 8, 0, 0.0);
  const int od = a.spec->obs_dim, ad = a.spec->act_dim;
  const mjData *d0 = env_vec_data(a.vec, 0);
  static double qpos[64], qvel[64];
  memcpy(qpos, d0->qpos, sizeof(double) * (size_t)a.m->nq);
  memcpy(qvel, d0->qvel, sizeof(double) * (size_t)a.m->nv);
  ember_err err = {0};
  rig *all[] = {&a, &b, &c, &quiet};
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < 2; i++)
      ck_assert_msg(env_vec_set_qpos_qvel(all[k]->vec, i, qpos, qvel, &err) == EMBER_OK, "%s", err.msg);
  rng_t g;
  rng_seed(&g, 5, RNG_STREAM_TEST);
  float one[MAX_ACT], act[MAX_K * MAX_ACT];
  int a_vs_c = 0, env0_vs_env1 = 0, quiet_env0_vs_env1 = 0, steps = 0;
  size_t row = sizeof(float) * (size_t)od;
  for (int ended = 0; steps < 20 && !ended; steps++) {
    random_actions(&g, one, ad, 1.0);
    memcpy(act, one, sizeof(float) * (size_t)ad);
    memcpy(act + ad, one, sizeof(float) * (size_t)ad);
    for (int k = 0; k < 4; k++) rig_step(all[k], act);
    ck_assert_mem_eq(a.next_obs, b.next_obs, 2 * row);
    ck_assert_mem_eq(a.reward, b.reward, sizeof a.reward);
    for (int i = 0; i < 2; i++)
      ck_assert_mem_eq(env_vec_data(a.vec, i)->ctrl, env_vec_data(b.vec, i)->ctrl, sizeof(double) * (size_t)a.m->nu);
    a_vs_c += memcmp(a.next_obs, c.next_obs, 2 * row) != 0;
    env0_vs_env1 += memcmp(a.next_obs, a.next_obs + od, row) != 0;
    quiet_env0_vs_env1 += memcmp(quiet.next_obs, quiet.next_obs + od, row) != 0;
    for (int k = 0; k < 4; k++)
      for (int i = 0; i < 2; i++) ended |= all[k]->terminated[i] | all[k]->truncated[i];
  }
  ck_assert_msg(steps >= 5, "%s: an episode ended after %d steps", task, steps);
  ck_assert_msg(a_vs_c == steps, "%s: seeds 7 and 8 gave the same noisy step %d times of %d", task,
                steps - a_vs_c, steps);
  ck_assert_msg(env0_vs_env1 == steps, "%s: envs 0 and 1 of one vector took the same noise %d times of %d", task,
                steps - env0_vs_env1, steps);
  /* without the noise, the two envs are twins: the differences above are the noise's */
  ck_assert_int_eq(quiet_env0_vs_env1, 0);
  for (int k = 0; k < 4; k++) rig_close(all[k]);
}
END_TEST

/* ---- the applied control's distribution ---- */

typedef struct {
  double n, sum, sum_sq, within_1sd, lag_sum, prev;
} moments;

static void moments_add(moments *s, double x, double mean, double sd) {
  if (s->n > 0) s->lag_sum += (x - mean) * (s->prev - mean);
  s->n++, s->sum += x, s->sum_sq += x * x;
  s->within_1sd += fabs(x - mean) < sd;
  s->prev = x;
}

/* Checks mean, standard deviation, the Gaussian's 68.3 % within one sd (a uniform of the same sd has
 * 57.7 %) and that successive steps are uncorrelated (a fresh draw per step), to 5 standard errors. */
static void moments_check(const moments *s, double mean, double sd, const char *what) {
  double n = s->n, m = s->sum / n, v = s->sum_sq / n - m * m;
  ck_assert_msg(fabs(m - mean) < 5 * sd / sqrt(n), "%s: mean %.5f, want %.5f", what, m, mean);
  ck_assert_msg(fabs(sqrt(v) / sd - 1) < 5 / sqrt(2 * n), "%s: sd %.5f, want %.5f", what, sqrt(v), sd);
  double p = 0.682689;
  ck_assert_msg(fabs(s->within_1sd / n - p) < 5 * sqrt(p * (1 - p) / n), "%s: %.4f within one sd, want %.4f",
                what, s->within_1sd / n, p);
  double lag1 = s->lag_sum / ((n - 1) * sd * sd);
  ck_assert_msg(fabs(lag1) < 5 / sqrt(n), "%s: lag-1 correlation %.4f", what, lag1);
}

START_TEST(applied_ctrl_has_the_commanded_mean_and_sigma_half_ranges) {
  /* pendulum, action 0: ctrlrange [-2, 2], so sigma 0.1 is 0.2 N m, ten sds inside the range */
  rig p;
  rig_open(&p, "pendulum", 1, 11, 1000000, 0.1); /* no reset, which zeroes ctrl */
  moments s = {0};
  float zero = 0.0f;
  for (int t = 0; t < 20000; t++) {
    rig_step(&p, &zero);
    moments_add(&s, env_vec_data(p.vec, 0)->ctrl[0], 0.0, 0.2);
  }
  moments_check(&s, 0.0, 0.2, "pendulum ctrl at action 0, sigma 0.1");
  rig_close(&p);

  /* reacher7dof, 7 actuators of ctrlrange [-20, 20], action 0.5: mean 10, sd 0.05 * 20 = 1 */
  rig r;
  rig_open(&r, "reacher7dof", 1, 12, 1000000, 0.05);
  moments m7[7] = {{0}};
  float half[7] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  for (int t = 0; t < 4000; t++) {
    rig_step(&r, half);
    for (int j = 0; j < 7; j++) moments_add(&m7[j], env_vec_data(r.vec, 0)->ctrl[j], 10.0, 1.0);
  }
  for (int j = 0; j < 7; j++) {
    char what[64];
    snprintf(what, sizeof what, "reacher7dof actuator %d at action 0.5, sigma 0.05", j);
    moments_check(&m7[j], 10.0, 1.0, what);
  }
  rig_close(&r);
}
END_TEST

/* The draw is made once per env step and held over the frame_skip substeps: replaying the step by
 * hand from a copy of the state, with the applied control read after it, gives the same state bit
 * for bit. */
START_TEST(noise_is_held_over_the_substeps) {
  rig h;
  rig_open(&h, "hopper", 1, 4, 0, 0.5);
  ck_assert_int_eq(h.spec->frame_skip, 4);
  mjData *copy = mj_makeData(h.m);
  ck_assert_ptr_nonnull(copy);
  rng_t g;
  rng_seed(&g, 6, RNG_STREAM_TEST);
  float act[MAX_ACT];
  for (int t = 0; t < 30; t++) {
    const mjData *d = env_vec_data(h.vec, 0);
    mj_copyData(copy, h.m, d);
    random_actions(&g, act, h.spec->act_dim, 1.0);
    rig_step(&h, act);
    if (h.terminated[0] || h.truncated[0]) break; /* the env has reset: nothing to compare */
    for (int j = 0; j < h.m->nu; j++) {
      copy->ctrl[j] = d->ctrl[j];
      ck_assert_msg(d->ctrl[j] != act[j], "step %d: no noise on actuator %d", t, j);
    }
    for (int s = 0; s < h.spec->frame_skip; s++) mj_step(h.m, copy);
    ck_assert_mem_eq(copy->qpos, d->qpos, sizeof(double) * (size_t)h.m->nq);
    ck_assert_mem_eq(copy->qvel, d->qvel, sizeof(double) * (size_t)h.m->nv);
  }
  mj_deleteData(copy);
  rig_close(&h);
}
END_TEST

START_TEST(applied_ctrl_stays_in_the_ctrlrange) {
  const char *task = env_spec_at(_i)->name;
  rig r;
  rig_open(&r, task, 2, 9, 0, 2.0); /* sd twice the half range: most draws would leave it */
  rng_t g;
  rng_seed(&g, 7, RNG_STREAM_TEST);
  float act[MAX_K * MAX_ACT];
  long at_bound = 0, total = 0;
  for (int t = 0; t < 50; t++) {
    random_actions(&g, act, 2 * r.spec->act_dim, 1.5);
    rig_step(&r, act);
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < r.m->nu; j++) {
        double u = env_vec_data(r.vec, i)->ctrl[j];
        const mjtNum *range = r.m->actuator_ctrlrange + 2 * j;
        ck_assert_msg(u >= range[0] && u <= range[1], "%s env %d actuator %d: ctrl %g outside [%g, %g]", task, i, j,
                      u, range[0], range[1]);
        at_bound += u == range[0] || u == range[1];
        total++;
      }
  }
  /* with sd 2 half ranges about 60 % of draws land beyond a bound (and are clipped onto it) */
  ck_assert_msg(at_bound > total / 3, "%s: only %ld of %ld controls at a bound", task, at_bound, total);
  rig_close(&r);
}
END_TEST

/* ---- the reward ---- */

/* The control cost is of the commanded control: where reward_exact, the learner's function of
 * (obs, act, next_obs) still equals the env's reward under noise, and the same function fed the
 * applied control (what a cost on it would give) does not. */
START_TEST(reward_is_of_the_commanded_control) {
  const env_spec *s = env_spec_at(_i);
  if (!s->reward_exact) return;
  rig r;
  rig_open(&r, s->name, 2, 21, 0, 0.5);
  rng_t g;
  rng_seed(&g, 9, RNG_STREAM_TEST);
  static float obs[MAX_K * MAX_OBS], act[MAX_K * MAX_ACT], applied[MAX_K * MAX_ACT];
  float pure[MAX_K], of_applied[MAX_K];
  int applied_differs = 0;
  for (int t = 0; t < 120; t++) {
    memcpy(obs, env_vec_obs(r.vec), sizeof(float) * 2 * (size_t)s->obs_dim);
    random_actions(&g, act, 2 * s->act_dim, 1.0);
    rig_step(&r, act);
    for (int i = 0; i < 2; i++)
      for (int j = 0; j < s->act_dim; j++) { /* every task's ranges are symmetric */
        const mjtNum *range = r.m->actuator_ctrlrange + 2 * j;
        applied[i * s->act_dim + j] = (float)(env_vec_data(r.vec, i)->ctrl[j] / range[1]);
      }
    env_spec_reward(s, 2, obs, act, r.next_obs, pure);
    env_spec_reward(s, 2, obs, applied, r.next_obs, of_applied);
    for (int i = 0; i < 2; i++) {
      float tol = 1e-4f * (1 + fabsf(r.reward[i]));
      ck_assert_msg(fabsf(pure[i] - r.reward[i]) <= tol, "%s step %d: pure %g env %g", s->name, t, pure[i],
                    r.reward[i]);
      if (!(r.terminated[i] || r.truncated[i])) /* a reset has zeroed mjData.ctrl */
        applied_differs += fabsf(of_applied[i] - r.reward[i]) > 10 * tol;
    }
  }
  /* the check above can tell the two costs apart */
  ck_assert_msg(applied_differs >= 10, "%s: a cost on the applied control differs on %d of 240 steps only",
                s->name, applied_differs);
  rig_close(&r);
}
END_TEST

/* ---- start states ---- */

/* The noise has its own stream: the k-th episode of an env starts from the same state whatever sigma,
 * although under noise the hopper's episodes end at other steps (a shared stream would have spent
 * draws on the noise between two resets). */
START_TEST(start_states_do_not_depend_on_sigma) {
  enum { EPISODES = 64 };
  static float starts[2][MAX_K][EPISODES][11];
  static int ends[2][MAX_K][EPISODES];
  int count[2][MAX_K] = {{0}};
  for (int v = 0; v < 2; v++) {
    rig r;
    rig_open(&r, "hopper", 2, 13, 0, v ? 0.3 : 0.0);
    rng_t g;
    rng_seed(&g, 8, RNG_STREAM_TEST);
    float act[MAX_K * 3];
    for (int t = 0; t < 600; t++) {
      random_actions(&g, act, 6, 1.0);
      rig_step(&r, act);
      for (int i = 0; i < 2; i++) {
        if (!(r.terminated[i] || r.truncated[i]) || count[v][i] >= EPISODES) continue;
        ends[v][i][count[v][i]] = t;
        memcpy(starts[v][i][count[v][i]++], env_vec_obs(r.vec) + 11 * i, sizeof(float) * 11);
      }
    }
    rig_close(&r);
  }
  int ends_differ = 0;
  for (int i = 0; i < 2; i++) {
    int n = count[0][i] < count[1][i] ? count[0][i] : count[1][i];
    ck_assert_msg(n >= 5, "env %d: only %d episodes", i, n);
    for (int e = 0; e < n; e++) {
      ck_assert_msg(memcmp(starts[0][i][e], starts[1][i][e], sizeof(float) * 11) == 0,
                    "env %d: episode %d starts elsewhere under noise", i, e + 2);
      ends_differ += ends[0][i][e] != ends[1][i][e];
    }
  }
  ck_assert_msg(ends_differ > 0, "the noise changed no episode's end: the comparison shows nothing");
}
END_TEST

/* ---- snapshots ---- */

START_TEST(snapshot_restores_the_noise_stream) {
  rig r;
  rig_open(&r, "hopper", 1, 3, 0, 0.3);
  rng_t g;
  rng_seed(&g, 1, RNG_STREAM_TEST);
  float act[MAX_ACT];
  for (int t = 0; t < 5; t++) {
    random_actions(&g, act, 3, 1.0);
    rig_step(&r, act);
  }
  size_t n = env_state_size(r.model);
  unsigned char *snap = malloc(n);
  ember_err err = {0};
  ck_assert_int_eq(env_vec_save_state(r.vec, 0, snap, n, &err), EMBER_OK);
  enum { T = 30 };
  static float obs_a[T][11];
  static double ctrl_a[T][3];
  rng_t g0 = g;
  for (int t = 0; t < T; t++) {
    random_actions(&g, act, 3, 1.0);
    rig_step(&r, act);
    memcpy(obs_a[t], r.next_obs, sizeof obs_a[t]);
    memcpy(ctrl_a[t], env_vec_data(r.vec, 0)->ctrl, sizeof ctrl_a[t]);
  }
  ck_assert_int_eq(env_vec_load_state(r.vec, 0, snap, n, &err), EMBER_OK);
  g = g0;
  for (int t = 0; t < T; t++) {
    random_actions(&g, act, 3, 1.0);
    rig_step(&r, act);
    ck_assert_mem_eq(ctrl_a[t], env_vec_data(r.vec, 0)->ctrl, sizeof ctrl_a[t]);
    ck_assert_mem_eq(obs_a[t], r.next_obs, sizeof obs_a[t]);
  }
  /* a vector with another sigma would not continue the same way: refused, naming both */
  rig q;
  rig_open(&q, "hopper", 1, 3, 0, 0.0);
  ck_assert_int_eq(env_vec_load_state(q.vec, 0, snap, n, &err), EMBER_EINVAL);
  ck_assert_msg(strstr(err.msg, "ctrl_noise_std 0.3") && strstr(err.msg, "has 0"), "%s", err.msg);
  rig_close(&q);
  free(snap);
  rig_close(&r);
}
END_TEST

/* ---- refusals ---- */

START_TEST(bad_sigma_and_env_ids_are_refused) {
  ember_err err = {0};
  env_model_t *m = NULL;
  ck_assert_int_eq(env_model_load("pendulum", NULL, &m, &err), EMBER_OK);
  env_vec_t *v = NULL;
  const double bad[] = {-0.1, -INFINITY, INFINITY, NAN};
  const char *shown[] = {"-0.1", "-inf", "inf", "nan"};
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    env_vec_config c = {.n_envs = 1, .seed = 1, .ctrl_noise_std = bad[k]};
    ck_assert_int_eq(env_vec_new(m, &c, &v, &err), EMBER_EINVAL);
    ck_assert_ptr_null(v);
    ck_assert_msg(strstr(err.msg, "ctrl_noise_std") && strstr(err.msg, shown[k]), "%s", err.msg);
  }
  env_vec_config ok = {.n_envs = 2, .seed = 1, .ctrl_noise_std = 0.5, .first_env_id = (1ULL << 62) - 2};
  ck_assert_msg(env_vec_new(m, &ok, &v, &err) == EMBER_OK, "%s", err.msg);
  ck_assert_double_eq(env_vec_ctrl_noise_std(v), 0.5);
  env_vec_destroy(&v);
  /* one env id more and env ids would reach the control-noise streams' range */
  env_vec_config past = ok;
  past.first_env_id++;
  ck_assert_int_eq(env_vec_new(m, &past, &v, &err), EMBER_EINVAL);
  ck_assert_msg(strstr(err.msg, "first_env_id"), "%s", err.msg);
  env_model_destroy(&m);
}
END_TEST

int main(void) {
  Suite *s = suite_create("env_ctrl_noise");
  TCase *tc = tcase_create("ctrl_noise");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, sigma_zero_is_the_task_as_before_bit_for_bit, 0, env_spec_count());
  tcase_add_loop_test(tc, noise_follows_the_seed_and_each_env_has_its_own, 0, env_spec_count());
  tcase_add_test(tc, applied_ctrl_has_the_commanded_mean_and_sigma_half_ranges);
  tcase_add_test(tc, noise_is_held_over_the_substeps);
  tcase_add_loop_test(tc, applied_ctrl_stays_in_the_ctrlrange, 0, env_spec_count());
  tcase_add_loop_test(tc, reward_is_of_the_commanded_control, 0, env_spec_count());
  tcase_add_test(tc, start_states_do_not_depend_on_sigma);
  tcase_add_test(tc, snapshot_restores_the_noise_stream);
  tcase_add_test(tc, bad_sigma_and_env_ids_are_refused);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

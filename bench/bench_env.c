/* bench_env: env steps per second of every task, and the same physics driven by bare mj_step.
 *
 * For each task, on one thread and one env (K = 1, the strictest case for per-call overhead):
 *   env  env_vec_step with uniform random actions: action scaling, frame_skip mj_steps, reward,
 *        termination, observation, and auto-resets (noise + mj_forward) whenever episodes end.
 *   raw  the same model, one mjData: the same random controls written to ctrl, mj_step * frame_skip;
 *        at the steps where the env run ended episodes, mj_resetData and a copy of the initial
 *        qpos/qvel the env drew (and of the solver warm start its reset left; the pendulum's speed
 *        clip, part of that task's dynamics, is applied too). Both loops therefore simulate the same trajectories (cost depends
 *        on the state: a hopper lying on the floor has more contacts than one standing), and the
 *        difference is the wrapper: scaling, reward, termination, observation, reset noise and the
 *        reset's mj_forward. The raw run must end in the env run's final state, bit for bit; a
 *        warning says so if it ever does not.
 * Times are the thread's CPU time; the two loops alternate for several short rounds and the best
 * round of each is kept, the one least disturbed by other work on a shared machine (caches).
 * Prints BENCH env_<task>_steps_per_s, env_<task>_raw_steps_per_s and env_<task>_vs_raw_mujoco.
 * Usage: bench_env [seconds per measurement, default 0.1] [task ...]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mujoco/mujoco.h>

#include "env.h"
#include "rng.h"

enum { ROUNDS = 7 };

/* CPU time of this thread: on a shared machine, time spent descheduled does not count against
 * either loop. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
  env_model_t *model;
  const env_spec *spec;
  const mjModel *m;
  float *actions, *next_obs;
  uint8_t *episode_ended; /* [n_steps] recorded by the env run, replayed by the raw run */
  double *initial_states; /* [(episodes + 1) * state_len]: each episode's first qpos, qvel and
                             solver warm start (which the env's reset mj_forward leaves behind) */
  int state_len;          /* nq + 2 nv */
  double *env_final_qpos; /* [nq] where the recorded env run ended: the raw run must end there too */
  long n_steps;
} bench_task;

static void random_actions(rng_t *g, float *a, int n) {
  for (int i = 0; i < n; i++) a[i] = 2.0f * rng_uniform_f(g) - 1.0f;
}

/* Keeps the initial state of episode e (the env has just reset). initial_states has room for one
 * state per step plus one, so no episode count can overflow it. */
static void record_state(bench_task *b, const mjData *d, long e) {
  const mjModel *m = b->m;
  double *s = b->initial_states + (size_t)e * (size_t)b->state_len;
  memcpy(s, d->qpos, sizeof(double) * (size_t)m->nq);
  memcpy(s + m->nq, d->qvel, sizeof(double) * (size_t)m->nv);
  memcpy(s + m->nq + m->nv, d->qacc_warmstart, sizeof(double) * (size_t)m->nv);
}

static void restore_state(const mjModel *m, mjData *d, const double *s) {
  memcpy(d->qpos, s, sizeof(double) * (size_t)m->nq);
  memcpy(d->qvel, s + m->nq, sizeof(double) * (size_t)m->nv);
  memcpy(d->qacc_warmstart, s + m->nq + m->nv, sizeof(double) * (size_t)m->nv);
}

/* Runs n env steps (recording episode ends and initial states when asked); returns seconds. */
static double run_env(bench_task *b, long n, int record) {
  env_vec_t *v = NULL;
  ember_err err = {0};
  env_vec_config cfg = {.n_envs = 1, .seed = 1};
  if (env_vec_new(b->model, &cfg, &v, &err)) {
    fprintf(stderr, "bench_env: %s\n", err.msg);
    exit(1);
  }
  float reward;
  uint8_t terminated, truncated;
  env_step_out out = {.next_obs = b->next_obs, .reward = &reward, .terminated = &terminated, .truncated = &truncated};
  rng_t g;
  rng_seed(&g, 2, RNG_STREAM_TEST);
  long episodes = 0;
  if (record) record_state(b, env_vec_data(v, 0), episodes++);
  double t0 = now_s();
  for (long t = 0; t < n; t++) {
    random_actions(&g, b->actions, b->spec->act_dim);
    if (env_vec_step(v, b->actions, &out, &err)) {
      fprintf(stderr, "bench_env: %s\n", err.msg);
      exit(1);
    }
    if (record) {
      b->episode_ended[t] = terminated | truncated;
      if (terminated | truncated) record_state(b, env_vec_data(v, 0), episodes++);
    }
  }
  double dt = now_s() - t0;
  if (record) memcpy(b->env_final_qpos, env_vec_data(v, 0)->qpos, sizeof(double) * (size_t)b->m->nq);
  env_vec_destroy(&v);
  return dt;
}

static double run_raw(bench_task *b, long n) {
  const mjModel *m = b->m;
  mjData *d = mj_makeData(m);
  rng_t g;
  rng_seed(&g, 2, RNG_STREAM_TEST);
  const double *next_state = b->initial_states;
  int pendulum = strcmp(b->spec->name, "pendulum") == 0;
  double t0 = now_s();
  restore_state(m, d, next_state);
  next_state += b->state_len;
  for (long t = 0; t < n; t++) {
    random_actions(&g, b->actions, b->spec->act_dim);
    for (int j = 0; j < m->nu; j++) {
      const mjtNum *r = m->actuator_ctrlrange + 2 * j;
      d->ctrl[j] = 0.5 * (r[0] + r[1]) + 0.5 * (r[1] - r[0]) * b->actions[j];
    }
    double pendulum_angle = d->qpos[0];
    for (int s = 0; s < b->spec->frame_skip; s++) mj_step(m, d);
    if (pendulum && fabs(d->qvel[0]) > 8) { /* part of the task's dynamics (docs/tasks.md) */
      d->qvel[0] = d->qvel[0] > 0 ? 8 : -8;
      d->qpos[0] = pendulum_angle + m->opt.timestep * d->qvel[0];
    }
    if (b->episode_ended[t]) {
      mj_resetData(m, d);
      restore_state(m, d, next_state);
      next_state += b->state_len;
    }
  }
  double dt = now_s() - t0;
  if (memcmp(d->qpos, b->env_final_qpos, sizeof(double) * (size_t)m->nq) != 0)
    fprintf(stderr, "bench_env: %s: the raw run did not reproduce the env's trajectory; its rate is not "
                    "comparable\n", b->spec->name);
  mj_deleteData(d);
  return dt;
}

static void bench_one(const char *task, double seconds) {
  bench_task b = {0};
  ember_err err = {0};
  if (env_model_load(task, NULL, &b.model, &err)) {
    fprintf(stderr, "bench_env: %s\n", err.msg);
    exit(1);
  }
  b.spec = env_model_spec(b.model);
  b.m = env_model_mj(b.model);
  b.actions = malloc(sizeof(float) * (size_t)b.spec->act_dim);
  b.next_obs = malloc(sizeof(float) * (size_t)b.spec->obs_dim);

  /* calibrate the step count to about `seconds` per measurement */
  double probe = run_env(&b, 1000, 0);
  b.n_steps = (long)(seconds * 1000 / (probe > 1e-6 ? probe : 1e-6));
  if (b.n_steps < 1000) b.n_steps = 1000;
  b.episode_ended = calloc((size_t)b.n_steps, 1);
  b.state_len = b.m->nq + 2 * b.m->nv;
  b.initial_states = malloc(sizeof(double) * (size_t)(b.n_steps + 1) * (size_t)b.state_len);
  b.env_final_qpos = malloc(sizeof(double) * (size_t)b.m->nq);
  if (!b.actions || !b.next_obs || !b.episode_ended || !b.initial_states || !b.env_final_qpos) {
    fprintf(stderr, "bench_env: out of memory\n");
    exit(1);
  }

  double best_env = 1e30, best_raw = 1e30;
  for (int round = 0; round < ROUNDS; round++) {
    double te = run_env(&b, b.n_steps, round == 0);
    double tr = run_raw(&b, b.n_steps);
    if (te < best_env) best_env = te;
    if (tr < best_raw) best_raw = tr;
  }
  long episodes = 0;
  for (long t = 0; t < b.n_steps; t++) episodes += b.episode_ended[t];
  double env_rate = (double)b.n_steps / best_env, raw_rate = (double)b.n_steps / best_raw;
  printf("BENCH env_%s_steps_per_s %.0f steps/s\n", task, env_rate);
  printf("BENCH env_%s_raw_steps_per_s %.0f steps/s\n", task, raw_rate);
  printf("BENCH env_%s_vs_raw_mujoco %.3f ratio\n", task, env_rate / raw_rate);
  fprintf(stderr, "  (%s: %ld env steps x %d physics steps per measurement, %ld episodes, best of %d)\n", task,
          b.n_steps, b.spec->frame_skip, episodes, ROUNDS);
  fflush(stdout);
  free(b.actions);
  free(b.next_obs);
  free(b.episode_ended);
  free(b.initial_states);
  free(b.env_final_qpos);
  env_model_destroy(&b.model);
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 0.1;
  if (!(seconds > 0)) seconds = 0.1;
  if (argc > 2) {
    for (int i = 2; i < argc; i++) bench_one(argv[i], seconds);
  } else {
    for (int i = 0; i < env_spec_count(); i++) bench_one(env_spec_at(i)->name, seconds);
  }
  return 0;
}

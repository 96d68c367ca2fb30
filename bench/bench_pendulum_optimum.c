/* bench_pendulum_optimum: the best expected return any policy can get on the pendulum task, and how
 * much means of 5 or 25 evaluation episodes scatter around it.
 *
 * Why: papers report pendulum scores as the mean of a few evaluation episodes, and the start state
 * (theta ~ U[-pi, pi], thetadot ~ U[-1, 1]) decides much of an episode's return: starting upright is
 * nearly free, starting hanging down costs a swing-up. A reference optimum, and the spread of small
 * means at that optimum, tell whether a reported figure is an achievable mean or a lucky draw.
 *
 *   1. Dynamic programming: backward induction over the 200 steps (undiscounted, reward = -cost) on
 *      a grid, theta periodic on [-pi, pi) with NT points, thetadot on [-8, 8] with NV points, over
 *      a set of torques; V_t(s) = max_u [-cost(s, u) + V_{t+1}(f(s, u))], V_200 = 0, V_{t+1}
 *      interpolated bilinearly (periodic in theta, clamped in thetadot: the dynamics clip thetadot to
 *      the same range). f is Gym's closed-form update, the one the MuJoCo model reproduces. Every V_t
 *      is kept: the optimal policy of a finite horizon depends on the time left.
 *   2. dp_return: the mean of V_0 over the start distribution (midpoint quadrature of the
 *      interpolated V_0). An estimate, not a bound: interpolation errors go either way.
 *   3. greedy_return: the DP's greedy policy (one-step lookahead on V_{t+1} over a finer set of
 *      torques) played in ember's env for many episodes. A real policy's return, so below the true
 *      optimum up to sampling noise. Every step checks the closed form against the env's next state
 *      (exit 1 beyond 1e-6): the DP must be solving ember's task, not a look-alike.
 * Then the spread of means of 5 and 25 of those episodes (bootstrap and disjoint groups) and how
 * often they reach --threshold (default -125.8, a paper's reported figure).
 *
 * Prints BENCH pendulum_optimum_dp_return, pendulum_optimum_greedy_return and
 * pendulum_optimum_greedy_std; the details go to stderr. One thread; not part of `make test`.
 * Usage: bench_pendulum_optimum [--nt 501] [--nv 401] [--torques 21] [--play-torques 81]
 *                               [--episodes 1000] [--seed 1] [--threshold -125.8] [--csv FILE]
 * (--csv: one row per played episode: return, start state, V_0 there.)
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mujoco/mujoco.h>

#include "env.h"
#include "rng.h"

/* Gym Pendulum-v1 as ember's task defines it (docs/tasks.md, common/env/models/pendulum.xml). */
#define GRAVITY 10.0
#define MASS 1.0
#define LENGTH 1.0
#define DT 0.05
#define MAX_SPEED 8.0
#define MAX_TORQUE 2.0
enum { HORIZON = 200 };

/* One step of thetaddot = 3 g / (2 l) sin(theta) + 3 u / (m l^2), angle 0 upright, semi-implicit
 * Euler with the velocity clipped before the angle moves: the two constants are per-step increments. */
static const double GRAVITY_GAIN = 3.0 * GRAVITY / (2.0 * LENGTH) * DT;
static const double TORQUE_GAIN = 3.0 / (MASS * LENGTH * LENGTH) * DT;

static const double SELF_CHECK_TOLERANCE = 1e-6;

static double clip(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* Gym's angle_normalize into [-pi, pi), as the task's cost uses it. */
static double angle_normalize(double x) {
  if (x >= -M_PI && x < M_PI) return x;
  double r = x + M_PI;
  r -= 2.0 * M_PI * floor(r / (2.0 * M_PI));
  return r - M_PI;
}

/* Cost of the state the action is taken in (theta already normalised). */
static double state_cost(double theta, double theta_dot) { return theta * theta + 0.1 * theta_dot * theta_dot; }
static double torque_cost(double torque) { return 0.001 * torque * torque; }

static double next_theta_dot(double theta, double theta_dot, double torque) {
  return clip(theta_dot + GRAVITY_GAIN * sin(theta) + TORQUE_GAIN * torque, -MAX_SPEED, MAX_SPEED);
}

/* ---- the value grid ---- */

typedef struct {
  int nt, nv;           /* theta points on [-pi, pi) (periodic), thetadot points on [-8, 8] */
  double dtheta, dspeed;
  double inv_dtheta, inv_dspeed;
  size_t cells;         /* nt * nv */
  float *values;        /* [(HORIZON + 1) * cells]: V_t at values + t * cells, theta-major; V_HORIZON = 0 */
} value_grid;

static double grid_theta(const value_grid *g, int i) { return -M_PI + i * g->dtheta; }
static double grid_speed(const value_grid *g, int j) { return -MAX_SPEED + j * g->dspeed; }

/* V (one time layer) at (theta, theta_dot), bilinear; theta any finite angle, periodic. */
static double value_at(const value_grid *g, const float *v, double theta, double theta_dot) {
  double p = (theta + M_PI) * g->inv_dtheta;
  double p_floor = floor(p);
  double a = p - p_floor;
  long i0 = (long)p_floor;
  if (i0 < 0 || i0 >= g->nt) { /* one period off in the DP's sweep; any number of them in general */
    i0 %= g->nt;
    if (i0 < 0) i0 += g->nt;
  }
  long i1 = i0 + 1 == g->nt ? 0 : i0 + 1;
  double q = clip((theta_dot + MAX_SPEED) * g->inv_dspeed, 0.0, (double)(g->nv - 1));
  int j0 = (int)q;
  if (j0 > g->nv - 2) j0 = g->nv - 2;
  double b = q - j0;
  const float *r0 = v + (size_t)i0 * (size_t)g->nv + (size_t)j0;
  const float *r1 = v + (size_t)i1 * (size_t)g->nv + (size_t)j0;
  return (1.0 - a) * ((1.0 - b) * r0[0] + b * r0[1]) + a * ((1.0 - b) * r1[0] + b * r1[1]);
}

static int grid_new(value_grid *g, int nt, int nv) {
  g->nt = nt;
  g->nv = nv;
  g->dtheta = 2.0 * M_PI / nt;
  g->dspeed = 2.0 * MAX_SPEED / (nv - 1);
  g->inv_dtheta = 1.0 / g->dtheta;
  g->inv_dspeed = 1.0 / g->dspeed;
  g->cells = (size_t)nt * (size_t)nv;
  g->values = calloc((size_t)(HORIZON + 1) * g->cells, sizeof(float));
  return g->values ? 0 : -1;
}

/* n torques evenly spaced over [-2, 2] (n >= 2). */
static double *torque_set(int n) {
  double *u = malloc(sizeof(double) * (size_t)n);
  if (!u) return NULL;
  for (int k = 0; k < n; k++) u[k] = -MAX_TORQUE + 2.0 * MAX_TORQUE * k / (n - 1);
  return u;
}

/* Backward induction. The torque's cost is separable from the state's and the gravity term is one
 * sin per theta row, so the inner loop is the update and one interpolation. best_row: [nv]. */
static void dp_solve(value_grid *g, const double *torques, int n_torques, double *best_row) {
  for (int t = HORIZON - 1; t >= 0; t--) {
    const float *next = g->values + (size_t)(t + 1) * g->cells;
    float *now = g->values + (size_t)t * g->cells;
    for (int i = 0; i < g->nt; i++) {
      double theta = grid_theta(g, i);
      double gravity_step = GRAVITY_GAIN * sin(theta);
      for (int j = 0; j < g->nv; j++) best_row[j] = -DBL_MAX;
      for (int k = 0; k < n_torques; k++) {
        double u = torques[k], minus_u_cost = -torque_cost(u), speed_step = gravity_step + TORQUE_GAIN * u;
        for (int j = 0; j < g->nv; j++) {
          double speed = clip(grid_speed(g, j) + speed_step, -MAX_SPEED, MAX_SPEED);
          double q = minus_u_cost + value_at(g, next, theta + DT * speed, speed);
          if (q > best_row[j]) best_row[j] = q;
        }
      }
      for (int j = 0; j < g->nv; j++) {
        double speed = grid_speed(g, j);
        now[(size_t)i * (size_t)g->nv + (size_t)j] = (float)(-state_cost(theta, speed) + best_row[j]);
      }
    }
  }
}

/* Mean of the interpolated V_0 over theta ~ U[-pi, pi), thetadot ~ U[-1, 1]: midpoint rule, fine
 * enough that its error is far below the interpolation's. */
static double dp_start_mean(const value_grid *g) {
  enum { N_THETA = 8192, N_SPEED = 1024 };
  double sum = 0;
  for (int i = 0; i < N_THETA; i++) {
    double theta = -M_PI + 2.0 * M_PI * (i + 0.5) / N_THETA;
    double row = 0;
    for (int j = 0; j < N_SPEED; j++) row += value_at(g, g->values, theta, -1.0 + 2.0 * (j + 0.5) / N_SPEED);
    sum += row / N_SPEED;
  }
  return sum / N_THETA;
}

/* The torque maximising -cost(u) + V_{t+1}(f(s, u)) over `torques` (the first of equals). */
static double greedy_torque(const value_grid *g, int t, double theta, double theta_dot, const double *torques,
                            int n_torques) {
  const float *next = g->values + (size_t)(t + 1) * g->cells;
  double best = -DBL_MAX, best_u = 0;
  for (int k = 0; k < n_torques; k++) {
    double speed = next_theta_dot(theta, theta_dot, torques[k]);
    double q = -torque_cost(torques[k]) + value_at(g, next, theta + DT * speed, speed);
    if (q > best) best = q, best_u = torques[k];
  }
  return best_u;
}

/* ---- the greedy policy in ember's env ---- */

typedef struct {
  double *returns;        /* [n]: each env's first episode */
  double *start_theta;    /* [n] */
  double *start_speed;    /* [n] */
  double *start_value;    /* [n]: V_0 at the start state, the DP's prediction of that episode */
  double max_state_deviation;  /* |closed form - env| over qpos, qvel and ctrl, steps 1..199 (double) */
  double max_final_obs_deviation; /* the 200th step's next state, seen only as the float observation */
  double max_reward_deviation;    /* |env reward (float) - (-cost)| */
  double max_return_deviation;    /* |env episode return - sum of -cost| */
} play_result;

static void die(const char *what, const ember_err *err) {
  fprintf(stderr, "bench_pendulum_optimum: %s: %s\n", what, err->msg);
  exit(1);
}

static void play_greedy(const value_grid *g, const double *torques, int n_torques, int n, uint64_t seed,
                        play_result *r) {
  env_model_t *model = NULL;
  env_vec_t *vec = NULL;
  ember_err err = {0};
  if (env_model_load("pendulum", NULL, &model, &err)) die("loading the pendulum", &err);
  const env_spec *spec = env_model_spec(model);
  if (spec->max_episode_steps != HORIZON || spec->frame_skip != 1 || spec->obs_dim != 3 || spec->act_dim != 1) {
    fprintf(stderr, "bench_pendulum_optimum: the pendulum task is no longer 200 steps of one physics step, obs "
                    "(cos, sin, thetadot) and one action; this benchmark's model of it is out of date\n");
    exit(1);
  }
  env_vec_config cfg = {.n_envs = n, .seed = seed, .first_env_id = 0};
  if (env_vec_new(model, &cfg, &vec, &err)) die("creating the envs", &err);

  float *actions = malloc(sizeof(float) * (size_t)n), *next_obs = malloc(sizeof(float) * 3 * (size_t)n);
  float *rewards = malloc(sizeof(float) * (size_t)n);
  uint8_t *terminated = malloc((size_t)n), *truncated = malloc((size_t)n);
  double *episode_return = malloc(sizeof(double) * (size_t)n), *cost_sum = calloc((size_t)n, sizeof(double));
  int32_t *episode_length = malloc(sizeof(int32_t) * (size_t)n);
  double *pred = malloc(sizeof(double) * 3 * (size_t)n); /* per env: qpos', qvel', -cost */
  if (!actions || !next_obs || !rewards || !terminated || !truncated || !episode_return || !cost_sum ||
      !episode_length || !pred) {
    fprintf(stderr, "bench_pendulum_optimum: out of memory\n");
    exit(1);
  }
  env_step_out out = {.next_obs = next_obs, .reward = rewards, .terminated = terminated, .truncated = truncated,
                      .episode_return = episode_return, .episode_length = episode_length};

  for (int i = 0; i < n; i++) {
    const mjData *d = env_vec_data(vec, i);
    r->start_theta[i] = angle_normalize(d->qpos[0]);
    r->start_speed[i] = d->qvel[0];
    r->start_value[i] = value_at(g, g->values, r->start_theta[i], r->start_speed[i]);
  }
  for (int t = 0; t < HORIZON; t++) {
    for (int i = 0; i < n; i++) {
      const mjData *d = env_vec_data(vec, i);
      double theta_raw = d->qpos[0], theta = angle_normalize(theta_raw), speed = d->qvel[0];
      actions[i] = (float)(0.5 * greedy_torque(g, t, theta, speed, torques, n_torques));
      double applied = MAX_TORQUE * (double)actions[i]; /* the env's ctrl: centre 0 + half range * action */
      double speed_next = next_theta_dot(theta_raw, speed, applied);
      pred[3 * i] = theta_raw + DT * speed_next;
      pred[3 * i + 1] = speed_next;
      pred[3 * i + 2] = -(state_cost(theta, speed) + torque_cost(applied));
    }
    if (env_vec_step(vec, actions, &out, &err)) die("stepping", &err);
    const uint8_t *faults = env_vec_physics_faults(vec);
    int last = t == HORIZON - 1;
    for (int i = 0; i < n; i++) {
      if (faults[i] || terminated[i] || truncated[i] != last || (last && episode_length[i] != HORIZON)) {
        fprintf(stderr, "bench_pendulum_optimum: env %d, step %d: unexpected end of episode (fault %d, "
                        "terminated %d, truncated %d)\n", i, t, faults[i], terminated[i], truncated[i]);
        exit(1);
      }
      double reward_dev = fabs((double)rewards[i] - pred[3 * i + 2]);
      if (reward_dev > r->max_reward_deviation) r->max_reward_deviation = reward_dev;
      cost_sum[i] += pred[3 * i + 2];
      if (!last) {
        const mjData *d = env_vec_data(vec, i);
        double dev = fmax(fabs(d->qpos[0] - pred[3 * i]), fabs(d->qvel[0] - pred[3 * i + 1]));
        dev = fmax(dev, fabs(d->ctrl[0] - MAX_TORQUE * (double)actions[i]));
        if (dev > r->max_state_deviation) r->max_state_deviation = dev;
        if (dev > SELF_CHECK_TOLERANCE) {
          fprintf(stderr, "bench_pendulum_optimum: env %d, step %d: the closed-form dynamics predict (theta %.9f, "
                          "thetadot %.9f), the env reached (%.9f, %.9f): the DP does not model ember's pendulum\n",
                  i, t, pred[3 * i], pred[3 * i + 1], d->qpos[0], d->qvel[0]);
          exit(1);
        }
      } else { /* the env has reset: its final state survives only in next_obs, as floats */
        const float *o = next_obs + 3 * (size_t)i;
        double theta = pred[3 * i];
        double dev = fmax(fabs(o[0] - cos(theta)), fmax(fabs(o[1] - sin(theta)), fabs(o[2] - pred[3 * i + 1])));
        if (dev > r->max_final_obs_deviation) r->max_final_obs_deviation = dev;
        r->returns[i] = episode_return[i];
        double return_dev = fabs(episode_return[i] - cost_sum[i]);
        if (return_dev > r->max_return_deviation) r->max_return_deviation = return_dev;
      }
    }
  }
  /* float rewards carry ~1e-7 relative rounding; the double return sums the env's double rewards */
  if (r->max_reward_deviation > 1e-5 || r->max_return_deviation > 1e-6 || r->max_final_obs_deviation > 1e-5) {
    fprintf(stderr, "bench_pendulum_optimum: the env's reward is not -cost of the state the action was taken in "
                    "(reward %.3g, return %.3g, final obs %.3g off)\n", r->max_reward_deviation,
            r->max_return_deviation, r->max_final_obs_deviation);
    exit(1);
  }
  free(actions);
  free(next_obs);
  free(rewards);
  free(terminated);
  free(truncated);
  free(episode_return);
  free(cost_sum);
  free(episode_length);
  free(pred);
  env_vec_destroy(&vec);
  env_model_destroy(&model);
}

/* ---- statistics ---- */

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void mean_std(const double *x, int n, double *mean, double *std) {
  double s = 0;
  for (int i = 0; i < n; i++) s += x[i];
  *mean = s / n;
  double ss = 0;
  for (int i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
  *std = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

/* sorted ascending; linear interpolation between order statistics */
static double percentile(const double *sorted, int n, double p) {
  double pos = p * (n - 1);
  int k = (int)pos;
  if (k >= n - 1) return sorted[n - 1];
  return sorted[k] + (pos - k) * (sorted[k + 1] - sorted[k]);
}

static double fraction_at_least(const double *x, int n, double threshold) {
  int hits = 0;
  for (int i = 0; i < n; i++) hits += x[i] >= threshold;
  return (double)hits / n;
}

/* Means of k episodes: a bootstrap (k drawn with replacement, fixed seed) for smooth percentiles,
 * and the disjoint groups of k consecutive episodes as a check that needs no resampling. */
static void report_small_means(const double *returns, int n, int k, double threshold, uint64_t seed,
                               double *scratch, int n_boot) {
  rng_t rng;
  rng_seed(&rng, seed, RNG_STREAM_TEST);
  for (int b = 0; b < n_boot; b++) {
    double s = 0;
    for (int e = 0; e < k; e++) s += returns[rng_below(&rng, (uint64_t)n)];
    scratch[b] = s / k;
  }
  double mean, std;
  mean_std(scratch, n_boot, &mean, &std);
  double frac = fraction_at_least(scratch, n_boot, threshold);
  qsort(scratch, (size_t)n_boot, sizeof(double), compare_double);
  fprintf(stderr, "  means of %d episodes, bootstrap (%d draws): std %.2f, 5th-95th percentile [%.2f, %.2f], "
                  "fraction >= %.2f: %.4f\n", k, n_boot, std, percentile(scratch, n_boot, 0.05),
          percentile(scratch, n_boot, 0.95), threshold, frac);
  int groups = n / k;
  if (groups < 2) return;
  for (int gi = 0; gi < groups; gi++) {
    double s = 0;
    for (int e = 0; e < k; e++) s += returns[gi * k + e];
    scratch[gi] = s / k;
  }
  mean_std(scratch, groups, &mean, &std);
  frac = fraction_at_least(scratch, groups, threshold);
  qsort(scratch, (size_t)groups, sizeof(double), compare_double);
  fprintf(stderr, "  means of %d episodes, %d disjoint groups: std %.2f, 5th-95th percentile [%.2f, %.2f], "
                  "fraction >= %.2f: %.4f, best group %.2f\n", k, groups, std, percentile(scratch, groups, 0.05),
          percentile(scratch, groups, 0.95), threshold, frac, scratch[groups - 1]);
}

/* ---- main ---- */

typedef struct {
  int nt, nv, dp_torques, play_torques, episodes;
  uint64_t seed;
  double threshold;
  const char *csv; /* per-episode returns and start states, or NULL */
} options;

static void usage(void) {
  fprintf(stderr, "usage: bench_pendulum_optimum [--nt N (501)] [--nv N (401)] [--torques N (21)] "
                  "[--play-torques N (81)] [--episodes N (1000)] [--seed S (1)] [--threshold X (-125.8)] [--csv FILE]\n");
  exit(2);
}

static long parse_long(const char *name, const char *s, long lo, long hi) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "bench_pendulum_optimum: %s must be an integer in [%ld, %ld], not '%s'\n", name, lo, hi, s);
    usage();
  }
  return v;
}

static options parse_options(int argc, char **argv) {
  options o = {.nt = 501, .nv = 401, .dp_torques = 21, .play_torques = 81, .episodes = 1000, .seed = 1,
               .threshold = -125.8};
  for (int i = 1; i < argc; i++) {
    const char *name = argv[i];
    if (i + 1 >= argc) usage();
    const char *value = argv[++i];
    if (!strcmp(name, "--nt")) o.nt = (int)parse_long(name, value, 8, 100000);
    else if (!strcmp(name, "--nv")) o.nv = (int)parse_long(name, value, 3, 100000);
    else if (!strcmp(name, "--torques")) o.dp_torques = (int)parse_long(name, value, 2, 10000);
    else if (!strcmp(name, "--play-torques")) o.play_torques = (int)parse_long(name, value, 2, 100000);
    else if (!strcmp(name, "--episodes")) o.episodes = (int)parse_long(name, value, 2, 10000000);
    else if (!strcmp(name, "--csv")) o.csv = value;
    else if (!strcmp(name, "--seed")) o.seed = (uint64_t)parse_long(name, value, 0, 1L << 62);
    else if (!strcmp(name, "--threshold")) {
      char *end;
      o.threshold = strtod(value, &end);
      if (end == value || *end || !isfinite(o.threshold)) {
        fprintf(stderr, "bench_pendulum_optimum: --threshold must be a number, not '%s'\n", value);
        usage();
      }
    } else {
      fprintf(stderr, "bench_pendulum_optimum: unknown option '%s'\n", name);
      usage();
    }
  }
  return o;
}

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  options o = parse_options(argc, argv);
  value_grid g;
  double *dp_torques = torque_set(o.dp_torques), *play_torques = torque_set(o.play_torques);
  double *best_row = malloc(sizeof(double) * (size_t)o.nv);
  enum { BOOTSTRAP_DRAWS = 100000 };
  int scratch_len = o.episodes > BOOTSTRAP_DRAWS ? o.episodes : BOOTSTRAP_DRAWS;
  double *scratch = malloc(sizeof(double) * (size_t)scratch_len);
  play_result r = {.returns = malloc(sizeof(double) * (size_t)o.episodes),
                   .start_theta = malloc(sizeof(double) * (size_t)o.episodes),
                   .start_speed = malloc(sizeof(double) * (size_t)o.episodes),
                   .start_value = malloc(sizeof(double) * (size_t)o.episodes)};
  if (grid_new(&g, o.nt, o.nv) || !dp_torques || !play_torques || !best_row || !scratch || !r.returns ||
      !r.start_theta || !r.start_speed || !r.start_value) {
    fprintf(stderr, "bench_pendulum_optimum: out of memory (the grid keeps %d layers of %d x %d floats)\n",
            HORIZON + 1, o.nt, o.nv);
    return 1;
  }

  double wall0 = wall_s(), cpu0 = cpu_s();
  dp_solve(&g, dp_torques, o.dp_torques, best_row);
  double dp_wall = wall_s() - wall0, dp_cpu = cpu_s() - cpu0;
  double dp_return = dp_start_mean(&g);

  wall0 = wall_s();
  play_greedy(&g, play_torques, o.play_torques, o.episodes, o.seed, &r);
  double play_wall = wall_s() - wall0;

  double mean, std, start_value_mean, start_value_std;
  mean_std(r.returns, o.episodes, &mean, &std);
  mean_std(r.start_value, o.episodes, &start_value_mean, &start_value_std);
  int worst = 0, best = 0;
  for (int i = 0; i < o.episodes; i++) {
    if (r.returns[i] < r.returns[worst]) worst = i;
    if (r.returns[i] > r.returns[best]) best = i;
    scratch[i] = r.returns[i] - r.start_value[i];
  }
  double shortfall_mean, shortfall_std;
  mean_std(scratch, o.episodes, &shortfall_mean, &shortfall_std);

  if (o.csv) {
    FILE *f = fopen(o.csv, "w");
    if (!f) {
      fprintf(stderr, "bench_pendulum_optimum: cannot write %s\n", o.csv);
      return 1;
    }
    fprintf(f, "episode,return,start_theta,start_thetadot,start_value\n");
    for (int i = 0; i < o.episodes; i++)
      fprintf(f, "%d,%.9g,%.9g,%.9g,%.9g\n", i, r.returns[i], r.start_theta[i], r.start_speed[i], r.start_value[i]);
    if (fclose(f) != 0) {
      fprintf(stderr, "bench_pendulum_optimum: writing %s failed\n", o.csv);
      return 1;
    }
  }
  printf("BENCH pendulum_optimum_dp_return %.3f return\n", dp_return);
  printf("BENCH pendulum_optimum_greedy_return %.3f return\n", mean);
  printf("BENCH pendulum_optimum_greedy_std %.3f return\n", std);
  fflush(stdout);
  fprintf(stderr, "  grid: theta %d x thetadot %d, %d DP torques, %d greedy torques, horizon %d; DP %.1f s wall "
                  "(%.1f s CPU), %.0f MB of V_t; play %.1f s wall\n", o.nt, o.nv, o.dp_torques, o.play_torques,
          HORIZON, dp_wall, dp_cpu, (double)(HORIZON + 1) * (double)g.cells * sizeof(float) / 1e6, play_wall);
  fprintf(stderr, "  greedy: %d episodes (seed %llu): mean %.3f, std %.3f, standard error %.3f\n", o.episodes,
          (unsigned long long)o.seed, mean, std, std / sqrt(o.episodes));
  fprintf(stderr, "  DP's V_0 at these episodes' start states: mean %.3f; return - V_0(start): mean %.3f, std %.3f "
                  "(the greedy policy's shortfall against the DP's own prediction)\n", start_value_mean,
          shortfall_mean, shortfall_std);
  fprintf(stderr, "  single episodes: fraction >= %.2f: %.4f; worst %.3f (start theta %.3f, thetadot %.3f), "
                  "best %.3f (start theta %.3f, thetadot %.3f)\n", o.threshold,
          fraction_at_least(r.returns, o.episodes, o.threshold), r.returns[worst], r.start_theta[worst],
          r.start_speed[worst], r.returns[best], r.start_theta[best], r.start_speed[best]);
  report_small_means(r.returns, o.episodes, 5, o.threshold, o.seed, scratch, BOOTSTRAP_DRAWS);
  report_small_means(r.returns, o.episodes, 25, o.threshold, o.seed, scratch, BOOTSTRAP_DRAWS);
  fprintf(stderr, "  self-check: closed form vs env, max |deviation| %.3g (qpos, qvel, ctrl; tolerance %.0e), "
                  "final step vs float obs %.3g; reward vs -cost %.3g, episode return vs sum of -cost %.3g\n",
          r.max_state_deviation, SELF_CHECK_TOLERANCE, r.max_final_obs_deviation, r.max_reward_deviation,
          r.max_return_deviation);

  free(g.values);
  free(dp_torques);
  free(play_torques);
  free(best_row);
  free(scratch);
  free(r.returns);
  free(r.start_theta);
  free(r.start_speed);
  free(r.start_value);
  return 0;
}

/* bench_learner_vmbpo: VMBPO learner updates per second at HalfCheetah sizes (obs 17, act 6, every
 * network 2 x 256 ReLU, batch 256, one model sample per real sample, a learned reward as in the
 * PyTorch reference's q_d over (dx, r)), the unit ../shared/anchors/torch_learner_ref.py --algo vmbpo
 * measures: one update = steps 1-4 of the E-step (q_d, nu, Q, V, q_c), the M-step and the target
 * update. Only the algorithm is timed (e_step + m_step on a batch in memory). The M-step is the
 * maximum-likelihood fit (pi_equals_qc = false), as in the reference, not the cheaper copy.
 *
 *   bench_learner_vmbpo [seconds]   (default 10)
 * Prints `BENCH learner_vmbpo_updates_per_s <value> updates/s`; asserts nothing about time. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "algo.h"
#include "algo_vmbpo.h"
#include "rng.h"

enum { OBS = 17, ACT = 6, BATCH = 256 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 10.0;
  static float obs[BATCH * OBS], next_obs[BATCH * OBS], action[BATCH * ACT], reward[BATCH], terminated[BATCH],
      truncated[BATCH];
  rng_t r;
  rng_seed(&r, 1, RNG_STREAM_TEST);
  rng_normal_fill(&r, obs, BATCH * OBS);
  rng_normal_fill(&r, next_obs, BATCH * OBS);
  rng_normal_fill(&r, reward, BATCH);
  for (int i = 0; i < BATCH * ACT; i++) action[i] = 2 * rng_uniform_f(&r) - 1;
  algo_batch b = {.size = BATCH, .obs_dim = OBS, .act_dim = ACT, .obs = obs, .action = action, .reward = reward,
                  .next_obs = next_obs, .terminated = terminated, .truncated = truncated};
  vmbpo_settings settings;
  config_binding bind = {&vmbpo_config_section, &settings};
  ember_err err = {0};
  if (config_defaults(&bind, 1, &err) || config_set(&bind, 1, "vmbpo.pi_equals_qc", "false", "bench", &err)) {
    fprintf(stderr, "bench_learner_vmbpo: %s\n", err.msg);
    return 1;
  }
  algo_context ctx = {.task_name = "half_cheetah", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH, .seed = 1,
                      .settings = &settings /* 2 x 256 ReLU, Adam 3e-4, K = 1, no reward function */};
  void *v = algo_vmbpo.create(&ctx, &err);
  if (!v) {
    fprintf(stderr, "bench_learner_vmbpo: %s\n", err.msg);
    return 1;
  }
  algo_stats st = {0};
  for (int i = 0; i < 5; i++) /* warm-up, as the reference does */
    if (algo_vmbpo.e_step(v, &b, &st, &err) || algo_vmbpo.m_step(v, &b, &st, &err)) {
      fprintf(stderr, "bench_learner_vmbpo: %s\n", err.msg);
      return 1;
    }
  printf("# VMBPO obs %d act %d, 2x256 relu, batch %d, K 1, M-step fit, %.0f s\n", OBS, ACT, BATCH, seconds);
  long n = 0;
  double t0 = now_s(), t;
  do {
    if (algo_vmbpo.e_step(v, &b, &st, &err) || algo_vmbpo.m_step(v, &b, &st, &err)) {
      fprintf(stderr, "bench_learner_vmbpo: %s\n", err.msg);
      return 1;
    }
    n++;
    t = now_s();
  } while (t - t0 < seconds);
  printf("BENCH learner_vmbpo_updates_per_s %.1f updates/s\n", (double)n / (t - t0));
  algo_vmbpo.destroy(v);
  return 0;
}

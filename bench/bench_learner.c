/* bench_learner: SAC learner updates per second at HalfCheetah sizes (obs 17, act 6, 2 x 256 ReLU
 * MLPs, batch 256), the unit /work/shared/anchors/torch_learner_ref.py measures for PyTorch: one
 * update = one gradient step of every network (critic, actor, temperature) plus the target update.
 * Only the algorithm is timed (e_step + m_step on a batch in memory), as in the PyTorch reference.
 *
 *   bench_learner [seconds]   (default 10)
 * Prints `BENCH learner_sac_updates_per_s <value> updates/s`; asserts nothing about time. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "algo.h"
#include "algo_sac.h"
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
  algo_context ctx = {.task_name = "half_cheetah", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH, .seed = 1,
                      .settings = NULL /* the defaults: 2 x 256 ReLU, Adam 3e-4 */};
  ember_err err = {0};
  void *sac = algo_sac.create(&ctx, &err);
  if (!sac) {
    fprintf(stderr, "bench_learner: %s\n", err.msg);
    return 1;
  }
  algo_stats st = {0};
  for (int i = 0; i < 5; i++) /* warm-up, as the reference does */
    if (algo_sac.e_step(sac, &b, &st, &err) || algo_sac.m_step(sac, &b, &st, &err)) {
      fprintf(stderr, "bench_learner: %s\n", err.msg);
      return 1;
    }
  printf("# SAC obs %d act %d, 2x256 relu, batch %d, %.0f s\n", OBS, ACT, BATCH, seconds);
  long n = 0;
  double t0 = now_s(), t;
  do {
    algo_sac.e_step(sac, &b, &st, &err);
    algo_sac.m_step(sac, &b, &st, &err);
    n++;
    t = now_s();
  } while (t - t0 < seconds);
  printf("BENCH learner_sac_updates_per_s %.1f updates/s\n", (double)n / (t - t0));
  algo_sac.destroy(sac);
  return 0;
}

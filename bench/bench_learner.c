/* bench_learner: learner updates per second of any registered algorithm at HalfCheetah sizes
 * (obs 17, act 6, 2 x 256 ReLU MLPs, batch 256), the unit /work/shared/anchors/torch_learner_ref.py
 * measures for PyTorch: one update = one gradient step of every network plus the target updates.
 * Only the algorithm is timed (e_step + m_step on a batch in memory), as in the PyTorch reference.
 *
 *   bench_learner [seconds] [algo] [section.key=value ...]   (defaults: 10 s, sac, the algorithm's defaults)
 * Prints `BENCH learner_<algo>_updates_per_s <value> updates/s`; asserts nothing about time.
 * VMBPO runs with no task reward function (it learns the reward too) and K = 1 model sample. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "algo.h"
#include "rng.h"

enum { OBS = 17, ACT = 6, BATCH = 256 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 10.0;
  const char *name = argc > 2 ? argv[2] : "sac";
  const algo_ops *ops = algo_find(name);
  if (!ops) {
    fprintf(stderr, "bench_learner: no algorithm '%s'\n", name);
    return 2;
  }
  ember_err err = {0};
  void *settings = calloc(1, ops->settings_size ? ops->settings_size : 1);
  config_binding bind = {ops->settings, settings, NULL};
  if (!settings || config_defaults(&bind, 1, &err)) {
    fprintf(stderr, "bench_learner: %s\n", settings ? err.msg : "out of memory");
    return 1;
  }
  for (int i = 3; i < argc; i++) {
    char key[128];
    const char *eq = strchr(argv[i], '=');
    if (!eq || (size_t)(eq - argv[i]) >= sizeof key) {
      fprintf(stderr, "bench_learner: '%s' is not section.key=value\n", argv[i]);
      return 2;
    }
    snprintf(key, sizeof key, "%.*s", (int)(eq - argv[i]), argv[i]);
    if (config_set(&bind, 1, key, eq + 1, "the command line", &err)) {
      fprintf(stderr, "bench_learner: %s\n", err.msg);
      return 2;
    }
  }

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
                      .settings = settings};
  void *a = ops->create(&ctx, &err);
  if (!a) {
    fprintf(stderr, "bench_learner: %s\n", err.msg);
    return 1;
  }
  algo_stats st = {0};
  for (int i = 0; i < 5; i++) /* warm-up, as the reference does */
    if (ops->e_step(a, &b, &st, &err) || ops->m_step(a, &b, &st, &err)) {
      fprintf(stderr, "bench_learner: %s\n", err.msg);
      return 1;
    }
  printf("# %s obs %d act %d, batch %d, %.0f s\n", name, OBS, ACT, BATCH, seconds);
  long n = 0;
  double t0 = now_s(), t;
  do {
    if (ops->e_step(a, &b, &st, &err) || ops->m_step(a, &b, &st, &err)) {
      fprintf(stderr, "bench_learner: %s\n", err.msg);
      return 1;
    }
    n++;
    t = now_s();
  } while (t - t0 < seconds);
  char metric[64];
  snprintf(metric, sizeof metric, "learner_%s_updates_per_s", name);
  for (char *c = metric; *c; c++)
    if (*c == '-') *c = '_';
  printf("BENCH %s %.1f updates/s\n", metric, (double)n / (t - t0));
  ops->destroy(a);
  free(settings);
  return 0;
}

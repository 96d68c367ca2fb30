/* cmd_eval.c: `ember eval RUN_DIR`: the policy of a run's newest checkpoint, played for many
 * episodes, summarised (mean, its standard error, spread) and optionally written per episode.
 *
 * A training run's evaluations are a few episodes per policy version (actor.eval_episodes): enough
 * to draw a curve, not to compare two runs or a run with a published figure, whose difference is
 * often smaller than the spread of a 5-episode mean over start states. This command gives the
 * figure with an error bar.
 *
 * What it does: the settings come from RUN_DIR/config.yaml (or --config FILE instead), then EMBER_*
 * variables, then --set, as everywhere; the Params come from the newest verified learner checkpoint in
 * learner.checkpoint_dir or RUN_DIR/checkpoints, or the file --checkpoint names
 * (learner_checkpoint_params: no algorithm is built);
 * the actors' acting policy (policy.h) plays --episodes episodes in envs of the checkpoint's task,
 * --envs side by side with one batched forward per step, deterministic (tanh of the mean, as the
 * training evaluations) unless --stochastic, in the dynamics the settings give (actor.ctrl_noise_std:
 * by default the run's own). Episodes run in rounds of --envs: every env of a
 * round plays exactly one episode from its own reset, so the sample is not tilted toward short
 * episodes. Episode j starts from the first reset of env stream j (env.h), and draws its control
 * noise, if any, from env j's stream, so the deterministic
 * figure is a function of the checkpoint, the settings and --seed alone, whatever --envs; the
 * stochastic policy draws from RNG_STREAM_EVAL in batches of --envs, so there --envs matters too.
 *
 * Ownership: everything is local to app_eval and freed before it returns. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app.h"
#include "env.h"
#include "policy.h"
#include "settings.h"

extern char **environ;

#define EVAL_MAX_ENVS 4096
/* The start states: env stream j (env.h) of --seed ^ this, so that they are not the training envs'
 * own first episodes under the run's seed. */
#define EVAL_CMD_SEED_SALT 0x6576616c636d6431ULL

static void usage(FILE *out) {
  fprintf(out,
          "usage: ember eval RUN_DIR [--episodes N] [--envs K] [--seed S] [--stochastic] [--csv FILE]\n"
          "                  [--checkpoint PATH] [--config FILE] [--set section.key=value ...]\n"
          "Plays the policy of RUN_DIR's newest checkpoint for N episodes (default 100) and prints the\n"
          "mean return with its standard error, the spread and the episode lengths.\n"
          "  --episodes N         episodes to play (1 .. 10,000,000)\n"
          "  --envs K             envs side by side (default min(N, 64), at most %d)\n"
          "  --seed S             seed of the start states (default 1; the training run's own\n"
          "                       evaluations used other streams)\n"
          "  --stochastic         sample actions (default: the deterministic policy, as in training)\n"
          "  --csv FILE           one row per episode: episode, return, length, terminated\n"
          "  --checkpoint PATH    a checkpoint file, or a directory whose newest verified one is\n"
          "                       taken (default learner.checkpoint_dir of the settings, else\n"
          "                       RUN_DIR/checkpoints)\n"
          "Settings (actor.model_dir, actor.max_episode_steps, actor.ctrl_noise_std,\n"
          "learner.checkpoint_dir) come from RUN_DIR/config.yaml (or --config FILE instead), then\n"
          "EMBER_* variables, then --set: a run trained with control noise is evaluated with it.\n",
          EVAL_MAX_ENVS);
}

typedef struct {
  const char *run_dir, *csv_path, *ckpt_path;
  long long episodes, envs;
  unsigned long long seed;
  bool stochastic;
  char **pass; /* --config/--set arguments for the shared parser, argv-style from index 1 */
  int npass;
} eval_args;

static int parse_ll(const char *flag, const char *v, long long lo, long long hi, long long *out) {
  char *end = NULL;
  long long x = v ? strtoll(v, &end, 10) : 0;
  if (!v || !*v || *end || x < lo || x > hi) {
    fprintf(stderr, "ember eval: %s needs an integer in [%lld, %lld], got '%s'\n", flag, lo, hi, v ? v : "");
    return -1;
  }
  *out = x;
  return 0;
}

/* 0, 1 for --help, -1 on a bad argument (printed). */
static int parse_args(int argc, char **argv, eval_args *a) {
  for (int i = 2; i < argc; i++) {
    const char *s = argv[i];
    const char *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) return 1;
    if (strcmp(s, "--episodes") == 0) {
      if (parse_ll(s, next, 1, 10000000, &a->episodes)) return -1;
      i++;
    } else if (strcmp(s, "--envs") == 0) {
      if (parse_ll(s, next, 1, EVAL_MAX_ENVS, &a->envs)) return -1;
      i++;
    } else if (strcmp(s, "--seed") == 0) {
      long long v;
      if (parse_ll(s, next, 0, 9007199254740992LL, &v)) return -1;
      a->seed = (unsigned long long)v;
      i++;
    } else if (strcmp(s, "--stochastic") == 0) {
      a->stochastic = true;
    } else if (strcmp(s, "--csv") == 0 || strcmp(s, "--checkpoint") == 0) {
      if (!next) {
        fprintf(stderr, "ember eval: %s needs a path\n", s);
        return -1;
      }
      if (strcmp(s, "--csv") == 0) a->csv_path = next;
      else a->ckpt_path = next;
      i++;
    } else if (strcmp(s, "--config") == 0 || strcmp(s, "--set") == 0) {
      if (!next) {
        fprintf(stderr, "ember eval: %s needs a value\n", s);
        return -1;
      }
      a->pass[a->npass++] = argv[i];
      a->pass[a->npass++] = argv[++i];
    } else if (strncmp(s, "--config=", 9) == 0 || strncmp(s, "--set=", 6) == 0) {
      a->pass[a->npass++] = argv[i];
    } else if (s[0] == '-') {
      fprintf(stderr, "ember eval: unknown option '%s'\n", s);
      return -1;
    } else if (a->run_dir) {
      fprintf(stderr, "ember eval: one run directory only ('%s', then '%s')\n", a->run_dir, s);
      return -1;
    } else {
      a->run_dir = s;
    }
  }
  if (!a->run_dir) {
    fprintf(stderr, "ember eval: no run directory given\n");
    return -1;
  }
  return 0;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

typedef struct {
  double *ret;      /* [episodes] */
  int32_t *len;     /* [episodes] */
  uint8_t *term;    /* [episodes] */
} episode_log;

/* Plays the episodes in rounds of at most K; fills the log in episode order. Episode j is the first
 * episode of env stream j (a vector per round, first_env_id = the round's first episode), so with
 * the deterministic policy the result does not depend on K. */
static int play(policy_t *pol, const env_model_t *model, const eval_args *a, const actor_config *ac,
                episode_log *log, ember_err *err) {
  const env_spec *spec = env_model_spec(model);
  int K = (int)a->envs, obs_dim = spec->obs_dim, act_dim = spec->act_dim;
  env_vec_t *vec = NULL;
  int rc = 0;
  float *actions = malloc((size_t)K * act_dim * sizeof *actions);
  float *next_obs = malloc((size_t)K * obs_dim * sizeof *next_obs);
  float *reward = malloc((size_t)K * sizeof *reward);
  uint8_t *terminated = malloc((size_t)K), *truncated = malloc((size_t)K), *done = malloc((size_t)K);
  double *ep_ret = malloc((size_t)K * sizeof *ep_ret);
  int32_t *ep_len = malloc((size_t)K * sizeof *ep_len);
  rng_t rng;
  rng_seed(&rng, a->seed, RNG_STREAM_EVAL);
  if (!actions || !next_obs || !reward || !terminated || !truncated || !done || !ep_ret || !ep_len) {
    rc = ember_fail(err, EMBER_ENOMEM, "out of memory for %d envs", K);
    goto out;
  }
  env_step_out out = {.next_obs = next_obs, .reward = reward, .terminated = terminated, .truncated = truncated,
                      .episode_return = ep_ret, .episode_length = ep_len};
  long long played = 0, faults = 0;
  while (played < a->episodes) {
    int n = a->episodes - played < K ? (int)(a->episodes - played) : K;
    env_vec_config vc = {.n_envs = n, .seed = a->seed ^ EVAL_CMD_SEED_SALT, .first_env_id = (uint64_t)played,
                         .max_episode_steps = (int)ac->max_episode_steps, .ctrl_noise_std = ac->ctrl_noise_std};
    if (env_vec_new(model, &vc, &vec, err)) {
      rc = err->code;
      goto out;
    }
    memset(done, 0, (size_t)n);
    for (int left = n; left > 0;) {
      rc = policy_act(pol, env_vec_obs(vec), n, !a->stochastic, a->stochastic ? &rng : NULL, actions, NULL, err);
      if (!rc) rc = env_vec_step(vec, actions, &out, err);
      if (rc) goto out;
      const uint8_t *pf = env_vec_physics_faults(vec);
      for (int i = 0; i < n; i++) {
        if (done[i] || !(terminated[i] || truncated[i])) continue;
        done[i] = 1, left--;
        faults += pf[i] != 0;
        log->ret[played + i] = ep_ret[i];
        log->len[played + i] = ep_len[i];
        log->term[played + i] = terminated[i];
      }
    }
    env_vec_destroy(&vec);
    played += n;
  }
  if (faults)
    fprintf(stderr, "ember eval: warning: %lld episode(s) ended by a physics fault (see env.h); counted as played\n",
            faults);
out:
  env_vec_destroy(&vec);
  free(actions), free(next_obs), free(reward), free(terminated), free(truncated), free(done), free(ep_ret);
  free(ep_len);
  return rc;
}

static int write_csv(const char *path, const episode_log *log, long long n, ember_err *err) {
  FILE *f = fopen(path, "w");
  if (!f) return ember_fail(err, EMBER_EIO, "cannot write %s", path);
  fprintf(f, "episode,return,length,terminated\n");
  for (long long i = 0; i < n; i++)
    fprintf(f, "%lld,%.9g,%d,%d\n", i, log->ret[i], (int)log->len[i], (int)log->term[i]);
  if (fclose(f) != 0) return ember_fail(err, EMBER_EIO, "writing %s failed", path);
  return 0;
}

static void summarise(const episode_log *log, long long n, const learner_ckpt_info *info, const eval_args *a,
                      double ctrl_noise_std) {
  double sum = 0, len_sum = 0;
  long long terms = 0;
  for (long long i = 0; i < n; i++) sum += log->ret[i], len_sum += log->len[i], terms += log->term[i];
  double mean = sum / (double)n, ss = 0;
  for (long long i = 0; i < n; i++) ss += (log->ret[i] - mean) * (log->ret[i] - mean);
  double sd = n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
  double *sorted = malloc((size_t)n * sizeof *sorted);
  double med = NAN, lo = NAN, hi = NAN;
  if (sorted) {
    memcpy(sorted, log->ret, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    med = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    lo = sorted[0], hi = sorted[n - 1];
    free(sorted);
  }
  printf("ember eval: %s on %s, %s (policy version %llu, %llu updates, %llu env steps)\n", info->algo, info->task,
         info->path, (unsigned long long)info->version, (unsigned long long)info->updates,
         (unsigned long long)info->env_steps);
  printf("  %lld episodes, %s policy, seed %llu", n, a->stochastic ? "stochastic" : "deterministic", a->seed);
  if (ctrl_noise_std > 0) printf(", control noise sd %g half ranges (actor.ctrl_noise_std)", ctrl_noise_std);
  printf("\n");
  printf("  return  mean %.2f  standard error %.2f  std %.2f  min %.2f  median %.2f  max %.2f\n", mean,
         n > 1 ? sd / sqrt((double)n) : 0.0, sd, lo, med, hi);
  printf("  length  mean %.1f  terminated %lld of %lld\n", len_sum / (double)n, terms, n);
}

int app_eval(int argc, char **argv) {
  eval_args a = {.episodes = 100, .seed = 1};
  a.pass = calloc((size_t)argc + 1, sizeof *a.pass);
  if (!a.pass) return 1;
  a.pass[a.npass++] = argv[0];
  int rc = parse_args(argc, argv, &a);
  if (rc) {
    usage(rc > 0 ? stdout : stderr);
    free(a.pass);
    return rc > 0 ? 0 : 2;
  }
  if (a.envs == 0) a.envs = a.episodes < 64 ? a.episodes : 64;
  if (a.envs > a.episodes) a.envs = a.episodes;

  app_settings s;
  app_flags flags;
  memset(&flags, 0, sizeof flags);
  ember_err err = {0};
  Ember__Params *params = NULL;
  policy_t *pol = NULL;
  env_model_t *model = NULL;
  episode_log log = {0};
  learner_ckpt_info info;
  rc = 2;
  if (app_settings_init(&s, &err) != 0) {
    fprintf(stderr, "ember eval: %s\n", err.msg);
    free(a.pass);
    return 2;
  }
  struct stat st;
  if (stat(a.run_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "ember eval: %s is not a directory\n", a.run_dir);
    goto done;
  }
  char cfg_path[4096];
  snprintf(cfg_path, sizeof cfg_path, "%s/config.yaml", a.run_dir);
  bool have_cfg = stat(cfg_path, &st) == 0;
  bool cfg_flag = false;
  for (int i = 1; i < a.npass; i += 2) cfg_flag |= strcmp(a.pass[i], "--config") == 0;
  if (!have_cfg && !cfg_flag) {
    fprintf(stderr, "ember eval: %s has no config.yaml (the settings its run used); give them with --config FILE\n",
            a.run_dir);
    goto done;
  }
  bool help = false;
  if (app_flags_parse(a.npass, a.pass, 1, &flags, &help, &err) != 0) {
    fprintf(stderr, "ember eval: %s\n", err.msg);
    goto done;
  }
  if (!flags.config_path && have_cfg) flags.config_path = cfg_path;
  if (app_settings_load(&s, &flags, environ, &err) != 0) {
    fprintf(stderr, "ember eval: %s\n", err.msg);
    goto done;
  }
  app_setup_logging(LOG_WARN);
  rc = 1;
  char ckpt[4096];
  if (a.ckpt_path) snprintf(ckpt, sizeof ckpt, "%s", a.ckpt_path);
  else if (s.learner.checkpoint_dir[0]) snprintf(ckpt, sizeof ckpt, "%s", s.learner.checkpoint_dir);
  else snprintf(ckpt, sizeof ckpt, "%s/checkpoints", a.run_dir);
  if (learner_checkpoint_params(ckpt, &params, &info, &err) != 0) {
    fprintf(stderr, "ember eval: %s\n", err.msg);
    goto done;
  }
  if (strcmp(info.task, s.run.task) != 0) {
    fprintf(stderr, "ember eval: the checkpoint %s is of task %s, the settings say run.task %s\n", info.path,
            info.task, s.run.task);
    goto done;
  }
  if (env_model_load(info.task, s.actor.model_dir, &model, &err) != 0) {
    fprintf(stderr, "ember eval: task %s: %s\n", info.task, err.msg);
    goto done;
  }
  const env_spec *spec = env_model_spec(model);
  policy_config pc = {.task = info.task, .obs_dim = spec->obs_dim, .act_dim = spec->act_dim, .max_batch = (int)a.envs};
  if (!(pol = policy_new(params, &pc, &err))) {
    fprintf(stderr, "ember eval: the policy in %s: %s\n", info.path, err.msg);
    goto done;
  }
  log.ret = malloc((size_t)a.episodes * sizeof *log.ret);
  log.len = malloc((size_t)a.episodes * sizeof *log.len);
  log.term = malloc((size_t)a.episodes);
  if (!log.ret || !log.len || !log.term) {
    fprintf(stderr, "ember eval: out of memory for %lld episodes\n", a.episodes);
    goto done;
  }
  if (play(pol, model, &a, &s.actor, &log, &err) != 0) {
    fprintf(stderr, "ember eval: %s\n", err.msg);
    goto done;
  }
  if (a.csv_path && write_csv(a.csv_path, &log, a.episodes, &err) != 0) {
    fprintf(stderr, "ember eval: %s\n", err.msg);
    goto done;
  }
  summarise(&log, a.episodes, &info, &a, s.actor.ctrl_noise_std);
  rc = 0;
done:
  free(log.ret), free(log.len), free(log.term);
  policy_destroy(&pol);
  env_model_destroy(&model);
  if (params) ember__params__free_unpacked(params, NULL);
  app_flags_free(&flags);
  app_settings_free(&s);
  free(a.pass);
  return rc;
}

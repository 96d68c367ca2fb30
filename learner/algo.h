/* algo.h: the one interface every learning algorithm implements (SAC, VMBPO, VMBPO-MFE, VIREL,
 * VIREL-soft and MPO today; docs/algorithms.md has a table of them), and the registry that finds them
 * by name.
 *
 * An algorithm is a file learner/algo_<name>.c (or a few: VMBPO's are algo_vmbpo.c and vmbpo_*.c,
 * learner/vmbpo_internal.h) that defines one `const algo_ops algo_<name>` and
 * adds its entry (an extern declaration and a list line) to algo_registry.c, plus its source line in
 * learner/CMakeLists.txt; nothing else changes to add one. The learner (learner.h) and the programs
 * (`ember train`, `ember-learner`, `ember config`) find it, its config section and its stat names
 * through the registry.
 *
 * One learner update on a batch D sampled from replay is `e_step(D)` then `m_step(D)`. The slot names
 * are ember's; each algorithm says which of its own steps each slot runs, in the order its paper
 * gives: VMBPO's E-step fits the variational distributions (q_d, nu, Q, V, q_c) and its M-step the
 * baseline policy pi, so e_step is its E-step and m_step its M-step. VIREL's EM has the roles the
 * other way round (its E-step is the policy, its M-step the critic) and Algorithm 1 fits the critic
 * first, so VIREL's e_step slot runs its M-step and its m_step slot its E-step. SAC is not EM: its
 * e_step slot runs the critic update and m_step the actor and temperature update (evaluation before
 * improvement). MPO's e_step runs its policy evaluation (the critics) and then its E-step (the
 * non-parametric q), its m_step the M-step (pi).
 *
 * Ownership: `create` returns an algorithm instance the caller owns and frees with `destroy`. The
 * batch, the stats and every buffer passed in stay the caller's; an algorithm keeps no pointer to
 * them after the call returns. All memory an algorithm needs is allocated in `create` (sized for
 * ctx->max_batch); e_step/m_step/act never allocate.
 *
 * Errors: int codes and ember_err (common/err.h). A batch with a NaN or a shape the algorithm was
 * not made for is refused with EMBER_ENONFINITE / EMBER_ESHAPE and changes nothing; a loss that
 * becomes non-finite is reported as EMBER_ENONFINITE naming the loss, with the parameters left as
 * they were before that update.
 *
 * Stats: e_step and m_step each write their own entries of algo_stats (by index into stat_names)
 * and set count to the number of names; entries a step does not write keep their last values.
 *
 * Thread-safety: one thread per instance.
 */
#ifndef EMBER_ALGO_H
#define EMBER_ALGO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "ember.pb-c.h"
#include "err.h"
#include "nn.h"

/* A batch of transitions, columnar and row-major, as the replay server samples them. */
typedef struct {
  int size;                 /* B */
  int obs_dim, act_dim;
  const float *obs;         /* [B, obs_dim] */
  const float *action;      /* [B, act_dim], in [-1, 1] */
  const float *reward;      /* [B] */
  const float *next_obs;    /* [B, obs_dim] */
  const float *terminated;  /* [B], 1.0 where the task ended: no bootstrapping through it */
  const float *truncated;   /* [B], 1.0 where the time limit cut the episode (bootstrap through it) */
  const float *weights;     /* [B] importance weights from prioritized replay, or NULL (all 1) */
  const uint64_t *keys;     /* [B] replay item keys, or NULL */
} algo_batch;

/* The task's reward and termination as pure functions of transitions, for model-based algorithms
 * that score model-predicted transitions. reward_fn is NULL when the task's reward cannot be
 * recovered from observations (the algorithm then learns a reward model). terminated_fn (1.0 =
 * terminated) is given by the learner for every task (learner_task_fns): exact, or for hopper a
 * close approximation (env_task.h, env_spec.terminated_exact); NULL means "never terminates". */
typedef struct {
  const void *task;
  void (*reward_fn)(const void *task, const float *obs, const float *action, const float *next_obs, int n,
                    float *reward_out);
  void (*terminated_fn)(const void *task, const float *next_obs, int n, float *terminated_out);
} algo_task_fns;

typedef struct {
  const char *task_name;
  int obs_dim, act_dim;
  int max_batch;            /* the largest batch e_step/m_step/act will see */
  uint64_t seed;            /* the run seed; the algorithm derives its RNG streams from it */
  algo_task_fns task;       /* may have NULL functions (see above) */
  const void *settings;     /* the algorithm's own settings struct, loaded from its config section;
                               NULL = that section's defaults */
} algo_context;

/* Named scalars an update reports (losses, temperatures, effective sample sizes). The names are
 * fixed per algorithm (algo_ops.stat_names) so the learner's CSV has stable columns. */
#define ALGO_MAX_STATS 24
typedef struct {
  int count;
  double values[ALGO_MAX_STATS]; /* in the order of algo_ops.stat_names */
} algo_stats;

typedef struct algo_ops {
  const char *name;                   /* "sac", "vmbpo", ... : what --algo takes */
  const char *summary;                /* one line for `ember --help` */
  const config_section *settings;     /* the algorithm's config section ("sac", "vmbpo") */
  size_t settings_size;               /* sizeof its settings struct */
  const char *const *stat_names;      /* NULL-terminated, at most ALGO_MAX_STATS */

  void *(*create)(const algo_context *ctx, ember_err *err);
  void (*destroy)(void *self);

  int (*e_step)(void *self, const algo_batch *batch, algo_stats *stats, ember_err *err);
  int (*m_step)(void *self, const algo_batch *batch, algo_stats *stats, ember_err *err);

  /* Actions for n observations [n, obs_dim] into actions [n, act_dim] (in [-1, 1]); log_probs [n]
   * may be NULL. deterministic = the evaluation action. Uses the algorithm's own RNG stream. */
  int (*act)(void *self, const float *obs, int n, bool deterministic, float *actions, float *log_probs,
             ember_err *err);

  /* Fills *out with the acting policy in the form of docs/protocol.md ("The acting policy"). The
   * tensors and their arrays are allocated by the algorithm; free them with algo_params_free. */
  int (*export_params)(void *self, Ember__Params *out, ember_err *err);

  /* The complete learner state (every network, optimiser moments, temperatures, RNG streams,
   * counters), so that load after save continues bit-identically. */
  int (*save)(void *self, FILE *out, ember_err *err);
  int (*load)(void *self, FILE *in, ember_err *err);

  /* Optional (may be NULL): new priorities [B] for the batch last passed to e_step, for
   * prioritized replay (e.g. |TD error|). */
  int (*priorities)(void *self, float *out, ember_err *err);
} algo_ops;

/* The registry. */
const algo_ops *algo_find(const char *name);
/* NULL-terminated list of every registered algorithm. */
const algo_ops *const *algo_all(void);

/* Frees what export_params allocated inside *p (not p itself) and resets it. */
void algo_params_free(Ember__Params *p);

/* The export every tanh-Gaussian policy shares (docs/protocol.md, "The acting policy"): fills *out
 * from the MLP pi, whose last layer gives [mean | raw log-std]. Free with algo_params_free. */
int algo_export_policy(const nn_mlp *pi, const char *algorithm, const char *task, int obs_dim, int act_dim,
                       float log_std_min, float log_std_max, Ember__Params *out, ember_err *err);

#endif

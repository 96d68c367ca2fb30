/* algo_virel.h: VIREL's settings and the pieces of its update that the tests reach into.
 *
 * The learner never includes this: it finds VIREL through the registry (algo_find("virel"),
 * algo_find("virel-soft")) and talks to it only through algo_ops. This header lets the tests compute
 * each loss and its gradient with noise they chose, without an optimiser step, and compare them with
 * an independent double-precision computation.
 *
 * VIREL as implemented (Fellows et al., ../shared/papers/004_*, section 4 and Appendix C's
 * Algorithm 1; docs/algorithms.md, "VIREL as implemented", says the same in prose):
 *   policy  pi(a|s): the tanh-Gaussian of docs/protocol.md (as SAC's).
 *   critic  Q_1, Q_2: ONE nn ensemble of E = 2 members over [s | a]. `virel` (VIREL1): both hard.
 *           `virel-soft` (VIREL2): Q_1 hard, Q_2 soft.
 *   value   V(phi): an MLP s -> V (virel) or an E = 2 ensemble s -> [V_hard, V_soft] (virel-soft),
 *           with a target copy V(phi-bar) updated by Polyak averaging. No target critics (Algorithm 1
 *           has none: the critics bootstrap from V(phi-bar)).
 *   VIREL's variational M-step (the critic: V, then Q_1, Q_2) runs in algo_ops.e_step and its
 *   variational E-step (the policy, then V's target) in algo_ops.m_step: the learner calls e_step
 *   first, and Algorithm 1 runs the M-step first in each gradient step.
 *
 * Ownership: virel_t is the instance algo_virel(_soft).create returns (algo_ops owns its life). The
 * accessors return pointers into it, valid until destroy. Thread-safety: one thread.
 */
#ifndef EMBER_ALGO_VIREL_H
#define EMBER_ALGO_VIREL_H

#include <stdbool.h>
#include <stdint.h>

#include "algo.h"
#include "config.h"
#include "nn.h"

/* The "virel" and "virel_soft" config sections (the same keys). */
typedef struct {
  int64_t hidden_size;     /* units per hidden layer: policy, critics, value */
  int64_t hidden_layers;
  char activation[CONFIG_STRING_MAX]; /* relu, tanh, elu */
  double actor_lr, critic_lr, value_lr;
  double gamma;            /* discount */
  double tau;              /* Polyak rate of V(phi-bar) */
  char beta_mode[CONFIG_STRING_MAX]; /* "constant" (beta = alpha) or "msbe" (beta from beta-hat) */
  double alpha;            /* beta in constant mode */
  double beta_ema;         /* msbe: rate of the exponential moving average of beta-hat */
  double beta_scale;       /* msbe: beta = clamp(beta_scale * EMA(beta-hat), beta_min, beta_max) */
  double beta_min, beta_max;
  double log_std_min, log_std_max;
  double adam_beta1, adam_beta2, adam_eps;
} virel_settings;

extern const config_section virel_config_section, virel_soft_config_section;
extern const algo_ops algo_virel, algo_virel_soft;

typedef struct virel virel_t;

/* The networks (for tests: read and perturb parameters, read gradients). */
nn_mlp *virel_policy_net(virel_t *v);
nn_mlp *virel_critic_net(virel_t *v);       /* E = 2: Q_1, Q_2 (virel-soft: Q_hard, Q_soft) */
nn_mlp *virel_value_net(virel_t *v);        /* E = 1: V (virel-soft: E = 2, V_hard, V_soft) */
nn_mlp *virel_target_value_net(virel_t *v); /* same spec */
/* The beta the next loss uses; set_beta overrides it (tests). */
double virel_beta(const virel_t *v);
void virel_set_beta(virel_t *v, double beta);
/* The moving average of beta-hat (kept in both modes; msbe sets beta from it); NaN before the first
 * M-step. */
double virel_msbe_ema(const virel_t *v);

/* VIREL's M-step losses on batch: J^V (the value) and J^Q (the twin critics), with eps [B, act_dim]
 * the noise of the policy's action at s in V's target. Gradients into the value and critic nets'
 * grads (zeroed first); no parameter changes. *q_loss is J^Q, which is also beta-hat of the batch. */
int virel_critic_losses_grad(virel_t *v, const algo_batch *batch, const float *eps, double *v_loss, double *q_loss,
                             ember_err *err);

/* VIREL's E-step loss J^pi on batch with the action noise eps [B, act_dim], its gradient into the
 * policy net's grads (zeroed first); no parameter changes. Also returns the mean log-prob. */
int virel_policy_loss_grad(virel_t *v, const algo_batch *batch, const float *eps, double *loss, double *mean_log_prob,
                           ember_err *err);

#endif

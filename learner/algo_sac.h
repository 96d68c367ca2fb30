/* algo_sac.h: SAC's settings and the pieces of its update that tests and benchmarks reach into.
 *
 * The learner never includes this: it finds SAC through the registry (algo_find("sac")) and talks
 * to it only through algo_ops. This header exists so that the finite-difference tests can compute
 * one loss and its gradient with noise they chose, without an optimiser step, and compare it with
 * an independent double-precision reference, and so the benchmark can size SAC like HalfCheetah.
 *
 * SAC as implemented (docs/algorithms.md, "SAC as implemented", says the same in prose):
 *   policy  pi(a|s): an MLP s -> [mu | raw] (2 * act_dim), log_std = smooth bound of raw,
 *           u = mu + exp(log_std) * eps, a = tanh(u)            (the tanh-Gaussian of protocol.md)
 *   critic  Q_1, Q_2: ONE nn ensemble of E = 2 members over [s | a] (one shared first GEMM),
 *           with a target copy Q'_1, Q'_2 updated by Polyak averaging.
 *   E-step  the critic update, then the target update (ember's slot naming; VIREL's E-step is the actor).
 *   M-step  the actor update, then the temperature update.
 *
 * Ownership: sac_t is the algorithm instance algo_sac.create returns (algo_ops owns its life).
 * The accessors return pointers into it, valid until destroy. Thread-safety: one thread.
 */
#ifndef EMBER_ALGO_SAC_H
#define EMBER_ALGO_SAC_H

#include <stdbool.h>
#include <stdint.h>

#include "algo.h"
#include "config.h"
#include "nn.h"

/* The "sac" config section. */
typedef struct {
  int64_t hidden_size;     /* units per hidden layer, actor and critics */
  int64_t hidden_layers;   /* hidden layers, actor and critics */
  char activation[CONFIG_STRING_MAX]; /* relu, tanh, elu */
  double actor_lr, critic_lr, alpha_lr;
  double gamma;            /* discount */
  double tau;              /* Polyak rate of the target critics */
  double init_alpha;       /* initial entropy temperature */
  bool learn_alpha;        /* tune alpha towards the target entropy */
  double target_entropy_scale; /* target entropy = -scale * act_dim */
  double log_std_min, log_std_max;
  double adam_beta1, adam_beta2, adam_eps;
} sac_settings;

extern const config_section sac_config_section;
extern const algo_ops algo_sac;

typedef struct sac sac_t;

/* The networks (for tests: read and perturb parameters, read gradients). */
nn_mlp *sac_policy_net(sac_t *s);
nn_mlp *sac_critic_net(sac_t *s);        /* E = 2 ensemble: members Q_1, Q_2 */
nn_mlp *sac_target_critic_net(sac_t *s); /* same spec */
double sac_alpha(const sac_t *s);
void sac_set_alpha(sac_t *s, double alpha);

/* The critic loss on batch with the next-action noise eps_next [B, act_dim] given, its gradient
 * written into sac_critic_net(s)->grads (zeroed first); no parameter changes. */
int sac_critic_loss_grad(sac_t *s, const algo_batch *batch, const float *eps_next, double *loss, ember_err *err);

/* The actor loss on batch with the action noise eps [B, act_dim] given, its gradient written into
 * sac_policy_net(s)->grads (zeroed first); no parameter changes. Also returns the mean log-prob. */
int sac_actor_loss_grad(sac_t *s, const algo_batch *batch, const float *eps, double *loss, double *mean_log_prob,
                        ember_err *err);

#endif

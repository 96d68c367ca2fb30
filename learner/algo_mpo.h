/* algo_mpo.h: MPO's settings and the pieces of its update that tests reach into.
 *
 * The learner never includes this: it finds MPO through the registry (algo_find("mpo")). The header
 * exists so that tests can run one loss on noise and Q-tables they chose and compare it with an
 * independent double-precision reference, and drive the dual variables on hand-made cases.
 *
 * MPO as implemented (docs/algorithms.md, "MPO as implemented", says the same in prose). Papers:
 * [MPO] Abdolmaleki et al. 2018, "Maximum a Posteriori Policy Optimisation" (ICLR);
 * [REPI] Abdolmaleki et al. 2018, "Relative Entropy Regularized Policy Iteration" (arXiv 1812.02256).
 * Cited by section, not equation number: only their opening pages were at hand (docs/algorithms.md).
 *   policy    pi(a|s): the tanh-Gaussian of protocol.md (an MLP s -> [mu | raw], log_std = smooth
 *             bound of raw, a = tanh(u), u ~ N(mu, std^2)). MPO works on the Gaussian over u: tanh is
 *             a bijection, so the KL between two such policies is the KL of their Gaussians, and the
 *             likelihood of a differs from that of u by a Jacobian that no parameter changes.
 *   pi_old    a target copy of pi, Polyak-averaged (policy_tau): the E-step's prior and the M-step's
 *             trust-region centre.
 *   critic    twin Q_1, Q_2 (an E = 2 ensemble over [s | a]) with targets Q'_1, Q'_2 (Polyak, tau);
 *             "the Q-function" below is min(Q'_1, Q'_2).
 *   e_step    policy evaluation (the critics by TD on the batch), then the non-parametric E-step on
 *             the batch's states: N actions per state from pi_old, weights q_ij = softmax_j Q/eta,
 *             and one gradient step of log(eta) on the temperature dual.
 *   m_step    the weighted maximum likelihood of pi with the decoupled KL constraints (one gradient
 *             step of pi, then of log(alpha_mean), log(alpha_std)), then the target updates.
 *
 * Ownership: mpo_t is the algorithm instance algo_mpo.create returns (algo_ops owns its life). The
 * accessors return pointers into it, valid until destroy; outputs through `const float **` too, valid
 * until the next call on the instance. Thread-safety: one thread.
 */
#ifndef EMBER_ALGO_MPO_H
#define EMBER_ALGO_MPO_H

#include <stdint.h>

#include "algo.h"
#include "config.h"
#include "nn.h"

/* The "mpo" config section. */
typedef struct {
  int64_t hidden_size, hidden_layers; /* policy and critics */
  char activation[CONFIG_STRING_MAX]; /* relu, tanh, elu */
  double policy_lr, critic_lr, dual_lr;
  double gamma;
  double tau;             /* Polyak rate of the target critics */
  double policy_tau;      /* Polyak rate of the target policy pi_old */
  int64_t action_samples; /* N: actions per state in the E-step */
  int64_t target_samples; /* M: next actions per transition in the TD target */
  double epsilon;         /* KL bound of the E-step, KL(q || pi_old) */
  double epsilon_mean, epsilon_std; /* the M-step's decoupled KL bounds */
  double init_eta, init_alpha_mean, init_alpha_std;
  double log_std_min, log_std_max;
} mpo_settings;

extern const config_section mpo_config_section;
extern const algo_ops algo_mpo;

typedef struct mpo mpo_t;

nn_mlp *mpo_policy_net(mpo_t *m);
nn_mlp *mpo_target_policy_net(mpo_t *m);
nn_mlp *mpo_critic_net(mpo_t *m);        /* E = 2: Q_1, Q_2 */
nn_mlp *mpo_target_critic_net(mpo_t *m); /* Q'_1, Q'_2 */
/* The dual variables (each kept as its logarithm, so always positive). */
double mpo_eta(const mpo_t *m);
double mpo_alpha_mean(const mpo_t *m);
double mpo_alpha_std(const mpo_t *m);
void mpo_set_duals(mpo_t *m, double eta, double alpha_mean, double alpha_std);

/* The TD loss of the critics with the next-action noise eps_next [B, M, A] given; its gradient is
 * written into mpo_critic_net(m)->grads (zeroed first). No parameter changes. */
int mpo_critic_loss_grad(mpo_t *m, const algo_batch *batch, const float *eps_next, double *loss, ember_err *err);

/* The temperature dual on a Q-table q [rows, n] (row i: the n actions of state i), a pure function:
 *   g(eta) = eta epsilon + eta mean_i log mean_j exp(q_ij / eta)
 * returns g; *d_eta = dg/deta (may be NULL); weights [rows, n] = softmax_j(q_ij / eta) (may be NULL);
 * *kl = mean_i sum_j w_ij log(n w_ij), the KL of the weights from uniform (may be NULL). */
double mpo_temperature_dual(const float *q, int rows, int n, double eta, double epsilon, float *weights,
                            double *d_eta, double *kl);

/* One step of the temperature on the Q-table q [rows, n]: the weights [rows, n] at the current eta,
 * then one Adam step of log(eta) on g (above). *dual = g at the current eta. rows <= max_batch and
 * n = action_samples, else EMBER_ESHAPE; a non-finite g is refused (EMBER_ENONFINITE, eta unchanged). */
int mpo_temperature_update(mpo_t *m, const float *q, int rows, int n, float *weights, double *dual, double *kl,
                           ember_err *err);

/* The E-step's samples at obs [B, obs_dim] with noise eps [B, N, A]: *u [B, N, A] = the pre-tanh
 * actions mu'(s) + std'(s) eps of pi_old, *q [B, N] = min_c Q'_c(s, tanh(u)). */
void mpo_estep_samples(mpo_t *m, const float *obs, int B, const float *eps, const float **u, const float **q);

/* The M-step at obs [B, obs_dim] on samples u [B, N, A] with weights w [B, N] (each row summing to 1). */
typedef struct {
  double loss;        /* the whole policy loss: nll + alpha_mean kl_mean + alpha_std kl_std */
  double nll;         /* -(1/B) sum_ij w_ij [log N(u_ij; mu, std_old) + log N(u_ij; mu_old, std)] */
  double kl_mean;     /* (1/B) sum_i KL(N(mu_old, std_old) || N(mu, std_old)) */
  double kl_std;      /* (1/B) sum_i KL(N(mu_old, std_old) || N(mu_old, std)) */
  double alpha_mean_loss, alpha_std_loss; /* log(alpha) (epsilon - sg(kl)) */
  double d_log_alpha_mean, d_log_alpha_std; /* their gradients with respect to log(alpha) */
} mpo_mstep_terms;

/* The loss (terms above) and its gradient into mpo_policy_net(m)->grads (zeroed first); pi_old and
 * the alphas are held fixed. No parameter changes. */
int mpo_mstep_loss_grad(mpo_t *m, const float *obs, int B, const float *u, const float *w, mpo_mstep_terms *out,
                        ember_err *err);

/* mpo_mstep_loss_grad, then one Adam step of pi and one of log(alpha_mean), log(alpha_std); the
 * targets are not touched (m_step adds the Polyak updates). Refuses a non-finite loss unchanged. */
int mpo_policy_update(mpo_t *m, const float *obs, int B, const float *u, const float *w, mpo_mstep_terms *out,
                      ember_err *err);

#endif

/* algo_vmbpo.h: VMBPO and VMBPO-MFE (Chow et al., "Variational Model-based Policy Optimization",
 * ../shared/papers/003_*) behind algo_ops, and the pieces of their updates that tests and
 * benchmarks reach into.
 *
 * The learner never includes this: it finds the algorithms through the registry
 * (algo_find("vmbpo"), algo_find("vmbpo-mfe")). This header exists so that the tests can run one
 * loss with noise they chose, read its value and its gradient without an optimiser step, and
 * compare them with an independent double-precision reference, and so the benchmark can size
 * VMBPO like HalfCheetah. Every loss is written out, with its equation number, in
 * docs/algorithms.md ("VMBPO", "VMBPO as implemented"); the comments in algo_vmbpo.c and
 * vmbpo_model.c, vmbpo_estep.c, vmbpo_mstep.c repeat them (vmbpo_internal.h: which file has what).
 *
 * The networks (section 5), all MLPs of nn.h, tanh-squashed policies in the form of
 * docs/protocol.md ("The acting policy"):
 *   pi      baseline policy        obs -> [mu | raw log-std]                  (M-step)
 *   pi_old  frozen copy of pi at the start of each M-step, for the KL of eq. (27)
 *   q_c     variational policy     obs -> [mu | raw log-std]                  (step 4)
 *   q_d     variational dynamics   [obs | act] -> E x [mean | raw log-var] over [dx | r], with the
 *           soft log-variance bounds of nn_gauss_head.h (r only when the task's reward cannot be
 *           recovered from observations; E = ensemble_size members)          (step 1)
 *   nu      log-likelihood ratio   [obs | act | x' - obs] -> 1                (step 2)
 *   V, Q    values in nats         obs -> 1, [obs | act] -> C                 (step 3; C = critics,
 *           an ensemble whose members all regress to eq. 23's target; where Q is read (eqs. 24, 25,
 *           step 1's Q') the minimum over members is used, clipped double Q; C = 1 is the paper's)
 *   V', Q'  Polyak-averaged targets of V and Q
 *
 * Sample layout: with K = model_samples_per_real, the B*K model rows are k-major: row k*B + i
 * belongs to real state i, sample k. Noise arrays the test functions take follow that layout:
 *   eps_action [B*K, act_dim]          standard normals for a ~ q_c
 *   eps_model  [B*K, E * model_dim]    standard normals for every member's q_d sample
 *   member     [B*K]                   which ensemble member provides each model sample (0..E-1)
 * model_dim = obs_dim (+1 when the reward is learned).
 *
 * Ownership: vmbpo_t is the instance algo_vmbpo.create / algo_vmbpo_mfe.create return (algo_ops
 * owns its life). Accessors return pointers into it, valid until destroy. Thread-safety: one
 * thread per instance.
 */
#ifndef EMBER_ALGO_VMBPO_H
#define EMBER_ALGO_VMBPO_H

#include <stdbool.h>
#include <stdint.h>

#include "algo.h"
#include "config.h"
#include "nn.h"
#include "nn_gauss_head.h"

/* The "vmbpo" config section (and "vmbpo_mfe", with the same keys, for --algo vmbpo-mfe). */
typedef struct {
  int64_t hidden_size, hidden_layers;             /* pi, q_c, nu, V, Q */
  int64_t model_hidden_size, model_hidden_layers; /* q_d */
  char activation[CONFIG_STRING_MAX];             /* relu, tanh, elu */
  double eta;        /* p(O = 1 | x, a) = exp(eta r): nats per unit of reward (eq. 2) */
  double gamma;      /* discount, per-step reading of footnote 1 */
  double polyak;     /* tau_p: V', Q' <- (1 - tau_p) V', Q' + tau_p V, Q */
  double lambda;     /* trust-region weight of KL(pi_old || pi), eq. (27) */
  double mfe_tau;    /* VMBPO-MFE: temperature of the exponential TD update */
  double pi_lr, qc_lr, qd_lr, nu_lr, q_lr, v_lr;
  int64_t model_samples_per_real; /* K: model samples per real sample in steps 2, 3 and the M-step */
  int64_t estep_iters;            /* gradient rounds of steps 1-4 per e_step call */
  int64_t mstep_every;            /* the M-step runs at every n-th m_step call */
  int64_t mstep_iters;            /* gradient steps on pi per M-step (fit mode) */
  bool pi_equals_qc;              /* M-step = copy q_c into pi (the paper's experiments) */
  char acting_policy[CONFIG_STRING_MAX]; /* "pi" or "qc": what act() and export_params use */
  int64_t ensemble_size;          /* E: q_d members */
  int64_t critics;                /* members of Q (and Q'); > 1: the minimum over them is used (clipped double Q) */
  double real_ratio;              /* weight of the real transitions' rows in eq. 23's regression (MBPO's real ratio) */
  double qc_mean_penalty;         /* step 4: + this * mean_i |mu_c(x_i)|^2 (the pre-tanh mean; SAC v1's regulariser) */
  double model_weight_decay;      /* decoupled weight decay of q_d's network */
  double model_bound_penalty;     /* weight of the log-variance bound width in step 1's loss */
  double nu_max;                  /* nu clamped to [-nu_max, nu_max] before use */
  double mfe_clamp;               /* VMBPO-MFE: tau * delta clamped at this before exp */
  int64_t mfe_model_every;        /* VMBPO-MFE: fit q_d (step 1) every n updates; 0 = never */
  double qd_weight_temperature;   /* step 1: the t in the weights below; 1 = eq. (19), 0 = plain likelihood */
  char qd_weight_norm[CONFIG_STRING_MAX]; /* step 1's normaliser: "model" (per (x,a), eq. 9 by K q_d samples)
                                           * or "batch" (B softmax over the batch) */
  double qd_weight_max;           /* step 1, "model": weights clipped at this */
  double log_std_min, log_std_max;
  double adam_beta1, adam_beta2, adam_eps;
} vmbpo_settings;

extern const config_section vmbpo_config_section;
extern const config_section vmbpo_mfe_config_section;
extern const algo_ops algo_vmbpo;
extern const algo_ops algo_vmbpo_mfe;

typedef struct vmbpo vmbpo_t;

typedef enum {
  VMBPO_NET_PI,
  VMBPO_NET_PI_OLD,
  VMBPO_NET_QC,
  VMBPO_NET_QD,
  VMBPO_NET_NU,
  VMBPO_NET_V,
  VMBPO_NET_Q,
  VMBPO_NET_V_TARGET,
  VMBPO_NET_Q_TARGET,
  VMBPO_NET_COUNT
} vmbpo_net_id;

nn_mlp *vmbpo_net(vmbpo_t *v, vmbpo_net_id id);
nn_gauss_head *vmbpo_qd_head(vmbpo_t *v);
int vmbpo_model_dim(const vmbpo_t *v);       /* obs_dim, +1 when the reward is learned */
int vmbpo_samples_per_real(const vmbpo_t *v); /* K */

/* ---- pure pieces (no network), checked against the tabular reference ------------------------- */

/* Step 1's self-normalised weights (eq. 19 in the per-step reading, docs/algorithms.md):
 *   delta_i = (1 - d_i) V'(x'_i) - (Q'(x_i,a_i) - eta r_i) / gamma,   w_i = B softmax_i(t delta)
 * with t = temperature (1 = the paper's weights; 0 = uniform, an unweighted likelihood).
 * delta_out [n] (may be NULL), w_out [n]; *ess_fraction = ESS / B = B / sum w^2, *w_max = max w. */
void vmbpo_step1_weights(const float *v_next, const float *q, const float *reward, const float *terminated, int n,
                         float eta, float gamma, float temperature, float *delta_out, float *w_out, double *ess_fraction, double *w_max);

/* Step 1's weights with the per-(x, a) normaliser (qd_weight_norm = model, docs/algorithms.md):
 *   log Z_i = log mean_k exp(t (1 - d^_ik) V'(x^_ik)),  x^_ik ~ q_d(.|x_i, a_i)   (eq. 9's
 *             (Q'(x_i,a_i) - eta r_i) / gamma = log E_p[exp V'(x')], estimated with the model)
 *   delta_i = t (1 - d_i) V'(x'_i) - log Z_i,        w_i = exp(min(delta_i, log w_clip))
 * v_model, d_model [K*n] k-major (row k*n + i). No batch normalisation: each weight has conditional
 * mean 1 over p when q_d = p. *ess_fraction = (sum w)^2 / (n sum w^2), *w_max = max w. */
void vmbpo_step1_weights_model(const float *v_next, const float *terminated, const float *v_model,
                               const float *d_model, int n, int K, float temperature, float w_clip, float *delta_out,
                               float *w_out, double *ess_fraction, double *w_max);

/* Step 2's loss (the negated dual of eq. 21, with means):
 *   L_nu = - mean_j clamp(nu_model_j) + mean_i exp(clamp(nu_real_i)),  clamp to [-nu_max, nu_max].
 * d_model [n_model], d_real [n_real] (may be NULL) get dL/dnu (0 where clamped); *clamped counts
 * clamped values (may be NULL). */
double vmbpo_nu_loss(const float *nu_model, int n_model, const float *nu_real, int n_real, float nu_max,
                     float *d_model, float *d_real, int *clamped);

/* VMBPO-MFE's exponential-TD coefficient per transition:
 *   delta = (1 - d) V'(x') - (Q(x,a) - eta r) / gamma,  z = min(tau delta, clamp)
 *   coef  = gamma (1 - exp(z)) / tau         (the pseudo-loss is mean coef * Q; its gradient step
 *                                            moves Q by +alpha gamma (exp(tau delta) - 1) / tau)
 * Returns exp(z) (the exponentiated TD error; mean 1 at the fixed point); *was_clamped set. */
double vmbpo_mfe_coefficient(float v_next, float q, float reward, float terminated, float eta, float gamma, float tau,
                             float clamp, double *coef, int *was_clamped);

/* ---- one loss at a time, with the noise given: value and gradient, no parameter change -------- */
/* Each zeroes the gradients of the networks it differentiates, then writes them; non-finite loss:
 * EMBER_ENONFINITE naming the loss. Batches must have passed the checks e_step makes. */

/* Step 1 (eqs. 17-19): L_d = - mean_i w_i log q_d([x'_i - x_i, r_i] | x_i, a_i) + bound penalty, with the
 * weights of vmbpo_step1_weights_model (qd_weight_norm = model: eps_model [B*K, E*model_dim] and member
 * [B*K] draw the K model samples x^_ik ~ q_d(.|x_i, a_i), rows k-major) or vmbpo_step1_weights (batch:
 * eps_model and member unused, may be NULL). Gradient: q_d's network and its head bounds. */
int vmbpo_qd_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_model, const int *member, double *loss,
                       double *ess_fraction, double *w_max, ember_err *err);

/* Step 2 (eqs. 20-21): model next states from q_d with eps_model/member (first B*K rows), then
 * L_nu = - mean_{i,k} nu(x_i, a_i, x^_ik) + mean_i exp nu(x_i, a_i, x'_i). Gradient: nu. */
int vmbpo_nu_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_model, const int *member, double *loss,
                       double *clamp_rate, ember_err *err);

/* Step 3's samples: a_ik ~ q_c(.|x_i) (eps_action), x^_ik ~ q_d(.|x_i, a_ik) (eps_model, member), the
 * reward and termination of each, nu and V' at them, and the target of eq. (23); with real_ratio > 0
 * also the B real rows (x_i, a_i) with y_i = eta r_i + gamma ((1 - d_i) V'(x'_i) - nu(x_i, a_i, x'_i)).
 * Kept inside v for the two losses below. */
void vmbpo_critic_sample(vmbpo_t *v, const algo_batch *b, const float *eps_action, const float *eps_model,
                         const int *member);
/* Eq. (23): L_Q = mean_{i,k,m} (Q_m(x_i, a_ik) - y_ik)^2 over the C critics m, y = eta r^ + gamma ((1 - d^) V'(x^)
 * - nu); with real_ratio rho > 0, (1 - rho) times that plus rho mean_{i,m} (Q_m(x_i, a_i) - y_i)^2 over the real
 * rows. Gradient: Q. */
int vmbpo_q_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss, ember_err *err);
/* Eq. (24): L_V = mean_{i,k} (V(x_i) - (Q(x_i,a_ik) - log q_c(a_ik|x_i) + log pi(a_ik|x_i)))^2 with
 * the current Q (its minimum over the critics). Gradient: V. Uses the samples of the last vmbpo_critic_sample or vmbpo_mfe_sample. */
int vmbpo_v_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss, ember_err *err);

/* Step 4 (eq. 25): L_c = mean_i [log q_c(a_i|x_i) - Q(x_i,a_i) - log pi(a_i|x_i)] + qc_mean_penalty mean_i
 * |mu_c(x_i)|^2, a_i = tanh(mu + std eps_i) (eps [B, act_dim]), Q the minimum over the critics. Gradient: q_c, through the action into
 * Q (the row's smallest member) and log pi. */
int vmbpo_qc_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps, double *loss, ember_err *err);

/* M-step (eq. 27): L_pi = - mean_{i,k} log pi(a_ik|x_i) + lambda mean_i KL(pi_old(.|x_i) || pi(.|x_i)),
 * a_ik ~ q_c with eps_action [B*K, act_dim]. Gradient: pi. *kl gets the mean KL. */
int vmbpo_pi_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_action, double *loss, double *kl,
                       ember_err *err);

/* VMBPO-MFE: actions a_ik ~ q_c(.|x_i) at the replay states (no model), for vmbpo_v_loss_grad. */
void vmbpo_mfe_sample(vmbpo_t *v, const algo_batch *b, const float *eps_action);
/* VMBPO-MFE critic: the pseudo-loss mean_i sg(coef_i) Q(x_i, a_i) on real transitions (see
 * vmbpo_mfe_coefficient). *loss gets the pseudo-loss, *exp_td_mean the mean of exp(tau delta).
 * Gradient: Q. */
int vmbpo_mfe_q_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss, double *exp_td_mean, double *clamp_rate,
                          ember_err *err);

#endif

/* algo_parts.h: the pieces the model-free actor-critics (SAC, VIREL) share, so that each algorithm's
 * file holds only its own losses: the batch check, the critic's [obs | act] input, the tanh-Gaussian
 * policy (sample, backward, act), the reparameterised actor loss against the smaller of two
 * critics, Adam from settings, and the raw state I/O of save/load.
 *
 * The tanh-Gaussian policy is the acting policy of docs/protocol.md: an MLP s -> [mu | raw]
 * (2 * act_dim), log_std = smooth bound of raw (nn_policy_head_forward), a = tanh(mu + std * eps).
 *
 * Ownership: algo_policy_init takes ownership of the network it is given and allocates its
 * workspace and scratch (sized for max_batch rows); algo_policy_free releases all three. Every
 * other function keeps no pointer to its arguments. Nothing here allocates after init.
 * Thread-safety: one thread per algo_policy (it holds scratch).
 */
#ifndef EMBER_ALGO_PARTS_H
#define EMBER_ALGO_PARTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "algo.h"
#include "nn.h"
#include "nn_optim.h"
#include "rng.h"

/* A batch the networks can take: 1..max_batch rows of these dims, every needed column present and
 * finite. EMBER_ESHAPE / EMBER_EINVAL / EMBER_ENONFINITE naming the column and index, with `algo`
 * (the algorithm's name) in front. */
int algo_check_batch(const char *algo, const algo_batch *b, int obs_dim, int act_dim, int max_batch,
                     ember_err *err);

/* True when all n values are finite. */
bool algo_all_finite(const float *x, size_t n);

/* xa [B, O + A] = [obs | act] */
void algo_concat_obs_action(float *xa, const float *obs, const float *act, int batch, int O, int A);

/* Adam with the algorithm's learning rate and moments (nn_adam_new's errors). */
nn_adam *algo_adam_new(size_t count, double lr, double beta1, double beta2, double epsilon, ember_err *err);

/* ---- the tanh-Gaussian policy -------------------------------------------------------------------- */

typedef struct {
  nn_mlp *net; /* s -> [mu | raw log-std], owned */
  nn_mlp_ws *ws;
  int act_dim, max_batch;
  float log_std_lo, log_std_hi;
  /* the last sample, [max_batch, act_dim] ([max_batch] for log_prob) */
  float *mean, *log_std, *action, *log_prob;
  /* backward scratch: d_mean, d_log_std [max_batch, act_dim], d_out [max_batch, 2 act_dim] */
  float *d_mean, *d_log_std, *d_out;
  float *scratch; /* the one allocation behind the buffers above */
} algo_policy;

/* Takes net (output 2 * act_dim); on failure frees it too and fills err. */
int algo_policy_init(algo_policy *p, nn_mlp *net, int act_dim, int max_batch, float log_std_lo, float log_std_hi,
                     ember_err *err);
void algo_policy_free(algo_policy *p);

/* The policy at obs [B, O] with noise eps [B, A]: fills p->mean, log_std, action, log_prob.
 * Returns the network's output [B, 2A] (inside p->ws). */
const float *algo_policy_sample(algo_policy *p, const float *obs, const float *eps, int batch);

/* Backward through the last algo_policy_sample (same eps): d_action [B, A] = dL/da and
 * d_log_prob [B] = dL/dlog pi (either may be NULL) into p->net->grads, zeroed first. */
void algo_policy_backward(algo_policy *p, const float *d_action, const float *d_log_prob, const float *eps,
                          int batch);

/* algo_ops.act on this policy: n rows in chunks of max_batch, noise from rng into eps_buf
 * [max_batch, act_dim] (zero when deterministic: tanh(mu)). `algo` names the caller in errors. */
int algo_policy_act(algo_policy *p, rng_t *rng, float *eps_buf, int obs_dim, const float *obs, int n,
                    bool deterministic, float *actions, float *log_probs, const char *algo, ember_err *err);

/* ---- the reparameterised actor loss --------------------------------------------------------------- */

/* With a = tanh(mu(s) + std(s) eps) from the policy and q an E = 2 critic ensemble over [s | a]:
 *   L = (1/B) sum_b [ temperature * log pi(a_b|s_b) - min_j Q_j(s_b, a_b) + baseline_b ]
 * (SAC's J_pi; VIREL's E-step, eq. 9, with baseline = V(s)). baseline [B] may be NULL (zero); it
 * depends on no policy parameter, so it moves the value and not the gradient. The gradient reaches
 * the policy through log pi and through a via dQ/da of the smaller twin (the critic's parameters are
 * not touched) and is written into p->net->grads (zeroed first). Scratch: xa [B, O + A], d_q [B, 2],
 * d_action [B, A], d_log_prob [B]. Returns L; *mean_log_prob = the batch's mean log pi. */
double algo_actor_loss_grad(algo_policy *p, nn_mlp *q, nn_mlp_ws *q_ws, const float *obs, int obs_dim,
                            const float *eps, int batch, float temperature, const float *baseline, float *xa,
                            float *d_q, float *d_action, float *d_log_prob, double *mean_log_prob);

/* ---- raw state I/O for save/load (native endianness: a learner's own state) ---------------------- */

/* 0 or -1 (short write / read). */
int algo_write(FILE *f, const void *p, size_t n);
int algo_read(FILE *f, void *p, size_t n);
/* An Adam state: step count, then both moments. */
int algo_write_adam(FILE *f, const nn_adam *a);
int algo_read_adam(FILE *f, nn_adam *a);

#endif

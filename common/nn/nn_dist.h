/* nn_dist.h: diagonal Gaussian and tanh-squashed diagonal Gaussian distributions over batches,
 * each as a forward function and its backward.
 *
 * Shapes: mean, log_std, x, eps, action are [B, D] row-major (row b is sample b); per-sample
 * results (log_prob, entropy, kl) are [B] and are sums over the D dimensions. Noise eps is drawn
 * by the caller (rng_normal_fill) and passed to both sample and sample_backward: that is the
 * reparameterisation, and it keeps these functions free of hidden state.
 *
 * Gradients ACCUMULATE (+=) into every d_* output, as everywhere in ember's nn (nn.h), so the
 * terms of one loss add into one d_mean / d_log_std. Every d_* output may be NULL when not wanted,
 * and every incoming d_* (d_action, d_log_prob, ...) may be NULL when that output has no gradient.
 *
 * The acting policy (docs/protocol.md) is an MLP whose output row is [mean (D) | raw log-std (D)];
 * nn_policy_head_forward splits it and bounds the log-std smoothly into [lo, hi]:
 *   log_std = lo + (hi - lo) * (tanh(raw) + 1) / 2
 * Actor and learner both call it, so they agree on the formula.
 *
 * Numerics: per-element work runs in double and rounds once to float, these are O(B*D) loops next
 * to the MLPs' O(B*H^2). The tanh squash correction uses
 *   log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)),
 * which is finite for every finite u (the naive form is log(0) = -inf once tanh(u) rounds to 1).
 *
 * No allocation, no state: every function is thread-safe on distinct output buffers.
 */
#ifndef EMBER_NN_DIST_H
#define EMBER_NN_DIST_H

#include <stddef.h>

/* ---- smooth log-std bounds ------------------------------------------------------------------ */
/* forward:  raw [n] -> log_std [n] = lo + (hi - lo) * (tanh(raw) + 1) / 2     (overwrite)
 * backward: d_raw [n] += d_log_std * (hi - lo) / 2 * (1 - tanh(raw)^2) */
void nn_logstd_bound_forward(float *log_std, const float *raw, size_t n, float lo, float hi);
void nn_logstd_bound_backward(float *d_raw, const float *d_log_std, const float *raw, size_t n, float lo,
                              float hi);

/* ---- the policy head: the MLP's [B, 2D] output as (mean, bounded log_std) ------------------- */
/* forward:  out [B, 2D] -> mean [B, D] = out[:, :D], log_std [B, D] = bound(out[:, D:])
 * backward: d_out [B, 2D] += [d_mean | d_log_std * bound'(out[:, D:])]  (d_mean, d_log_std may be NULL) */
void nn_policy_head_forward(float *mean, float *log_std, const float *out, int batch, int dim, float lo,
                            float hi);
void nn_policy_head_backward(float *d_out, const float *d_mean, const float *d_log_std, const float *out,
                             int batch, int dim, float lo, float hi);

/* ---- diagonal Gaussian N(mean, diag(exp(log_std)^2)) ---------------------------------------- */

/* Reparameterised sample.
 * forward:  x [B, D] = mean + exp(log_std) * eps
 * backward: d_mean += d_x;  d_log_std += d_x * exp(log_std) * eps */
void nn_gaussian_sample(float *x, const float *mean, const float *log_std, const float *eps, int batch,
                        int dim);
void nn_gaussian_sample_backward(float *d_mean, float *d_log_std, const float *d_x, const float *log_std,
                                 const float *eps, int batch, int dim);

/* Log-density of given points, z = (x - mean) / std.
 * forward:  log_prob [B] = sum_j -z^2/2 - log_std - log(2 pi)/2
 * backward: d_x += -g z / std;  d_mean += g z / std;  d_log_std += g (z^2 - 1),  g = d_log_prob[b] */
void nn_gaussian_log_prob(float *log_prob, const float *x, const float *mean, const float *log_std,
                          int batch, int dim);
void nn_gaussian_log_prob_backward(float *d_x, float *d_mean, float *d_log_std, const float *d_log_prob,
                                   const float *x, const float *mean, const float *log_std, int batch,
                                   int dim);

/* Entropy.
 * forward:  entropy [B] = sum_j log_std + (1 + log(2 pi)) / 2
 * backward: d_log_std += d_entropy[b] */
void nn_gaussian_entropy(float *entropy, const float *log_std, int batch, int dim);
void nn_gaussian_entropy_backward(float *d_log_std, const float *d_entropy, int batch, int dim);

/* KL(p || q) between diagonal Gaussians (the M-step trust region, VMBPO eq. 27).
 * forward:  kl [B] = sum_j log_std_q - log_std_p + (std_p^2 + (mean_p - mean_q)^2) / (2 std_q^2) - 1/2
 * backward, with r = std_p^2 / std_q^2, m = (mean_p - mean_q) / std_q, g = d_kl[b]:
 *   d_mean_p += g m / std_q;  d_mean_q -= g m / std_q;
 *   d_log_std_p += g (r - 1);  d_log_std_q += g (1 - r - m^2) */
void nn_gaussian_kl(float *kl, const float *mean_p, const float *log_std_p, const float *mean_q,
                    const float *log_std_q, int batch, int dim);
void nn_gaussian_kl_backward(float *d_mean_p, float *d_log_std_p, float *d_mean_q, float *d_log_std_q,
                             const float *d_kl, const float *mean_p, const float *log_std_p,
                             const float *mean_q, const float *log_std_q, int batch, int dim);

/* ---- tanh-squashed Gaussian: action = tanh(u), u ~ N(mean, std^2) ---------------------------- */

/* Reparameterised sample with its log-probability (the SAC policy).
 * forward:  u = mean + std * eps;  action [B, D] = tanh(u);
 *           log_prob [B] = sum_j -eps^2/2 - log_std - log(2 pi)/2 - log(1 - tanh(u)^2)
 *           (log_prob may be NULL)
 * backward: with eps held fixed, du = d_action (1 - a^2) + d_log_prob[b] * 2 tanh(u):
 *           d_mean += du;  d_log_std += du * std * eps - d_log_prob[b] */
void nn_tanh_gaussian_sample(float *action, float *log_prob, const float *mean, const float *log_std,
                             const float *eps, int batch, int dim);
void nn_tanh_gaussian_sample_backward(float *d_mean, float *d_log_std, const float *d_action,
                                      const float *d_log_prob, const float *mean, const float *log_std,
                                      const float *eps, int batch, int dim);

/* Log-probability of given actions (replayed or planned), u = atanh(action), with actions clamped
 * to +-(1 - 1e-6) so that a stored +-1 stays finite.
 * forward:  log_prob [B] = sum_j -z^2/2 - log_std - log(2 pi)/2 - log(1 - a^2),  z = (u - mean) / std
 * backward: d_mean += g z / std;  d_log_std += g (z^2 - 1)     (the squash term does not depend on them) */
void nn_tanh_gaussian_log_prob(float *log_prob, const float *action, const float *mean, const float *log_std,
                               int batch, int dim);
void nn_tanh_gaussian_log_prob_backward(float *d_mean, float *d_log_std, const float *d_log_prob,
                                        const float *action, const float *mean, const float *log_std,
                                        int batch, int dim);

/* The same log-probability at the action tanh(u), given its pre-squash value u: for actions this
 * code sampled itself. Exact where tanh(u) rounds to +-1 in float, where the forms above (which must
 * recover u = atanh(action) through the clamp) are not: two densities compared at one sample, e.g.
 * log q_c(a) - log pi(a) of VMBPO's eqs. 24-25, must be taken at the same u, or their difference is
 * off by the clamp's error (tens of nats once a policy saturates).
 * pre_u:    u [B, D] = mean + std * eps (the u of nn_tanh_gaussian_sample, rounded to float)
 * forward:  log_prob [B] = sum_j -z^2/2 - log_std - log(2 pi)/2 - log(1 - tanh(u)^2),  z = (u - mean) / std
 * backward: d_mean += g z / std;  d_log_std += g (z^2 - 1);  d_u += g (-z / std + 2 tanh(u))
 *           (any of the three outputs may be NULL) */
void nn_tanh_gaussian_pre_u(float *u, const float *mean, const float *log_std, const float *eps, size_t n);
void nn_tanh_gaussian_log_prob_u(float *log_prob, const float *u, const float *mean, const float *log_std,
                                 int batch, int dim);
void nn_tanh_gaussian_log_prob_u_backward(float *d_mean, float *d_log_std, float *d_u, const float *d_log_prob,
                                          const float *u, const float *mean, const float *log_std, int batch,
                                          int dim);

/* The deterministic (evaluation) action: action [n] = tanh(mean). */
void nn_tanh_gaussian_mode(float *action, const float *mean, size_t n);

/* log(1 - tanh(u)^2), finite for every finite u. */
double nn_log1m_tanh_sq(double u);

#endif

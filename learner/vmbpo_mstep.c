/* vmbpo_mstep.c: the M-step of VMBPO and VMBPO-MFE (section 5.2; docs/algorithms.md, "VMBPO",
 * M-step): pi fitted by maximum likelihood of q_c's actions with the trust region
 * lambda KL(pi_old || pi) (eq. 27), or the paper's experimental M-step, the copy pi <- q_c
 * (pi_equals_qc). m_step runs it at every mstep_every-th call. vmbpo_internal.h says what the other
 * files own.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmbpo_internal.h"

/* ---- M-step: pi by maximum likelihood of q_c's actions, KL trust region (eq. 27) ---------------- */

int vmbpo_pi_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_action, double *loss_out, double *kl_out,
                       ember_err *err) {
  const int B = b->size, K = v->K, A = v->A, N = B * K;
  const size_t BA = (size_t)B * A;
  nn_mlp *pi = v->net[VMBPO_NET_PI];
  /* a_ik = tanh(u_ik) ~ q_c(.|x_i), no gradient; pi's likelihood is taken at u_ik */
  vmbpo_policy_dist(v, VMBPO_NET_QC, b->obs, B, v->mean_c, v->lstd_c);
  vmbpo_tile(v->mean_rep, v->mean_c, B, A, K);
  vmbpo_tile(v->lstd_rep, v->lstd_c, B, A, K);
  nn_tanh_gaussian_pre_u(v->u_c, v->mean_rep, v->lstd_rep, eps_action, (size_t)N * A);
  /* L_pi = - mean_{i,k} log pi(a_ik|x_i) + lambda mean_i KL(pi_old(.|x_i) || pi(.|x_i))   (eq. 27);
   * the KL of two tanh-Gaussians is the KL of their pre-tanh Gaussians (tanh is invertible). */
  const float *pi_out = vmbpo_policy_dist(v, VMBPO_NET_PI, b->obs, B, v->mean_p, v->lstd_p);
  vmbpo_tile(v->mean_rep2, v->mean_p, B, A, K);
  vmbpo_tile(v->lstd_rep2, v->lstd_p, B, A, K);
  nn_tanh_gaussian_log_prob_u(v->log_pi, v->u_c, v->mean_rep2, v->lstd_rep2, N, A);
  vmbpo_policy_dist(v, VMBPO_NET_PI_OLD, b->obs, B, v->mean_o, v->lstd_o);
  nn_gaussian_kl(v->kl, v->mean_o, v->lstd_o, v->mean_p, v->lstd_p, B, A);
  const float lambda = (float)v->cfg.lambda;
  double nll = 0, kl = 0;
  for (int r = 0; r < N; r++) {
    nll -= v->log_pi[r];
    v->d_out1[r] = -1.0f / (float)N;
  }
  for (int i = 0; i < B; i++) {
    kl += v->kl[i];
    v->d_logp[i] = lambda / (float)B;
  }
  nll /= N;
  kl /= B;
  const double loss = nll + lambda * kl;
  memset(v->d_mean_n, 0, (size_t)N * A * sizeof(float));
  memset(v->d_lstd_n, 0, (size_t)N * A * sizeof(float));
  nn_tanh_gaussian_log_prob_u_backward(v->d_mean_n, v->d_lstd_n, NULL, v->d_out1, v->u_c, v->mean_rep2, v->lstd_rep2,
                                       N, A);
  /* fold the K tiled copies back onto their state */
  memset(v->d_mean, 0, BA * sizeof(float));
  memset(v->d_lstd, 0, BA * sizeof(float));
  for (int k = 0; k < K; k++)
    for (size_t j = 0; j < BA; j++) {
      v->d_mean[j] += v->d_mean_n[(size_t)k * BA + j];
      v->d_lstd[j] += v->d_lstd_n[(size_t)k * BA + j];
    }
  if (lambda > 0)
    nn_gaussian_kl_backward(NULL, NULL, v->d_mean, v->d_lstd, v->d_logp, v->mean_o, v->lstd_o, v->mean_p, v->lstd_p,
                            B, A);
  memset(v->d_head_out, 0, 2 * BA * sizeof(float));
  nn_policy_head_backward(v->d_head_out, v->d_mean, v->d_lstd, pi_out, B, A, v->lo, v->hi);
  nn_mlp_zero_grad(pi);
  nn_mlp_backward(pi, v->ws[VMBPO_NET_PI], v->d_head_out, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (kl_out) *kl_out = kl;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: M-step loss L_pi (eq. 27) is non-finite (%g)", v->algo_name,
                      loss);
  return 0;
}


int vmbpo_m_step(void *self, const algo_batch *b, algo_stats *st, ember_err *err) {
  vmbpo_t *v = self;
  int rc = vmbpo_check_batch(v, b, err);
  if (rc) return rc;
  const int pi_loss_col = v->mfe ? MS_PI_LOSS : ST_PI_LOSS, kl_col = v->mfe ? MS_PI_KL : ST_PI_KL;
  const int count = v->mfe ? MS_COUNT : ST_COUNT;
  v->mstep_calls++;
  if (v->mstep_calls % (uint64_t)v->cfg.mstep_every != 0) return 0;
  nn_mlp *pi = v->net[VMBPO_NET_PI];
  if (v->cfg.pi_equals_qc) {
    /* pi <- q_c: the paper's experimental M-step (eq. 27 with lambda = 0 solved exactly) */
    nn_mlp_copy_params(pi, v->net[VMBPO_NET_QC]);
    v->msteps++;
    vmbpo_stat(st, pi_loss_col, 0.0, count);
    vmbpo_stat(st, kl_col, 0.0, count);
    return 0;
  }
  nn_mlp_copy_params(v->net[VMBPO_NET_PI_OLD], pi);
  /* Keep pi, its moments and the RNG to undo a non-finite step (the same promise as e_step). */
  rng_t rng_keep = v->rng;
  double loss = 0, kl = 0;
  for (int it = 0; it < (int)v->cfg.mstep_iters; it++) {
    rng_normal_fill(&v->rng, v->eps_a, b->size * v->K * v->A);
    if ((rc = vmbpo_pi_loss_grad(v, b, v->eps_a, &loss, &kl, err)) != 0 ||
        (rc = vmbpo_adam(v, v->opt_pi, pi->params, pi->grads, "pi", err)) != 0) {
      /* Parameters back to pi_old (its copy at the start of this M-step); the Adam moments of the
       * steps taken inside this M-step stay (at most mstep_iters - 1 finite steps). */
      nn_mlp_copy_params(pi, v->net[VMBPO_NET_PI_OLD]);
      v->rng = rng_keep;
      return rc;
    }
  }
  v->msteps++;
  vmbpo_stat(st, pi_loss_col, loss, count);
  vmbpo_stat(st, kl_col, kl, count);
  return 0;
}

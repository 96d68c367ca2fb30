/* vmbpo_estep.c: the E-step of VMBPO after step 1 (vmbpo_model.c), and VMBPO-MFE's model-free
 * E-step (docs/algorithms.md, "VMBPO", "VMBPO-MFE", "VMBPO as implemented"):
 *   step 2  nu = log(q_d / p) by the dual of the reverse KL (eqs. 20-21)
 *   step 3  the critic on model samples: Q regressed to eq. 23's target, then V to eq. 24's
 *   step 4  q_c by the reparameterised reverse KL to pi exp(Q) (eq. 25)
 *   MFE     Q by exponential TD on real transitions (eqs. 9-10), V and q_c as above
 * and e_step: estep_iters rounds of them, each followed by the Polyak update of V', Q', with the
 * whole update rolled back when a loss turns non-finite. vmbpo_internal.h says what the other files
 * own.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmbpo_internal.h"

/* ---- step 2: nu by the dual of the reverse KL (eqs. 20-21) --------------------------------------- */

double vmbpo_nu_loss(const float *nu_model, int n_model, const float *nu_real, int n_real, float nu_max,
                     float *d_model, float *d_real, int *clamped) {
  /* L_nu = - mean_j nu(model_j) + mean_i exp(nu(real_i))   (eq. 21 negated, means; docs step 2) */
  double sum_model = 0, sum_real = 0;
  int nclamp = 0;
  for (int j = 0; j < n_model; j++) {
    float x = nu_model[j];
    bool c = x > nu_max || x < -nu_max;
    if (c) x = x > 0 ? nu_max : -nu_max;
    nclamp += c;
    sum_model += x;
    if (d_model) d_model[j] = c ? 0.0f : -1.0f / (float)n_model;
  }
  for (int i = 0; i < n_real; i++) {
    float x = nu_real[i];
    bool c = x > nu_max || x < -nu_max;
    if (c) x = x > 0 ? nu_max : -nu_max;
    nclamp += c;
    double e = exp((double)x);
    sum_real += e;
    if (d_real) d_real[i] = c ? 0.0f : (float)(e / n_real);
  }
  if (clamped) *clamped = nclamp;
  return -sum_model / n_model + sum_real / n_real;
}

int vmbpo_nu_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_model, const int *member, double *loss_out,
                       double *clamp_rate, ember_err *err) {
  const int B = b->size, K = v->K, O = v->O, A = v->A, N = B * K, W = 2 * O + A;
  /* x^_ik ~ q_d(.|x_i, a_i), no gradient into q_d: rows k*B + i of [x_i | a_i] */
  vmbpo_tile(v->obs_rep, b->obs, B, O, K);
  vmbpo_tile(v->a_c, b->action, B, A, K);
  vmbpo_concat2(v->xa, v->obs_rep, O, v->a_c, A, N);
  vmbpo_model_sample(v, v->obs_rep, N, eps_model, member);
  for (int r = 0; r < N; r++)
    vmbpo_nu_row(v->nu_in + (size_t)r * W, v->obs_rep + (size_t)r * O, v->a_c + (size_t)r * A,
                 v->next_rep + (size_t)r * O, O, A);
  for (int i = 0; i < B; i++)
    vmbpo_nu_row(v->nu_in + (size_t)(N + i) * W, b->obs + (size_t)i * O, b->action + (size_t)i * A,
                 b->next_obs + (size_t)i * O, O, A);
  /* L_nu = - mean_{i,k} nu(x_i, a_i, x^_ik) + mean_i exp(nu(x_i, a_i, x'_i))   (eq. 21, means) */
  nn_mlp *nu = v->net[VMBPO_NET_NU];
  const float *out = nn_mlp_forward(nu, v->ws[VMBPO_NET_NU], v->nu_in, N + B, NN_INPUT_SHARED);
  int clamped;
  double loss = vmbpo_nu_loss(out, N, out + N, B, v->nu_max, v->d_out1, v->d_out1 + N, &clamped);
  nn_mlp_zero_grad(nu);
  nn_mlp_backward(nu, v->ws[VMBPO_NET_NU], v->d_out1, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (clamp_rate) *clamp_rate = (double)clamped / (N + B);
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: step 2 loss L_nu (eq. 21) is non-finite (%g)", v->algo_name, loss);
  return 0;
}

/* ---- step 3: the critic on model samples (eqs. 22-24) -------------------------------------------- */

static float clamp_nu(float x, float m) { return x > m ? m : (x < -m ? -m : x); }

/* a_ik ~ q_c(.|x_i) with eps [N, A]: fills obs_rep, a_c, log_qc, log_pi, xa = [x_i | a_ik]. */
static void sample_qc_actions(vmbpo_t *v, const algo_batch *b, const float *eps_action) {
  const int B = b->size, K = v->K, O = v->O, A = v->A, N = B * K;
  vmbpo_tile(v->obs_rep, b->obs, B, O, K);
  vmbpo_policy_dist(v, VMBPO_NET_QC, b->obs, B, v->mean_c, v->lstd_c);
  vmbpo_tile(v->mean_rep, v->mean_c, B, A, K);
  vmbpo_tile(v->lstd_rep, v->lstd_c, B, A, K);
  nn_tanh_gaussian_sample(v->a_c, v->log_qc, v->mean_rep, v->lstd_rep, eps_action, N, A);
  nn_tanh_gaussian_pre_u(v->u_c, v->mean_rep, v->lstd_rep, eps_action, (size_t)N * A);
  vmbpo_policy_dist(v, VMBPO_NET_PI, b->obs, B, v->mean_p, v->lstd_p);
  vmbpo_tile(v->mean_rep2, v->mean_p, B, A, K);
  vmbpo_tile(v->lstd_rep2, v->lstd_p, B, A, K);
  nn_tanh_gaussian_log_prob_u(v->log_pi, v->u_c, v->mean_rep2, v->lstd_rep2, N, A);
  vmbpo_concat2(v->xa, v->obs_rep, O, v->a_c, A, N);
}

void vmbpo_critic_sample(vmbpo_t *v, const algo_batch *b, const float *eps_action, const float *eps_model,
                         const int *member) {
  const int B = b->size, K = v->K, O = v->O, A = v->A, N = B * K, W = 2 * O + A;
  sample_qc_actions(v, b, eps_action);
  /* x^_ik ~ q_d(.|x_i, a_ik); r^ from the task (or the learned mean), d^ from the task */
  vmbpo_model_sample(v, v->obs_rep, N, eps_model, member);
  if (!v->learn_reward) v->fns.reward_fn(v->fns.task, v->obs_rep, v->a_c, v->next_rep, N, v->r_model);
  vmbpo_model_terminated(v, N);
  for (int r = 0; r < N; r++)
    vmbpo_nu_row(v->nu_in + (size_t)r * W, v->obs_rep + (size_t)r * O, v->a_c + (size_t)r * A,
                 v->next_rep + (size_t)r * O, O, A);
  /* real rows (real_ratio > 0): (x_i, a_i) with their own x'_i, r_i and d_i, after the N model rows */
  const int R = v->cfg.real_ratio > 0 ? B : 0;
  v->real_rows = R;
  for (int i = 0; i < R; i++) {
    vmbpo_nu_row(v->nu_in + (size_t)(N + i) * W, b->obs + (size_t)i * O, b->action + (size_t)i * A,
                 b->next_obs + (size_t)i * O, O, A);
    memcpy(v->next_rep + (size_t)(N + i) * O, b->next_obs + (size_t)i * O, (size_t)O * sizeof(float));
  }
  if (R) vmbpo_concat2(v->xa + (size_t)N * (O + A), b->obs, O, b->action, A, R);
  const float *nu = nn_mlp_forward(v->net[VMBPO_NET_NU], v->ws[VMBPO_NET_NU], v->nu_in, N + R, NN_INPUT_SHARED);
  const float *vt = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], v->next_rep, N + R,
                                   NN_INPUT_SHARED);
  /* y_Q = eta r^ + gamma ((1 - d^) V'(x^) - nu(x, a, x^))   (eq. 23; nu kept at terminal x^) */
  for (int r = 0; r < N + R; r++) {
    const float rew = r < N ? v->r_model[r] : b->reward[r - N], done = r < N ? v->d_model[r] : b->terminated[r - N];
    v->nu_s[r] = clamp_nu(nu[r], v->nu_max);
    v->vt_s[r] = vt[r];
    v->y_q[r] = v->eta * rew + v->gamma * ((1.0f - done) * vt[r] - v->nu_s[r]);
  }
}

int vmbpo_q_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss_out, ember_err *err) {
  const int N = b->size * v->K;
  nn_mlp *q = v->net[VMBPO_NET_Q];
  /* L_Q = mean_{i,k,m} (Q_m(x_i, a_ik) - sg(y_Q))^2   (eq. 23; every critic m regresses to the same y),
   * with real rows: (1 - rho) that + rho mean_{i,m} (Q_m(x_i, a_i) - sg(y_i))^2 */
  const int C = v->C, R = v->real_rows;
  const double rho = R ? v->cfg.real_ratio : 0.0;
  const float *qv = nn_mlp_forward(q, v->ws[VMBPO_NET_Q], v->xa, N + R, NN_INPUT_SHARED);
  double loss = 0;
  for (int r = 0; r < N + R; r++) {
    const double wr = r < N ? (1.0 - rho) / ((double)N * C) : rho / ((double)R * C);
    for (int m = 0; m < C; m++) {
      float d = qv[(size_t)r * C + m] - v->y_q[r];
      loss += wr * d * d;
      v->d_q[(size_t)r * C + m] = (float)(2.0 * wr * d);
    }
  }
  nn_mlp_zero_grad(q);
  nn_mlp_backward(q, v->ws[VMBPO_NET_Q], v->d_q, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: critic loss L_Q (eq. 23) is non-finite (%g)", v->algo_name, loss);
  return 0;
}

int vmbpo_v_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss_out, ember_err *err) {
  const int B = b->size, N = B * v->K;
  /* y_V = Q(x_i, a_ik) - log q_c(a_ik|x_i) + log pi(a_ik|x_i), with the current (updated) Q   (eq. 24) */
  const float *qv = vmbpo_critic_min(nn_mlp_forward(v->net[VMBPO_NET_Q], v->ws[VMBPO_NET_Q], v->xa, N, NN_INPUT_SHARED),
                                     N, v->C, v->q_min, v->q_arg);
  for (int r = 0; r < N; r++) v->y_v[r] = qv[r] - v->log_qc[r] + v->log_pi[r];
  /* L_V = mean_{i,k} (V(x_i) - sg(y_V))^2;  dL/dV(x_i) = 2 sum_k (V(x_i) - y_ik) / N */
  nn_mlp *vn = v->net[VMBPO_NET_V];
  const float *vv = nn_mlp_forward(vn, v->ws[VMBPO_NET_V], b->obs, B, NN_INPUT_SHARED);
  double loss = 0;
  memset(v->d_v, 0, (size_t)B * sizeof(float));
  for (int r = 0; r < N; r++) {
    int i = r % B;
    float d = vv[i] - v->y_v[r];
    loss += (double)d * d;
    v->d_v[i] += 2.0f * d / (float)N;
  }
  loss /= N;
  nn_mlp_zero_grad(vn);
  nn_mlp_backward(vn, v->ws[VMBPO_NET_V], v->d_v, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: value loss L_V (eq. 24) is non-finite (%g)", v->algo_name, loss);
  return 0;
}

/* ---- step 4: q_c by the reparameterised reverse KL (eq. 25) -------------------------------------- */

int vmbpo_qc_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps, double *loss_out, ember_err *err) {
  const int B = b->size, O = v->O, A = v->A;
  const size_t BA = (size_t)B * A;
  nn_mlp *qc = v->net[VMBPO_NET_QC], *q = v->net[VMBPO_NET_Q];
  /* a_i = tanh(mu_c(x_i) + std_c(x_i) eps_i); log q_c(a_i|x_i) with the squash term */
  const float *qc_out = vmbpo_policy_dist(v, VMBPO_NET_QC, b->obs, B, v->mean_c, v->lstd_c);
  nn_tanh_gaussian_sample(v->a_c, v->log_qc, v->mean_c, v->lstd_c, eps, B, A);
  nn_tanh_gaussian_pre_u(v->u_c, v->mean_c, v->lstd_c, eps, BA);
  vmbpo_policy_dist(v, VMBPO_NET_PI, b->obs, B, v->mean_p, v->lstd_p);
  nn_tanh_gaussian_log_prob_u(v->log_pi, v->u_c, v->mean_p, v->lstd_p, B, A);
  vmbpo_concat2(v->xa, b->obs, O, v->a_c, A, B);
  const int C = v->C;
  const float *qv = vmbpo_critic_min(nn_mlp_forward(q, v->ws[VMBPO_NET_Q], v->xa, B, NN_INPUT_SHARED), B, C,
                                     v->q_min, v->q_arg);
  /* L_c = mean_i [ log q_c(a_i|x_i) - Q(x_i, a_i) - log pi(a_i|x_i) ]   (eq. 25; Q = min over the critics) */
  double loss = 0;
  memset(v->d_q, 0, (size_t)B * C * sizeof(float));
  for (int i = 0; i < B; i++) {
    loss += (double)v->log_qc[i] - qv[i] - v->log_pi[i];
    v->d_q[(size_t)i * C + v->q_arg[i]] = -1.0f / (float)B; /* dL/dQ, to the row's smallest critic */
    v->d_out1[i] = -1.0f / (float)B;                         /* dL/dlog pi */
    v->d_logp[i] = 1.0f / (float)B;                          /* dL/dlog q_c */
  }
  loss /= B;
  /* Through the action: dL/da from -Q (Q's input gradient, Q's parameters untouched) ... */
  memset(v->d_action, 0, BA * sizeof(float));
  nn_mlp_backward_input_cols(q, v->ws[VMBPO_NET_Q], v->d_q, NN_PARAM_GRADS_SKIP, v->d_action, O, A);
  memset(v->d_mean, 0, BA * sizeof(float));
  memset(v->d_lstd, 0, BA * sizeof(float));
  /* ... + pen mean_i |mu_i|^2: with pi = q_c nothing else in eq. 25 opposes a mean that runs into
   * tanh's flat tails, where dQ/da no longer reaches it (docs/algorithms.md) ... */
  const double pen = v->cfg.qc_mean_penalty;
  if (pen > 0) {
    double sq = 0;
    for (size_t j = 0; j < BA; j++) {
      sq += (double)v->mean_c[j] * v->mean_c[j];
      v->d_mean[j] += (float)(2.0 * pen * v->mean_c[j] / B);
    }
    loss += pen * sq / B;
  }
  /* ... and from log q_c, both arguments (the sample path and the density's own parameters) ... */
  nn_tanh_gaussian_sample_backward(v->d_mean, v->d_lstd, v->d_action, v->d_logp, v->mean_c, v->lstd_c, eps, B, A);
  /* ... and from -log pi(a): pi fixed, the gradient reaches q_c through u = mu_c + std_c eps only
   * (dL/dlog pi = -1/B in d_out1). Its squash term cancels log q_c's. */
  memset(v->g_u, 0, BA * sizeof(float));
  nn_tanh_gaussian_log_prob_u_backward(NULL, NULL, v->g_u, v->d_out1, v->u_c, v->mean_p, v->lstd_p, B, A);
  nn_gaussian_sample_backward(v->d_mean, v->d_lstd, v->g_u, v->lstd_c, eps, B, A);
  memset(v->d_head_out, 0, 2 * BA * sizeof(float));
  nn_policy_head_backward(v->d_head_out, v->d_mean, v->d_lstd, qc_out, B, A, v->lo, v->hi);
  nn_mlp_zero_grad(qc);
  nn_mlp_backward(qc, v->ws[VMBPO_NET_QC], v->d_head_out, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: step 4 loss L_c of q_c (eq. 25) is non-finite (%g)",
                      v->algo_name, loss);
  return 0;
}

/* ---- VMBPO-MFE's critic: exponential TD on real transitions ------------------------------------- */

double vmbpo_mfe_coefficient(float v_next, float q, float reward, float terminated, float eta, float gamma, float tau,
                             float clamp, double *coef, int *was_clamped) {
  double delta = (1.0 - terminated) * v_next - ((double)q - (double)eta * reward) / gamma;
  double z = tau * delta;
  int c = z > clamp;
  if (c) z = clamp;
  double e = exp(z);
  *coef = gamma * (1.0 - e) / tau;
  if (was_clamped) *was_clamped = c;
  return e;
}

void vmbpo_mfe_sample(vmbpo_t *v, const algo_batch *b, const float *eps_action) { sample_qc_actions(v, b, eps_action); }

int vmbpo_mfe_q_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss_out, double *exp_td_mean, double *clamp_rate,
                          ember_err *err) {
  const int B = b->size, O = v->O, A = v->A;
  nn_mlp *q = v->net[VMBPO_NET_Q];
  const float *vt = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], b->next_obs, B,
                                   NN_INPUT_SHARED);
  vmbpo_concat2(v->xa, b->obs, O, b->action, A, B);
  const float *qv = nn_mlp_forward(q, v->ws[VMBPO_NET_Q], v->xa, B, NN_INPUT_SHARED);
  /* L_Q^MFE = mean_i sg(gamma (1 - exp(tau delta_i)) / tau) Q(x_i, a_i),
   * delta_i = (1 - d_i) V'(x'_i) - (Q(x_i, a_i) - eta r_i) / gamma: its gradient step is the
   * exponential TD update of eq. (9) (docs/algorithms.md, VMBPO-MFE); tau enters in the exponent. */
  double loss = 0, e_sum = 0;
  int clamped = 0;
  for (int i = 0; i < B; i++) {
    double coef;
    int c;
    e_sum += vmbpo_mfe_coefficient(vt[i], qv[i], b->reward[i], b->terminated[i], v->eta, v->gamma,
                                   (float)v->cfg.mfe_tau, (float)v->cfg.mfe_clamp, &coef, &c);
    clamped += c;
    loss += coef * qv[i];
    v->d_out1[i] = (float)(coef / B);
  }
  loss /= B;
  nn_mlp_zero_grad(q);
  nn_mlp_backward(q, v->ws[VMBPO_NET_Q], v->d_out1, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (exp_td_mean) *exp_td_mean = e_sum / B;
  if (clamp_rate) *clamp_rate = (double)clamped / B;
  if (!isfinite(loss) || !isfinite(e_sum))
    return ember_fail(err, EMBER_ENONFINITE, "%s: exponential-TD critic loss (eq. 9) is non-finite (%g)",
                      v->algo_name, loss);
  return 0;
}

/* ---- the update ---------------------------------------------------------------------------------- */

/* Steps 1-4 once (VMBPO). */
static int vmbpo_round(vmbpo_t *v, const algo_batch *b, algo_stats *st, ember_err *err) {
  const int B = b->size, N = B * v->K;
  double l1, ess, wmax, l2, crate, lq, lv, lc;
  int rc;
  if ((rc = vmbpo_model_fit(v, b, &l1, &ess, &wmax, err)) != 0) return rc;

  vmbpo_draw_model_noise(v, N);
  if ((rc = vmbpo_nu_loss_grad(v, b, v->eps_model, v->member, &l2, &crate, err)) != 0) return rc;
  if ((rc = vmbpo_adam(v, v->opt_nu, v->net[VMBPO_NET_NU]->params, v->net[VMBPO_NET_NU]->grads, "nu", err)) != 0)
    return rc;

  rng_normal_fill(&v->rng, v->eps_a, N * v->A);
  vmbpo_draw_model_noise(v, N);
  vmbpo_critic_sample(v, b, v->eps_a, v->eps_model, v->member);
  if ((rc = vmbpo_q_loss_grad(v, b, &lq, err)) != 0) return rc;
  const double q_mean = vmbpo_mean_of(v->ws[VMBPO_NET_Q]->activations[v->net[VMBPO_NET_Q]->layer_count - 1], N * v->C);
  if ((rc = vmbpo_adam(v, v->opt_q, v->net[VMBPO_NET_Q]->params, v->net[VMBPO_NET_Q]->grads, "Q", err)) != 0) return rc;
  if ((rc = vmbpo_v_loss_grad(v, b, &lv, err)) != 0) return rc;
  const double v_mean = vmbpo_mean_of(v->ws[VMBPO_NET_V]->activations[v->net[VMBPO_NET_V]->layer_count - 1], B);
  if ((rc = vmbpo_adam(v, v->opt_v, v->net[VMBPO_NET_V]->params, v->net[VMBPO_NET_V]->grads, "V", err)) != 0) return rc;
  double lq_sum = 0, ratio = 0;
  for (int r = 0; r < N; r++) ratio += (double)v->log_qc[r] - v->log_pi[r];
  lq_sum = vmbpo_mean_of(v->r_model, N);

  rng_normal_fill(&v->rng, v->eps_a, B * v->A);
  if ((rc = vmbpo_qc_loss_grad(v, b, v->eps_a, &lc, err)) != 0) return rc;
  const double entropy = -vmbpo_mean_of(v->log_qc, B);
  if ((rc = vmbpo_adam(v, v->opt_qc, v->net[VMBPO_NET_QC]->params, v->net[VMBPO_NET_QC]->grads, "q_c", err)) != 0)
    return rc;

  const int C = ST_COUNT;
  vmbpo_stat(st, ST_QD_LOSS, l1, C);
  vmbpo_stat(st, ST_WEIGHT_ESS, ess, C);
  vmbpo_stat(st, ST_WEIGHT_MAX, wmax, C);
  vmbpo_stat(st, ST_NU_LOSS, l2, C);
  vmbpo_stat(st, ST_MODEL_KL, 1.0 - l2, C);
  vmbpo_stat(st, ST_NU_CLAMP, crate, C);
  vmbpo_stat(st, ST_Q_LOSS, lq, C);
  vmbpo_stat(st, ST_Q_MEAN, q_mean, C);
  vmbpo_stat(st, ST_TARGET_MEAN, vmbpo_mean_of(v->y_q, N), C);
  vmbpo_stat(st, ST_V_LOSS, lv, C);
  vmbpo_stat(st, ST_V_MEAN, v_mean, C);
  vmbpo_stat(st, ST_QC_LOSS, lc, C);
  vmbpo_stat(st, ST_QC_ENTROPY, entropy, C);
  vmbpo_stat(st, ST_LOG_RATIO, ratio / N, C);
  vmbpo_stat(st, ST_MODEL_REWARD, lq_sum, C);
  return 0;
}

/* The model-free E-step once (VMBPO-MFE). */
static int mfe_round(vmbpo_t *v, const algo_batch *b, algo_stats *st, ember_err *err) {
  const int B = b->size, N = B * v->K;
  double lq, etd, crate, lv, lc;
  int rc;
  if ((rc = vmbpo_mfe_q_loss_grad(v, b, &lq, &etd, &crate, err)) != 0) return rc;
  const double q_mean = vmbpo_mean_of(v->ws[VMBPO_NET_Q]->activations[v->net[VMBPO_NET_Q]->layer_count - 1], B);
  if ((rc = vmbpo_adam(v, v->opt_q, v->net[VMBPO_NET_Q]->params, v->net[VMBPO_NET_Q]->grads, "Q", err)) != 0) return rc;

  rng_normal_fill(&v->rng, v->eps_a, N * v->A);
  vmbpo_mfe_sample(v, b, v->eps_a);
  if ((rc = vmbpo_v_loss_grad(v, b, &lv, err)) != 0) return rc;
  const double v_mean = vmbpo_mean_of(v->ws[VMBPO_NET_V]->activations[v->net[VMBPO_NET_V]->layer_count - 1], B);
  if ((rc = vmbpo_adam(v, v->opt_v, v->net[VMBPO_NET_V]->params, v->net[VMBPO_NET_V]->grads, "V", err)) != 0) return rc;
  double ratio = 0;
  for (int r = 0; r < N; r++) ratio += (double)v->log_qc[r] - v->log_pi[r];

  rng_normal_fill(&v->rng, v->eps_a, B * v->A);
  if ((rc = vmbpo_qc_loss_grad(v, b, v->eps_a, &lc, err)) != 0) return rc;
  const double entropy = -vmbpo_mean_of(v->log_qc, B);
  if ((rc = vmbpo_adam(v, v->opt_qc, v->net[VMBPO_NET_QC]->params, v->net[VMBPO_NET_QC]->grads, "q_c", err)) != 0)
    return rc;

  /* q_d "computed only at the end" (section 4.2): optionally fitted alongside, never used here. */
  if (v->cfg.mfe_model_every > 0 && (v->updates + 1) % (uint64_t)v->cfg.mfe_model_every == 0) {
    double l1, ess, wmax;
    if ((rc = vmbpo_model_fit(v, b, &l1, &ess, &wmax, err)) != 0) return rc;
    vmbpo_stat(st, MS_QD_LOSS, l1, MS_COUNT);
    vmbpo_stat(st, MS_WEIGHT_ESS, ess, MS_COUNT);
  }
  const int C = MS_COUNT;
  vmbpo_stat(st, MS_Q_LOSS, lq, C);
  vmbpo_stat(st, MS_EXP_TD, etd, C);
  vmbpo_stat(st, MS_TD_CLAMP, crate, C);
  vmbpo_stat(st, MS_Q_MEAN, q_mean, C);
  vmbpo_stat(st, MS_V_LOSS, lv, C);
  vmbpo_stat(st, MS_V_MEAN, v_mean, C);
  vmbpo_stat(st, MS_QC_LOSS, lc, C);
  vmbpo_stat(st, MS_QC_ENTROPY, entropy, C);
  vmbpo_stat(st, MS_LOG_RATIO, ratio / N, C);
  return 0;
}

int vmbpo_e_step(void *self, const algo_batch *b, algo_stats *st, ember_err *err) {
  vmbpo_t *v = self;
  int rc = vmbpo_check_batch(v, b, err);
  if (rc) return rc;
  vmbpo_snapshot_take(v);
  for (int it = 0; it < (int)v->cfg.estep_iters; it++) {
    rc = v->mfe ? mfe_round(v, b, st, err) : vmbpo_round(v, b, st, err);
    if (rc) {
      vmbpo_snapshot_restore(v); /* a failed update leaves no trace (algo.h) */
      return rc;
    }
    /* V' <- (1 - tau_p) V' + tau_p V,  Q' <- (1 - tau_p) Q' + tau_p Q */
    nn_mlp_polyak_update(v->net[VMBPO_NET_V_TARGET], v->net[VMBPO_NET_V], (float)v->cfg.polyak);
    nn_mlp_polyak_update(v->net[VMBPO_NET_Q_TARGET], v->net[VMBPO_NET_Q], (float)v->cfg.polyak);
  }
  v->updates++;
  return 0;
}

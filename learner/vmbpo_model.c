/* vmbpo_model.c: q_d, VMBPO's variational dynamics: drawing model next states from it, their
 * termination, and step 1 of the E-step, which fits q_d by weighted maximum likelihood (eqs. 17-19;
 * docs/algorithms.md, "VMBPO", step 1). vmbpo_internal.h says what the other files own.
 *
 * Termination of model rows: vmbpo_model_terminated is the one place that reads
 * algo_task_fns.terminated_fn. Its d^ masks V'(x^) in step 1's per-(x, a) normaliser (below) and
 * in step 3's target (vmbpo_estep.c); without a function every model row bootstraps (d^ = 0).
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmbpo_internal.h"

/* ---- drawing from q_d ------------------------------------------------------------------------------ */

void vmbpo_model_sample(vmbpo_t *v, const float *obs_rows, int rows, const float *eps, const int *member) {
  const int O = v->O, Dm = v->Dm, E = v->E;
  const float *raw = nn_mlp_forward(v->net[VMBPO_NET_QD], v->ws[VMBPO_NET_QD], v->xa, rows, NN_INPUT_SHARED);
  nn_gauss_head_sample(v->head, v->model_draw, raw, eps, rows);
  for (int r = 0; r < rows; r++) {
    int e = member ? member[r] : 0;
    const float *s = v->model_draw + ((size_t)r * E + e) * Dm;
    for (int j = 0; j < O; j++) v->next_rep[(size_t)r * O + j] = obs_rows[(size_t)r * O + j] + s[j];
    /* The learned reward enters through its mean (docs/algorithms.md, reading 5). */
    if (v->learn_reward) v->r_model[r] = raw[((size_t)r * E + e) * 2 * Dm + O];
  }
}

void vmbpo_model_terminated(vmbpo_t *v, int rows) {
  if (v->fns.terminated_fn)
    v->fns.terminated_fn(v->fns.task, v->next_rep, rows, v->d_model);
  else
    memset(v->d_model, 0, (size_t)rows * sizeof(float));
}

void vmbpo_draw_model_noise(vmbpo_t *v, int rows) {
  rng_normal_fill(&v->rng, v->eps_model, rows * v->E * v->Dm);
  for (int r = 0; r < rows; r++) v->member[r] = v->E > 1 ? (int)rng_below(&v->rng, (uint64_t)v->E) : 0;
}

/* ---- step 1's weights (pure: no network) ---------------------------------------------------------- */

void vmbpo_step1_weights(const float *v_next, const float *q, const float *reward, const float *terminated, int n,
                         float eta, float gamma, float temperature, float *delta_out, float *w_out,
                         double *ess_fraction, double *w_max) {
  double dmax = -INFINITY;
  for (int i = 0; i < n; i++) {
    /* delta_i = (1 - d_i) V'(x'_i) - (Q'(x_i,a_i) - eta r_i) / gamma   (eq. 19, per-step reading) */
    double d = (1.0 - terminated[i]) * v_next[i] - ((double)q[i] - (double)eta * reward[i]) / gamma;
    if (delta_out) delta_out[i] = (float)d;
    d *= temperature;
    w_out[i] = (float)d;
    if (d > dmax) dmax = d;
  }
  double sum = 0;
  for (int i = 0; i < n; i++) sum += exp((double)w_out[i] - dmax);
  double sq = 0, wm = 0;
  for (int i = 0; i < n; i++) {
    double wi = n * exp((double)w_out[i] - dmax) / sum; /* w = B softmax(delta) */
    w_out[i] = (float)wi;
    sq += wi * wi;
    if (wi > wm) wm = wi;
  }
  if (ess_fraction) *ess_fraction = n / sq; /* ESS / B = (sum w)^2 / (B sum w^2) with sum w = B */
  if (w_max) *w_max = wm;
}

void vmbpo_step1_weights_model(const float *v_next, const float *terminated, const float *v_model,
                               const float *d_model, int n, int K, float temperature, float w_clip, float *delta_out,
                               float *w_out, double *ess_fraction, double *w_max) {
  const double log_clip = log((double)w_clip);
  double sum = 0, sq = 0, wm = 0;
  for (int i = 0; i < n; i++) {
    /* log Z_i = log mean_k exp(t (1 - d^_ik) V'(x^_ik)), x^_ik ~ q_d(.|x_i, a_i): eq. (9)'s
     * (Q'(x,a) - eta r) / gamma = log E_p[exp V'(x')] estimated with the model's samples */
    double zmax = -INFINITY;
    for (int k = 0; k < K; k++) {
      double z = (double)temperature * (1.0 - d_model[(size_t)k * n + i]) * v_model[(size_t)k * n + i];
      if (z > zmax) zmax = z;
    }
    double acc = 0;
    for (int k = 0; k < K; k++)
      acc += exp((double)temperature * (1.0 - d_model[(size_t)k * n + i]) * v_model[(size_t)k * n + i] - zmax);
    const double log_z = zmax + log(acc / K);
    const double d = (double)temperature * (1.0 - terminated[i]) * v_next[i] - log_z;
    if (delta_out) delta_out[i] = (float)d;
    const double wi = exp(d < log_clip ? d : log_clip);
    w_out[i] = (float)wi;
    sum += wi;
    sq += wi * wi;
    if (wi > wm) wm = wi;
  }
  if (ess_fraction) *ess_fraction = sq > 0 ? sum * sum / (n * sq) : 0; /* every weight underflowed: ESS 0 */
  if (w_max) *w_max = wm;
}

/* ---- step 1: q_d by weighted maximum likelihood (eqs. 17-19) ------------------------------------- */

int vmbpo_qd_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_model, const int *member, double *loss_out,
                       double *ess, double *w_max, ember_err *err) {
  const int B = b->size, O = v->O, A = v->A, Dm = v->Dm, E = v->E;
  nn_mlp *qd = v->net[VMBPO_NET_QD];
  const float temp = (float)v->cfg.qd_weight_temperature;
  /* Weights from the targets (sg). V'(x'_i) first, kept in y_v (free scratch here). */
  const float *vt = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], b->next_obs, B,
                                   NN_INPUT_SHARED);
  memcpy(v->y_v, vt, (size_t)B * sizeof(float));
  if (v->qd_norm_model) {
    /* w_i = exp(t (1 - d_i) V'(x'_i) - log mean_k exp(t (1 - d^_ik) V'(x^_ik))), x^_ik ~ q_d(.|x_i, a_i)
     * (eq. 19 with its per-(x, a) normaliser from eq. 9 estimated by K model samples), clipped. */
    const int K = v->K, N = B * K;
    vmbpo_tile(v->obs_rep, b->obs, B, O, K);
    vmbpo_tile(v->a_c, b->action, B, A, K);
    vmbpo_concat2(v->xa, v->obs_rep, O, v->a_c, A, N);
    vmbpo_model_sample(v, v->obs_rep, N, eps_model, member);
    vmbpo_model_terminated(v, N);
    const float *vm = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], v->next_rep, N,
                                     NN_INPUT_SHARED);
    vmbpo_step1_weights_model(v->y_v, b->terminated, vm, v->d_model, B, K, temp, (float)v->cfg.qd_weight_max,
                              v->delta, v->w, ess, w_max);
    vmbpo_concat2(v->xa, b->obs, O, b->action, A, B);
  } else {
    /* w = B softmax(t ((1 - d) V'(x') - (Q'(x,a) - eta r) / gamma)) over the batch */
    vmbpo_concat2(v->xa, b->obs, O, b->action, A, B);
    const float *q_out =
        nn_mlp_forward(v->net[VMBPO_NET_Q_TARGET], v->ws[VMBPO_NET_Q_TARGET], v->xa, B, NN_INPUT_SHARED);
    const float *qt = vmbpo_critic_min(q_out, B, v->C, v->q_min, v->q_arg);
    vmbpo_step1_weights(v->y_v, qt, b->reward, b->terminated, B, v->eta, v->gamma, temp, v->delta, v->w, ess,
                        w_max);
  }

  /* L_d = - mean_i w_i log q_d([x'_i - x_i | r_i] | x_i, a_i) + penalty * sum(max_logvar - min_logvar)
   * (eq. 19 as a weighted NLL; every ensemble member gets the same weights). The head's NLL is a
   * batch mean, so each row is taken alone (batch 1) and scaled by w_i / B; the bound gradients of
   * that row go to head_grad first (the head's grads pointer is pointed there for the call). */
  for (int i = 0; i < B; i++) {
    for (int j = 0; j < O; j++) v->target_d[(size_t)i * Dm + j] = b->next_obs[(size_t)i * O + j] - b->obs[(size_t)i * O + j];
    if (v->learn_reward) v->target_d[(size_t)i * Dm + O] = b->reward[i];
  }
  const float *raw = nn_mlp_forward(qd, v->ws[VMBPO_NET_QD], v->xa, B, NN_INPUT_SHARED);
  const size_t row_out = (size_t)E * 2 * Dm;
  memset(v->d_raw, 0, (size_t)B * row_out * sizeof(float));
  nn_gauss_head_zero_grad(v->head);
  float *head_grads = v->head->grads;
  double loss = 0;
  for (int i = 0; i < B; i++) {
    memset(v->head_grad, 0, 2 * (size_t)Dm * sizeof(float));
    v->head->grads = v->head_grad;
    double nll = nn_gauss_head_nll(v->head, v->d_raw + i * row_out, raw + i * row_out, v->target_d + (size_t)i * Dm,
                                   NN_INPUT_SHARED, 1, 0.0f);
    v->head->grads = head_grads;
    const float s = v->w[i] / (float)B;
    loss += (double)v->w[i] * nll;
    for (size_t j = 0; j < row_out; j++) v->d_raw[i * row_out + j] *= s;
    for (int j = 0; j < 2 * Dm; j++) head_grads[j] += s * v->head_grad[j];
  }
  loss /= B;
  const float pen = (float)v->cfg.model_bound_penalty;
  for (int d = 0; d < Dm; d++) {
    loss += pen * ((double)v->head->params[d] - v->head->params[Dm + d]);
    head_grads[d] += pen;
    head_grads[Dm + d] -= pen;
  }
  nn_mlp_zero_grad(qd);
  nn_mlp_backward(qd, v->ws[VMBPO_NET_QD], v->d_raw, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: step 1 loss L_d of q_d (eq. 19) is non-finite (%g)", v->algo_name,
                      loss);
  return 0;
}

int vmbpo_model_fit(vmbpo_t *v, const algo_batch *b, double *loss, double *ess, double *wmax, ember_err *err) {
  int rc;
  if (v->qd_norm_model) vmbpo_draw_model_noise(v, b->size * v->K);
  if ((rc = vmbpo_qd_loss_grad(v, b, v->eps_model, v->member, loss, ess, wmax, err)) != 0) return rc;
  if ((rc = vmbpo_adam(v, v->opt_qd, v->net[VMBPO_NET_QD]->params, v->net[VMBPO_NET_QD]->grads, "q_d", err)) != 0)
    return rc;
  return vmbpo_adam(v, v->opt_head, v->head->params, v->head->grads, "q_d bounds", err);
}

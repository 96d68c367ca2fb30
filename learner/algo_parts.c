/* algo_parts.c: the pieces SAC and VIREL share (algo_parts.h). */
#include "algo_parts.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn_dist.h"

bool algo_all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return false;
  return true;
}

int algo_check_batch(const char *algo, const algo_batch *b, int obs_dim, int act_dim, int max_batch,
                     ember_err *err) {
  if (!b || b->size < 1 || b->size > max_batch)
    return ember_fail(err, EMBER_ESHAPE, "%s: batch of %d rows (expected 1..%d)", algo, b ? b->size : 0, max_batch);
  if (b->obs_dim != obs_dim || b->act_dim != act_dim)
    return ember_fail(err, EMBER_ESHAPE, "%s: batch has obs_dim %d act_dim %d, the networks expect %d and %d", algo,
                      b->obs_dim, b->act_dim, obs_dim, act_dim);
  if (!b->obs || !b->action || !b->reward || !b->next_obs || !b->terminated)
    return ember_fail(err, EMBER_EINVAL, "%s: batch is missing a column", algo);
  const size_t n = (size_t)b->size;
  struct {
    const char *name;
    const float *x;
    size_t len;
  } cols[] = {{"obs", b->obs, n * obs_dim},      {"action", b->action, n * act_dim},
              {"reward", b->reward, n},          {"next_obs", b->next_obs, n * obs_dim},
              {"terminated", b->terminated, n},  {"weights", b->weights, b->weights ? n : 0}};
  for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
    for (size_t i = 0; i < cols[c].len; i++)
      if (!isfinite(cols[c].x[i]))
        return ember_fail(err, EMBER_ENONFINITE, "%s: batch column %s has a non-finite value at index %zu", algo,
                          cols[c].name, i);
  return 0;
}

void algo_concat_obs_action(float *xa, const float *obs, const float *act, int batch, int O, int A) {
  for (int b = 0; b < batch; b++) {
    memcpy(xa + (size_t)b * (O + A), obs + (size_t)b * O, (size_t)O * sizeof(float));
    memcpy(xa + (size_t)b * (O + A) + O, act + (size_t)b * A, (size_t)A * sizeof(float));
  }
}

nn_adam *algo_adam_new(size_t count, double lr, double beta1, double beta2, double epsilon, ember_err *err) {
  nn_adam_config ac = nn_adam_default_config((float)lr);
  ac.beta1 = (float)beta1;
  ac.beta2 = (float)beta2;
  ac.epsilon = (float)epsilon;
  return nn_adam_new(&ac, count, err);
}

/* ---- the tanh-Gaussian policy -------------------------------------------------------------------- */

int algo_policy_init(algo_policy *p, nn_mlp *net, int act_dim, int max_batch, float log_std_lo, float log_std_hi,
                     ember_err *err) {
  memset(p, 0, sizeof *p);
  p->net = net;
  p->act_dim = act_dim;
  p->max_batch = max_batch;
  p->log_std_lo = log_std_lo;
  p->log_std_hi = log_std_hi;
  const size_t BA = (size_t)max_batch * act_dim;
  /* mean, log_std, action, d_mean, d_log_std: BA each; log_prob: B; d_out: 2 BA */
  if (!(p->ws = nn_mlp_ws_new(net, max_batch, err))) goto fail;
  if (!(p->scratch = calloc(7 * BA + (size_t)max_batch, sizeof(float)))) {
    ember_fail(err, EMBER_ENOMEM, "out of memory for a policy's scratch");
    goto fail;
  }
  float *x = p->scratch;
  p->mean = x, x += BA;
  p->log_std = x, x += BA;
  p->action = x, x += BA;
  p->d_mean = x, x += BA;
  p->d_log_std = x, x += BA;
  p->d_out = x, x += 2 * BA;
  p->log_prob = x;
  return 0;
fail:
  algo_policy_free(p);
  return err ? err->code : EMBER_ENOMEM;
}

void algo_policy_free(algo_policy *p) {
  nn_mlp_ws_destroy(&p->ws);
  nn_mlp_destroy(&p->net);
  free(p->scratch);
  p->scratch = NULL;
}

const float *algo_policy_sample(algo_policy *p, const float *obs, const float *eps, int batch) {
  const float *out = nn_mlp_forward(p->net, p->ws, obs, batch, NN_INPUT_SHARED);
  nn_policy_head_forward(p->mean, p->log_std, out, batch, p->act_dim, p->log_std_lo, p->log_std_hi);
  nn_tanh_gaussian_sample(p->action, p->log_prob, p->mean, p->log_std, eps, batch, p->act_dim);
  return out;
}

void algo_policy_backward(algo_policy *p, const float *d_action, const float *d_log_prob, const float *eps,
                          int batch) {
  const size_t BA = (size_t)batch * p->act_dim;
  const float *out = p->ws->activations[p->net->layer_count - 1];
  memset(p->d_mean, 0, BA * sizeof(float));
  memset(p->d_log_std, 0, BA * sizeof(float));
  nn_tanh_gaussian_sample_backward(p->d_mean, p->d_log_std, d_action, d_log_prob, p->mean, p->log_std, eps, batch,
                                   p->act_dim);
  memset(p->d_out, 0, 2 * BA * sizeof(float));
  nn_policy_head_backward(p->d_out, p->d_mean, p->d_log_std, out, batch, p->act_dim, p->log_std_lo, p->log_std_hi);
  nn_mlp_zero_grad(p->net);
  nn_mlp_backward(p->net, p->ws, p->d_out, NN_PARAM_GRADS_ACCUMULATE, NULL);
}

int algo_policy_act(algo_policy *p, rng_t *rng, float *eps_buf, int obs_dim, const float *obs, int n,
                    bool deterministic, float *actions, float *log_probs, const char *algo, ember_err *err) {
  const int A = p->act_dim;
  if (n < 0 || !obs || !actions) return ember_fail(err, EMBER_EINVAL, "%s act: bad arguments (n = %d)", algo, n);
  if (!algo_all_finite(obs, (size_t)n * obs_dim))
    return ember_fail(err, EMBER_ENONFINITE, "%s act: non-finite observation", algo);
  for (int start = 0; start < n; start += p->max_batch) {
    int m = n - start < p->max_batch ? n - start : p->max_batch;
    if (deterministic)
      memset(eps_buf, 0, (size_t)m * A * sizeof(float)); /* tanh(mu): the evaluation action */
    else
      rng_normal_fill(rng, eps_buf, m * A);
    algo_policy_sample(p, obs + (size_t)start * obs_dim, eps_buf, m);
    memcpy(actions + (size_t)start * A, p->action, (size_t)m * A * sizeof(float));
    if (log_probs) memcpy(log_probs + start, p->log_prob, (size_t)m * sizeof(float));
  }
  return 0;
}

/* ---- the reparameterised actor loss --------------------------------------------------------------- */

double algo_actor_loss_grad(algo_policy *p, nn_mlp *q, nn_mlp_ws *q_ws, const float *obs, int obs_dim,
                            const float *eps, int batch, float temperature, const float *baseline, float *xa,
                            float *d_q, float *d_action, float *d_log_prob, double *mean_log_prob) {
  const int B = batch, A = p->act_dim;
  algo_policy_sample(p, obs, eps, B);
  algo_concat_obs_action(xa, obs, p->action, B, obs_dim, A);
  const float *qv = nn_mlp_forward(q, q_ws, xa, B, NN_INPUT_SHARED);
  double loss = 0, lp_sum = 0;
  for (int i = 0; i < B; i++) {
    int j = qv[2 * i] <= qv[2 * i + 1] ? 0 : 1; /* the smaller twin carries the gradient */
    float qmin = qv[2 * i + j];
    loss += (double)temperature * p->log_prob[i] - qmin;
    if (baseline) loss += baseline[i];
    lp_sum += p->log_prob[i];
    d_q[2 * i + j] = -1.0f / (float)B;
    d_q[2 * i + (1 - j)] = 0.0f;
    d_log_prob[i] = temperature / (float)B;
  }
  memset(d_action, 0, (size_t)B * A * sizeof(float));
  nn_mlp_backward_input_cols(q, q_ws, d_q, NN_PARAM_GRADS_SKIP, d_action, obs_dim, A);
  algo_policy_backward(p, d_action, d_log_prob, eps, B);
  *mean_log_prob = lp_sum / B;
  return loss / B;
}

/* ---- raw state I/O -------------------------------------------------------------------------------- */

int algo_write(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }
int algo_read(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

int algo_write_adam(FILE *f, const nn_adam *a) {
  return algo_write(f, &a->step, sizeof a->step) || algo_write(f, a->m, a->count * sizeof(float)) ||
                 algo_write(f, a->v, a->count * sizeof(float))
             ? -1
             : 0;
}

int algo_read_adam(FILE *f, nn_adam *a) {
  return algo_read(f, &a->step, sizeof a->step) || algo_read(f, a->m, a->count * sizeof(float)) ||
                 algo_read(f, a->v, a->count * sizeof(float))
             ? -1
             : 0;
}

/* nn_optim.c: Adam, Polyak averaging and copies (see nn_optim.h). */
#include "nn_optim.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

nn_adam_config nn_adam_default_config(float learning_rate) {
  return (nn_adam_config){.learning_rate = learning_rate, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f};
}

static int check_config(const nn_adam_config *c, size_t count, ember_err *err) {
  if (!c) return ember_fail(err, EMBER_EINVAL, "adam: config is NULL");
  if (!(c->learning_rate > 0) || !isfinite(c->learning_rate))
    return ember_fail(err, EMBER_EINVAL, "adam: learning_rate must be finite and > 0, got %g", c->learning_rate);
  if (!(c->beta1 >= 0 && c->beta1 < 1))
    return ember_fail(err, EMBER_EINVAL, "adam: beta1 must be in [0, 1), got %g", c->beta1);
  if (!(c->beta2 >= 0 && c->beta2 < 1))
    return ember_fail(err, EMBER_EINVAL, "adam: beta2 must be in [0, 1), got %g", c->beta2);
  if (!(c->epsilon > 0) || !isfinite(c->epsilon))
    return ember_fail(err, EMBER_EINVAL, "adam: epsilon must be finite and > 0, got %g", c->epsilon);
  if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
    return ember_fail(err, EMBER_EINVAL, "adam: weight_decay must be finite and >= 0, got %g", c->weight_decay);
  if (!(c->max_grad_norm >= 0) || !isfinite(c->max_grad_norm))
    return ember_fail(err, EMBER_EINVAL, "adam: max_grad_norm must be finite and >= 0 (0 = off), got %g",
                      c->max_grad_norm);
  if (count == 0) return ember_fail(err, EMBER_EINVAL, "adam: parameter count must be > 0");
  return EMBER_OK;
}

nn_adam *nn_adam_new(const nn_adam_config *config, size_t count, ember_err *err) {
  if (check_config(config, count, err) != EMBER_OK) return NULL;
  nn_adam *opt = calloc(1, sizeof *opt);
  float *moments = opt ? calloc(2 * count, sizeof(float)) : NULL;
  if (!moments) {
    free(opt);
    ember_fail(err, EMBER_ENOMEM, "adam: out of memory for %zu parameters", count);
    return NULL;
  }
  opt->config = *config;
  opt->count = count;
  opt->m = moments;
  opt->v = moments + count;
  return opt;
}

void nn_adam_destroy(nn_adam **opt_p) {
  if (!opt_p || !*opt_p) return;
  free((*opt_p)->m); /* v shares the allocation */
  free(*opt_p);
  *opt_p = NULL;
}

void nn_adam_reset(nn_adam *opt) {
  memset(opt->m, 0, 2 * opt->count * sizeof(float));
  opt->step = 0;
}

double nn_grad_norm(const float *grads, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += (double)grads[i] * grads[i];
  return sqrt(sum);
}

int nn_adam_step(nn_adam *opt, float *params, const float *grads, double *grad_norm, ember_err *err) {
  const nn_adam_config *c = &opt->config;
  const double norm = nn_grad_norm(grads, opt->count);
  if (grad_norm) *grad_norm = norm;
  if (!isfinite(norm))
    return ember_fail(err, EMBER_ENONFINITE, "adam: gradient norm is %g; step %llu skipped, nothing changed",
                      norm, (unsigned long long)opt->step + 1);
  const double t = (double)(opt->step + 1);
  const float clip = c->max_grad_norm > 0 && norm > c->max_grad_norm ? (float)(c->max_grad_norm / (norm + 1e-6)) : 1.0f;
  const float step_size = (float)(c->learning_rate / (1.0 - pow(c->beta1, t)));
  const float inv_sqrt_bc2 = (float)(1.0 / sqrt(1.0 - pow(c->beta2, t)));
  const float decay = 1.0f - c->learning_rate * c->weight_decay;
  const float b1 = c->beta1, b2 = c->beta2, one_m_b1 = 1.0f - c->beta1, one_m_b2 = 1.0f - c->beta2;
  const float eps = c->epsilon;
  float *restrict p = params, *restrict m = opt->m, *restrict v = opt->v;
  for (size_t i = 0; i < opt->count; i++) {
    float g = grads[i] * clip;
    m[i] = b1 * m[i] + one_m_b1 * g;
    v[i] = b2 * v[i] + one_m_b2 * g * g;
    p[i] = p[i] * decay - step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
  }
  opt->step++;
  return EMBER_OK;
}

void nn_polyak_update(float *target, const float *source, size_t n, float tau) {
  assert(tau >= 0.0f && tau <= 1.0f);
  const float keep = 1.0f - tau;
  for (size_t i = 0; i < n; i++) target[i] = keep * target[i] + tau * source[i];
}

void nn_mlp_polyak_update(nn_mlp *target, const nn_mlp *source, float tau) {
  assert(nn_mlp_same_shape(target, source));
  nn_polyak_update(target->params, source->params, target->param_count, tau);
}

void nn_mlp_copy_params(nn_mlp *target, const nn_mlp *source) {
  assert(nn_mlp_same_shape(target, source));
  memcpy(target->params, source->params, target->param_count * sizeof(float));
}

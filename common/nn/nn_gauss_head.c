/* nn_gauss_head.c: Gaussian regression head with soft log-variance bounds (see nn_gauss_head.h). */
#include "nn_gauss_head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HALF_LOG_2PI 0.91893853320467274178

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

nn_gauss_head *nn_gauss_head_new(int dim, int ensemble_size, ember_err *err) {
  if (dim < 1) {
    ember_fail(err, EMBER_EINVAL, "gaussian head: dim must be >= 1, got %d", dim);
    return NULL;
  }
  if (ensemble_size < 1) {
    ember_fail(err, EMBER_EINVAL, "gaussian head: ensemble_size must be >= 1, got %d", ensemble_size);
    return NULL;
  }
  nn_gauss_head *head = calloc(1, sizeof *head);
  float *buffers = head ? calloc(4 * (size_t)dim, sizeof(float)) : NULL;
  if (!buffers) {
    free(head);
    ember_fail(err, EMBER_ENOMEM, "gaussian head: out of memory");
    return NULL;
  }
  head->dim = dim;
  head->ensemble_size = ensemble_size;
  head->param_count = 2 * (size_t)dim;
  head->params = buffers;
  head->grads = buffers + 2 * (size_t)dim;
  for (int d = 0; d < dim; d++) {
    head->params[d] = 0.5f;        /* max_logvar */
    head->params[dim + d] = -10.0f; /* min_logvar */
  }
  return head;
}

void nn_gauss_head_destroy(nn_gauss_head **head_p) {
  if (!head_p || !*head_p) return;
  free((*head_p)->params); /* grads live in the same allocation */
  free(*head_p);
  *head_p = NULL;
}

void nn_gauss_head_zero_grad(nn_gauss_head *head) { memset(head->grads, 0, head->param_count * sizeof(float)); }

/* The two soft bounds; s1, s2 are the sigmoids the backward needs. */
static double bounded_logvar(double raw, double max_lv, double min_lv, double *s1, double *s2) {
  double lv1 = max_lv - softplus(max_lv - raw);
  if (s1) *s1 = sigmoid(max_lv - raw);
  if (s2) *s2 = sigmoid(lv1 - min_lv);
  return min_lv + softplus(lv1 - min_lv);
}

void nn_gauss_head_forward(const nn_gauss_head *head, float *mean, float *logvar, const float *raw, int batch) {
  const int D = head->dim, E = head->ensemble_size;
  const float *max_lv = head->params, *min_lv = head->params + D;
  for (int b = 0; b < batch; b++)
    for (int e = 0; e < E; e++) {
      const float *r = raw + ((size_t)b * E + e) * 2 * D;
      size_t o = ((size_t)b * E + e) * D;
      for (int d = 0; d < D; d++) {
        if (mean) mean[o + d] = r[d];
        if (logvar) logvar[o + d] = (float)bounded_logvar(r[D + d], max_lv[d], min_lv[d], NULL, NULL);
      }
    }
}

double nn_gauss_head_nll(nn_gauss_head *head, float *d_raw, const float *raw, const float *target,
                         nn_input_mode target_mode, int batch, float bound_penalty) {
  const int D = head->dim, E = head->ensemble_size;
  const float *max_lv = head->params, *min_lv = head->params + D;
  float *d_max = head->grads, *d_min = head->grads + D;
  const double inv_batch = 1.0 / batch;
  double loss = 0;
  for (int b = 0; b < batch; b++)
    for (int e = 0; e < E; e++) {
      const size_t row = (size_t)b * E + e;
      const float *r = raw + row * 2 * D;
      const float *y = target_mode == NN_INPUT_PER_MEMBER ? target + row * D : target + (size_t)b * D;
      for (int d = 0; d < D; d++) {
        double s1, s2;
        double lv = bounded_logvar(r[D + d], max_lv[d], min_lv[d], &s1, &s2);
        double err = (double)y[d] - r[d], inv_var = exp(-lv);
        loss += 0.5 * (err * err * inv_var + lv) + HALF_LOG_2PI;
        /* dloss/dlv = (1 - err^2 / var) / 2; dlv/draw = s2 s1, dlv/dmax = s2 (1 - s1), dlv/dmin = 1 - s2 */
        double d_lv = 0.5 * (1.0 - err * err * inv_var) * inv_batch;
        if (d_raw) {
          float *dr = d_raw + row * 2 * D;
          dr[d] += (float)(-err * inv_var * inv_batch);
          dr[D + d] += (float)(d_lv * s2 * s1);
        }
        d_max[d] += (float)(d_lv * s2 * (1.0 - s1));
        d_min[d] += (float)(d_lv * (1.0 - s2));
      }
    }
  double penalty = 0;
  for (int d = 0; d < D; d++) {
    penalty += (double)max_lv[d] - min_lv[d];
    d_max[d] += bound_penalty;
    d_min[d] -= bound_penalty;
  }
  return loss * inv_batch + bound_penalty * penalty;
}

void nn_gauss_head_sample(const nn_gauss_head *head, float *out, const float *raw, const float *eps, int batch) {
  const int D = head->dim, E = head->ensemble_size;
  const float *max_lv = head->params, *min_lv = head->params + D;
  for (int b = 0; b < batch; b++)
    for (int e = 0; e < E; e++) {
      const size_t row = (size_t)b * E + e;
      const float *r = raw + row * 2 * D;
      for (int d = 0; d < D; d++) {
        double lv = bounded_logvar(r[D + d], max_lv[d], min_lv[d], NULL, NULL);
        out[row * D + d] = (float)(r[d] + exp(0.5 * lv) * eps[row * D + d]);
      }
    }
}

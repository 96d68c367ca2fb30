/* nn_dist.c: Gaussian and tanh-Gaussian distributions, forward and backward (see nn_dist.h). */
#include "nn_dist.h"

#include <math.h>

#define HALF_LOG_2PI 0.91893853320467274178 /* log(2 pi) / 2 */
#define LOG_2 0.69314718055994530942
#define ACTION_CLAMP (1.0 - 1e-6)

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

double nn_log1m_tanh_sq(double u) { return 2.0 * (LOG_2 - u - softplus(-2.0 * u)); }

/* ---- bounds ------------------------------------------------------------------------------ */

void nn_logstd_bound_forward(float *log_std, const float *raw, size_t n, float lo, float hi) {
  const double half_range = 0.5 * ((double)hi - lo);
  for (size_t i = 0; i < n; i++) log_std[i] = (float)(lo + half_range * (tanh((double)raw[i]) + 1.0));
}

void nn_logstd_bound_backward(float *d_raw, const float *d_log_std, const float *raw, size_t n, float lo,
                              float hi) {
  const double half_range = 0.5 * ((double)hi - lo);
  for (size_t i = 0; i < n; i++) {
    double t = tanh((double)raw[i]);
    d_raw[i] += (float)(d_log_std[i] * half_range * (1.0 - t * t));
  }
}

void nn_policy_head_forward(float *mean, float *log_std, const float *out, int batch, int dim, float lo,
                            float hi) {
  for (int b = 0; b < batch; b++) {
    const float *row = out + (size_t)b * 2 * dim;
    for (int j = 0; j < dim; j++) mean[(size_t)b * dim + j] = row[j];
    nn_logstd_bound_forward(log_std + (size_t)b * dim, row + dim, (size_t)dim, lo, hi);
  }
}

void nn_policy_head_backward(float *d_out, const float *d_mean, const float *d_log_std, const float *out,
                             int batch, int dim, float lo, float hi) {
  for (int b = 0; b < batch; b++) {
    float *d_row = d_out + (size_t)b * 2 * dim;
    if (d_mean)
      for (int j = 0; j < dim; j++) d_row[j] += d_mean[(size_t)b * dim + j];
    if (d_log_std)
      nn_logstd_bound_backward(d_row + dim, d_log_std + (size_t)b * dim, out + (size_t)b * 2 * dim + dim,
                               (size_t)dim, lo, hi);
  }
}

/* ---- Gaussian ---------------------------------------------------------------------------- */

void nn_gaussian_sample(float *x, const float *mean, const float *log_std, const float *eps, int batch,
                        int dim) {
  const size_t n = (size_t)batch * dim;
  for (size_t i = 0; i < n; i++) x[i] = (float)(mean[i] + exp((double)log_std[i]) * eps[i]);
}

void nn_gaussian_sample_backward(float *d_mean, float *d_log_std, const float *d_x, const float *log_std,
                                 const float *eps, int batch, int dim) {
  const size_t n = (size_t)batch * dim;
  for (size_t i = 0; i < n; i++) {
    if (d_mean) d_mean[i] += d_x[i];
    if (d_log_std) d_log_std[i] += (float)(d_x[i] * exp((double)log_std[i]) * eps[i]);
  }
}

void nn_gaussian_log_prob(float *log_prob, const float *x, const float *mean, const float *log_std,
                          int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    double sum = 0;
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      double z = ((double)x[i] - mean[i]) * exp(-(double)log_std[i]);
      sum += -0.5 * z * z - log_std[i] - HALF_LOG_2PI;
    }
    log_prob[b] = (float)sum;
  }
}

void nn_gaussian_log_prob_backward(float *d_x, float *d_mean, float *d_log_std, const float *d_log_prob,
                                   const float *x, const float *mean, const float *log_std, int batch,
                                   int dim) {
  for (int b = 0; b < batch; b++) {
    const double g = d_log_prob[b];
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      double inv_std = exp(-(double)log_std[i]);
      double z = ((double)x[i] - mean[i]) * inv_std;
      if (d_x) d_x[i] += (float)(-g * z * inv_std);
      if (d_mean) d_mean[i] += (float)(g * z * inv_std);
      if (d_log_std) d_log_std[i] += (float)(g * (z * z - 1.0));
    }
  }
}

void nn_gaussian_entropy(float *entropy, const float *log_std, int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    double sum = 0;
    for (int j = 0; j < dim; j++) sum += log_std[(size_t)b * dim + j] + 0.5 + HALF_LOG_2PI;
    entropy[b] = (float)sum;
  }
}

void nn_gaussian_entropy_backward(float *d_log_std, const float *d_entropy, int batch, int dim) {
  for (int b = 0; b < batch; b++)
    for (int j = 0; j < dim; j++) d_log_std[(size_t)b * dim + j] += d_entropy[b];
}

void nn_gaussian_kl(float *kl, const float *mean_p, const float *log_std_p, const float *mean_q,
                    const float *log_std_q, int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    double sum = 0;
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      double log_ratio = (double)log_std_p[i] - log_std_q[i];
      double r = exp(2.0 * log_ratio);                             /* std_p^2 / std_q^2 */
      double m = ((double)mean_p[i] - mean_q[i]) * exp(-(double)log_std_q[i]); /* (mu_p - mu_q) / std_q */
      sum += -log_ratio + 0.5 * (r + m * m) - 0.5;
    }
    kl[b] = (float)sum;
  }
}

void nn_gaussian_kl_backward(float *d_mean_p, float *d_log_std_p, float *d_mean_q, float *d_log_std_q,
                             const float *d_kl, const float *mean_p, const float *log_std_p,
                             const float *mean_q, const float *log_std_q, int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    const double g = d_kl[b];
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      double inv_std_q = exp(-(double)log_std_q[i]);
      double r = exp(2.0 * ((double)log_std_p[i] - log_std_q[i]));
      double m = ((double)mean_p[i] - mean_q[i]) * inv_std_q;
      if (d_mean_p) d_mean_p[i] += (float)(g * m * inv_std_q);
      if (d_mean_q) d_mean_q[i] -= (float)(g * m * inv_std_q);
      if (d_log_std_p) d_log_std_p[i] += (float)(g * (r - 1.0));
      if (d_log_std_q) d_log_std_q[i] += (float)(g * (1.0 - r - m * m));
    }
  }
}

/* ---- tanh-squashed Gaussian -------------------------------------------------------------- */

void nn_tanh_gaussian_sample(float *action, float *log_prob, const float *mean, const float *log_std,
                             const float *eps, int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    double sum = 0;
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      double u = mean[i] + exp((double)log_std[i]) * eps[i];
      action[i] = (float)tanh(u);
      sum += -0.5 * (double)eps[i] * eps[i] - log_std[i] - HALF_LOG_2PI - nn_log1m_tanh_sq(u);
    }
    if (log_prob) log_prob[b] = (float)sum;
  }
}

void nn_tanh_gaussian_sample_backward(float *d_mean, float *d_log_std, const float *d_action,
                                      const float *d_log_prob, const float *mean, const float *log_std,
                                      const float *eps, int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    const double g_logp = d_log_prob ? d_log_prob[b] : 0.0;
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      double std = exp((double)log_std[i]);
      double u = mean[i] + std * eps[i];
      /* d tanh(u)/du = 1 - tanh^2 = exp(log1m_tanh_sq), accurate where tanh(u) rounds to +-1;
       * d(-log(1 - tanh^2))/du = 2 tanh(u) */
      double du = 2.0 * tanh(u) * g_logp;
      if (d_action) du += d_action[i] * exp(nn_log1m_tanh_sq(u));
      if (d_mean) d_mean[i] += (float)du;
      if (d_log_std) d_log_std[i] += (float)(du * std * eps[i] - g_logp);
    }
  }
}

static double clamped_atanh(float a) {
  double x = a;
  if (x > ACTION_CLAMP) x = ACTION_CLAMP;
  if (x < -ACTION_CLAMP) x = -ACTION_CLAMP;
  return atanh(x);
}

/* One coordinate of the tanh-Gaussian log-density at pre-squash u. */
static inline double tanh_gauss_term(double u, float mean, float log_std) {
  double z = (u - mean) * exp(-(double)log_std);
  return -0.5 * z * z - log_std - HALF_LOG_2PI - nn_log1m_tanh_sq(u);
}

/* The backward of one coordinate (g = dL/dlog_prob). */
static inline void tanh_gauss_term_backward(float *d_mean, float *d_log_std, float *d_u, double g, double u,
                                            float mean, float log_std) {
  double inv_std = exp(-(double)log_std);
  double z = (u - mean) * inv_std;
  if (d_mean) *d_mean += (float)(g * z * inv_std);
  if (d_log_std) *d_log_std += (float)(g * (z * z - 1.0));
  if (d_u) *d_u += (float)(g * (-z * inv_std + 2.0 * tanh(u)));
}

void nn_tanh_gaussian_log_prob(float *log_prob, const float *action, const float *mean, const float *log_std,
                               int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    double sum = 0;
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      sum += tanh_gauss_term(clamped_atanh(action[i]), mean[i], log_std[i]);
    }
    log_prob[b] = (float)sum;
  }
}

void nn_tanh_gaussian_log_prob_backward(float *d_mean, float *d_log_std, const float *d_log_prob,
                                        const float *action, const float *mean, const float *log_std,
                                        int batch, int dim) {
  for (int b = 0; b < batch; b++)
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      tanh_gauss_term_backward(d_mean ? d_mean + i : NULL, d_log_std ? d_log_std + i : NULL, NULL, d_log_prob[b],
                               clamped_atanh(action[i]), mean[i], log_std[i]);
    }
}

void nn_tanh_gaussian_pre_u(float *u, const float *mean, const float *log_std, const float *eps, size_t n) {
  for (size_t i = 0; i < n; i++) u[i] = (float)(mean[i] + exp((double)log_std[i]) * eps[i]);
}

void nn_tanh_gaussian_log_prob_u(float *log_prob, const float *u, const float *mean, const float *log_std,
                                 int batch, int dim) {
  for (int b = 0; b < batch; b++) {
    double sum = 0;
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      sum += tanh_gauss_term(u[i], mean[i], log_std[i]);
    }
    log_prob[b] = (float)sum;
  }
}

void nn_tanh_gaussian_log_prob_u_backward(float *d_mean, float *d_log_std, float *d_u, const float *d_log_prob,
                                          const float *u, const float *mean, const float *log_std, int batch,
                                          int dim) {
  for (int b = 0; b < batch; b++)
    for (int j = 0; j < dim; j++) {
      size_t i = (size_t)b * dim + j;
      tanh_gauss_term_backward(d_mean ? d_mean + i : NULL, d_log_std ? d_log_std + i : NULL, d_u ? d_u + i : NULL,
                               d_log_prob[b], u[i], mean[i], log_std[i]);
    }
}

void nn_tanh_gaussian_mode(float *action, const float *mean, size_t n) {
  for (size_t i = 0; i < n; i++) action[i] = tanhf(mean[i]);
}

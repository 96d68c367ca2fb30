/* nn distributions: every forward against an independent double-precision formula, every backward
 * against central finite differences of that formula (step 1e-6 in double: truncation ~1e-12,
 * rounding ~1e-10 relative).
 *
 * Tolerance: |analytic - fd| <= GRAD_RTOL * max(|fd|, 1e-2 * max_i |fd_i|) with GRAD_RTOL = 1e-5.
 * The backward runs in double and rounds once to float (~6e-8 relative), and its inputs are floats
 * that the reference reads exactly, so 1e-5 leaves margin only for rounding, never for a wrong term.
 * Values are compared to 1e-5 relative. Inputs keep |u| moderate in the finite-difference checks so
 * the reference may use the naive log(1 - tanh(u)^2); a separate test covers large |u|. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_dist.h"
#include "rng.h"

#define GRAD_RTOL 1e-5
#define FD_STEP 1e-6
#define HALF_LOG_2PI 0.91893853320467274178
#define MAX_N 64

static double grad_error(const float *analytic, const double *reference, size_t n) {
  double scale = 0, worst = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(reference[i]));
  double floor_ = fmax(1e-2 * scale, 1e-12);
  for (size_t i = 0; i < n; i++)
    worst = fmax(worst, fabs(analytic[i] - reference[i]) / fmax(fabs(reference[i]), floor_));
  return worst;
}

static void fill_uniform(rng_t *r, float *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * rng_uniform(r));
}

/* The double copies a reference loss reads; FD perturbs one of them at a time. */
typedef struct {
  double a[MAX_N], b[MAX_N], c[MAX_N], d[MAX_N], e[MAX_N]; /* named per test below */
  double weight[MAX_N], weight2[MAX_N];                  /* loss weights */
  int batch, dim;
} ctx_t;

static void fd_gradient(double *v, size_t n, double *grad, double (*loss)(const ctx_t *), const ctx_t *k) {
  for (size_t i = 0; i < n; i++) {
    double keep = v[i];
    v[i] = keep + FD_STEP;
    double plus = loss(k);
    v[i] = keep - FD_STEP;
    double minus = loss(k);
    v[i] = keep;
    grad[i] = (plus - minus) / (2 * FD_STEP);
  }
}

static void to_double(double *d, const float *f, size_t n) {
  for (size_t i = 0; i < n; i++) d[i] = f[i];
}

#define CHECK_GRAD(analytic, array, n, loss)                                                           \
  do {                                                                                                 \
    double fd_[MAX_N];                                                                                 \
    fd_gradient(k.array, (n), fd_, (loss), &k);                                                        \
    double e_ = grad_error((analytic), fd_, (n));                                                      \
    if (getenv("NN_TEST_VERBOSE")) printf("%s %s: %.2e\n", #loss, #array, e_);                         \
    ck_assert_msg(e_ <= GRAD_RTOL, "%s d/d%s: error %g (batch %d dim %d)", #loss, #array, e_, k.batch, \
                  k.dim);                                                                              \
  } while (0)

static const int shapes[][2] = {{1, 1}, {1, 6}, {4, 3}, {8, 2}};
#define FOR_CASES                                                                        \
  for (int seed = 1; seed <= 3; seed++)                                                  \
    for (size_t s_ = 0; s_ < sizeof shapes / sizeof shapes[0]; s_++)                     \
      for (int B = shapes[s_][0], D = shapes[s_][1], n = B * D, once_ = 1; once_; once_ = 0)

/* ---- bounds and the policy head --------------------------------------------------------- */

static double bound_d(double raw, double lo, double hi) { return lo + (hi - lo) * (tanh(raw) + 1) / 2; }

/* a = raw; weight = d_log_std */
static double bound_loss(const ctx_t *k) {
  double l = 0;
  for (int i = 0; i < k->batch * k->dim; i++) l += k->weight[i] * bound_d(k->a[i], -5, 2);
  return l;
}

START_TEST(logstd_bound_matches_finite_differences) {
  FOR_CASES {
    rng_t r;
    rng_seed(&r, seed, RNG_STREAM_TEST);
    float raw[MAX_N], c[MAX_N], out[MAX_N], d_raw[MAX_N] = {0};
    fill_uniform(&r, raw, n, -3, 3);
    fill_uniform(&r, c, n, -1, 1);
    nn_logstd_bound_forward(out, raw, n, -5, 2);
    ctx_t k = {.batch = B, .dim = D};
    to_double(k.a, raw, n), to_double(k.weight, c, n);
    for (int i = 0; i < n; i++) {
      ck_assert_double_eq_tol(out[i], bound_d(raw[i], -5, 2), 1e-5);
      ck_assert(out[i] >= -5.0f && out[i] <= 2.0f);
    }
    nn_logstd_bound_backward(d_raw, c, raw, n, -5, 2);
    CHECK_GRAD(d_raw, a, n, bound_loss);
  }
  /* saturates into the bounds, never past them */
  float raw[2] = {-40, 40}, out[2];
  nn_logstd_bound_forward(out, raw, 2, -5, 2);
  ck_assert_float_eq(out[0], -5.0f);
  ck_assert_float_eq(out[1], 2.0f);
}
END_TEST

START_TEST(policy_head_splits_and_routes_gradients) {
  rng_t r;
  rng_seed(&r, 3, RNG_STREAM_TEST);
  enum { B = 3, D = 2 };
  float out[B * 2 * D], mean[B * D], log_std[B * D], dm[B * D], dl[B * D], d_out[B * 2 * D] = {0};
  fill_uniform(&r, out, B * 2 * D, -2, 2);
  fill_uniform(&r, dm, B * D, -1, 1);
  fill_uniform(&r, dl, B * D, -1, 1);
  nn_policy_head_forward(mean, log_std, out, B, D, -20, 2);
  nn_policy_head_backward(d_out, dm, dl, out, B, D, -20, 2);
  for (int b = 0; b < B; b++)
    for (int j = 0; j < D; j++) {
      float raw = out[b * 2 * D + D + j];
      ck_assert_float_eq(mean[b * D + j], out[b * 2 * D + j]);
      ck_assert_double_eq_tol(log_std[b * D + j], bound_d(raw, -20, 2), 1e-5);
      ck_assert_float_eq(d_out[b * 2 * D + j], dm[b * D + j]);
      double t = tanh(raw);
      ck_assert_double_eq_tol(d_out[b * 2 * D + D + j], dl[b * D + j] * 11.0 * (1 - t * t), 1e-5);
    }
}
END_TEST

/* ---- Gaussian --------------------------------------------------------------------------- */

/* a = mean, b = log_std, c = eps; weight = d_x */
static double gauss_sample_loss(const ctx_t *k) {
  double l = 0;
  for (int i = 0; i < k->batch * k->dim; i++) l += k->weight[i] * (k->a[i] + exp(k->b[i]) * k->c[i]);
  return l;
}

/* a = x, b = mean, c = log_std; weight[b] = d_log_prob */
static double gauss_logp_d(const ctx_t *k, int row) {
  double s = 0;
  for (int j = 0; j < k->dim; j++) {
    int i = row * k->dim + j;
    double sd = exp(k->c[i]);
    s += -(k->a[i] - k->b[i]) * (k->a[i] - k->b[i]) / (2 * sd * sd) - log(sd) - 0.5 * log(2 * M_PI);
  }
  return s;
}
static double gauss_logp_loss(const ctx_t *k) {
  double l = 0;
  for (int b = 0; b < k->batch; b++) l += k->weight[b] * gauss_logp_d(k, b);
  return l;
}

/* c = log_std; weight[b] = d_entropy */
static double entropy_loss(const ctx_t *k) {
  double l = 0;
  for (int b = 0; b < k->batch; b++)
    for (int j = 0; j < k->dim; j++) l += k->weight[b] * (0.5 * log(2 * M_PI * M_E) + k->c[b * k->dim + j]);
  return l;
}

START_TEST(gaussian_pairs_match_finite_differences) {
  FOR_CASES {
    rng_t r;
    rng_seed(&r, seed, RNG_STREAM_TEST);
    float mean[MAX_N], log_std[MAX_N], eps[MAX_N], x[MAX_N], c[MAX_N], g[MAX_N];
    fill_uniform(&r, mean, n, -1, 1);
    fill_uniform(&r, log_std, n, -1.5, 0.7);
    rng_normal_fill(&r, eps, n);
    fill_uniform(&r, c, n, -1, 1);
    fill_uniform(&r, g, B, -1, 1);
    ctx_t k = {.batch = B, .dim = D};

    /* sample */
    float sample[MAX_N], dm[MAX_N] = {0}, dl[MAX_N] = {0};
    nn_gaussian_sample(sample, mean, log_std, eps, B, D);
    for (int i = 0; i < n; i++)
      ck_assert_double_eq_tol(sample[i], mean[i] + exp((double)log_std[i]) * eps[i], 1e-5);
    nn_gaussian_sample_backward(dm, dl, c, log_std, eps, B, D);
    to_double(k.a, mean, n), to_double(k.b, log_std, n), to_double(k.c, eps, n), to_double(k.weight, c, n);
    CHECK_GRAD(dm, a, n, gauss_sample_loss);
    CHECK_GRAD(dl, b, n, gauss_sample_loss);

    /* log_prob of given points */
    float lp[MAX_N], dx[MAX_N] = {0}, dm2[MAX_N] = {0}, dl2[MAX_N] = {0};
    fill_uniform(&r, x, n, -2, 2);
    nn_gaussian_log_prob(lp, x, mean, log_std, B, D);
    to_double(k.a, x, n), to_double(k.b, mean, n), to_double(k.c, log_std, n), to_double(k.weight, g, B);
    for (int b = 0; b < B; b++) ck_assert_double_eq_tol(lp[b], gauss_logp_d(&k, b), 1e-5 * (1 + fabs(lp[b])));
    nn_gaussian_log_prob_backward(dx, dm2, dl2, g, x, mean, log_std, B, D);
    CHECK_GRAD(dx, a, n, gauss_logp_loss);
    CHECK_GRAD(dm2, b, n, gauss_logp_loss);
    CHECK_GRAD(dl2, c, n, gauss_logp_loss);

    /* entropy */
    float ent[MAX_N], dl3[MAX_N] = {0};
    nn_gaussian_entropy(ent, log_std, B, D);
    for (int b = 0; b < B; b++) {
      double want = 0;
      for (int j = 0; j < D; j++) want += 0.5 * log(2 * M_PI * M_E) + log_std[b * D + j];
      ck_assert_double_eq_tol(ent[b], want, 1e-5 * (1 + fabs(want)));
    }
    nn_gaussian_entropy_backward(dl3, g, B, D);
    CHECK_GRAD(dl3, c, n, entropy_loss);
  }
}
END_TEST

/* a = mean_p, b = log_std_p, c = mean_q, d = log_std_q; weight[b] = d_kl. Written from the
 * densities' variances, not from the code's (r, m) form. */
static double kl_d(const ctx_t *k, int row) {
  double s = 0;
  for (int j = 0; j < k->dim; j++) {
    int i = row * k->dim + j;
    double var_p = exp(2 * k->b[i]), var_q = exp(2 * k->d[i]), dm = k->a[i] - k->c[i];
    s += 0.5 * (log(var_q / var_p) + (var_p + dm * dm) / var_q - 1);
  }
  return s;
}
static double kl_loss(const ctx_t *k) {
  double l = 0;
  for (int b = 0; b < k->batch; b++) l += k->weight[b] * kl_d(k, b);
  return l;
}

START_TEST(gaussian_kl_matches_finite_differences) {
  FOR_CASES {
    rng_t r;
    rng_seed(&r, seed, RNG_STREAM_TEST);
    float mp[MAX_N], lp[MAX_N], mq[MAX_N], lq[MAX_N], g[MAX_N], kl[MAX_N];
    float dmp[MAX_N] = {0}, dlp[MAX_N] = {0}, dmq[MAX_N] = {0}, dlq[MAX_N] = {0};
    fill_uniform(&r, mp, n, -1, 1), fill_uniform(&r, mq, n, -1, 1);
    fill_uniform(&r, lp, n, -1.5, 0.5), fill_uniform(&r, lq, n, -1.5, 0.5);
    fill_uniform(&r, g, B, -1, 1);
    ctx_t k = {.batch = B, .dim = D};
    to_double(k.a, mp, n), to_double(k.b, lp, n), to_double(k.c, mq, n), to_double(k.d, lq, n);
    to_double(k.weight, g, B);
    nn_gaussian_kl(kl, mp, lp, mq, lq, B, D);
    for (int b = 0; b < B; b++) {
      ck_assert_double_eq_tol(kl[b], kl_d(&k, b), 1e-5 * (1 + kl_d(&k, b)));
      ck_assert(kl[b] >= 0.0f);
    }
    nn_gaussian_kl_backward(dmp, dlp, dmq, dlq, g, mp, lp, mq, lq, B, D);
    CHECK_GRAD(dmp, a, n, kl_loss);
    CHECK_GRAD(dlp, b, n, kl_loss);
    CHECK_GRAD(dmq, c, n, kl_loss);
    CHECK_GRAD(dlq, d, n, kl_loss);
    /* KL(p || p) = 0 */
    nn_gaussian_kl(kl, mp, lp, mp, lp, B, D);
    for (int b = 0; b < B; b++) ck_assert_float_eq_tol(kl[b], 0.0f, 1e-6);
  }
}
END_TEST

/* ---- tanh-squashed Gaussian -------------------------------------------------------------- */

/* a = mean, b = log_std, c = eps; weight = d_action [B, D], weight2[b] = d_log_prob. The reference
 * uses the textbook log(1 - tanh(u)^2), accurate in double for the |u| < 6 of this test. */
static double tanh_sample_loss(const ctx_t *k) {
  double l = 0;
  for (int b = 0; b < k->batch; b++) {
    double logp = 0;
    for (int j = 0; j < k->dim; j++) {
      int i = b * k->dim + j;
      double sd = exp(k->b[i]), u = k->a[i] + sd * k->c[i], t = tanh(u);
      l += k->weight[i] * t;
      logp += -0.5 * k->c[i] * k->c[i] - log(sd) - 0.5 * log(2 * M_PI) - log(1 - t * t);
    }
    l += k->weight2[b] * logp;
  }
  return l;
}

/* a = mean, b = log_std, d = action; weight[b] = d_log_prob */
static double tanh_logp_d(const ctx_t *k, int row) {
  double s = 0;
  for (int j = 0; j < k->dim; j++) {
    int i = row * k->dim + j;
    double u = atanh(k->d[i]), sd = exp(k->b[i]), z = (u - k->a[i]) / sd;
    s += -0.5 * z * z - log(sd) - 0.5 * log(2 * M_PI) - log(1 - k->d[i] * k->d[i]);
  }
  return s;
}
static double tanh_logp_loss(const ctx_t *k) {
  double l = 0;
  for (int b = 0; b < k->batch; b++) l += k->weight[b] * tanh_logp_d(k, b);
  return l;
}

START_TEST(tanh_gaussian_matches_finite_differences) {
  FOR_CASES {
    rng_t r;
    rng_seed(&r, seed, RNG_STREAM_TEST);
    float mean[MAX_N], log_std[MAX_N], eps[MAX_N], da[MAX_N], g[MAX_N], action[MAX_N], logp[MAX_N];
    float dm[MAX_N] = {0}, dl[MAX_N] = {0};
    fill_uniform(&r, mean, n, -1.5, 1.5);
    fill_uniform(&r, log_std, n, -2, 0.5);
    rng_normal_fill(&r, eps, n);
    fill_uniform(&r, da, n, -1, 1);
    fill_uniform(&r, g, B, -1, 1);
    ctx_t k = {.batch = B, .dim = D};
    to_double(k.a, mean, n), to_double(k.b, log_std, n), to_double(k.c, eps, n);
    to_double(k.weight, da, n), to_double(k.weight2, g, B);
    nn_tanh_gaussian_sample(action, logp, mean, log_std, eps, B, D);
    for (int b = 0; b < B; b++) {
      double want = 0;
      for (int j = 0; j < D; j++) {
        int i = b * D + j;
        double u = mean[i] + exp((double)log_std[i]) * eps[i];
        ck_assert_double_eq_tol(action[i], tanh(u), 1e-6);
        want += -0.5 * eps[i] * eps[i] - log_std[i] - HALF_LOG_2PI - log(1 - tanh(u) * tanh(u));
      }
      ck_assert_double_eq_tol(logp[b], want, 1e-5 * (1 + fabs(want)));
    }
    /* both outgoing gradients at once, then each alone */
    nn_tanh_gaussian_sample_backward(dm, dl, da, g, mean, log_std, eps, B, D);
    CHECK_GRAD(dm, a, n, tanh_sample_loss);
    CHECK_GRAD(dl, b, n, tanh_sample_loss);
    memset(dm, 0, sizeof dm), memset(dl, 0, sizeof dl);
    nn_tanh_gaussian_sample_backward(dm, dl, NULL, g, mean, log_std, eps, B, D);
    memset(k.weight, 0, sizeof k.weight);
    CHECK_GRAD(dm, a, n, tanh_sample_loss);
    CHECK_GRAD(dl, b, n, tanh_sample_loss);

    /* log_prob of given actions: consistent with the sample's own log_prob, and its gradients */
    float logp_given[MAX_N], dm2[MAX_N] = {0}, dl2[MAX_N] = {0};
    nn_tanh_gaussian_log_prob(logp_given, action, mean, log_std, B, D);
    for (int b = 0; b < B; b++) ck_assert_double_eq_tol(logp_given[b], logp[b], 2e-3 * (1 + fabs(logp[b])));
    to_double(k.d, action, n), to_double(k.weight, g, B);
    nn_tanh_gaussian_log_prob_backward(dm2, dl2, g, action, mean, log_std, B, D);
    CHECK_GRAD(dm2, a, n, tanh_logp_loss);
    CHECK_GRAD(dl2, b, n, tanh_logp_loss);
  }
}
END_TEST

/* a = mean, b = log_std, e = u (pre-tanh); weight[b] = d_log_prob */
static double tanh_logp_u_loss(const ctx_t *k) {
  double l = 0;
  for (int b = 0; b < k->batch; b++) {
    double s = 0;
    for (int j = 0; j < k->dim; j++) {
      int i = b * k->dim + j;
      double sd = exp(k->b[i]), z = (k->e[i] - k->a[i]) / sd, t = tanh(k->e[i]);
      s += -0.5 * z * z - log(sd) - 0.5 * log(2 * M_PI) - log(1 - t * t);
    }
    l += k->weight[b] * s;
  }
  return l;
}

START_TEST(tanh_gaussian_at_pre_tanh_u_matches_finite_differences) {
  FOR_CASES {
    rng_t r;
    rng_seed(&r, seed, RNG_STREAM_TEST);
    float mean[MAX_N], log_std[MAX_N], eps[MAX_N], u[MAX_N], g[MAX_N], action[MAX_N], logp[MAX_N];
    float logp_u[MAX_N], logp_a[MAX_N], dm[MAX_N] = {0}, dl[MAX_N] = {0}, du[MAX_N] = {0};
    fill_uniform(&r, mean, n, -1.5, 1.5);
    fill_uniform(&r, log_std, n, -2, 0.5);
    rng_normal_fill(&r, eps, n);
    fill_uniform(&r, g, B, -1, 1);
    nn_tanh_gaussian_sample(action, logp, mean, log_std, eps, B, D);
    nn_tanh_gaussian_pre_u(u, mean, log_std, eps, (size_t)n);
    for (int i = 0; i < n; i++) ck_assert_double_eq_tol(u[i], mean[i] + exp((double)log_std[i]) * eps[i], 1e-6);
    /* where tanh does not saturate, the density at u is the density at the action, and the sample's */
    nn_tanh_gaussian_log_prob_u(logp_u, u, mean, log_std, B, D);
    nn_tanh_gaussian_log_prob(logp_a, action, mean, log_std, B, D);
    for (int b = 0; b < B; b++) {
      ck_assert_double_eq_tol(logp_u[b], logp[b], 1e-4 * (1 + fabs(logp[b])));
      ck_assert_double_eq_tol(logp_u[b], logp_a[b], 2e-3 * (1 + fabs(logp[b])));
    }
    ctx_t k = {.batch = B, .dim = D};
    to_double(k.a, mean, n), to_double(k.b, log_std, n), to_double(k.e, u, n), to_double(k.weight, g, B);
    nn_tanh_gaussian_log_prob_u_backward(dm, dl, du, g, u, mean, log_std, B, D);
    CHECK_GRAD(dm, a, n, tanh_logp_u_loss);
    CHECK_GRAD(dl, b, n, tanh_logp_u_loss);
    CHECK_GRAD(du, e, n, tanh_logp_u_loss);
  }
  /* Saturated: mean 12, so tanh(u) rounds to 1 in float and atanh(clamp(a)) stops near 7.25. The
   * density of a sample under its own distribution, taken at u, equals the sample's log_prob, so
   * log q(a) - log p(a) with p = q is 0; taken at the clamped action it is off by tens of nats. */
  float mean[2] = {12, -12}, log_std[2] = {-1, -1}, eps[2] = {0.3f, -0.7f}, a[2], lq[1], lu[1], la[1];
  float uu[2];
  nn_tanh_gaussian_sample(a, lq, mean, log_std, eps, 1, 2);
  nn_tanh_gaussian_pre_u(uu, mean, log_std, eps, 2);
  nn_tanh_gaussian_log_prob_u(lu, uu, mean, log_std, 1, 2);
  nn_tanh_gaussian_log_prob(la, a, mean, log_std, 1, 2);
  ck_assert_float_eq(a[0], 1.0f);
  ck_assert_msg(fabs(lq[0] - lu[0]) < 1e-4 * fabs(lq[0]), "at u: %g vs the sample's %g", lu[0], lq[0]);
  ck_assert_msg(fabs(lq[0] - la[0]) > 10, "the clamped form no longer differs (%g vs %g): update this test",
                la[0], lq[0]);
}
END_TEST

START_TEST(tanh_squash_correction_is_finite_where_tanh_saturates) {
  /* At u = 20, tanh(u) rounds to 1 in double: the textbook log(1 - tanh^2) is -inf. */
  ck_assert(isinf(log(1 - tanh(20.0) * tanh(20.0))));
  for (double u = -60; u <= 60; u += 7.5) {
    double v = nn_log1m_tanh_sq(u);
    ck_assert(isfinite(v));
    /* log(1 - tanh^2) = log(sech^2) = -2 log cosh(u) ~ 2 (log 2 - |u|) for large |u| */
    if (fabs(u) > 20) ck_assert_double_eq_tol(v, 2 * (log(2) - fabs(u)), 1e-9 * fabs(u));
    else ck_assert_double_eq_tol(v, -2 * log(cosh(u)), 1e-9 * (1 + fabs(u)));
  }
  float mean[2] = {30, -30}, log_std[2] = {0, 0}, eps[2] = {0.5f, -0.5f}, action[2], logp[1];
  float dm[2] = {0}, dl[2] = {0}, g[1] = {1}, da[2] = {1, 1};
  nn_tanh_gaussian_sample(action, logp, mean, log_std, eps, 1, 2);
  ck_assert(isfinite(logp[0]));
  ck_assert_float_eq(action[0], 1.0f);
  nn_tanh_gaussian_sample_backward(dm, dl, da, g, mean, log_std, eps, 1, 2);
  for (int i = 0; i < 2; i++) ck_assert(isfinite(dm[i]) && isfinite(dl[i]));
  /* a stored action of exactly +-1 has a finite log-probability */
  float stored[2] = {1.0f, -1.0f};
  nn_tanh_gaussian_log_prob(logp, stored, mean, log_std, 1, 2);
  ck_assert(isfinite(logp[0]));
  float mode[2];
  nn_tanh_gaussian_mode(mode, (float[]){0.3f, -2.0f}, 2);
  ck_assert_float_eq_tol(mode[0], tanhf(0.3f), 1e-7);
  ck_assert_float_eq_tol(mode[1], tanhf(-2.0f), 1e-7);
}
END_TEST

START_TEST(backward_accumulates) {
  float mp[2] = {0.1f, -0.3f}, lp[2] = {-0.2f, 0.4f}, mq[2] = {0.5f, 0.2f}, lq[2] = {0.1f, -0.6f};
  float g[1] = {1}, a[2] = {0}, b[2] = {0};
  nn_gaussian_kl_backward(a, NULL, NULL, NULL, g, mp, lp, mq, lq, 1, 2);
  nn_gaussian_kl_backward(b, NULL, NULL, NULL, g, mp, lp, mq, lq, 1, 2);
  nn_gaussian_kl_backward(b, NULL, NULL, NULL, g, mp, lp, mq, lq, 1, 2);
  for (int i = 0; i < 2; i++) {
    ck_assert(a[i] != 0.0f);
    ck_assert_float_eq_tol(b[i], 2 * a[i], 1e-7);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("nn_dist");
  TCase *t = tcase_create("distributions");
  tcase_add_test(t, logstd_bound_matches_finite_differences);
  tcase_add_test(t, policy_head_splits_and_routes_gradients);
  tcase_add_test(t, gaussian_pairs_match_finite_differences);
  tcase_add_test(t, gaussian_kl_matches_finite_differences);
  tcase_add_test(t, tanh_gaussian_matches_finite_differences);
  tcase_add_test(t, tanh_gaussian_at_pre_tanh_u_matches_finite_differences);
  tcase_add_test(t, tanh_squash_correction_is_finite_where_tanh_saturates);
  tcase_add_test(t, backward_accumulates);
  suite_add_tcase(s, t);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

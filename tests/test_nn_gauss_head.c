/* nn Gaussian regression head: soft log-variance bounds and the NLL loss, with gradients to the
 * network output (mean and raw log-variance) AND to the trainable bounds, checked against central
 * finite differences of a double-precision reference (step 1e-6; tolerance as in test_nn_dist.c:
 * the code runs in double and rounds once to float, so GRAD_RTOL = 1e-5 relative, with a floor of
 * 1e-2 of the tensor's largest entry). Raw log-variances are spread over [-14, 3] so that both the
 * upper and the lower soft bound are active somewhere in every case. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_gauss_head.h"
#include "rng.h"

#define GRAD_RTOL 1e-5
#define FD_STEP 1e-6

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

typedef struct {
  double raw[256], bounds[16], target[128];
  int batch, dim, members;
  nn_input_mode mode;
  double penalty;
} head_ctx;

static double softplus_d(double x) { return log(1 + exp(x)); } /* fine in double for |x| < 700 */

static double logvar_d(const head_ctx *k, double raw, int d) {
  double max_lv = k->bounds[d], min_lv = k->bounds[k->dim + d];
  double lv = max_lv - softplus_d(max_lv - raw);
  return min_lv + softplus_d(lv - min_lv);
}

/* The NLL: -log N(y; mean, var) = (y - mean)^2 / (2 var) + log(2 pi var) / 2, with var = exp(logvar)
 * (the density's log form: exp() of the exponent underflows where the variance is tiny). */
static double nll_d(const head_ctx *k) {
  const int D = k->dim, E = k->members;
  double loss = 0;
  for (int b = 0; b < k->batch; b++)
    for (int e = 0; e < E; e++) {
      const double *r = k->raw + (b * E + e) * 2 * D;
      const double *y = k->mode == NN_INPUT_PER_MEMBER ? k->target + (b * E + e) * D : k->target + b * D;
      for (int d = 0; d < D; d++) {
        double var = exp(logvar_d(k, r[D + d], d));
        loss += (y[d] - r[d]) * (y[d] - r[d]) / (2 * var) + 0.5 * log(2 * M_PI * var);
      }
    }
  double penalty = 0;
  for (int d = 0; d < D; d++) penalty += k->bounds[d] - k->bounds[D + d];
  return loss / k->batch + k->penalty * penalty;
}

static void fd_gradient(double *v, size_t n, double *grad, head_ctx *k) {
  for (size_t i = 0; i < n; i++) {
    double keep = v[i];
    v[i] = keep + FD_STEP;
    double plus = nll_d(k);
    v[i] = keep - FD_STEP;
    double minus = nll_d(k);
    v[i] = keep;
    grad[i] = (plus - minus) / (2 * FD_STEP);
  }
}

static const int cases[][3] = {{1, 1, 1}, {1, 3, 2}, {5, 2, 1}, {4, 3, 3}}; /* batch, dim, members */

START_TEST(nll_matches_finite_differences) {
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (int mode = 0; mode < 2; mode++)
      for (int seed = 1; seed <= 3; seed++) {
        const int B = cases[c][0], D = cases[c][1], E = cases[c][2];
        rng_t r;
        rng_seed(&r, seed, RNG_STREAM_TEST);
        ember_err err = {0};
        nn_gauss_head *head = nn_gauss_head_new(D, E, &err);
        ck_assert_msg(head != NULL, "%s", err.msg);
        /* move the bounds off their initial values so the test is not special to them */
        for (int d = 0; d < D; d++) head->params[d] += (float)(rng_uniform(&r) - 0.5);
        for (int d = 0; d < D; d++) head->params[D + d] += (float)(rng_uniform(&r) * 4 - 2);
        const int n_raw = B * E * 2 * D, n_target = mode ? B * E * D : B * D;
        float raw[256], target[128], d_raw[256] = {0};
        for (int b = 0; b < B * E; b++) {
          fill_uniform(&r, raw + b * 2 * D, D, -1, 1);
          fill_uniform(&r, raw + b * 2 * D + D, D, -14, 3);
        }
        fill_uniform(&r, target, n_target, -1.5, 1.5);
        head_ctx k = {.batch = B, .dim = D, .members = E, .mode = (nn_input_mode)mode, .penalty = (double)0.01f};
        for (int i = 0; i < n_raw; i++) k.raw[i] = raw[i];
        for (int i = 0; i < 2 * D; i++) k.bounds[i] = head->params[i];
        for (int i = 0; i < n_target; i++) k.target[i] = target[i];

        float logvar[128];
        nn_gauss_head_forward(head, NULL, logvar, raw, B);
        for (int b = 0; b < B * E; b++)
          for (int d = 0; d < D; d++) {
            double want = logvar_d(&k, raw[b * 2 * D + D + d], d);
            ck_assert_double_eq_tol(logvar[b * D + d], want, 1e-5 * (1 + fabs(want)));
            ck_assert(logvar[b * D + d] <= head->params[d] + 1e-6f);
            ck_assert(logvar[b * D + d] >= head->params[D + d] - 1e-6f);
          }
        nn_gauss_head_zero_grad(head);
        double loss = nn_gauss_head_nll(head, d_raw, raw, target, (nn_input_mode)mode, B, 0.01f);
        if (getenv("NN_TEST_VERBOSE")) printf("loss %.17g ref %.17g\n", loss, nll_d(&k));
        ck_assert_double_eq_tol(loss, nll_d(&k), 1e-9 * (1 + fabs(loss)));
        double g_raw[256], g_bounds[16];
        fd_gradient(k.raw, n_raw, g_raw, &k);
        fd_gradient(k.bounds, 2 * D, g_bounds, &k);
        double er = grad_error(d_raw, g_raw, n_raw), eb = grad_error(head->grads, g_bounds, 2 * D);
        if (getenv("NN_TEST_VERBOSE")) printf("head B=%d D=%d E=%d mode=%d: raw %.2e bounds %.2e\n", B, D, E, mode, er, eb);
        ck_assert_msg(er <= GRAD_RTOL && eb <= GRAD_RTOL, "B=%d D=%d E=%d mode=%d seed=%d: raw %g, bounds %g", B,
                      D, E, mode, seed, er, eb);
        nn_gauss_head_destroy(&head);
        ck_assert_ptr_null(head);
      }
}
END_TEST

START_TEST(bounds_start_at_pets_values_and_samples_use_them) {
  ember_err err = {0};
  ck_assert_ptr_null(nn_gauss_head_new(0, 1, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "dim"));
  ck_assert_ptr_null(nn_gauss_head_new(2, 0, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "ensemble_size"));
  nn_gauss_head *head = nn_gauss_head_new(2, 1, &err);
  ck_assert_float_eq(head->params[0], 0.5f);
  ck_assert_float_eq(head->params[2], -10.0f);
  /* a huge raw log-variance is capped near max_logvar, a tiny one floored near min_logvar */
  float raw[4] = {1.0f, -2.0f, 50.0f, -50.0f}, mean[2], logvar[2], eps[2] = {1.0f, -1.0f}, out[2];
  nn_gauss_head_forward(head, mean, logvar, raw, 1);
  ck_assert_float_eq(mean[0], 1.0f);
  ck_assert_float_eq_tol(logvar[0], 0.5f, 1e-4);
  ck_assert_float_eq_tol(logvar[1], -10.0f, 1e-4);
  nn_gauss_head_sample(head, out, raw, eps, 1);
  ck_assert_float_eq_tol(out[0], 1.0f + expf(0.25f), 1e-4);
  ck_assert_float_eq_tol(out[1], -2.0f - expf(-5.0f), 1e-4);
  nn_gauss_head_destroy(&head);
}
END_TEST

int main(void) {
  Suite *s = suite_create("nn_gauss_head");
  TCase *t = tcase_create("head");
  tcase_add_test(t, nll_matches_finite_differences);
  tcase_add_test(t, bounds_start_at_pets_values_and_samples_use_them);
  suite_add_tcase(s, t);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

/* policy: built from Params (right and wrong kinds, tasks, dims, names, shapes, values), actions and
 * log-probs against direct computations, batched forward = row-by-row, update in place. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "policy_params_fixture.h"

static const int HIDDEN[2] = {5, 4};
#define OBS 3
#define ACT 2

static params_fixture fx;
static policy_config cfg = {"pendulum", OBS, ACT, 8};

static void setup(void) { fixture_build(&fx, "pendulum", OBS, ACT, HIDDEN, 2, "tanh", 7, 1, 0.8f); }
static void teardown(void) { fixture_free(&fx); }

/* Expects policy_new to refuse fx.params with code, and the message to contain each of the texts. */
static void expect_refused(int code, const char *text1, const char *text2) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_ptr_null(pol);
  ck_assert_msg(err.code == code, "code %d (%s), expected %d: %s", err.code, ember_strerror(err.code), code, err.msg);
  if (text1) ck_assert_msg(strstr(err.msg, text1), "'%s' not in '%s'", text1, err.msg);
  if (text2) ck_assert_msg(strstr(err.msg, text2), "'%s' not in '%s'", text2, err.msg);
  ember_err err2 = {0};
  ck_assert_int_eq(policy_check_params(&fx.params, &cfg, &err2), code);
}

/* The network by hand, in double: returns mu [ACT] and log_std [ACT] for one observation. */
static void hand_forward(const float *obs, double *mu, double *log_std) {
  double x[8], y[8];
  int in = OBS;
  for (int i = 0; i < OBS; i++) x[i] = obs[i];
  for (int k = 0; k < 3; k++) {
    char name[32];
    snprintf(name, sizeof name, "pi/l%d/w", k);
    const Ember__Tensor *w = fixture_find(&fx, name);
    snprintf(name, sizeof name, "pi/l%d/b", k);
    const Ember__Tensor *b = fixture_find(&fx, name);
    int out = (int)w->shape[0];
    for (int o = 0; o < out; o++) {
      double z = b->data[o];
      for (int i = 0; i < in; i++) z += (double)w->data[o * in + i] * x[i];
      y[o] = k < 2 ? tanh(z) : z;
    }
    memcpy(x, y, sizeof y);
    in = out;
  }
  double lo = fx.params.log_std_min, hi = fx.params.log_std_max;
  for (int j = 0; j < ACT; j++) {
    mu[j] = x[j];
    log_std[j] = lo + 0.5 * (hi - lo) * (tanh(x[ACT + j]) + 1.0);
  }
}

static const float OBS_ROWS[4][OBS] = {{0.1f, -0.4f, 0.9f}, {1.5f, 0.2f, -0.7f}, {-2.0f, 0.0f, 0.3f}, {0.0f, 0.0f, 0.0f}};

START_TEST(builds_from_valid_params) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  ck_assert_uint_eq(policy_version(pol), 7);
  ck_assert_int_eq(policy_obs_dim(pol), OBS);
  ck_assert_int_eq(policy_act_dim(pol), ACT);
  const nn_mlp *net = policy_net(pol);
  ck_assert_int_eq(net->layer_count, 3);
  ck_assert_int_eq(net->dims[1], 5);
  ck_assert_int_eq(net->dims[2], 4);
  ck_assert_int_eq(net->dims[3], 2 * ACT);
  ck_assert_int_eq(net->spec.hidden_activation, NN_ACT_TANH);
  ck_assert_float_eq(policy_log_std_min(pol), -5.0f);
  ck_assert_float_eq(policy_log_std_max(pol), 2.0f);
  policy_destroy(&pol);
  ck_assert_ptr_null(pol);
  policy_destroy(&pol); /* twice is fine */
}
END_TEST

START_TEST(tensor_order_and_other_networks_do_not_matter) {
  /* reverse the order, and add a critic tensor the policy must ignore */
  Ember__Tensor *q = fixture_add_tensor(&fx, "q1/l0/w", 3, 3, 2);
  (void)q;
  size_t n = fx.params.n_tensors;
  for (size_t i = 0; i < n / 2; i++) {
    Ember__Tensor *t = fx.tensor_ptrs[i];
    fx.tensor_ptrs[i] = fx.tensor_ptrs[n - 1 - i];
    fx.tensor_ptrs[n - 1 - i] = t;
  }
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  policy_destroy(&pol);
}
END_TEST

START_TEST(refuses_wrong_kind) {
  snprintf(fx.kind, sizeof fx.kind, "gaussian_mlp");
  expect_refused(EMBER_EINVAL, "gaussian_mlp", "tanh_gaussian_mlp");
}
END_TEST

START_TEST(refuses_wrong_task) {
  snprintf(fx.task, sizeof fx.task, "hopper");
  expect_refused(EMBER_EINVAL, "hopper", "pendulum");
}
END_TEST

START_TEST(accepts_any_task_when_none_expected) {
  snprintf(fx.task, sizeof fx.task, "hopper");
  policy_config any = cfg;
  any.task = NULL;
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &any, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  /* but an update for another task is then refused: the policy took the first task it saw */
  params_fixture other;
  fixture_build(&other, "walker2d", OBS, ACT, HIDDEN, 2, "tanh", 8, 2, 0.8f);
  ck_assert_int_eq(policy_update(pol, &other.params, &err), EMBER_EINVAL);
  fixture_free(&other);
  policy_destroy(&pol);
}
END_TEST

START_TEST(refuses_wrong_dims) {
  fx.params.act_dim = 3;
  expect_refused(EMBER_ESHAPE, "act_dim 3", "act_dim 2");
}
END_TEST

START_TEST(refuses_bad_activation) {
  snprintf(fx.activation, sizeof fx.activation, "sigmoid");
  expect_refused(EMBER_EINVAL, "policy_activation", "sigmoid");
}
END_TEST

START_TEST(refuses_bad_log_std_bounds) {
  fx.params.log_std_min = 1.0f;
  fx.params.log_std_max = 1.0f;
  expect_refused(EMBER_EINVAL, "log-std", NULL);
  fx.params.log_std_min = NAN;
  fx.params.log_std_max = 2.0f;
  expect_refused(EMBER_EINVAL, "log-std", NULL);
}
END_TEST

START_TEST(refuses_wrong_hidden_shape_naming_both) {
  /* pi/l1/w should be [4, 5]; make it [4, 6] */
  Ember__Tensor *w = fixture_find(&fx, "pi/l1/w");
  w->shape[1] = 6;
  expect_refused(EMBER_ESHAPE, "pi/l1/w has shape [4, 6]", "[n, 5]");
}
END_TEST

START_TEST(refuses_wrong_first_layer_input) {
  Ember__Tensor *w = fixture_find(&fx, "pi/l0/w");
  w->shape[1] = 4;
  expect_refused(EMBER_ESHAPE, "[5, 4]", "obs_dim");
}
END_TEST

START_TEST(refuses_wrong_output_layer) {
  Ember__Tensor *w = fixture_find(&fx, "pi/l2/w");
  w->shape[0] = 2; /* act_dim, not 2 x act_dim */
  expect_refused(EMBER_ESHAPE, "pi/l2/w has shape [2, 4]", "expected [4, 4]");
}
END_TEST

START_TEST(refuses_wrong_bias_shape) {
  Ember__Tensor *b = fixture_find(&fx, "pi/l0/b");
  b->shape[0] = 4;
  expect_refused(EMBER_ESHAPE, "pi/l0/b has shape [4]", "expected [5]");
  b->shape[0] = 5;
  b->n_shape = 2;
  expect_refused(EMBER_ESHAPE, "pi/l0/b", NULL);
}
END_TEST

START_TEST(refuses_short_data) {
  Ember__Tensor *w = fixture_find(&fx, "pi/l1/w");
  w->n_data -= 1;
  expect_refused(EMBER_ESHAPE, "pi/l1/w has 19 values", "needs 20");
}
END_TEST

START_TEST(refuses_non_finite_values) {
  Ember__Tensor *b = fixture_find(&fx, "pi/l2/b");
  b->data[3] = INFINITY;
  expect_refused(EMBER_ENONFINITE, "pi/l2/b", "index 3");
}
END_TEST

START_TEST(refuses_missing_and_duplicate_tensors) {
  /* missing bias */
  Ember__Tensor *b = fixture_find(&fx, "pi/l1/b");
  snprintf(fx.names[b - fx.tensors], 32, "q/l1/b");
  expect_refused(EMBER_ESHAPE, "pi/l1/b is missing", NULL);
  /* duplicate */
  snprintf(fx.names[b - fx.tensors], 32, "pi/l1/w");
  expect_refused(EMBER_ESHAPE, "pi/l1/w appears twice", NULL);
  /* a gap: the last layer named l3 */
  snprintf(fx.names[b - fx.tensors], 32, "pi/l1/b");
  snprintf(fx.names[fixture_find(&fx, "pi/l2/w") - fx.tensors], 32, "pi/l3/w");
  snprintf(fx.names[fixture_find(&fx, "pi/l2/b") - fx.tensors], 32, "pi/l3/b");
  expect_refused(EMBER_ESHAPE, "pi/l2/w is missing", NULL);
}
END_TEST

START_TEST(refuses_malformed_names) {
  static const char *bad[] = {"pi/layer0/w", "pi/l0/W", "pi/l/w", "pi/l00/w", "pi/l0/wb", "pi/l0", "pi/"};
  Ember__Tensor *w = fixture_find(&fx, "pi/l0/w");
  size_t slot = (size_t)(w - fx.tensors);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    snprintf(fx.names[slot], 32, "%s", bad[i]);
    expect_refused(EMBER_EINVAL, bad[i], NULL);
  }
}
END_TEST

START_TEST(refuses_no_policy_tensors) {
  for (size_t i = 0; i < fx.params.n_tensors; i++) fx.names[i][0] = 'q';
  expect_refused(EMBER_ESHAPE, "no pi/ tensors", NULL);
}
END_TEST

START_TEST(refuses_bad_config) {
  ember_err err = {0};
  policy_config bad = cfg;
  bad.max_batch = 0;
  ck_assert_ptr_null(policy_new(&fx.params, &bad, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
  ck_assert_ptr_null(policy_new(NULL, &cfg, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
}
END_TEST

START_TEST(deterministic_action_is_tanh_mu) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  float actions[4 * ACT], log_probs[4];
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, true, NULL, actions, log_probs, &err), 0);
  for (int i = 0; i < 4; i++) {
    double mu[ACT], log_std[ACT], lp = 0.0;
    hand_forward(OBS_ROWS[i], mu, log_std);
    for (int j = 0; j < ACT; j++) {
      ck_assert_double_eq_tol(actions[i * ACT + j], tanh(mu[j]), 1e-5);
      double t = tanh(mu[j]);
      lp += -log_std[j] - 0.5 * log(2 * M_PI) - log(1.0 - t * t);
    }
    ck_assert_double_eq_tol(log_probs[i], lp, 1e-4 * (1.0 + fabs(lp)));
  }
  policy_destroy(&pol);
}
END_TEST

START_TEST(stochastic_log_prob_matches_direct_computation) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  rng_t r, replay;
  rng_seed(&r, 42, RNG_STREAM_TEST);
  replay = r;
  float actions[4 * ACT], log_probs[4], eps[4 * ACT];
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, false, &r, actions, log_probs, &err), 0);
  rng_normal_fill(&replay, eps, 4 * ACT); /* the same draws the policy made */
  for (int i = 0; i < 4; i++) {
    double mu[ACT], log_std[ACT], lp = 0.0;
    hand_forward(OBS_ROWS[i], mu, log_std);
    for (int j = 0; j < ACT; j++) {
      double sd = exp(log_std[j]);
      double u = mu[j] + sd * eps[i * ACT + j];
      double a = tanh(u);
      ck_assert_double_eq_tol(actions[i * ACT + j], a, 1e-5);
      /* Gaussian density of u, then the change of variables a = tanh(u) */
      double gauss = exp(-0.5 * (u - mu[j]) * (u - mu[j]) / (sd * sd)) / (sd * sqrt(2 * M_PI));
      lp += log(gauss) - log(1.0 - a * a);
    }
    ck_assert_double_eq_tol(log_probs[i], lp, 1e-3 * (1.0 + fabs(lp)));
  }
  policy_destroy(&pol);
}
END_TEST

START_TEST(batched_forward_equals_row_by_row) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  float batch_act[4 * ACT], batch_lp[4];
  rng_t r;
  rng_seed(&r, 9, RNG_STREAM_TEST);
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, false, &r, batch_act, batch_lp, &err), 0);
  rng_seed(&r, 9, RNG_STREAM_TEST);
  for (int i = 0; i < 4; i++) {
    float a[ACT], lp;
    ck_assert_int_eq(policy_act(pol, OBS_ROWS[i], 1, false, &r, a, &lp, &err), 0);
    for (int j = 0; j < ACT; j++) ck_assert_float_eq_tol(a[j], batch_act[i * ACT + j], 1e-6f);
    ck_assert_float_eq_tol(lp, batch_lp[i], 1e-4f);
  }
  policy_destroy(&pol);
}
END_TEST

START_TEST(act_refuses_bad_batch) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  float a[16 * ACT];
  float obs[16 * OBS] = {0};
  ck_assert_int_eq(policy_act(pol, obs, 9, true, NULL, a, NULL, &err), EMBER_EINVAL);
  ck_assert_int_eq(policy_act(pol, obs, 0, true, NULL, a, NULL, &err), EMBER_EINVAL);
  ck_assert_int_eq(policy_act(pol, obs, 2, false, NULL, a, NULL, &err), EMBER_EINVAL);
  policy_destroy(&pol);
}
END_TEST

START_TEST(update_in_place) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  const float *weights_before = policy_net(pol)->params;
  float before[4 * ACT];
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, true, NULL, before, NULL, &err), 0);

  params_fixture newer;
  fixture_build(&newer, "pendulum", OBS, ACT, HIDDEN, 2, "tanh", 8, 99, 0.8f);
  newer.params.log_std_min = -4.0f;
  ck_assert_msg(policy_update(pol, &newer.params, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(policy_version(pol), 8);
  ck_assert_float_eq(policy_log_std_min(pol), -4.0f);
  ck_assert_ptr_eq(policy_net(pol)->params, weights_before); /* the same buffer, rewritten */

  /* now it computes what a policy freshly built from the newer Params computes */
  policy_t *fresh = policy_new(&newer.params, &cfg, &err);
  float after[4 * ACT], expect[4 * ACT];
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, true, NULL, after, NULL, &err), 0);
  ck_assert_int_eq(policy_act(fresh, &OBS_ROWS[0][0], 4, true, NULL, expect, NULL, &err), 0);
  int changed = 0;
  for (int i = 0; i < 4 * ACT; i++) {
    ck_assert_float_eq(after[i], expect[i]);
    changed |= after[i] != before[i];
  }
  ck_assert(changed);
  policy_destroy(&fresh);
  fixture_free(&newer);
  policy_destroy(&pol);
}
END_TEST

START_TEST(refused_update_changes_nothing) {
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  float before[4 * ACT], after[4 * ACT];
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, true, NULL, before, NULL, &err), 0);

  /* other hidden sizes: valid Params, but not this policy's shape */
  static const int wider[2] = {6, 4};
  params_fixture other;
  fixture_build(&other, "pendulum", OBS, ACT, wider, 2, "tanh", 9, 5, 0.8f);
  ck_assert_int_eq(policy_update(pol, &other.params, &err), EMBER_ESHAPE);
  ck_assert_msg(strstr(err.msg, "[6, 3]") && strstr(err.msg, "[5, 3]"), "%s", err.msg);
  fixture_free(&other);

  /* another activation */
  fixture_build(&other, "pendulum", OBS, ACT, HIDDEN, 2, "relu", 9, 5, 0.8f);
  ck_assert_int_eq(policy_update(pol, &other.params, &err), EMBER_ESHAPE);
  ck_assert_msg(strstr(err.msg, "relu"), "%s", err.msg);
  fixture_free(&other);

  /* one layer fewer */
  fixture_build(&other, "pendulum", OBS, ACT, HIDDEN, 1, "tanh", 9, 5, 0.8f);
  ck_assert_int_eq(policy_update(pol, &other.params, &err), EMBER_ESHAPE);
  fixture_free(&other);

  /* right shape, but a NaN late in the last tensor: nothing may have been copied before it */
  fixture_build(&other, "pendulum", OBS, ACT, HIDDEN, 2, "tanh", 9, 5, 0.8f);
  fixture_find(&other, "pi/l2/b")->data[0] = NAN;
  ck_assert_int_eq(policy_update(pol, &other.params, &err), EMBER_ENONFINITE);
  fixture_free(&other);

  ck_assert_uint_eq(policy_version(pol), 7);
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, true, NULL, after, NULL, &err), 0);
  for (int i = 0; i < 4 * ACT; i++) ck_assert_float_eq(after[i], before[i]);
  policy_destroy(&pol);
}
END_TEST

START_TEST(actions_stay_in_range_with_large_weights) {
  fixture_free(&fx);
  fixture_build(&fx, "pendulum", OBS, ACT, HIDDEN, 2, "relu", 1, 3, 30.0f);
  ember_err err = {0};
  policy_t *pol = policy_new(&fx.params, &cfg, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  rng_t r;
  rng_seed(&r, 1, RNG_STREAM_TEST);
  float a[4 * ACT], lp[4];
  ck_assert_int_eq(policy_act(pol, &OBS_ROWS[0][0], 4, false, &r, a, lp, &err), 0);
  for (int i = 0; i < 4 * ACT; i++) ck_assert(a[i] >= -1.0f && a[i] <= 1.0f);
  for (int i = 0; i < 4; i++) ck_assert(isfinite(lp[i]));
  policy_destroy(&pol);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("policy");
  TCase *tc = tcase_create("params");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, builds_from_valid_params);
  tcase_add_test(tc, tensor_order_and_other_networks_do_not_matter);
  tcase_add_test(tc, refuses_wrong_kind);
  tcase_add_test(tc, refuses_wrong_task);
  tcase_add_test(tc, accepts_any_task_when_none_expected);
  tcase_add_test(tc, refuses_wrong_dims);
  tcase_add_test(tc, refuses_bad_activation);
  tcase_add_test(tc, refuses_bad_log_std_bounds);
  tcase_add_test(tc, refuses_wrong_hidden_shape_naming_both);
  tcase_add_test(tc, refuses_wrong_first_layer_input);
  tcase_add_test(tc, refuses_wrong_output_layer);
  tcase_add_test(tc, refuses_wrong_bias_shape);
  tcase_add_test(tc, refuses_short_data);
  tcase_add_test(tc, refuses_non_finite_values);
  tcase_add_test(tc, refuses_missing_and_duplicate_tensors);
  tcase_add_test(tc, refuses_malformed_names);
  tcase_add_test(tc, refuses_no_policy_tensors);
  tcase_add_test(tc, refuses_bad_config);
  suite_add_tcase(s, tc);
  TCase *acting = tcase_create("acting");
  tcase_add_checked_fixture(acting, setup, teardown);
  tcase_add_test(acting, deterministic_action_is_tanh_mu);
  tcase_add_test(acting, stochastic_log_prob_matches_direct_computation);
  tcase_add_test(acting, batched_forward_equals_row_by_row);
  tcase_add_test(acting, act_refuses_bad_batch);
  tcase_add_test(acting, update_in_place);
  tcase_add_test(acting, refused_update_changes_nothing);
  tcase_add_test(acting, actions_stay_in_range_with_large_weights);
  suite_add_tcase(s, acting);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

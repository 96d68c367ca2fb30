/* nn optimisers: Adam against a hand-computed three-step sequence (plain, and with decoupled
 * weight decay plus global-norm clipping), its refusal of non-finite gradients, its config errors,
 * and Polyak / hard-copy target updates. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn_optim.h"

/* Three parameters p0 = (1, -2, 0.5), lr 0.1, beta1 0.9, beta2 0.999, epsilon 1e-8, gradients
 *   step 1: ( 0.5, -1.0, 0.0)   step 2: (0.1, 0.2, 0.0)   step 3: (-0.3, 0.4, 2.0)
 * Worked by hand for parameter 0:
 *   t=1: m = 0.05, v = 0.00025; m^ = 0.05/0.1 = 0.5, v^ = 0.00025/0.001 = 0.25
 *        p = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.9 (Adam's first step is lr * sign(g))
 *   t=2: m = 0.9*0.05 + 0.1*0.1 = 0.055, v = 0.999*0.00025 + 0.001*0.01 = 0.00025975
 *        m^ = 0.055/0.19 = 0.2894737, v^ = 0.00025975/0.001999 = 0.1299400, sqrt = 0.3604720
 *        p = 0.9 - 0.1 * 0.2894737/0.3604720 = 0.8196959
 * Parameter 2 sees zero gradients for two steps (m = v = 0: no move, no division by zero), then
 *   t=3: m = 0.2, v = 0.004; m^ = 0.2/0.271 = 0.7380074, v^ = 0.004/0.002997001 = 1.3346675
 *        p = 0.5 - 0.1 * 0.7380074/1.1552781 = 0.4361186
 * The remaining entries follow the same arithmetic (carried to 16 digits in double). */
static const float adam_grads[3][3] = {{0.5f, -1.0f, 0.0f}, {0.1f, 0.2f, 0.0f}, {-0.3f, 0.4f, 2.0f}};
static const double adam_expected[3][3] = {
    {0.900000002, -1.900000001, 0.5},
    {0.8196959063846518, -1.8488973939904947, 0.5},
    {0.7986246117635081, -1.8354734342081562, 0.4361186406131007},
};
/* The same with weight_decay 0.5 and max_grad_norm 0.5:
 *   t=1: |g| = sqrt(1.25) = 1.118 > 0.5, so g *= 0.5/(1.118 + 1e-6); p *= 1 - 0.1*0.5 = 0.95 first;
 *        the step is still lr * sign(g): p0 = 0.95 - 0.1 = 0.85, p2 = 0.5 * 0.95 = 0.475
 *   t=2: |g| = 0.2236 < 0.5: not clipped.  t=3: |g| = 2.06: clipped again. */
static const double adamw_expected[3][3] = {
    {0.8500000044721397, -1.8000000022360698, 0.475},
    {0.7159455031254386, -1.679229391001697, 0.45125},
    {0.6305165463098903, -1.584356432813623, 0.36480614234002984},
};

static void run_sequence(nn_adam_config cfg, const double expected[3][3]) {
  ember_err err = {0};
  nn_adam *opt = nn_adam_new(&cfg, 3, &err);
  ck_assert_msg(opt != NULL, "%s", err.msg);
  float p[3] = {1.0f, -2.0f, 0.5f};
  for (int t = 0; t < 3; t++) {
    double norm = -1;
    ck_assert_int_eq(nn_adam_step(opt, p, adam_grads[t], &norm, &err), EMBER_OK);
    double want_norm = 0;
    for (int i = 0; i < 3; i++) want_norm += (double)adam_grads[t][i] * adam_grads[t][i];
    ck_assert_double_eq_tol(norm, sqrt(want_norm), 1e-12);
    ck_assert_uint_eq(opt->step, (unsigned)t + 1);
    /* float arithmetic on values of order 1: 1e-6 absolute is a few ulps of accumulated rounding */
    for (int i = 0; i < 3; i++)
      ck_assert_msg(fabs(p[i] - expected[t][i]) < 1e-6, "step %d param %d: %.9f, expected %.9f", t + 1, i,
                    p[i], expected[t][i]);
  }
  nn_adam_destroy(&opt);
  ck_assert_ptr_null(opt);
}

START_TEST(adam_matches_hand_computed_steps) { run_sequence(nn_adam_default_config(0.1f), adam_expected); }
END_TEST

START_TEST(adamw_with_clipping_matches_hand_computed_steps) {
  nn_adam_config cfg = nn_adam_default_config(0.1f);
  cfg.weight_decay = 0.5f;
  cfg.max_grad_norm = 0.5f;
  run_sequence(cfg, adamw_expected);
}
END_TEST

START_TEST(adam_refuses_non_finite_gradients_and_changes_nothing) {
  nn_adam_config cfg = nn_adam_default_config(0.1f);
  ember_err err = {0};
  nn_adam *opt = nn_adam_new(&cfg, 2, &err);
  float p[2] = {1, 2};
  ck_assert_int_eq(nn_adam_step(opt, p, (float[]){0.5f, 0.5f}, NULL, &err), EMBER_OK);
  float p_before[2], m_before[2], v_before[2];
  memcpy(p_before, p, sizeof p), memcpy(m_before, opt->m, sizeof m_before), memcpy(v_before, opt->v, sizeof v_before);
  double norm = 0;
  ck_assert_int_eq(nn_adam_step(opt, p, (float[]){NAN, 1.0f}, &norm, &err), EMBER_ENONFINITE);
  ck_assert(isnan(norm));
  ck_assert_ptr_nonnull(strstr(err.msg, "gradient norm"));
  ck_assert_int_eq(nn_adam_step(opt, p, (float[]){INFINITY, 1.0f}, NULL, &err), EMBER_ENONFINITE);
  ck_assert_uint_eq(opt->step, 1);
  ck_assert_mem_eq(p, p_before, sizeof p);
  ck_assert_mem_eq(opt->m, m_before, sizeof m_before);
  ck_assert_mem_eq(opt->v, v_before, sizeof v_before);
  nn_adam_reset(opt);
  ck_assert_uint_eq(opt->step, 0);
  ck_assert_float_eq(opt->m[0], 0.0f);
  ck_assert_float_eq(opt->v[1], 0.0f);
  nn_adam_destroy(&opt);
}
END_TEST

START_TEST(adam_config_errors_name_the_field) {
  ember_err err = {0};
  struct {
    nn_adam_config cfg;
    const char *field;
  } bad[] = {
      {{.learning_rate = 0, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f}, "learning_rate"},
      {{.learning_rate = 1e-3f, .beta1 = 1.0f, .beta2 = 0.999f, .epsilon = 1e-8f}, "beta1"},
      {{.learning_rate = 1e-3f, .beta1 = 0.9f, .beta2 = -0.1f, .epsilon = 1e-8f}, "beta2"},
      {{.learning_rate = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 0}, "epsilon"},
      {{.learning_rate = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f, .weight_decay = -1}, "weight_decay"},
      {{.learning_rate = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f, .max_grad_norm = NAN}, "max_grad_norm"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_ptr_null(nn_adam_new(&bad[i].cfg, 4, &err));
    ck_assert_int_eq(err.code, EMBER_EINVAL);
    ck_assert_msg(strstr(err.msg, bad[i].field) != NULL, "'%s' does not name %s", err.msg, bad[i].field);
  }
  nn_adam_config ok = nn_adam_default_config(1e-3f);
  ck_assert_ptr_null(nn_adam_new(&ok, 0, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "count"));
}
END_TEST

START_TEST(polyak_and_copy) {
  float target[3] = {1, 2, 3}, source[3] = {3, 2, -1};
  nn_polyak_update(target, source, 3, 0.25f);
  ck_assert_float_eq_tol(target[0], 1.5f, 1e-7);
  ck_assert_float_eq_tol(target[1], 2.0f, 1e-7);
  ck_assert_float_eq_tol(target[2], 2.0f, 1e-7);
  nn_polyak_update(target, source, 3, 1.0f); /* tau = 1 is a copy */
  ck_assert_mem_eq(target, source, sizeof target);

  nn_mlp_spec spec = {.input_dim = 3, .output_dim = 2, .hidden_count = 1, .hidden_dims = {5},
                      .hidden_activation = NN_ACT_RELU};
  nn_mlp *a = nn_mlp_new(&spec, NULL), *b = nn_mlp_new(&spec, NULL);
  rng_t r;
  rng_seed(&r, 4, RNG_STREAM_TEST);
  nn_mlp_init(a, &r, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_init(b, &r, NN_INIT_XAVIER_UNIFORM);
  float *b_before = malloc(b->param_count * sizeof(float));
  memcpy(b_before, b->params, b->param_count * sizeof(float));
  nn_mlp_polyak_update(b, a, 0.005f);
  for (size_t i = 0; i < a->param_count; i++)
    ck_assert_float_eq_tol(b->params[i], 0.995f * b_before[i] + 0.005f * a->params[i], 1e-7);
  a->grads[0] = 7; /* gradients are not parameters: a copy leaves them */
  nn_mlp_copy_params(b, a);
  ck_assert_mem_eq(b->params, a->params, a->param_count * sizeof(float));
  ck_assert_float_eq(b->grads[0], 0.0f);
  free(b_before);
  nn_mlp_destroy(&a);
  nn_mlp_destroy(&b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("nn_optim");
  TCase *t = tcase_create("optim");
  tcase_add_test(t, adam_matches_hand_computed_steps);
  tcase_add_test(t, adamw_with_clipping_matches_hand_computed_steps);
  tcase_add_test(t, adam_refuses_non_finite_gradients_and_changes_nothing);
  tcase_add_test(t, adam_config_errors_name_the_field);
  tcase_add_test(t, polyak_and_copy);
  suite_add_tcase(s, t);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

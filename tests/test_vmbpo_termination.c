/* VMBPO's model rows and the task's termination, end to end on hopper: the functions the learner
 * hands to the algorithm (learner_task_fns, which learner_new passes as algo_context.task) include
 * a termination function for every task, hopper's approximate one too; and step 3's target, computed
 * by VMBPO's own networks and code (vmbpo_critic_sample, vmbpo_q_loss_grad), does not bootstrap a
 * model next state that function marks terminal.
 *
 * How the target is read without transcribing its formula: every network whose output enters it is
 * made constant (last layer's weights zeroed, its bias set): V' = 50, nu = 0, Q = 0, the learned
 * reward 0, and q_d's mean step dx chosen per case with zero noise, so the model's next state is
 * exactly x + dx. With one real row and one model sample (B = K = C = 1), eq. 23's loss is
 * (Q - y)^2 = y^2 and its gradient on Q's output bias is -2 y: the test reads y from that gradient.
 * Bootstrapped, y = gamma V' = 49.5; not bootstrapped, y = 0. Before this test, the learner passed no
 * termination function for hopper (its check was flagged approximate), and every one of these model
 * rows was bootstrapped. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo.h"
#include "algo_vmbpo.h"
#include "env_task.h"
#include "learner.h"
#include "nn.h"
#include "nn_gauss_head.h"

enum { OBS = 11, ACT = 3, DM = OBS + 1 /* hopper's reward is learned: [dx | r] */ };
#define V_TARGET 50.0f
#define GAMMA 0.99f

static const env_spec *hopper(void) {
  const env_spec *s = NULL;
  ember_err err = {0};
  ck_assert_int_eq(env_spec_find("hopper", &s, &err), EMBER_OK);
  return s;
}

/* The network's output does not depend on its input: last layer's weights 0, bias = values. */
static void make_constant(nn_mlp *net, const float *values) {
  const int last = net->layer_count - 1, out = net->dims[last + 1], in = net->dims[last];
  memset(nn_mlp_weight(net, last, 0), 0, (size_t)out * in * sizeof(float));
  memcpy(nn_mlp_bias(net, last, 0), values, (size_t)out * sizeof(float));
}

static vmbpo_settings settings;

static vmbpo_t *make_hopper_vmbpo(const algo_task_fns *fns) {
  config_binding b = {algo_vmbpo.settings, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  const char *sets[][2] = {{"vmbpo.hidden_size", "8"},    {"vmbpo.model_hidden_size", "8"},
                           {"vmbpo.model_samples_per_real", "1"}, {"vmbpo.ensemble_size", "1"},
                           {"vmbpo.critics", "1"},        {"vmbpo.real_ratio", "0"},
                           {"vmbpo.eta", "1"},            {"vmbpo.gamma", "0.99"}};
  for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
    ck_assert_msg(config_set(&b, 1, sets[i][0], sets[i][1], "test", &err) == 0, "%s", err.msg);
  algo_context ctx = {.task_name = "hopper", .obs_dim = OBS, .act_dim = ACT, .max_batch = 1, .seed = 3,
                      .task = *fns, .settings = &settings};
  vmbpo_t *v = algo_vmbpo.create(&ctx, &err);
  ck_assert_msg(v != NULL, "%s", err.msg);
  ck_assert_int_eq(vmbpo_model_dim(v), DM);
  const float fifty = V_TARGET, zero = 0;
  make_constant(vmbpo_net(v, VMBPO_NET_V_TARGET), &fifty);
  make_constant(vmbpo_net(v, VMBPO_NET_NU), &zero);
  make_constant(vmbpo_net(v, VMBPO_NET_Q), &zero);
  return v;
}

/* Step 3's target y for the model row of x_standing + dx, read from eq. 23's gradient. */
static double step3_target(vmbpo_t *v, const float *dx) {
  /* q_d: mean = [dx | r = 0], raw log-variance 0 (bounded by the head; the noise is 0 anyway) */
  float qd_out[2 * DM] = {0};
  memcpy(qd_out, dx, OBS * sizeof(float));
  make_constant(vmbpo_net(v, VMBPO_NET_QD), qd_out);
  float obs[OBS] = {1.25f}, next_obs[OBS] = {1.25f}, action[ACT] = {0.1f, -0.2f, 0.3f}, reward = 1, term = 0,
        trunc = 0;
  algo_batch b = {.size = 1, .obs_dim = OBS, .act_dim = ACT, .obs = obs, .action = action, .reward = &reward,
                  .next_obs = next_obs, .terminated = &term, .truncated = &trunc};
  const float eps_action[ACT] = {0.3f, -0.5f, 0.7f}, eps_model[DM] = {0};
  const int member = 0;
  vmbpo_critic_sample(v, &b, eps_action, eps_model, &member);
  double loss;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_q_loss_grad(v, &b, &loss, &err), 0);
  nn_mlp *q = vmbpo_net(v, VMBPO_NET_Q);
  const double y = -0.5 * nn_mlp_bias_grad(q, q->layer_count - 1, 0)[0]; /* d(Q - y)^2 / dQ at Q = 0 */
  ck_assert_double_eq_tol(loss, y * y, 1e-6 * (1 + y * y));
  return y;
}

typedef struct {
  const char *what;
  int coord;   /* which observation coordinate the model moves */
  float step;  /* by how much */
  int terminal;
} model_case;

/* The observation is (z, angle, 3 joints, 6 velocities); the standing state is z 1.25, the rest 0. */
static const model_case CASES[] = {
    {"stays standing", 0, 0.0f, 0},
    {"falls below z 0.7", 0, -0.6f, 1},
    {"jumps (no upper bound on z)", 0, 0.5f, 0},
    {"tilts past 0.2 rad", 1, 0.3f, 1},
    {"tilts a little", 1, -0.1f, 0},
    {"a joint velocity of 150 (the env's bound of 100, on the model's unclipped velocity)", 7, 150.0f, 1},
    {"a joint velocity of 50", 7, 50.0f, 0},
};

START_TEST(learner_passes_a_termination_function_for_every_task) {
  for (int i = 0; i < env_spec_count(); i++) {
    const env_spec *s = env_spec_at(i);
    algo_task_fns f = learner_task_fns(s);
    ck_assert_ptr_eq(f.task, s);
    ck_assert_msg(f.terminated_fn != NULL, "%s: no termination function (terminated_exact %d)", s->name,
                  s->terminated_exact);
    ck_assert_msg((f.reward_fn != NULL) == (s->reward_exact != 0), "%s: reward_fn given %d, reward_exact %d",
                  s->name, f.reward_fn != NULL, s->reward_exact);
  }
  /* hopper's is the approximate one, and it is env_spec_terminated, widened to floats */
  const env_spec *s = hopper();
  ck_assert_int_eq(s->terminated_exact, 0);
  algo_task_fns f = learner_task_fns(s);
  float o[3][OBS] = {{1.25f}, {0.6f}, {1.25f, 0, 0, 0, 0, 0, 0, 150.0f}};
  float d[3];
  uint8_t want[3];
  f.terminated_fn(f.task, &o[0][0], 3, d);
  env_spec_terminated(s, 3, &o[0][0], want);
  for (int i = 0; i < 3; i++) ck_assert_float_eq(d[i], want[i] ? 1.0f : 0.0f);
  ck_assert_float_eq(d[0], 0.0f);
  ck_assert_float_eq(d[1], 1.0f);
  ck_assert_float_eq(d[2], 1.0f);
}
END_TEST

START_TEST(step3_does_not_bootstrap_model_rows_hopper_marks_terminal) {
  const env_spec *s = hopper();
  algo_task_fns fns = learner_task_fns(s);
  vmbpo_t *v = make_hopper_vmbpo(&fns);
  for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
    float dx[OBS] = {0}, x_model[OBS] = {1.25f};
    dx[CASES[c].coord] = CASES[c].step;
    for (int j = 0; j < OBS; j++) x_model[j] += dx[j];
    uint8_t d;
    env_spec_terminated(s, 1, x_model, &d);
    ck_assert_msg(d == CASES[c].terminal, "case '%s': hopper's check says %d", CASES[c].what, d);
    const double y = step3_target(v, dx);
    const double want = CASES[c].terminal ? 0.0 : GAMMA * V_TARGET;
    ck_assert_msg(fabs(y - want) < 1e-4, "model next state that %s: step 3's target %g, expected %g (%s)",
                  CASES[c].what, y, want, CASES[c].terminal ? "terminal: no bootstrap" : "bootstrapped");
  }
  algo_vmbpo.destroy(v);
}
END_TEST

/* The same rows without a termination function (what the learner passed for hopper before): every
 * one bootstraps. Shows that the test above tells the two apart. */
START_TEST(without_a_termination_function_every_model_row_bootstraps) {
  algo_task_fns fns = learner_task_fns(hopper());
  fns.terminated_fn = NULL;
  vmbpo_t *v = make_hopper_vmbpo(&fns);
  for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
    float dx[OBS] = {0};
    dx[CASES[c].coord] = CASES[c].step;
    ck_assert_double_eq_tol(step3_target(v, dx), GAMMA * V_TARGET, 1e-4);
  }
  algo_vmbpo.destroy(v);
}
END_TEST

int main(void) {
  Suite *s = suite_create("vmbpo_termination");
  TCase *tc = tcase_create("hopper");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, learner_passes_a_termination_function_for_every_task);
  tcase_add_test(tc, step3_does_not_bootstrap_model_rows_hopper_marks_terminal);
  tcase_add_test(tc, without_a_termination_function_every_model_row_bootstraps);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

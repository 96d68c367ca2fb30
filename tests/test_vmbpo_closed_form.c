/* VMBPO's losses proven right without a transcription: each test puts the network code
 * (learner/vmbpo_*.c, through algo_vmbpo.h) where the answer is known in closed form, and checks the
 * answer, not a second copy of the formula. tests/test_vmbpo_losses.c compares every loss with a
 * reference written from the same equations, so a sign error made in both places would pass it;
 * here nothing of eqs. 19-27 is written down again. The mutation script (tests/mutate_vmbpo.sh,
 * `make mutate-vmbpo`) shows that these tests fail when a term of the network code is flipped or
 * dropped.
 *
 * The problem is one-dimensional (obs 1, action 1) and every network is made to compute a chosen
 * function exactly: constant (last layer's weights 0, its bias the values) or affine in its input
 * (relu hidden layers that carry w . in + b + SHIFT > 0 through unit 0 and subtract SHIFT at the
 * output). Expectations over N(0, 1) are taken on a grid of normal quantiles, symmetric and rescaled
 * to variance 1, fed as the noise, so the checks are deterministic; the tolerances are the grid's
 * error (measured, about 1 % of the quantities checked), far below what a flipped or dropped term
 * changes (tens of percent or a sign).
 *
 * The closed forms (p the environment's next-state density, "twist" eq. 14's exponential twist):
 *   eq. 19  p: dx ~ N(m, s^2), V'(x') = c x'. The twisted q_d* = p exp(V' - log E_p exp V') is
 *           N(m + c s^2, s^2); at q_d = p the weights have mean 1 and ESS exp(-c^2 s^2), the loss is
 *           the cross-entropy 0.5 log(2 pi s^2) + 0.5 + c^2 s^2 / 2 and dL/dmean = -c; with every
 *           next state terminal the weights are all 1. With the batch normaliser and an exact Q', two
 *           states with different rewards and values get the same weights.
 *   eq. 21  q_d = N(m_q, s^2), p = N(m_p, s^2): log q_d/p is affine in dx; at it the dual's gradient
 *           is 0 and the loss is 1 - KL(q_d || p) = 1 - (m_q - m_p)^2 / (2 s^2).
 *   eq. 23  with nu the exact twist, y = eta r + gamma ((1 - d) V'(x^) - nu) is the same for every
 *           model sample and equals eq. 9's Q* = eta r + gamma log E_p exp V'.
 *   eq. 24  with Q = q0 constant, V's target averages q0 - KL(q_c || pi) (Gaussians' KL).
 *   eq. 25  with Q = 0 the minimiser is q_c = pi; at q_c = pi and Q = c a the loss is -E[Q] and its
 *           gradient on q_c's mean is -c E[1 - tanh^2 u].
 *   eq. 27  the minimiser is pi = the moment match of (q_c + lambda pi_old) / (1 + lambda) (pre-tanh
 *           Gaussians): lambda = 0 gives q_c.
 * Steps 1 and 4 and the M-step are driven to their minimisers by plain gradient descent (the test's
 * own, on the output biases) from the losses' own gradients. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo.h"
#include "algo_vmbpo.h"
#include "nn.h"
#include "nn_dist.h"
#include "nn_gauss_head.h"

enum { OBS = 1, ACT = 1 };
#define SHIFT 20.0f
#define ETA 0.7
#define GAMMA 0.9

/* ---- the task: a constant reward, and every next state terminal or none ------------------------- */

static const float REWARD = 0.8f;
static int all_terminal;

static void task_reward(const void *task, const float *obs, const float *act, const float *next_obs, int n,
                        float *out) {
  (void)task, (void)obs, (void)act, (void)next_obs;
  for (int i = 0; i < n; i++) out[i] = REWARD;
}
static void task_terminated(const void *task, const float *next_obs, int n, float *out) {
  (void)task, (void)next_obs;
  for (int i = 0; i < n; i++) out[i] = all_terminal ? 1.0f : 0.0f;
}

/* ---- an instance, a batch, the noise ------------------------------------------------------------ */

static vmbpo_settings settings;

static vmbpo_t *make(int batch, int K, const char *const *sets, size_t nsets) {
  config_binding b = {algo_vmbpo.settings, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  char k_value[16], key[96];
  snprintf(k_value, sizeof k_value, "%d", K);
  const char *base[][2] = {{"hidden_size", "4"},       {"model_hidden_size", "4"}, {"activation", "relu"},
                           {"ensemble_size", "1"},     {"critics", "1"},           {"eta", "0.7"},
                           {"gamma", "0.9"},           {"qc_mean_penalty", "0"},   {"model_bound_penalty", "0"},
                           {"qd_weight_max", "1e6"},   {"model_samples_per_real", k_value}};
  for (size_t i = 0; i < sizeof base / sizeof *base; i++) {
    snprintf(key, sizeof key, "vmbpo.%s", base[i][0]);
    ck_assert_msg(config_set(&b, 1, key, base[i][1], "test", &err) == 0, "%s", err.msg);
  }
  for (size_t i = 0; i < nsets; i++) {
    const char *eq = strchr(sets[i], '=');
    snprintf(key, sizeof key, "vmbpo.%.*s", (int)(eq - sets[i]), sets[i]);
    ck_assert_msg(config_set(&b, 1, key, eq + 1, "test", &err) == 0, "%s", err.msg);
  }
  algo_context ctx = {.task_name = "closed_form", .obs_dim = OBS, .act_dim = ACT, .max_batch = batch, .seed = 5,
                      .task = {.task = NULL, .reward_fn = task_reward, .terminated_fn = task_terminated},
                      .settings = &settings};
  vmbpo_t *v = algo_vmbpo.create(&ctx, &err);
  ck_assert_msg(v != NULL, "%s", err.msg);
  ck_assert_int_eq(vmbpo_model_dim(v), OBS);
  all_terminal = 0;
  return v;
}

typedef struct {
  float *obs, *action, *reward, *next_obs, *terminated, *truncated;
  algo_batch b;
} batch_t;

/* B transitions, all zero: the tests fill what they use. */
static void batch_new(batch_t *t, int B) {
  float **cols[] = {&t->obs, &t->action, &t->reward, &t->next_obs, &t->terminated, &t->truncated};
  for (size_t c = 0; c < sizeof cols / sizeof *cols; c++) *cols[c] = calloc((size_t)B, sizeof(float));
  t->b = (algo_batch){.size = B, .obs_dim = OBS, .act_dim = ACT, .obs = t->obs, .action = t->action,
                      .reward = t->reward, .next_obs = t->next_obs, .terminated = t->terminated,
                      .truncated = t->truncated};
}
static void batch_free(batch_t *t) {
  free(t->obs), free(t->action), free(t->reward), free(t->next_obs), free(t->terminated), free(t->truncated);
}

/* z [n]: the normal quantiles at (j + 1/2) / n, mirrored so that their mean is exactly 0 and
 * rescaled so that their mean square is exactly 1: n points that stand for N(0, 1). */
static void normal_grid(float *z, int n) {
  double sq = 0;
  for (int j = 0; j < n / 2; j++) {
    double p = (j + 0.5) / n, lo = -10, hi = 0;
    for (int it = 0; it < 100; it++) {
      double mid = 0.5 * (lo + hi);
      if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid; else hi = mid;
    }
    z[j] = (float)(0.5 * (lo + hi));
    sq += 2.0 * z[j] * z[j];
  }
  if (n % 2) z[n / 2] = 0;
  const double scale = 1 / sqrt(sq / n);
  for (int j = 0; j < n / 2; j++) z[j] = (float)(z[j] * scale), z[n - 1 - j] = -z[j];
}

/* ---- networks made to compute chosen functions -------------------------------------------------- */

/* Every output constant: the last layer's weights 0, its bias the values. */
static void make_constant(nn_mlp *net, const float *values) {
  const int last = net->layer_count - 1;
  memset(nn_mlp_weight(net, last, 0), 0, (size_t)net->dims[last + 1] * net->dims[last] * sizeof(float));
  memcpy(nn_mlp_bias(net, last, 0), values, (size_t)net->dims[last + 1] * sizeof(float));
}

/* A one-output relu network computing y = w . in + b exactly (while w . in + b > -SHIFT): unit 0 of
 * every hidden layer carries w . in + b + SHIFT, every other unit is 0. */
static void make_affine(nn_mlp *net, const float *w, float b) {
  ck_assert_int_eq(net->spec.hidden_activation, NN_ACT_RELU);
  ck_assert_int_ge(net->layer_count, 2);
  memset(net->params, 0, net->param_count * sizeof(float));
  memcpy(nn_mlp_weight(net, 0, 0), w, (size_t)net->dims[0] * sizeof(float));
  nn_mlp_bias(net, 0, 0)[0] = b + SHIFT;
  for (int l = 1; l < net->layer_count; l++) nn_mlp_weight(net, l, 0)[0] = 1.0f;
  nn_mlp_bias(net, net->layer_count - 1, 0)[0] = -SHIFT;
}

static float *out_bias(vmbpo_t *v, vmbpo_net_id id) {
  nn_mlp *net = vmbpo_net(v, id);
  return nn_mlp_bias(net, net->layer_count - 1, 0);
}
static float *out_bias_grad(vmbpo_t *v, vmbpo_net_id id) {
  nn_mlp *net = vmbpo_net(v, id);
  return nn_mlp_bias_grad(net, net->layer_count - 1, 0);
}

/* Solves f(raw) = want for an increasing f by bisection. */
static float invert(float (*f)(vmbpo_t *, float), vmbpo_t *v, float want) {
  float lo = -30, hi = 30;
  for (int it = 0; it < 100; it++) {
    float mid = 0.5f * (lo + hi);
    if (f(v, mid) < want) lo = mid; else hi = mid;
  }
  return 0.5f * (lo + hi);
}
/* A policy's log-std for its raw output (the library's bound, nn_dist.h). */
static float policy_log_std(vmbpo_t *v, float raw) {
  (void)v;
  float ls;
  nn_logstd_bound_forward(&ls, &raw, 1, (float)settings.log_std_min, (float)settings.log_std_max);
  return ls;
}
/* q_d's log-variance for its raw output (the head's soft bounds, nn_gauss_head.h). */
static float model_logvar(vmbpo_t *v, float raw) {
  float row[2] = {0, raw}, lv;
  nn_gauss_head_forward(vmbpo_qd_head(v), NULL, &lv, row, 1);
  return lv;
}

/* A policy net (pi, pi_old, q_c) as the constant tanh-Gaussian of pre-tanh (mean, log_std). */
static void set_policy(vmbpo_t *v, vmbpo_net_id id, float mean, float log_std) {
  const float out[2] = {mean, invert(policy_log_std, v, log_std)};
  make_constant(vmbpo_net(v, id), out);
}
static float policy_mean(vmbpo_t *v, vmbpo_net_id id) { return out_bias(v, id)[0]; }
static float policy_ls(vmbpo_t *v, vmbpo_net_id id) { return policy_log_std(v, out_bias(v, id)[1]); }

/* q_d as the constant Gaussian dx ~ N(mean, exp(logvar)), with wide soft bounds on the log-variance. */
static void set_model(vmbpo_t *v, float mean, float logvar) {
  nn_gauss_head *h = vmbpo_qd_head(v);
  h->params[0] = 3.0f, h->params[1] = -8.0f; /* [max_logvar | min_logvar] */
  const float out[2] = {mean, invert(model_logvar, v, logvar)};
  make_constant(vmbpo_net(v, VMBPO_NET_QD), out);
}

/* ---- eq. 19: q_d by the weighted likelihood reaches the twisted dynamics ------------------------ */

START_TEST(step1_fits_the_exponentially_twisted_linear_gaussian) {
  enum { B = 1024, K = 8 };
  const float m = 0.3f, s = 0.5f, c = 1.2f, x0 = 0.2f, a0 = 0.1f;
  const char *sets[] = {"qd_weight_norm=model", "qd_weight_temperature=1"};
  vmbpo_t *v = make(B, K, sets, 2);
  const float wv[1] = {c};
  make_affine(vmbpo_net(v, VMBPO_NET_V_TARGET), wv, 0.0f); /* V'(x') = c x' */
  set_model(v, m, logf(s * s));                           /* q_d = p */
  batch_t t;
  batch_new(&t, B);
  float z[B], zeta[K], *eps = malloc(sizeof(float) * B * K);
  int *member = calloc((size_t)B * K, sizeof(int));
  normal_grid(z, B);
  normal_grid(zeta, K);
  for (int i = 0; i < B; i++) t.obs[i] = x0, t.action[i] = a0, t.next_obs[i] = x0 + m + s * z[i];
  for (int k = 0; k < K; k++)
    for (int i = 0; i < B; i++) eps[k * B + i] = zeta[k]; /* model row k*B + i: the k-th of K samples */
  double loss, ess, wmax;
  ember_err err = {0};

  /* at q_d = p: E_p[w] = 1, so the loss is E_{q_d*}[-log p] and its slope on the mean is -c */
  ck_assert_int_eq(vmbpo_qd_loss_grad(v, &t.b, eps, member, &loss, &ess, &wmax, &err), 0);
  const double cross_entropy = 0.5 * log(2 * M_PI * s * s) + 0.5 + 0.5 * c * c * s * s;
  ck_assert_msg(fabs(loss - cross_entropy) < 0.01, "step 1 loss at q_d = p: %g, closed form %g", loss, cross_entropy);
  ck_assert_msg(fabs(ess - exp(-c * c * s * s)) < 0.015, "ESS %g, closed form %g", ess, exp(-c * c * s * s));
  const float *g = out_bias_grad(v, VMBPO_NET_QD);
  ck_assert_msg(fabs(g[0] + c) < 0.03, "dL/dmean at q_d = p: %g, closed form %g", g[0], -c);

  /* descend: the minimiser is q_d* = N(m + c s^2, s^2) */
  float *bias = out_bias(v, VMBPO_NET_QD);
  for (int it = 0; it < 300; it++) {
    ck_assert_int_eq(vmbpo_qd_loss_grad(v, &t.b, eps, member, &loss, &ess, &wmax, &err), 0);
    bias[0] -= 0.1f * g[0];
    bias[1] -= 0.1f * g[1];
  }
  ck_assert_msg(fabs(bias[0] - (m + c * s * s)) < 0.01, "q_d's mean %g, twisted mean %g", bias[0], m + c * s * s);
  const float lv = model_logvar(v, bias[1]);
  ck_assert_msg(fabs(lv - logf(s * s)) < 0.04, "q_d's log-variance %g, twisted %g", lv, logf(s * s));

  /* every next state terminal (the real ones and the model's): V' counts nowhere, every weight is 1
   * and the loss is the plain likelihood, flat in the mean at q_d = p */
  all_terminal = 1;
  for (int i = 0; i < B; i++) t.terminated[i] = 1;
  set_model(v, m, logf(s * s));
  ck_assert_int_eq(vmbpo_qd_loss_grad(v, &t.b, eps, member, &loss, &ess, &wmax, &err), 0);
  const double nll = 0.5 * log(2 * M_PI * s * s) + 0.5;
  ck_assert_msg(fabs(loss - nll) < 1e-3, "all terminal: loss %g, plain likelihood %g", loss, nll);
  ck_assert_msg(fabs(wmax - 1) < 1e-5 && fabs(ess - 1) < 1e-9, "all terminal: weights up to %g (ESS %g), not 1",
                wmax, ess);
  ck_assert_msg(fabs(g[0]) < 1e-3, "all terminal: dL/dmean %g, not 0", g[0]);
  free(eps), free(member);
  batch_free(&t);
  algo_vmbpo.destroy(v);
}
END_TEST

START_TEST(step1_batch_normaliser_weighs_states_alike_when_q_target_is_exact) {
  /* Two states with different rewards and values. With Q' exact by eq. 9,
   * (Q'(x, a) - eta r) / gamma = log E_p exp V' = c (x + m) + c^2 s^2 / 2, so each state's weights are
   * the same twist exp(c (dx - m) - c^2 s^2 / 2): the batch softmax leaves them as they are, ESS
   * exp(-c^2 s^2), and the loss is the cross-entropy of step1_fits_...'s first check. */
  enum { B = 1024 };
  const float m = 0.3f, s = 0.5f, c = 1.2f, xs[2] = {-0.4f, 0.6f}, rs[2] = {-1.0f, 0.5f};
  const char *sets[] = {"qd_weight_norm=batch", "qd_weight_temperature=1"};
  vmbpo_t *v = make(B, 1, sets, 2);
  const float wv[1] = {c};
  make_affine(vmbpo_net(v, VMBPO_NET_V_TARGET), wv, 0.0f);
  const float alpha = (rs[1] - rs[0]) / (xs[1] - xs[0]), beta = rs[0] - alpha * xs[0]; /* r = alpha x + beta */
  const float wq[2] = {(float)(ETA * alpha + GAMMA * c), 0.0f};
  make_affine(vmbpo_net(v, VMBPO_NET_Q_TARGET), wq, (float)(ETA * beta + GAMMA * (c * m + 0.5 * c * c * s * s)));
  set_model(v, m, logf(s * s));
  batch_t t;
  batch_new(&t, B);
  float z[B / 2];
  normal_grid(z, B / 2);
  for (int i = 0; i < B; i++) {
    const int st = i < B / 2 ? 0 : 1;
    t.obs[i] = xs[st], t.reward[i] = rs[st], t.next_obs[i] = xs[st] + m + s * z[i % (B / 2)];
  }
  double loss, ess, wmax;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_qd_loss_grad(v, &t.b, NULL, NULL, &loss, &ess, &wmax, &err), 0);
  ck_assert_msg(fabs(ess - exp(-c * c * s * s)) < 0.015, "ESS %g, closed form %g", ess, exp(-c * c * s * s));
  const double cross_entropy = 0.5 * log(2 * M_PI * s * s) + 0.5 + 0.5 * c * c * s * s;
  ck_assert_msg(fabs(loss - cross_entropy) < 0.02, "loss %g, closed form %g", loss, cross_entropy); /* grid: -0.006 */
  batch_free(&t);
  algo_vmbpo.destroy(v);
}
END_TEST

/* ---- eq. 21: the dual's stationary point is the log-ratio ---------------------------------------- */

START_TEST(step2_log_ratio_of_two_gaussians_is_stationary_for_the_dual) {
  enum { B = 128, K = 16 };
  const float mp = 0.3f, mq = 0.55f, s = 0.5f, x0 = 0.2f, a0 = -0.3f;
  vmbpo_t *v = make(B, K, NULL, 0);
  set_model(v, mq, logf(s * s));
  /* nu(x, a, dx) = log N(dx; mq, s^2) - log N(dx; mp, s^2) = alpha dx + beta */
  const float alpha = (mq - mp) / (s * s), beta = -(mq * mq - mp * mp) / (2 * s * s);
  const float wn[OBS + ACT + OBS] = {0, 0, alpha};
  nn_mlp *nu = vmbpo_net(v, VMBPO_NET_NU);
  make_affine(nu, wn, beta);
  batch_t t;
  batch_new(&t, B);
  float z[B], zeta[K], *eps = malloc(sizeof(float) * B * K);
  int *member = calloc((size_t)B * K, sizeof(int));
  normal_grid(z, B);
  normal_grid(zeta, K);
  for (int i = 0; i < B; i++) t.obs[i] = x0, t.action[i] = a0, t.next_obs[i] = x0 + mp + s * z[i];
  for (int k = 0; k < K; k++)
    for (int i = 0; i < B; i++) eps[k * B + i] = zeta[k];
  double loss, clamp_rate;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_nu_loss_grad(v, &t.b, eps, member, &loss, &clamp_rate, &err), 0);
  const double kl = (mq - mp) * (mq - mp) / (2 * s * s);
  ck_assert_msg(fabs(loss - (1 - kl)) < 0.01, "L_nu at nu = log q_d/p: %g, closed form 1 - KL = %g", loss, 1 - kl);
  const float g_beta = out_bias_grad(v, VMBPO_NET_NU)[0], g_alpha = nn_mlp_weight_grad(nu, 0, 0)[OBS + ACT];
  ck_assert_msg(fabs(g_beta) < 0.01 && fabs(g_alpha) < 0.01, "L_nu is not stationary at log q_d/p: (%g, %g)", g_beta,
                g_alpha);
  /* and away from it the gradient points back: nu too high everywhere makes exp(nu) too large */
  out_bias(v, VMBPO_NET_NU)[0] += 0.5f;
  ck_assert_int_eq(vmbpo_nu_loss_grad(v, &t.b, eps, member, &loss, &clamp_rate, &err), 0);
  const double want = exp(0.5) - 1; /* dL/dbeta = -1 + E_p[exp(nu* + 0.5)] */
  ck_assert_msg(fabs(out_bias_grad(v, VMBPO_NET_NU)[0] - want) < 0.01, "dL_nu/dbeta %g, closed form %g",
                out_bias_grad(v, VMBPO_NET_NU)[0], want);
  free(eps), free(member);
  batch_free(&t);
  algo_vmbpo.destroy(v);
}
END_TEST

/* ---- eq. 23: with the exact twist the target does not depend on the model sample ---------------- */

/* Q made 0: eq. 23's loss is mean y^2 and its gradient on Q's output bias -2 mean y, so the mean and
 * the variance of the targets over the model rows are read from the loss itself. */
static void step3_targets(vmbpo_t *v, const algo_batch *b, const float *eps_a, const float *eps_m, const int *member,
                          double *mean, double *var) {
  const float zero = 0;
  make_constant(vmbpo_net(v, VMBPO_NET_Q), &zero);
  vmbpo_critic_sample(v, b, eps_a, eps_m, member);
  double loss;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_q_loss_grad(v, b, &loss, &err), 0);
  *mean = -0.5 * out_bias_grad(v, VMBPO_NET_Q)[0];
  *var = loss - *mean * *mean;
}

START_TEST(step3_target_is_constant_over_model_samples_with_the_exact_twist) {
  enum { B = 4, K = 16 };
  const float m = 0.3f, s = 0.5f, c = 1.2f, x0 = 0.2f;
  vmbpo_t *v = make(B, K, NULL, 0);
  const float wv[1] = {c}, wn[OBS + ACT + OBS] = {0, 0, c};
  make_affine(vmbpo_net(v, VMBPO_NET_V_TARGET), wv, 0.0f); /* V'(x') = c x' */
  /* nu = log(q_d* / p) for that V': c dx - log E_p exp(c dx) = c dx - c m - c^2 s^2 / 2 */
  make_affine(vmbpo_net(v, VMBPO_NET_NU), wn, -(c * m + 0.5f * c * c * s * s));
  set_model(v, m + c * s * s, logf(s * s)); /* q_d = q_d*, though any q_d gives the same targets */
  set_policy(v, VMBPO_NET_QC, 0.1f, logf(0.5f));
  batch_t t;
  batch_new(&t, B);
  for (int i = 0; i < B; i++) t.obs[i] = x0, t.next_obs[i] = x0;
  float eps_a[B * K], eps_m[B * K], grid[B * K];
  int member[B * K] = {0};
  normal_grid(eps_a, B * K);
  normal_grid(grid, B * K);
  for (int r = 0; r < B * K; r++) eps_m[r] = grid[(r * 7) % (B * K)]; /* not in step with the actions */
  double mean, var;
  step3_targets(v, &t.b, eps_a, eps_m, member, &mean, &var);
  const double q_star = ETA * REWARD + GAMMA * (c * (x0 + m) + 0.5 * c * c * s * s); /* eq. 9 */
  ck_assert_msg(var < 1e-5, "eq. 23's target varies over model samples (variance %g) with the exact twist", var);
  ck_assert_msg(fabs(mean - q_star) < 1e-4, "eq. 23's target %g, eq. 9's Q* %g", mean, q_star);

  /* every model next state terminal: V' is masked, the exact twist is q_d = p with nu = 0, and the
   * target is eta r for every sample */
  all_terminal = 1;
  const float zero = 0;
  make_constant(vmbpo_net(v, VMBPO_NET_NU), &zero);
  step3_targets(v, &t.b, eps_a, eps_m, member, &mean, &var);
  ck_assert_msg(var < 1e-5, "terminal model rows: the target varies (variance %g)", var);
  ck_assert_msg(fabs(mean - ETA * REWARD) < 1e-5, "terminal model rows: target %g, eta r = %g", mean, ETA * REWARD);
  batch_free(&t);
  algo_vmbpo.destroy(v);
}
END_TEST

/* ---- eq. 24: V's target is Q less the KL of q_c from pi ----------------------------------------- */

START_TEST(step3_value_target_averages_q_minus_kl_of_qc_from_pi) {
  enum { B = 8, K = 64 };
  const float mc = 0.3f, sc = 0.5f, mp = -0.2f, sp = 0.8f, q0 = 2.0f;
  vmbpo_t *v = make(B, K, NULL, 0);
  set_policy(v, VMBPO_NET_QC, mc, logf(sc));
  set_policy(v, VMBPO_NET_PI, mp, logf(sp));
  set_model(v, 0.1f, logf(0.25f));
  const float zero = 0;
  make_constant(vmbpo_net(v, VMBPO_NET_Q), &q0);
  make_constant(vmbpo_net(v, VMBPO_NET_V), &zero);
  batch_t t;
  batch_new(&t, B);
  float eps_a[B * K], eps_m[B * K];
  int member[B * K] = {0};
  normal_grid(eps_a, B * K);
  normal_grid(eps_m, B * K);
  vmbpo_critic_sample(v, &t.b, eps_a, eps_m, member);
  double loss;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_v_loss_grad(v, &t.b, &loss, &err), 0);
  /* V = 0: dL_V/dbias = -2 mean y_V. The squash terms of the two tanh-Gaussians cancel in
   * log q_c - log pi, which averages KL(N(mc, sc^2) || N(mp, sp^2)). */
  const double mean_y = -0.5 * out_bias_grad(v, VMBPO_NET_V)[0];
  const double kl = log(sp / sc) + (sc * sc + (mc - mp) * (mc - mp)) / (2 * sp * sp) - 0.5;
  ck_assert_msg(fabs(mean_y - (q0 - kl)) < 0.01, "eq. 24's target averages %g, closed form Q - KL = %g", mean_y,
                q0 - kl);
  batch_free(&t);
  algo_vmbpo.destroy(v);
}
END_TEST

/* ---- eq. 25: q_c's minimiser ---------------------------------------------------------------------- */

START_TEST(step4_with_q_zero_returns_qc_to_pi) {
  enum { B = 128 };
  const float mp = 0.1f, lp = logf(0.4f);
  vmbpo_t *v = make(B, 1, NULL, 0);
  set_policy(v, VMBPO_NET_PI, mp, lp);
  set_policy(v, VMBPO_NET_QC, mp + 0.6f, lp - 0.5f);
  const float zero = 0;
  make_constant(vmbpo_net(v, VMBPO_NET_Q), &zero);
  batch_t t;
  batch_new(&t, B);
  for (int i = 0; i < B; i++) t.obs[i] = 0.2f;
  float eps[B];
  normal_grid(eps, B);
  double loss = 0;
  ember_err err = {0};
  float *bias = out_bias(v, VMBPO_NET_QC);
  const float *g = out_bias_grad(v, VMBPO_NET_QC);
  for (int it = 0; it < 300; it++) {
    ck_assert_int_eq(vmbpo_qc_loss_grad(v, &t.b, eps, &loss, &err), 0);
    bias[0] -= 0.03f * g[0];
    bias[1] -= 0.03f * g[1];
  }
  /* the loss is KL(q_c || pi exp(0) / Z) = KL(q_c || pi): 0 at q_c = pi */
  const float mean = policy_mean(v, VMBPO_NET_QC), ls = policy_ls(v, VMBPO_NET_QC);
  ck_assert_msg(fabs(mean - mp) < 0.01 && fabs(ls - lp) < 0.02, "q_c went to (%g, %g), pi is (%g, %g)", mean, ls, mp,
                lp);
  ck_assert_msg(fabs(loss) < 0.01, "step 4's loss at q_c = pi with Q = 0: %g, not 0", loss);
  batch_free(&t);
  algo_vmbpo.destroy(v);
}
END_TEST

START_TEST(step4_at_qc_equal_to_pi_follows_the_slope_of_q) {
  /* q_c = pi: log q_c - log pi is 0 at every sample, so L_c = -mean Q(a); its gradient on q_c's mean
   * is -mean dQ/da (1 - tanh^2 u) plus the log-ratio's path term mean eps / std, exactly 0 on a
   * symmetric grid. Q = c a: the gradient is -c mean (1 - tanh^2 u) < 0 (q_c moves up the slope). */
  enum { B = 128 };
  const float mu = 0.2f, ls = logf(0.5f), c = 0.8f;
  vmbpo_t *v = make(B, 1, NULL, 0);
  set_policy(v, VMBPO_NET_PI, mu, ls);
  set_policy(v, VMBPO_NET_QC, mu, ls);
  const float wq[OBS + ACT] = {0, c};
  make_affine(vmbpo_net(v, VMBPO_NET_Q), wq, 0.0f);
  batch_t t;
  batch_new(&t, B);
  for (int i = 0; i < B; i++) t.obs[i] = 0.2f;
  float eps[B];
  normal_grid(eps, B);
  double loss;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_qc_loss_grad(v, &t.b, eps, &loss, &err), 0);
  const double sd = exp(policy_ls(v, VMBPO_NET_QC));
  double mean_q = 0, slope = 0;
  for (int i = 0; i < B; i++) {
    const double a = tanh(policy_mean(v, VMBPO_NET_QC) + sd * eps[i]);
    mean_q += c * a / B;
    slope += c * (1 - a * a) / B;
  }
  ck_assert_msg(fabs(loss + mean_q) < 1e-4, "L_c at q_c = pi: %g, closed form -E[Q] = %g", loss, -mean_q);
  const float g_mean = out_bias_grad(v, VMBPO_NET_QC)[0];
  ck_assert_msg(fabs(g_mean + slope) < 1e-3, "dL_c/dmean %g, closed form -c E[1 - tanh^2] = %g", g_mean, -slope);
  batch_free(&t);
  algo_vmbpo.destroy(v);
}
END_TEST

/* ---- eq. 27: pi's minimiser ---------------------------------------------------------------------- */

/* The M-step's loss descended from pi = pi_old; returns pi's (pre-tanh mean, log-std). */
static void mstep_fit(double lambda, float *mean, float *ls) {
  enum { B = 8, K = 32 };
  char lam[32];
  snprintf(lam, sizeof lam, "lambda=%g", lambda);
  const char *sets[] = {"pi_equals_qc=false", "mstep_iters=2", lam};
  vmbpo_t *v = make(B, K, sets, 3);
  set_policy(v, VMBPO_NET_QC, 0.5f, logf(0.3f));
  set_policy(v, VMBPO_NET_PI_OLD, -0.3f, logf(0.6f));
  set_policy(v, VMBPO_NET_PI, -0.3f, logf(0.6f));
  batch_t t;
  batch_new(&t, B);
  float eps[B * K];
  normal_grid(eps, B * K);
  double loss, kl;
  ember_err err = {0};
  float *bias = out_bias(v, VMBPO_NET_PI);
  const float *g = out_bias_grad(v, VMBPO_NET_PI);
  for (int it = 0; it < 800; it++) {
    ck_assert_int_eq(vmbpo_pi_loss_grad(v, &t.b, eps, &loss, &kl, &err), 0);
    bias[0] -= 0.015f * g[0];
    bias[1] -= 0.015f * g[1];
  }
  *mean = policy_mean(v, VMBPO_NET_PI), *ls = policy_ls(v, VMBPO_NET_PI);
  batch_free(&t);
  algo_vmbpo.destroy(v);
}

START_TEST(mstep_fits_the_moment_match_of_qc_and_pi_old) {
  const double mq = 0.5, sq = 0.3, mo = -0.3, so = 0.6;
  const double lambdas[] = {0, 1};
  for (int l = 0; l < 2; l++) {
    const double lam = lambdas[l];
    /* argmin over (mu, sigma) of E_{q_c}[-log N(u; mu, sigma)] + lam KL(N(mo, so) || N(mu, sigma)) */
    const double mu = (mq + lam * mo) / (1 + lam);
    const double var = ((mq - mu) * (mq - mu) + sq * sq + lam * (so * so + (mo - mu) * (mo - mu))) / (1 + lam);
    float mean, ls;
    mstep_fit(lam, &mean, &ls);
    ck_assert_msg(fabs(mean - mu) < 0.01 && fabs(ls - 0.5 * log(var)) < 0.02,
                  "lambda %g: pi went to (%g, %g), the closed form is (%g, %g)", lam, mean, ls, mu, 0.5 * log(var));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("vmbpo_closed_form");
  TCase *tc = tcase_create("closed_form");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, step1_fits_the_exponentially_twisted_linear_gaussian);
  tcase_add_test(tc, step1_batch_normaliser_weighs_states_alike_when_q_target_is_exact);
  tcase_add_test(tc, step2_log_ratio_of_two_gaussians_is_stationary_for_the_dual);
  tcase_add_test(tc, step3_target_is_constant_over_model_samples_with_the_exact_twist);
  tcase_add_test(tc, step3_value_target_averages_q_minus_kl_of_qc_from_pi);
  tcase_add_test(tc, step4_with_q_zero_returns_qc_to_pi);
  tcase_add_test(tc, step4_at_qc_equal_to_pi_follows_the_slope_of_q);
  tcase_add_test(tc, mstep_fits_the_moment_match_of_qc_and_pi_old);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

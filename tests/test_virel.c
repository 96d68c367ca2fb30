/* VIREL (learner/algo_virel.c), both variants (virel = VIREL1, virel-soft = VIREL2):
 *
 *  - hand-made: with every network's last layer set to zero weights and chosen biases, each network is
 *    a constant, and every loss (J^V, J^Q = beta-hat, J^pi) and the msbe beta are numbers worked out
 *    by hand in the comments below (no ember code computes the expected values);
 *  - the gradients of the three losses against central finite differences of an independent
 *    double-precision reference (plain loops, ref_mlp.h; no BLAS, none of ember's nn or dist code),
 *    compared as in test_sac.c: |g - fd| <= RTOL * max(|fd|, 1e-2 max|fd|), RTOL = 2e-3;
 *  - Algorithm 1's assignment of networks to steps: e_step (VIREL's M-step) moves V and Q only,
 *    m_step (its E-step) moves pi and V's target only;
 *  - refusals (bad settings by key, bad batches, non-finite losses) without any change; save -> load
 *    -> continue bit-identical; the export acted by common/policy as VIREL acts; a one-step problem. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo.h"
#include "algo_virel.h"
#include "policy.h"
#include "ref_mlp.h"
#include "rng.h"

#define RTOL 2e-3
#define FD_STEP 1e-6
#define OBS 3
#define ACT 2
#define BATCH 6

static virel_settings settings;

static void set_keys(config_binding *b, const char *const *sets, size_t nsets) {
  ember_err err = {0};
  for (size_t i = 0; i < nsets; i++) {
    char key[64];
    const char *eq = strchr(sets[i], '=');
    snprintf(key, sizeof key, "%s.%.*s", b->section->name, (int)(eq - sets[i]), sets[i]);
    ck_assert_msg(config_set(b, 1, key, eq + 1, "test", &err) == 0, "%s", err.msg);
  }
}

/* An instance of ops with 5 tanh units per layer and the given keys (without the section name). */
static virel_t *make(const algo_ops *ops, uint64_t seed, int max_batch, const char *const *sets, size_t nsets) {
  config_binding b = {ops->settings, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  const char *base[] = {"hidden_size=5", "activation=tanh"};
  set_keys(&b, base, 2);
  set_keys(&b, sets, nsets);
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = max_batch, .seed = seed,
                      .settings = &settings};
  virel_t *v = ops->create(&ctx, &err);
  ck_assert_msg(v != NULL, "%s", err.msg);
  return v;
}

typedef struct {
  float obs[BATCH * OBS], action[BATCH * ACT], reward[BATCH], next_obs[BATCH * OBS], terminated[BATCH],
      truncated[BATCH], weights[BATCH];
  algo_batch b;
} toy_batch;

static void make_batch(toy_batch *t, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST);
  for (int i = 0; i < BATCH * OBS; i++) t->obs[i] = (float)rng_normal(&r), t->next_obs[i] = (float)rng_normal(&r);
  for (int i = 0; i < BATCH * ACT; i++) t->action[i] = 2.0f * rng_uniform_f(&r) - 1.0f;
  for (int i = 0; i < BATCH; i++) {
    t->reward[i] = (float)rng_normal(&r);
    t->terminated[i] = i % 3 == 0 ? 1.0f : 0.0f;
    t->truncated[i] = i % 3 == 1 ? 1.0f : 0.0f;
    t->weights[i] = 0.5f + rng_uniform_f(&r);
  }
  t->b = (algo_batch){.size = BATCH, .obs_dim = OBS, .act_dim = ACT, .obs = t->obs, .action = t->action,
                      .reward = t->reward, .next_obs = t->next_obs, .terminated = t->terminated,
                      .truncated = t->truncated, .weights = t->weights};
}

static void fill_eps(float *eps, int n, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 7);
  rng_normal_fill(&r, eps, n);
}

static void perturb(nn_mlp *net, uint64_t seed, float scale) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 9);
  for (size_t i = 0; i < net->param_count; i++) net->params[i] += scale * (float)rng_normal(&r);
}

/* ---- hand-made: every network a constant --------------------------------------------------------- */

/* The last layer of every member: zero weights, biases out[e * out_dim + k]. The network then
 * outputs those biases whatever its input. */
static void set_constant(nn_mlp *net, const float *out) {
  int l = net->layer_count - 1, o = net->dims[l + 1];
  for (int e = 0; e < net->ensemble_size; e++) {
    memset(nn_mlp_weight(net, l, e), 0, (size_t)o * net->dims[l] * sizeof(float));
    memcpy(nn_mlp_bias(net, l, e), out + e * o, (size_t)o * sizeof(float));
  }
}

/* Three transitions: r = (1, -2, 0.5), terminated = (0, 1, 0), w = (1, 1, 2); gamma = 0.5 below. */
enum { HB = 3 };
static float h_obs[HB * OBS], h_next[HB * OBS], h_act[HB * ACT], h_r[HB] = {1, -2, 0.5f}, h_d[HB] = {0, 1, 0},
                                                                 h_w[HB] = {1, 1, 2}, h_zero[HB];
static const algo_batch hand = {.size = HB, .obs_dim = OBS, .act_dim = ACT, .obs = h_obs, .action = h_act,
                                .reward = h_r, .next_obs = h_next, .terminated = h_d, .truncated = h_zero,
                                .weights = h_w};
/* The policy: mean (0.2, -0.4), raw log-std 0 -> log_std = -5 + 7 (tanh(0) + 1) / 2 = -1.5. */
static const float h_pi[2 * ACT] = {0.2f, -0.4f, 0, 0};
static const float h_eps[HB * ACT] = {0, 0, 1, -0.5f, -2, 0.3f};

/* log pi of tanh(mu + std eps) written out from the density of a tanh-squashed Gaussian:
 *   sum_j [ -eps_j^2/2 - log_std - log(2 pi)/2 - log(1 - tanh(u_j)^2) ],  u_j = mu_j + exp(log_std) eps_j */
static double hand_log_pi(const float *eps) {
  double lp = 0;
  for (int j = 0; j < ACT; j++) {
    double u = h_pi[j] + exp(-1.5) * eps[j];
    lp += -0.5 * eps[j] * eps[j] + 1.5 - 0.5 * log(2 * M_PI) - log(1 - tanh(u) * tanh(u));
  }
  return lp;
}

static void make_hand(virel_t *v, const float *q, const float *val, const float *val_target) {
  for (int i = 0; i < HB * OBS; i++) h_obs[i] = 0.1f * i, h_next[i] = -0.2f * i;
  for (int i = 0; i < HB * ACT; i++) h_act[i] = 0.3f - 0.1f * i;
  set_constant(virel_policy_net(v), h_pi);
  set_constant(virel_critic_net(v), q);
  set_constant(virel_value_net(v), val);
  set_constant(virel_target_value_net(v), val_target);
}

START_TEST(virel1_losses_on_a_hand_made_batch) {
  virel_t *v = make(&algo_virel, 1, BATCH, (const char *const[]){"gamma=0.5"}, 1);
  /* Q_1 = 1, Q_2 = 3, V = 0.5, V' = 2 everywhere. */
  make_hand(v, (const float[]){1, 3}, (const float[]){0.5f}, (const float[]){2});
  virel_set_beta(v, 0.7); /* hard targets: beta must not enter J^V or J^Q */
  double v_loss, q_loss, pi_loss, mean_lp;
  ember_err err = {0};
  ck_assert_int_eq(virel_critic_losses_grad(v, &hand, h_eps, &v_loss, &q_loss, &err), 0);
  /* J^V = 1/2 mean (V - min(Q_1, Q_2))^2 = 1/2 (0.5 - 1)^2 = 0.125 */
  ck_assert_double_eq_tol(v_loss, 0.125, 1e-12);
  /* psi = r + 0.5 (1 - d) 2 = (2, -2, 1.5);
   * J^Q = 1/2 (1/3) sum_b w_b [(1 - psi_b)^2 + (3 - psi_b)^2] = 1/6 [(1 + 1) + (9 + 25) + 2 (0.25 + 2.25)] = 41/6 */
  ck_assert_double_eq_tol(q_loss, 41.0 / 6, 1e-12);
  /* J^pi = mean_b [0.7 log pi(a_b) - min(1, 3) + 0.5] */
  ck_assert_int_eq(virel_policy_loss_grad(v, &hand, h_eps, &pi_loss, &mean_lp, &err), 0);
  double expect = 0, lp_mean = 0;
  for (int b = 0; b < HB; b++) {
    double lp = hand_log_pi(h_eps + b * ACT);
    expect += (0.7 * lp - 1 + 0.5) / HB;
    lp_mean += lp / HB;
  }
  ck_assert_double_eq_tol(pi_loss, expect, 1e-5);
  ck_assert_double_eq_tol(mean_lp, lp_mean, 1e-5);
  /* with eps = 0 the first row is exact by hand: u = (0.2, -0.4),
   * log pi = 2 (1.5 - 0.918939) - log(1 - tanh(0.2)^2) - log(1 - tanh(0.4)^2) = 1.162123 + 0.039736 + 0.155907 */
  ck_assert_double_eq_tol(hand_log_pi(h_eps), 1.357766, 1e-5);
  algo_virel.destroy(v);
}
END_TEST

START_TEST(virel2_losses_on_a_hand_made_batch) {
  virel_t *v = make(&algo_virel_soft, 2, BATCH, (const char *const[]){"gamma=0.5"}, 1);
  /* Q_hard = 1, Q_soft = 3, V_hard = 0.5, V_soft = -1, V'_hard = 2, V'_soft = 4 everywhere. */
  make_hand(v, (const float[]){1, 3}, (const float[]){0.5f, -1}, (const float[]){2, 4});
  virel_set_beta(v, 0.7);
  double v_loss, q_loss, pi_loss, mean_lp;
  ember_err err = {0};
  ck_assert_int_eq(virel_critic_losses_grad(v, &hand, h_eps, &v_loss, &q_loss, &err), 0);
  /* J^V = 1/2 mean_b [ (V_hard - Q_hard)^2 + (V_soft - (Q_soft - 0.7 log pi(a_b)))^2 ]
   *     = 1/2 mean_b [ 0.25 + (-4 + 0.7 log pi(a_b))^2 ] */
  double expect = 0;
  for (int b = 0; b < HB; b++) {
    double d = -4 + 0.7 * hand_log_pi(h_eps + b * ACT);
    expect += 0.5 * (0.25 + d * d) / HB;
  }
  ck_assert_double_eq_tol(v_loss, expect, 1e-5);
  /* psi_hard = r + 0.5 (1 - d) 2 = (2, -2, 1.5), psi_soft = r + 0.5 (1 - d) 4 = (3, -2, 2.5);
   * J^Q = 1/6 [ (1 + 0) + (9 + 25) + 2 (0.25 + 0.25) ] = 36/6 = 6 */
  ck_assert_double_eq_tol(q_loss, 6.0, 1e-12);
  /* J^pi = mean_b [0.7 log pi - min(Q_hard, Q_soft) + V_hard] */
  ck_assert_int_eq(virel_policy_loss_grad(v, &hand, h_eps, &pi_loss, &mean_lp, &err), 0);
  expect = 0;
  for (int b = 0; b < HB; b++) expect += (0.7 * hand_log_pi(h_eps + b * ACT) - 1 + 0.5) / HB;
  ck_assert_double_eq_tol(pi_loss, expect, 1e-5);
  algo_virel_soft.destroy(v);
}
END_TEST

/* msbe mode: beta-hat is the batch's J^Q; beta = clamp(scale * EMA(beta-hat), beta_min, beta_max). */
START_TEST(msbe_beta_on_a_hand_made_batch) {
  const char *sets[] = {"gamma=0.5", "beta_mode=msbe", "beta_scale=0.1", "beta_ema=0.25", "beta_max=10"};
  virel_t *v = make(&algo_virel, 3, BATCH, sets, 5);
  ck_assert_double_eq(virel_beta(v), 10); /* beta_max before any estimate */
  ck_assert(isnan(virel_msbe_ema(v)));
  make_hand(v, (const float[]){1, 3}, (const float[]){0.5f}, (const float[]){2});
  ember_err err = {0};
  algo_stats st = {0};
  ck_assert_int_eq(algo_virel.e_step(v, &hand, &st, &err), 0);
  /* the first estimate starts the average: 41/6 (worked out above), beta = 0.1 * 41/6 */
  ck_assert_double_eq_tol(virel_msbe_ema(v), 41.0 / 6, 1e-12);
  ck_assert_double_eq_tol(virel_beta(v), 4.1 / 6, 1e-12);
  ck_assert_double_eq_tol(st.values[1], 41.0 / 6, 1e-12); /* "msbe" */
  ck_assert_double_eq_tol(st.values[3], 4.1 / 6, 1e-12);  /* "beta" */
  /* The second batch, with Q_1 = Q_2 = 2 (the Adam step moved the hidden layers, not the outputs
   * set again here): psi = (2, -2, 1.5), beta-hat = 1/6 [0 + 2 * 16 + 2 * 2 * 0.25] = 33/6;
   * EMA = 41/6 + 0.25 (33/6 - 41/6) = 39/6; beta = 3.9/6 */
  make_hand(v, (const float[]){2, 2}, (const float[]){0.5f}, (const float[]){2});
  ck_assert_int_eq(algo_virel.e_step(v, &hand, &st, &err), 0);
  ck_assert_double_eq_tol(virel_msbe_ema(v), 39.0 / 6, 1e-12);
  ck_assert_double_eq_tol(virel_beta(v), 3.9 / 6, 1e-12);
  algo_virel.destroy(v);

  /* the bounds: beta_scale 1 would give 41/6, beta_max 2 caps it; beta_min 8 floors it */
  const char *capped[] = {"gamma=0.5", "beta_mode=msbe", "beta_max=2"};
  v = make(&algo_virel, 3, BATCH, capped, 3);
  make_hand(v, (const float[]){1, 3}, (const float[]){0.5f}, (const float[]){2});
  ck_assert_int_eq(algo_virel.e_step(v, &hand, NULL, &err), 0);
  ck_assert_double_eq(virel_beta(v), 2);
  algo_virel.destroy(v);
  const char *floored[] = {"gamma=0.5", "beta_mode=msbe", "beta_min=8", "beta_max=9"};
  v = make(&algo_virel, 3, BATCH, floored, 4);
  make_hand(v, (const float[]){1, 3}, (const float[]){0.5f}, (const float[]){2});
  ck_assert_int_eq(algo_virel.e_step(v, &hand, NULL, &err), 0);
  ck_assert_double_eq(virel_beta(v), 8);
  algo_virel.destroy(v);

  /* constant mode: beta = alpha, whatever the critic's error (the average is still kept) */
  v = make(&algo_virel, 3, BATCH, (const char *const[]){"gamma=0.5", "alpha=0.05"}, 2);
  make_hand(v, (const float[]){1, 3}, (const float[]){0.5f}, (const float[]){2});
  ck_assert_int_eq(algo_virel.e_step(v, &hand, NULL, &err), 0);
  ck_assert_double_eq_tol(virel_beta(v), 0.05, 1e-15);
  ck_assert_double_eq_tol(virel_msbe_ema(v), 41.0 / 6, 1e-12);
  algo_virel.destroy(v);
}
END_TEST

/* ---- the double-precision reference --------------------------------------------------------------- */

static double ref_policy(const nn_mlp *pi, const double *theta, const float *obs, const float *eps, double *action) {
  double x[OBS], out[2 * ACT], lp = 0;
  for (int i = 0; i < OBS; i++) x[i] = obs[i];
  ref_mlp_forward(pi, theta, 0, x, out);
  for (int j = 0; j < ACT; j++) {
    double ls = settings.log_std_min + 0.5 * (settings.log_std_max - settings.log_std_min) * (tanh(out[ACT + j]) + 1);
    double u = out[j] + exp(ls) * eps[j];
    action[j] = tanh(u);
    lp += -0.5 * eps[j] * eps[j] - ls - 0.5 * log(2 * M_PI) - log(1 - tanh(u) * tanh(u));
  }
  return lp;
}

static double ref_q(const nn_mlp *q, const double *theta, int member, const float *obs, const double *action) {
  double x[OBS + ACT], y;
  for (int i = 0; i < OBS; i++) x[i] = obs[i];
  for (int j = 0; j < ACT; j++) x[OBS + j] = action[j];
  ref_mlp_forward(q, theta, member, x, &y);
  return y;
}

static double ref_v(const nn_mlp *v, const double *theta, int member, const float *obs) {
  double x[OBS], y;
  for (int i = 0; i < OBS; i++) x[i] = obs[i];
  ref_mlp_forward(v, theta, member, x, &y);
  return y;
}

static double *to_double(const nn_mlp *net) {
  double *d = malloc(net->param_count * sizeof(double));
  for (size_t i = 0; i < net->param_count; i++) d[i] = net->params[i];
  return d;
}

typedef struct {
  bool soft;
  const nn_mlp *pi, *q, *v, *vt;
  double *pi_theta, *q_theta, *v_theta, *vt_theta;
  const algo_batch *b;
  const float *eps;
  double beta, gamma;
} ref_ctx;

/* J^V = 1/2 mean_b sum_k (V_k(s) - v^_k)^2; virel: v^ = min_j Q_j(s, a~); virel-soft: v^_hard = Q_1(s, a~),
 * v^_soft = Q_2(s, a~) - beta log pi(a~|s); a~ = tanh(mu(s) + std(s) eps) */
static double ref_v_loss(const ref_ctx *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    const float *s = c->b->obs + i * OBS;
    double a[ACT];
    double lp = ref_policy(c->pi, c->pi_theta, s, c->eps + i * ACT, a);
    double q1 = ref_q(c->q, c->q_theta, 0, s, a), q2 = ref_q(c->q, c->q_theta, 1, s, a);
    if (!c->soft) {
      double d = ref_v(c->v, c->v_theta, 0, s) - fmin(q1, q2);
      loss += 0.5 * d * d;
    } else {
      double d1 = ref_v(c->v, c->v_theta, 0, s) - q1, d2 = ref_v(c->v, c->v_theta, 1, s) - (q2 - c->beta * lp);
      loss += 0.5 * (d1 * d1 + d2 * d2);
    }
  }
  return loss / c->b->size;
}

/* J^Q = 1/2 mean_b w_b sum_j (Q_j(s, a) - psi_j)^2, psi_j = r + gamma (1 - d) V'_{m(j)}(s'), m(j) = 0 (virel) or j */
static double ref_q_loss(const ref_ctx *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    double a[ACT];
    for (int j = 0; j < ACT; j++) a[j] = c->b->action[i * ACT + j];
    for (int j = 0; j < 2; j++) {
      double psi = c->b->reward[i] + c->gamma * (1 - c->b->terminated[i]) *
                                         ref_v(c->vt, c->vt_theta, c->soft ? j : 0, c->b->next_obs + i * OBS);
      double d = ref_q(c->q, c->q_theta, j, c->b->obs + i * OBS, a) - psi;
      loss += 0.5 * c->b->weights[i] * d * d;
    }
  }
  return loss / c->b->size;
}

/* J^pi = mean_b [beta log pi(a~|s) - min_j Q_j(s, a~) + V_hard(s)] */
static double ref_pi_loss(const ref_ctx *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    const float *s = c->b->obs + i * OBS;
    double a[ACT];
    double lp = ref_policy(c->pi, c->pi_theta, s, c->eps + i * ACT, a);
    loss += c->beta * lp - fmin(ref_q(c->q, c->q_theta, 0, s, a), ref_q(c->q, c->q_theta, 1, s, a)) +
            ref_v(c->v, c->v_theta, 0, s);
  }
  return loss / c->b->size;
}

static double grad_error(const float *g, const double *fd, size_t n) {
  double scale = 0, worst = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(fd[i]));
  double floor_ = fmax(1e-2 * scale, 1e-12);
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(g[i] - fd[i]) / fmax(fabs(fd[i]), floor_));
  return worst;
}

static void check_gradient(double (*loss)(const ref_ctx *), const ref_ctx *c, double *theta, const nn_mlp *net,
                           const char *what) {
  size_t n = net->param_count;
  double *fd = calloc(n, sizeof(double)), norm = 0;
  for (size_t i = 0; i < n; i++) {
    double keep = theta[i];
    theta[i] = keep + FD_STEP;
    double up = loss(c);
    theta[i] = keep - FD_STEP;
    double down = loss(c);
    theta[i] = keep;
    fd[i] = (up - down) / (2 * FD_STEP);
    norm += fd[i] * fd[i];
  }
  double e = grad_error(net->grads, fd, n);
  ck_assert_msg(e < RTOL, "%s gradient error %g", what, e);
  ck_assert_msg(norm > 1e-8, "%s gradient is zero: nothing was checked", what);
  free(fd);
}

static void gradients_match(const algo_ops *ops, bool soft, uint64_t seed) {
  virel_t *v = make(ops, seed, BATCH, NULL, 0);
  virel_set_beta(v, 0.6);
  perturb(virel_critic_net(v), seed + 1, 0.3f);       /* a less flat critic: dQ/da matters */
  perturb(virel_target_value_net(v), seed + 2, 0.2f); /* the target is not the value's own */
  toy_batch t;
  make_batch(&t, seed + 3);
  float eps[BATCH * ACT];
  fill_eps(eps, BATCH * ACT, seed + 4);
  double v_loss, q_loss, pi_loss, mean_lp;
  ember_err err = {0};
  ck_assert_int_eq(virel_critic_losses_grad(v, &t.b, eps, &v_loss, &q_loss, &err), 0);
  ref_ctx c = {soft, virel_policy_net(v), virel_critic_net(v), virel_value_net(v), virel_target_value_net(v),
               to_double(virel_policy_net(v)), to_double(virel_critic_net(v)), to_double(virel_value_net(v)),
               to_double(virel_target_value_net(v)), &t.b, eps, 0.6, settings.gamma};
  ck_assert_double_eq_tol(v_loss, ref_v_loss(&c), 1e-4 * fmax(1, fabs(v_loss)));
  ck_assert_double_eq_tol(q_loss, ref_q_loss(&c), 1e-4 * fmax(1, fabs(q_loss)));
  check_gradient(ref_v_loss, &c, c.v_theta, virel_value_net(v), "J^V");
  check_gradient(ref_q_loss, &c, c.q_theta, virel_critic_net(v), "J^Q");

  fill_eps(eps, BATCH * ACT, seed + 5);
  ck_assert_int_eq(virel_policy_loss_grad(v, &t.b, eps, &pi_loss, &mean_lp, &err), 0);
  ck_assert_double_eq_tol(pi_loss, ref_pi_loss(&c), 1e-4 * fmax(1, fabs(pi_loss)));
  check_gradient(ref_pi_loss, &c, c.pi_theta, virel_policy_net(v), "J^pi");
  /* with beta = 0 the whole policy gradient goes through dQ/da */
  virel_set_beta(v, 0);
  c.beta = 0;
  ck_assert_int_eq(virel_policy_loss_grad(v, &t.b, eps, &pi_loss, &mean_lp, &err), 0);
  check_gradient(ref_pi_loss, &c, c.pi_theta, virel_policy_net(v), "J^pi (dQ/da only)");
  free(c.pi_theta), free(c.q_theta), free(c.v_theta), free(c.vt_theta);
  ops->destroy(v);
}

START_TEST(virel1_gradients_match_finite_differences) { gradients_match(&algo_virel, false, 11); }
END_TEST
START_TEST(virel2_gradients_match_finite_differences) { gradients_match(&algo_virel_soft, true, 21); }
END_TEST

/* ---- which step moves which network (Algorithm 1) --------------------------------------------------- */

typedef struct {
  float *p[4];
  size_t n[4];
} snapshot;

static nn_mlp *net_of(virel_t *v, int i) {
  nn_mlp *nets[] = {virel_policy_net(v), virel_critic_net(v), virel_value_net(v), virel_target_value_net(v)};
  return nets[i];
}

static snapshot snap(virel_t *v) {
  snapshot x;
  for (int i = 0; i < 4; i++) {
    x.n[i] = net_of(v, i)->param_count;
    x.p[i] = malloc(x.n[i] * sizeof(float));
    memcpy(x.p[i], net_of(v, i)->params, x.n[i] * sizeof(float));
  }
  return x;
}

/* bit i set: network i (pi, Q, V, V') is as in the snapshot */
static int same_mask(virel_t *v, const snapshot *x) {
  int m = 0;
  for (int i = 0; i < 4; i++) m |= (memcmp(x->p[i], net_of(v, i)->params, x->n[i] * sizeof(float)) == 0) << i;
  return m;
}

static void snap_free(snapshot *x) {
  for (int i = 0; i < 4; i++) free(x->p[i]);
}

START_TEST(each_step_moves_only_its_networks) {
  const algo_ops *ops[] = {&algo_virel, &algo_virel_soft};
  for (int k = 0; k < 2; k++) {
    virel_t *v = make(ops[k], 31, BATCH, NULL, 0);
    toy_batch t;
    make_batch(&t, 32);
    ember_err err = {0};
    snapshot a = snap(v);
    ck_assert_int_eq(ops[k]->e_step(v, &t.b, NULL, &err), 0); /* VIREL's M-step: V and Q */
    ck_assert_int_eq(same_mask(v, &a), 1 | 8);
    snapshot b = snap(v);
    ck_assert_int_eq(ops[k]->m_step(v, &t.b, NULL, &err), 0); /* VIREL's E-step: pi, then V' */
    ck_assert_int_eq(same_mask(v, &b), 2 | 4);
    snap_free(&a), snap_free(&b);
    ops[k]->destroy(v);
  }
}
END_TEST

/* ---- refusals ---------------------------------------------------------------------------------------- */

START_TEST(bad_settings_are_refused_by_name) {
  struct {
    const algo_ops *ops;
    const char *set[2];
    const char *named;
  } cases[] = {
      {&algo_virel, {"beta_mode=adaptive", NULL}, "virel.beta_mode"},
      {&algo_virel_soft, {"beta_mode=MSBE", NULL}, "virel_soft.beta_mode"},
      {&algo_virel, {"beta_min=2", "beta_max=1"}, "virel.beta_min"},
      {&algo_virel_soft, {"beta_min=2", "beta_max=1"}, "virel_soft.beta_max"},
      {&algo_virel, {"log_std_min=-1", "log_std_max=-2"}, "virel.log_std_min"},
      {&algo_virel_soft, {"activation=sigmoid", NULL}, "virel_soft.activation"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    config_binding b = {cases[i].ops->settings, &settings, NULL};
    ember_err err = {0};
    ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
    set_keys(&b, cases[i].set, cases[i].set[1] ? 2 : 1);
    algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = 4, .settings = &settings};
    ck_assert_ptr_null(cases[i].ops->create(&ctx, &err));
    ck_assert_int_eq(err.code, EMBER_EINVAL);
    ck_assert_msg(strstr(err.msg, cases[i].named), "'%s' does not name %s", err.msg, cases[i].named);
  }
  /* out of range: refused while loading, by key */
  config_binding b = {algo_virel.settings, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_ne(config_set(&b, 1, "virel.beta_ema", "0", "test", &err), 0);
  ck_assert_ptr_nonnull(strstr(err.msg, "beta_ema"));
  ck_assert_int_ne(config_set(&b, 1, "virel.alpha", "-1", "test", &err), 0);
  ck_assert_ptr_nonnull(strstr(err.msg, "alpha"));
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = 0, .max_batch = 4, .settings = NULL};
  ck_assert_ptr_null(algo_virel.create(&ctx, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
}
END_TEST

START_TEST(bad_batches_are_refused_without_change) {
  virel_t *v = make(&algo_virel, 41, BATCH, NULL, 0);
  toy_batch t;
  make_batch(&t, 42);
  snapshot before = snap(v);
  ember_err err = {0};
  algo_stats st = {0};
  float *cells[] = {&t.obs[4], &t.action[1], &t.reward[2], &t.next_obs[7], &t.terminated[0], &t.weights[3]};
  for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
    float keep = *cells[c];
    *cells[c] = c % 2 ? INFINITY : NAN;
    ck_assert_int_eq(algo_virel.e_step(v, &t.b, &st, &err), EMBER_ENONFINITE);
    ck_assert_int_eq(algo_virel.m_step(v, &t.b, &st, &err), EMBER_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(err.msg, "non-finite"));
    *cells[c] = keep;
  }
  t.b.obs_dim = OBS + 1;
  ck_assert_int_eq(algo_virel.e_step(v, &t.b, NULL, &err), EMBER_ESHAPE);
  ck_assert_ptr_nonnull(strstr(err.msg, "obs_dim"));
  t.b.obs_dim = OBS;
  t.b.size = BATCH + 1;
  ck_assert_int_eq(algo_virel.m_step(v, &t.b, NULL, &err), EMBER_ESHAPE);
  t.b.size = BATCH;
  float pr[BATCH];
  ck_assert_int_eq(algo_virel.priorities(v, pr, &err), EMBER_ESTATE);
  ck_assert_int_eq(same_mask(v, &before), 15);
  ck_assert_int_eq(algo_virel.e_step(v, &t.b, &st, &err), 0);
  ck_assert_int_eq(algo_virel.priorities(v, pr, &err), 0);
  for (int i = 0; i < BATCH; i++) ck_assert(pr[i] >= 0 && isfinite(pr[i]));
  snap_free(&before);
  algo_virel.destroy(v);
}
END_TEST

/* A beta that makes the losses infinite: virel-soft's V_soft target (the M-step) and the policy loss
 * (the E-step) are refused, each named, with nothing changed. */
START_TEST(a_non_finite_loss_is_refused_without_change) {
  virel_t *v = make(&algo_virel_soft, 43, BATCH, NULL, 0);
  toy_batch t;
  make_batch(&t, 44);
  virel_set_beta(v, INFINITY);
  snapshot before = snap(v);
  ember_err err = {0};
  ck_assert_int_eq(algo_virel_soft.e_step(v, &t.b, NULL, &err), EMBER_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(err.msg, "J^V"));
  ck_assert_int_eq(algo_virel_soft.m_step(v, &t.b, NULL, &err), EMBER_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(err.msg, "J^pi"));
  ck_assert_int_eq(same_mask(v, &before), 15);
  snap_free(&before);
  algo_virel_soft.destroy(v);
}
END_TEST

/* ---- save, load, continue ------------------------------------------------------------------------------ */

static void updates(const algo_ops *ops, virel_t *v, int n, uint64_t seed) {
  ember_err err = {0};
  for (int i = 0; i < n; i++) {
    toy_batch t;
    make_batch(&t, seed + i);
    ck_assert_msg(ops->e_step(v, &t.b, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(ops->m_step(v, &t.b, NULL, &err) == 0, "%s", err.msg);
  }
}

START_TEST(save_load_continue_is_bit_identical) {
  const algo_ops *ops[] = {&algo_virel, &algo_virel_soft};
  for (int k = 0; k < 2; k++) {
    const char *msbe[] = {"beta_mode=msbe", "beta_ema=0.3"};
    virel_t *a = make(ops[k], 51, BATCH, msbe, 2);
    updates(ops[k], a, 10, 100);
    FILE *f = tmpfile();
    ember_err err = {0};
    ck_assert_int_eq(ops[k]->save(a, f, &err), 0);
    updates(ops[k], a, 10, 200); /* the uninterrupted run */
    virel_t *b = make(ops[k], 99, BATCH, msbe, 2); /* another seed: everything must come from the file */
    rewind(f);
    ck_assert_msg(ops[k]->load(b, f, &err) == 0, "%s", err.msg);
    updates(ops[k], b, 10, 200);
    snapshot sa = snap(a);
    ck_assert_int_eq(same_mask(b, &sa), 15);
    ck_assert(virel_beta(a) == virel_beta(b) && virel_msbe_ema(a) == virel_msbe_ema(b));
    float obs[OBS] = {0.1f, -0.2f, 0.3f}, act_a[ACT], act_b[ACT];
    ck_assert_int_eq(ops[k]->act(a, obs, 1, false, act_a, NULL, &err), 0);
    ck_assert_int_eq(ops[k]->act(b, obs, 1, false, act_b, NULL, &err), 0);
    ck_assert_mem_eq(act_a, act_b, sizeof act_a);
    snap_free(&sa);

    /* a foreign, a truncated and a mis-shaped state are refused */
    FILE *g = tmpfile();
    fwrite("not a virel state, not at all", 1, 30, g);
    rewind(g);
    ck_assert_int_eq(ops[k]->load(b, g, &err), EMBER_ECORRUPT);
    fclose(g);
    g = tmpfile();
    char buf[300];
    rewind(f);
    size_t got = fread(buf, 1, sizeof buf, f);
    fwrite(buf, 1, got, g);
    rewind(g);
    ck_assert_int_eq(ops[k]->load(b, g, &err), EMBER_ECORRUPT);
    fclose(g);
    virel_t *c = make(ops[1 - k], 51, BATCH, NULL, 0); /* the other variant */
    rewind(f);
    ck_assert_int_eq(ops[1 - k]->load(c, f, &err), EMBER_ESHAPE);
    fclose(f);
    ops[k]->destroy(a);
    ops[k]->destroy(b);
    ops[1 - k]->destroy(c);
  }
}
END_TEST

/* ---- export ----------------------------------------------------------------------------------------------- */

START_TEST(export_is_a_policy_the_actor_accepts) {
  const algo_ops *ops[] = {&algo_virel, &algo_virel_soft};
  for (int k = 0; k < 2; k++) {
    virel_t *v = make(ops[k], 61, BATCH, NULL, 0);
    updates(ops[k], v, 3, 300);
    Ember__Params p;
    ember_err err = {0};
    ck_assert_int_eq(ops[k]->export_params(v, &p, &err), 0);
    ck_assert_str_eq(p.policy_kind, "tanh_gaussian_mlp");
    ck_assert_str_eq(p.algorithm, ops[k]->name);
    ck_assert_str_eq(p.task, "toy");
    ck_assert_uint_eq(p.n_tensors, 6);
    ck_assert_float_eq(p.log_std_min, (float)settings.log_std_min);
    ck_assert_mem_eq(p.tensors[0]->data, nn_mlp_weight(virel_policy_net(v), 0, 0), p.tensors[0]->n_data * sizeof(float));
    toy_batch t;
    make_batch(&t, 62);
    policy_config pc = {.task = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH};
    policy_t *pol = policy_new(&p, &pc, &err);
    ck_assert_msg(pol != NULL, "%s", err.msg);
    float pol_act[BATCH * ACT], pol_lp[BATCH], act[BATCH * ACT], lp[BATCH];
    ck_assert_int_eq(policy_act(pol, t.obs, BATCH, true, NULL, pol_act, pol_lp, &err), 0);
    ck_assert_int_eq(ops[k]->act(v, t.obs, BATCH, true, act, lp, &err), 0);
    for (int i = 0; i < BATCH * ACT; i++) ck_assert_float_eq_tol(pol_act[i], act[i], 1e-6f);
    for (int i = 0; i < BATCH; i++) ck_assert_float_eq_tol(pol_lp[i], lp[i], 1e-4f);
    policy_destroy(&pol);
    algo_params_free(&p);
    ops[k]->destroy(v);
  }
  ck_assert_ptr_eq(algo_find("virel"), &algo_virel);
  ck_assert_ptr_eq(algo_find("virel-soft"), &algo_virel_soft);
}
END_TEST

/* ---- it learns (a one-step problem) ------------------------------------------------------------------------ */

/* Every episode is one step, reward -(a - 0.5)^2 summed over the action dims, then termination: both
 * critics must learn the reward, and the E-step must move the policy's mean action to 0.5. */
static void one_step_problem(const algo_ops *ops) {
  const char *sets[] = {"hidden_size=32", "activation=relu", "actor_lr=3e-3", "critic_lr=3e-3",
                        "value_lr=3e-3",  "alpha=0.01"};
  enum { B = 64 };
  config_binding bind = {ops->settings, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&bind, 1, &err), 0);
  set_keys(&bind, sets, sizeof sets / sizeof *sets);
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = B, .seed = 3,
                      .settings = &settings};
  virel_t *v = ops->create(&ctx, &err);
  ck_assert_ptr_nonnull(v);
  static float obs[B * OBS], act[B * ACT], rew[B], term[B], zero[B];
  rng_t r;
  rng_seed(&r, 5, RNG_STREAM_TEST);
  algo_batch b = {.size = B, .obs_dim = OBS, .act_dim = ACT, .obs = obs, .action = act, .reward = rew,
                  .next_obs = obs, .terminated = term, .truncated = zero};
  algo_stats st = {0};
  for (int it = 0; it < 1500; it++) {
    for (int i = 0; i < B; i++) {
      rew[i] = 0;
      term[i] = 1;
      for (int j = 0; j < OBS; j++) obs[i * OBS + j] = 2 * rng_uniform_f(&r) - 1;
      for (int j = 0; j < ACT; j++) {
        act[i * ACT + j] = 2 * rng_uniform_f(&r) - 1;
        rew[i] -= (act[i * ACT + j] - 0.5f) * (act[i * ACT + j] - 0.5f);
      }
    }
    ck_assert_int_eq(ops->e_step(v, &b, &st, &err), 0);
    ck_assert_int_eq(ops->m_step(v, &b, &st, &err), 0);
  }
  float a[B * ACT];
  ck_assert_int_eq(ops->act(v, obs, B, true, a, NULL, &err), 0);
  double mean = 0;
  for (int i = 0; i < B * ACT; i++) mean += a[i] / (B * ACT);
  ck_assert_msg(fabs(mean - 0.5) < 0.1, "%s: mean deterministic action %g, optimum 0.5", ops->name, mean);
  ck_assert_int_eq(st.count, 9);
  ck_assert_msg(st.values[1] < 0.01, "%s: the critics' MSBE %g", ops->name, st.values[1]);
  ops->destroy(v);
}

START_TEST(one_step_problem_moves_the_action_to_the_optimum) {
  one_step_problem(&algo_virel);
  one_step_problem(&algo_virel_soft);
}
END_TEST

int main(void) {
  Suite *s = suite_create("virel");
  TCase *h = tcase_create("hand-made");
  tcase_add_test(h, virel1_losses_on_a_hand_made_batch);
  tcase_add_test(h, virel2_losses_on_a_hand_made_batch);
  tcase_add_test(h, msbe_beta_on_a_hand_made_batch);
  suite_add_tcase(s, h);
  TCase *g = tcase_create("gradients");
  tcase_add_test(g, virel1_gradients_match_finite_differences);
  tcase_add_test(g, virel2_gradients_match_finite_differences);
  tcase_add_test(g, each_step_moves_only_its_networks);
  suite_add_tcase(s, g);
  TCase *r = tcase_create("refusals");
  tcase_add_test(r, bad_settings_are_refused_by_name);
  tcase_add_test(r, bad_batches_are_refused_without_change);
  tcase_add_test(r, a_non_finite_loss_is_refused_without_change);
  suite_add_tcase(s, r);
  TCase *st = tcase_create("state");
  tcase_add_test(st, save_load_continue_is_bit_identical);
  tcase_add_test(st, export_is_a_policy_the_actor_accepts);
  suite_add_tcase(s, st);
  TCase *l = tcase_create("learning");
  tcase_set_timeout(l, 120);
  tcase_add_test(l, one_step_problem_moves_the_action_to_the_optimum);
  suite_add_tcase(s, l);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

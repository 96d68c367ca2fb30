/* MPO (learner/algo_mpo.c). Every loss against a direct double-precision computation on a hand-made
 * batch (the reference below uses plain loops and none of ember's nn, dist or algo code), gradients
 * against central finite differences of that reference, the temperature dual's minimiser against a
 * brute-force 1-D search, the M-step's decoupled KL constraints met once the Lagrange multipliers
 * settle, refusals (batches, settings by name, m_step without its e_step), save -> load -> continue
 * bit-identical, the export against common/policy, and a one-step problem MPO must solve.
 *
 * Tolerances: as tests/test_sac.c. Values agree to 1e-4 relative (float forward passes); gradients
 * element by element to RTOL = 2e-3 of max(|fd|, 1e-2 max|fd|), far below what a wrong sign, a
 * missing term or a factor of 2 gives. The nets use tanh so every loss is smooth. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo.h"
#include "algo_mpo.h"
#include "policy.h"
#include "ref_mlp.h"
#include "rng.h"

#define RTOL 2e-3
#define FD_STEP 1e-6
#define OBS 3
#define ACT 2
#define BATCH 6
#define NS 4 /* action_samples */
#define MS 3 /* target_samples */

static mpo_settings settings;

static void apply_sets(config_binding *b, const char *const *sets, size_t nsets) {
  ember_err err = {0};
  for (size_t i = 0; i < nsets; i++) {
    char key[64];
    const char *eq = strchr(sets[i], '=');
    snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
    ck_assert_msg(config_set(b, 1, key, eq + 1, "test", &err) == 0, "%s", err.msg);
  }
}

static mpo_t *make_mpo(uint64_t seed, int max_batch, const char *const *sets, size_t nsets) {
  config_binding b = {&mpo_config_section, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  const char *base[] = {"mpo.hidden_size=5", "mpo.activation=tanh", "mpo.action_samples=4", "mpo.target_samples=3"};
  apply_sets(&b, base, 4);
  apply_sets(&b, sets, nsets);
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = max_batch, .seed = seed,
                      .settings = &settings};
  mpo_t *m = algo_mpo.create(&ctx, &err);
  ck_assert_msg(m != NULL, "%s", err.msg);
  return m;
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

static void fill_normal(float *x, int n, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 7);
  rng_normal_fill(&r, x, n);
}

static void perturb(nn_mlp *net, uint64_t seed, float scale) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 9);
  for (size_t i = 0; i < net->param_count; i++) net->params[i] += scale * (float)rng_normal(&r);
}

static double *to_double(const nn_mlp *net) {
  double *d = malloc(net->param_count * sizeof(double));
  for (size_t i = 0; i < net->param_count; i++) d[i] = net->params[i];
  return d;
}

/* ---- the double-precision reference ------------------------------------------------------------- */

/* The Gaussian head: mean and the smoothly bounded log-std (docs/protocol.md). */
static void ref_head(const nn_mlp *pi, const double *theta, const float *obs, double *mean, double *log_std) {
  double x[OBS], out[2 * ACT];
  for (int i = 0; i < OBS; i++) x[i] = obs[i];
  ref_mlp_forward(pi, theta, 0, x, out);
  for (int d = 0; d < ACT; d++) {
    mean[d] = out[d];
    log_std[d] = settings.log_std_min + 0.5 * (settings.log_std_max - settings.log_std_min) * (tanh(out[ACT + d]) + 1);
  }
}

static double ref_qmin(const nn_mlp *q, const double *theta, const float *obs, const double *action) {
  double x[OBS + ACT], y0, y1;
  for (int i = 0; i < OBS; i++) x[i] = obs[i];
  for (int d = 0; d < ACT; d++) x[OBS + d] = action[d];
  ref_mlp_forward(q, theta, 0, x, &y0);
  ref_mlp_forward(q, theta, 1, x, &y1);
  return fmin(y0, y1);
}

static double ref_log_normal(double x, double mean, double log_std) {
  double z = (x - mean) / exp(log_std);
  return -0.5 * z * z - log_std - 0.5 * log(2 * M_PI);
}

typedef struct {
  const nn_mlp *pi, *pi_old, *q, *qt;
  double *pi_theta, *pi_old_theta, *q_theta, *qt_theta;
  const algo_batch *b;
  const float *eps; /* critic: [B, MS, A] */
  const float *u, *w; /* M-step: [B, NS, A], [B, NS] */
  double alpha_mean, alpha_std;
} ref_ctx;

/* y_i = r + gamma (1 - d) mean_k min_c Q'_c(s', tanh(mu'(s') + std'(s') eps_k));
 * L_Q = (1/B) sum_i w_i sum_c (Q_c(s, a) - y_i)^2 */
static double ref_critic_loss(const ref_ctx *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    double mean[ACT], ls[ACT], a[ACT], v = 0;
    ref_head(c->pi_old, c->pi_old_theta, c->b->next_obs + i * OBS, mean, ls);
    for (int k = 0; k < MS; k++) {
      for (int d = 0; d < ACT; d++) a[d] = tanh(mean[d] + exp(ls[d]) * c->eps[(i * MS + k) * ACT + d]);
      v += ref_qmin(c->qt, c->qt_theta, c->b->next_obs + i * OBS, a) / MS;
    }
    double y = c->b->reward[i] + settings.gamma * (1 - c->b->terminated[i]) * v;
    double x[OBS + ACT], q;
    for (int k = 0; k < OBS; k++) x[k] = c->b->obs[i * OBS + k];
    for (int d = 0; d < ACT; d++) x[OBS + d] = c->b->action[i * ACT + d];
    for (int m = 0; m < 2; m++) {
      ref_mlp_forward(c->q, c->q_theta, m, x, &q);
      loss += c->b->weights[i] * (q - y) * (q - y);
    }
  }
  return loss / c->b->size;
}

typedef struct {
  double nll, kl_mean, kl_std, loss;
} ref_mstep;

/* nll = -(1/B) sum_ij w_ij [log N(u_ij; mu, std_old) + log N(u_ij; mu_old, std)];
 * KL_mean = (1/B) sum_i sum_d (mu - mu_old)^2 / (2 std_old^2);
 * KL_std  = (1/B) sum_i sum_d [log std - log std_old + std_old^2 / (2 std^2) - 1/2] */
static ref_mstep ref_mstep_terms(const ref_ctx *c) {
  ref_mstep r = {0};
  const int B = c->b->size;
  for (int i = 0; i < B; i++) {
    double mu[ACT], ls[ACT], mu0[ACT], ls0[ACT];
    ref_head(c->pi, c->pi_theta, c->b->obs + i * OBS, mu, ls);
    ref_head(c->pi_old, c->pi_old_theta, c->b->obs + i * OBS, mu0, ls0);
    for (int j = 0; j < NS; j++)
      for (int d = 0; d < ACT; d++) {
        double u = c->u[(i * NS + j) * ACT + d];
        r.nll -= c->w[i * NS + j] * (ref_log_normal(u, mu[d], ls0[d]) + ref_log_normal(u, mu0[d], ls[d]));
      }
    for (int d = 0; d < ACT; d++) {
      double s0 = exp(ls0[d]), s = exp(ls[d]);
      r.kl_mean += (mu[d] - mu0[d]) * (mu[d] - mu0[d]) / (2 * s0 * s0);
      r.kl_std += ls[d] - ls0[d] + s0 * s0 / (2 * s * s) - 0.5;
    }
  }
  r.nll /= B, r.kl_mean /= B, r.kl_std /= B;
  r.loss = r.nll + c->alpha_mean * r.kl_mean + c->alpha_std * r.kl_std;
  return r;
}

static double ref_mstep_loss(const ref_ctx *c) { return ref_mstep_terms(c).loss; }

static double grad_error(const float *g, const double *fd, size_t n) {
  double scale = 0, worst = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(fd[i]));
  double floor_ = fmax(1e-2 * scale, 1e-12);
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(g[i] - fd[i]) / fmax(fabs(fd[i]), floor_));
  return worst;
}

static double *finite_diff(double (*loss)(const ref_ctx *), const ref_ctx *c, double *theta, size_t n) {
  double *fd = calloc(n, sizeof(double));
  for (size_t i = 0; i < n; i++) {
    double keep = theta[i];
    theta[i] = keep + FD_STEP;
    double up = loss(c);
    theta[i] = keep - FD_STEP;
    double down = loss(c);
    theta[i] = keep;
    fd[i] = (up - down) / (2 * FD_STEP);
  }
  return fd;
}

/* ---- policy evaluation ---------------------------------------------------------------------------- */

START_TEST(critic_loss_and_gradient_match_the_reference) {
  mpo_t *m = make_mpo(11, BATCH, NULL, 0);
  perturb(mpo_target_critic_net(m), 5, 0.3f); /* the target path is not the critic's own */
  perturb(mpo_target_policy_net(m), 6, 0.5f);
  toy_batch t;
  make_batch(&t, 1);
  float eps[BATCH * MS * ACT];
  fill_normal(eps, BATCH * MS * ACT, 2);
  double loss;
  ember_err err = {0};
  ck_assert_int_eq(mpo_critic_loss_grad(m, &t.b, eps, &loss, &err), 0);
  ref_ctx c = {.pi_old = mpo_target_policy_net(m), .q = mpo_critic_net(m), .qt = mpo_target_critic_net(m),
               .pi_old_theta = to_double(mpo_target_policy_net(m)), .q_theta = to_double(mpo_critic_net(m)),
               .qt_theta = to_double(mpo_target_critic_net(m)), .b = &t.b, .eps = eps};
  double want = ref_critic_loss(&c);
  ck_assert_msg(fabs(loss - want) <= 1e-4 * fmax(1, fabs(want)), "critic loss %.9g, reference %.9g", loss, want);
  size_t n = mpo_critic_net(m)->param_count;
  double *fd = finite_diff(ref_critic_loss, &c, c.q_theta, n);
  double e = grad_error(mpo_critic_net(m)->grads, fd, n);
  ck_assert_msg(e < RTOL, "critic gradient error %g", e);
  free(fd), free(c.pi_old_theta), free(c.q_theta), free(c.qt_theta);
  algo_mpo.destroy(m);
}
END_TEST

/* ---- the E-step ------------------------------------------------------------------------------------- */

START_TEST(estep_samples_come_from_the_target_policy_and_critic) {
  mpo_t *m = make_mpo(12, BATCH, NULL, 0);
  perturb(mpo_target_critic_net(m), 7, 0.3f);
  perturb(mpo_target_policy_net(m), 8, 0.5f);
  perturb(mpo_policy_net(m), 9, 0.5f); /* the online nets must not be the ones used */
  perturb(mpo_critic_net(m), 10, 0.5f);
  toy_batch t;
  make_batch(&t, 2);
  float eps[BATCH * NS * ACT];
  fill_normal(eps, BATCH * NS * ACT, 3);
  const float *u, *q;
  mpo_estep_samples(m, t.obs, BATCH, eps, &u, &q);
  double *pt = to_double(mpo_target_policy_net(m)), *qt = to_double(mpo_target_critic_net(m));
  for (int i = 0; i < BATCH; i++) {
    double mean[ACT], ls[ACT], a[ACT];
    ref_head(mpo_target_policy_net(m), pt, t.obs + i * OBS, mean, ls);
    for (int j = 0; j < NS; j++) {
      for (int d = 0; d < ACT; d++) {
        double uu = mean[d] + exp(ls[d]) * eps[(i * NS + j) * ACT + d];
        ck_assert_double_eq_tol(u[(i * NS + j) * ACT + d], uu, 1e-5);
        a[d] = tanh(uu);
      }
      ck_assert_double_eq_tol(q[i * NS + j], ref_qmin(mpo_target_critic_net(m), qt, t.obs + i * OBS, a), 1e-5);
    }
  }
  free(pt), free(qt);
  algo_mpo.destroy(m);
}
END_TEST

/* A hand-made Q-table: 3 states x 4 actions, spreads of about 0.3, 3 and 30. */
static const float q_table[3 * NS] = {1.0f, 1.2f, 0.9f, 1.3f, -5.0f, -2.0f, -4.5f, -3.0f, 10.0f, 40.0f, 25.0f, 12.0f};

/* g(eta) directly from its definition, no max taken out: eta eps + eta mean_i log mean_j exp(Q_ij/eta). */
static double direct_dual(double eta, double epsilon) {
  double s = 0;
  for (int i = 0; i < 3; i++) {
    long double z = 0;
    for (int j = 0; j < NS; j++) z += expl((long double)q_table[i * NS + j] / eta);
    s += (double)logl(z / NS);
  }
  return eta * epsilon + eta * s / 3;
}

START_TEST(temperature_dual_value_gradient_and_weights) {
  const double epsilon = 0.1;
  for (double eta = 0.5; eta < 40; eta *= 2.3) {
    float w[3 * NS];
    double d_eta, kl;
    double g = mpo_temperature_dual(q_table, 3, NS, eta, epsilon, w, &d_eta, &kl);
    ck_assert_msg(fabs(g - direct_dual(eta, epsilon)) < 1e-9 * fmax(1, fabs(g)), "g(%g) = %.12g, direct %.12g", eta,
                  g, direct_dual(eta, epsilon));
    double fd = (direct_dual(eta + 1e-5, epsilon) - direct_dual(eta - 1e-5, epsilon)) / 2e-5;
    ck_assert_msg(fabs(d_eta - fd) < 1e-6 * fmax(1, fabs(fd)), "dg/deta(%g) = %.9g, finite difference %.9g", eta,
                  d_eta, fd);
    double kl_direct = 0;
    for (int i = 0; i < 3; i++) {
      double z = 0;
      for (int j = 0; j < NS; j++) z += exp(q_table[i * NS + j] / eta);
      for (int j = 0; j < NS; j++) {
        double wij = exp(q_table[i * NS + j] / eta) / z;
        ck_assert_double_eq_tol(w[i * NS + j], wij, 1e-6);
        kl_direct += wij * log(NS * wij) / 3;
      }
    }
    ck_assert_double_eq_tol(kl, kl_direct, 1e-9);
    ck_assert_double_eq_tol(d_eta, epsilon - kl_direct, 1e-9); /* dg/deta = epsilon - KL(q || uniform) */
  }
}
END_TEST

START_TEST(temperature_update_reaches_the_duals_brute_force_minimiser) {
  const double epsilon = 0.1;
  /* Brute force: g on a grid of 200,001 points in log(eta) over [-7, 7], then a finer grid around the best. */
  double best_log = 0, best_g = INFINITY;
  for (int k = 0; k <= 200000; k++) {
    double le = -7 + 14.0 * k / 200000, g = direct_dual(exp(le), epsilon);
    if (g < best_g) best_g = g, best_log = le;
  }
  double lo = best_log - 1e-4, fine = best_log;
  for (int k = 0; k <= 20000; k++) {
    double le = lo + 2e-4 * k / 20000, g = direct_dual(exp(le), epsilon);
    if (g < best_g) best_g = g, fine = le;
  }
  const double eta_star = exp(fine);
  ck_assert(eta_star > 1.5 && eta_star < 1e3); /* interior: the constraint is active */

  /* MPO's own update (one Adam step of log eta per call, dual_lr), from eta = 1. */
  mpo_t *m = make_mpo(13, BATCH, (const char *const[]){"mpo.epsilon=0.1"}, 1);
  float w[3 * NS];
  double dual, kl;
  ember_err err = {0};
  for (int it = 0; it < 3000; it++)
    ck_assert_int_eq(mpo_temperature_update(m, q_table, 3, NS, w, &dual, &kl, &err), 0);
  double eta = mpo_eta(m);
  ck_assert_msg(fabs(log(eta) - log(eta_star)) < 0.01, "eta %.6g, brute-force minimiser %.6g", eta, eta_star);
  ck_assert_msg(fabs(dual - best_g) < 1e-3 * fabs(best_g), "g(eta) %.9g, brute-force minimum %.9g", dual, best_g);
  /* at the minimiser the E-step's KL constraint holds with equality */
  ck_assert_msg(fabs(kl - epsilon) < 2e-3, "KL(q || pi_old) %g at eta*, epsilon %g", kl, epsilon);
  /* a table of the wrong width is refused */
  ck_assert_int_eq(mpo_temperature_update(m, q_table, 2, 6, w, &dual, &kl, &err), EMBER_ESHAPE);
  algo_mpo.destroy(m);
}
END_TEST

/* ---- the M-step --------------------------------------------------------------------------------------- */

/* Samples near pi_old with weights that are not uniform, rows summing to 1. */
static void make_mstep_case(mpo_t *m, const float *obs, float *u, float *w, uint64_t seed) {
  float eps[BATCH * NS * ACT];
  fill_normal(eps, BATCH * NS * ACT, seed);
  const float *us, *q;
  mpo_estep_samples(m, obs, BATCH, eps, &us, &q);
  memcpy(u, us, sizeof eps);
  for (int i = 0; i < BATCH; i++) {
    double z = 0;
    for (int j = 0; j < NS; j++) z += (w[i * NS + j] = (float)(j + 1 + i % 2));
    for (int j = 0; j < NS; j++) w[i * NS + j] = (float)(w[i * NS + j] / z);
  }
}

START_TEST(mstep_loss_and_gradient_match_the_reference) {
  mpo_t *m = make_mpo(14, BATCH, NULL, 0);
  perturb(mpo_target_policy_net(m), 11, 0.1f); /* pi_old != pi: both KL terms nonzero */
  mpo_set_duals(m, 1.0, 0.7, 1.3);
  toy_batch t;
  make_batch(&t, 4);
  float u[BATCH * NS * ACT], w[BATCH * NS];
  make_mstep_case(m, t.obs, u, w, 12);
  mpo_mstep_terms got;
  ember_err err = {0};
  ck_assert_int_eq(mpo_mstep_loss_grad(m, t.obs, BATCH, u, w, &got, &err), 0);
  ref_ctx c = {.pi = mpo_policy_net(m), .pi_old = mpo_target_policy_net(m), .pi_theta = to_double(mpo_policy_net(m)),
               .pi_old_theta = to_double(mpo_target_policy_net(m)), .b = &t.b, .u = u, .w = w, .alpha_mean = 0.7,
               .alpha_std = 1.3};
  ref_mstep want = ref_mstep_terms(&c);
  ck_assert(want.kl_mean > 0.01 && want.kl_std > 0.01); /* every term matters in this case */
  ck_assert_double_eq_tol(got.nll, want.nll, 1e-4 * fmax(1, fabs(want.nll)));
  ck_assert_double_eq_tol(got.kl_mean, want.kl_mean, 1e-5 * fmax(1, want.kl_mean));
  ck_assert_double_eq_tol(got.kl_std, want.kl_std, 1e-5 * fmax(1, want.kl_std));
  ck_assert_double_eq_tol(got.loss, want.loss, 1e-4 * fmax(1, fabs(want.loss)));
  size_t n = mpo_policy_net(m)->param_count;
  double *fd = finite_diff(ref_mstep_loss, &c, c.pi_theta, n);
  double e = grad_error(mpo_policy_net(m)->grads, fd, n);
  ck_assert_msg(e < RTOL, "policy gradient error %g", e);
  /* The multipliers' losses log(alpha) (epsilon - KL) and their derivatives in log(alpha), by differences. */
  double a_mean = log(0.7) * (settings.epsilon_mean - want.kl_mean), a_std = log(1.3) * (settings.epsilon_std - want.kl_std);
  ck_assert_double_eq_tol(got.alpha_mean_loss, a_mean, 1e-5 * fmax(1, fabs(a_mean)));
  ck_assert_double_eq_tol(got.alpha_std_loss, a_std, 1e-5 * fmax(1, fabs(a_std)));
  double h = 1e-6, la = log(0.7), ls = log(1.3);
  double fd_a = ((la + h) - (la - h)) / (2 * h) * (settings.epsilon_mean - want.kl_mean);
  double fd_s = ((ls + h) - (ls - h)) / (2 * h) * (settings.epsilon_std - want.kl_std);
  ck_assert_double_eq_tol(got.d_log_alpha_mean, fd_a, 1e-5 * fmax(1, fabs(fd_a)));
  ck_assert_double_eq_tol(got.d_log_alpha_std, fd_s, 1e-5 * fmax(1, fabs(fd_s)));
  /* The likelihood term alone (multipliers ~0), so a KL term cannot hide an error in it. */
  mpo_set_duals(m, 1.0, 1e-9, 1e-9);
  c.alpha_mean = c.alpha_std = 1e-9;
  ck_assert_int_eq(mpo_mstep_loss_grad(m, t.obs, BATCH, u, w, &got, &err), 0);
  free(fd);
  fd = finite_diff(ref_mstep_loss, &c, c.pi_theta, n);
  e = grad_error(mpo_policy_net(m)->grads, fd, n);
  ck_assert_msg(e < RTOL, "policy gradient (likelihood term only) error %g", e);
  free(fd), free(c.pi_theta), free(c.pi_old_theta);
  algo_mpo.destroy(m);
}
END_TEST

/* Samples that pull hard: every sample about 3 pi_old-stds above pi_old's mean, uniformly weighted.
 * Unconstrained, the weighted maximum likelihood would move the mean by 3 std (KL_mean = 4.5 per
 * dimension) and, fitted around pi_old's mean, triple the std (KL_std = log 3 + 1/18 - 1/2 = 0.65 per
 * dimension). */
static void pulling_case(mpo_t *m, const float *obs, float *u, float *w) {
  float eps[BATCH * NS * ACT];
  for (int i = 0; i < BATCH * NS; i++)
    for (int d = 0; d < ACT; d++) eps[i * ACT + d] = 3.0f + 0.05f * (float)((i % NS) - 1.5);
  const float *us, *q;
  mpo_estep_samples(m, obs, BATCH, eps, &us, &q);
  memcpy(u, us, sizeof eps);
  for (int i = 0; i < BATCH * NS; i++) w[i] = 1.0f / NS;
}

static void run_mstep(mpo_t *m, const float *obs, const float *u, const float *w, int iters, bool free_duals,
                      double *kl_mean, double *kl_std) {
  ember_err err = {0};
  mpo_mstep_terms t;
  *kl_mean = *kl_std = 0;
  for (int it = 0; it < iters; it++) {
    if (!free_duals) mpo_set_duals(m, 1, 1e-6, 1e-6);
    ck_assert_msg(mpo_policy_update(m, obs, BATCH, u, w, &t, &err) == 0, "%s", err.msg);
    if (it >= iters - 500) *kl_mean += t.kl_mean / 500, *kl_std += t.kl_std / 500;
  }
}

START_TEST(mstep_meets_its_kl_constraints_once_the_multipliers_settle) {
  const char *sets[] = {"mpo.epsilon_mean=0.05", "mpo.epsilon_std=0.02", "mpo.policy_lr=1e-3",
                        "mpo.init_alpha_mean=1", "mpo.init_alpha_std=1"};
  mpo_t *m = make_mpo(15, BATCH, sets, 5);
  toy_batch t;
  make_batch(&t, 5);
  float u[BATCH * NS * ACT], w[BATCH * NS];
  pulling_case(m, t.obs, u, w);
  double kl_mean, kl_std;
  run_mstep(m, t.obs, u, w, 6000, true, &kl_mean, &kl_std); /* pi_old stays put: m_step's Polyak is not run */
  ck_assert_msg(kl_mean > 0.8 * 0.05 && kl_mean < 1.1 * 0.05, "KL_mean %g over the last 500 steps, bound 0.05",
                kl_mean);
  ck_assert_msg(kl_std > 0.8 * 0.02 && kl_std < 1.1 * 0.02, "KL_std %g over the last 500 steps, bound 0.02", kl_std);
  ck_assert(mpo_alpha_mean(m) > 1 && mpo_alpha_std(m) > 1); /* the multipliers grew to hold the bounds */
  algo_mpo.destroy(m);

  /* The control: the same case with the multipliers held near 0 goes far past both bounds. */
  m = make_mpo(15, BATCH, sets, 5);
  pulling_case(m, t.obs, u, w);
  run_mstep(m, t.obs, u, w, 3000, false, &kl_mean, &kl_std);
  ck_assert_msg(kl_mean > 10 * 0.05 && kl_std > 10 * 0.02, "unconstrained KL_mean %g, KL_std %g", kl_mean, kl_std);
  algo_mpo.destroy(m);
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------------------------ */

static size_t state_floats(mpo_t *m) {
  return mpo_policy_net(m)->param_count * 2 + mpo_critic_net(m)->param_count * 2 + 3;
}

static float *snap(mpo_t *m) {
  float *x = malloc(state_floats(m) * sizeof(float)), *p = x;
  nn_mlp *nets[] = {mpo_policy_net(m), mpo_target_policy_net(m), mpo_critic_net(m), mpo_target_critic_net(m)};
  for (int k = 0; k < 4; k++) memcpy(p, nets[k]->params, nets[k]->param_count * sizeof(float)), p += nets[k]->param_count;
  p[0] = (float)mpo_eta(m), p[1] = (float)mpo_alpha_mean(m), p[2] = (float)mpo_alpha_std(m);
  return x;
}

static int same_as(mpo_t *m, const float *x) {
  float *y = snap(m);
  int same = memcmp(x, y, state_floats(m) * sizeof(float)) == 0;
  free(y);
  return same;
}

START_TEST(bad_batches_are_refused_without_change) {
  mpo_t *m = make_mpo(16, BATCH, NULL, 0);
  toy_batch t;
  make_batch(&t, 6);
  float *before = snap(m);
  ember_err err = {0};
  algo_stats st = {0};
  float *cells[] = {&t.obs[4], &t.action[1], &t.reward[2], &t.next_obs[7], &t.terminated[0], &t.weights[3]};
  for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
    float keep = *cells[c];
    *cells[c] = c % 2 ? INFINITY : NAN;
    ck_assert_int_eq(algo_mpo.e_step(m, &t.b, &st, &err), EMBER_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(err.msg, "non-finite"));
    *cells[c] = keep;
  }
  ck_assert_int_eq(algo_mpo.m_step(m, &t.b, &st, &err), EMBER_ESTATE); /* no E-step on this batch */
  t.b.obs_dim = OBS + 1;
  ck_assert_int_eq(algo_mpo.e_step(m, &t.b, &st, &err), EMBER_ESHAPE);
  t.b.obs_dim = OBS;
  float pr[BATCH];
  ck_assert_int_eq(algo_mpo.priorities(m, pr, &err), EMBER_ESTATE);
  ck_assert(same_as(m, before));
  /* the clean batch goes through, both steps, and changes the parameters */
  ck_assert_int_eq(algo_mpo.e_step(m, &t.b, &st, &err), 0);
  ck_assert_int_eq(algo_mpo.m_step(m, &t.b, &st, &err), 0);
  ck_assert_int_eq(st.count, 13);
  ck_assert_int_eq(algo_mpo.m_step(m, &t.b, &st, &err), EMBER_ESTATE); /* one M-step per E-step */
  ck_assert_int_eq(algo_mpo.priorities(m, pr, &err), 0);
  ck_assert(!same_as(m, before));
  free(before);
  algo_mpo.destroy(m);
}
END_TEST

START_TEST(a_loss_that_overflows_is_refused_without_change) {
  mpo_t *m = make_mpo(17, BATCH, NULL, 0);
  toy_batch t;
  make_batch(&t, 7);
  nn_mlp *qt = mpo_target_critic_net(m);
  for (int c = 0; c < 2; c++) nn_mlp_bias(qt, qt->layer_count - 1, c)[0] = 3e38f; /* finite, but y is not */
  t.reward[1] = 3e38f;
  float *before = snap(m);
  ember_err err = {0};
  ck_assert_int_eq(algo_mpo.e_step(m, &t.b, NULL, &err), EMBER_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(err.msg, "critic loss"));
  ck_assert(same_as(m, before));
  free(before);
  algo_mpo.destroy(m);
}
END_TEST

START_TEST(bad_settings_are_refused_by_name) {
  config_binding b = {&mpo_config_section, &settings, NULL};
  ember_err err = {0};
  const char *bad[][2] = {{"mpo.action_samples", "0"}, {"mpo.epsilon", "0"}, {"mpo.epsilon_std", "-1"},
                          {"mpo.policy_tau", "2"},     {"mpo.init_eta", "0"}, {"mpo.dual_lr", "0"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
    ck_assert_int_ne(config_set(&b, 1, bad[i][0], bad[i][1], "test", &err), 0);
    ck_assert_msg(strstr(err.msg, bad[i][0]) != NULL, "'%s' does not name %s", err.msg, bad[i][0]);
  }
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = 4, .settings = &settings};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  snprintf(settings.activation, sizeof settings.activation, "sigmoid");
  ck_assert_ptr_null(algo_mpo.create(&ctx, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "mpo.activation"));
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  settings.log_std_min = 1, settings.log_std_max = 0;
  ck_assert_ptr_null(algo_mpo.create(&ctx, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "mpo.log_std_min"));
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  settings.target_samples = 0; /* a struct filled without config_set is checked too */
  ck_assert_ptr_null(algo_mpo.create(&ctx, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "mpo.target_samples"));
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  settings.epsilon_mean = 0;
  ck_assert_ptr_null(algo_mpo.create(&ctx, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "mpo.epsilon_mean"));
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  ctx.act_dim = 0;
  ck_assert_ptr_null(algo_mpo.create(&ctx, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
}
END_TEST

/* ---- save, load, continue; export ------------------------------------------------------------------------ */

static void updates(mpo_t *m, int n, uint64_t batch_seed) {
  ember_err err = {0};
  for (int i = 0; i < n; i++) {
    toy_batch t;
    make_batch(&t, batch_seed + i);
    ck_assert_msg(algo_mpo.e_step(m, &t.b, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(algo_mpo.m_step(m, &t.b, NULL, &err) == 0, "%s", err.msg);
  }
}

START_TEST(save_load_continue_is_bit_identical) {
  mpo_t *a = make_mpo(21, BATCH, NULL, 0);
  updates(a, 10, 100);
  FILE *f = tmpfile();
  ember_err err = {0};
  ck_assert_int_eq(algo_mpo.save(a, f, &err), 0);
  updates(a, 10, 200);
  mpo_t *b = make_mpo(99, BATCH, NULL, 0); /* another seed: everything must come from the file */
  rewind(f);
  ck_assert_msg(algo_mpo.load(b, f, &err) == 0, "%s", err.msg);
  updates(b, 10, 200);
  float *sa = snap(a);
  ck_assert(same_as(b, sa));
  free(sa);
  float obs[OBS] = {0.1f, -0.2f, 0.3f}, act_a[ACT], act_b[ACT];
  ck_assert_int_eq(algo_mpo.act(a, obs, 1, false, act_a, NULL, &err), 0);
  ck_assert_int_eq(algo_mpo.act(b, obs, 1, false, act_b, NULL, &err), 0);
  ck_assert_mem_eq(act_a, act_b, sizeof act_a);
  /* a foreign file, a truncated one and one for other sizes are refused */
  FILE *g = tmpfile();
  fwrite("not an mpo state, not at all.......", 1, 36, g);
  rewind(g);
  ck_assert_int_eq(algo_mpo.load(b, g, &err), EMBER_ECORRUPT);
  fclose(g);
  rewind(f);
  char buf[300];
  size_t got = fread(buf, 1, sizeof buf, f);
  g = tmpfile();
  fwrite(buf, 1, got, g);
  rewind(g);
  ck_assert_int_eq(algo_mpo.load(b, g, &err), EMBER_ECORRUPT);
  fclose(g);
  mpo_t *c = make_mpo(21, BATCH, (const char *const[]){"mpo.hidden_size=7"}, 1);
  rewind(f);
  ck_assert_int_eq(algo_mpo.load(c, f, &err), EMBER_ESHAPE);
  fclose(f);
  algo_mpo.destroy(a);
  algo_mpo.destroy(b);
  algo_mpo.destroy(c);
}
END_TEST

START_TEST(export_is_accepted_by_the_actors_policy) {
  mpo_t *m = make_mpo(31, BATCH, NULL, 0);
  updates(m, 3, 300);
  Ember__Params p;
  ember_err err = {0};
  ck_assert_int_eq(algo_mpo.export_params(m, &p, &err), 0);
  ck_assert_str_eq(p.policy_kind, "tanh_gaussian_mlp");
  ck_assert_str_eq(p.algorithm, "mpo");
  ck_assert_float_eq(p.log_std_min, (float)settings.log_std_min);
  ck_assert_float_eq(p.log_std_max, (float)settings.log_std_max);
  policy_config pc = {.task = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH};
  policy_t *pol = policy_new(&p, &pc, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  toy_batch t;
  make_batch(&t, 9);
  float pol_act[BATCH * ACT], act[BATCH * ACT], pol_lp[BATCH], lp[BATCH];
  ck_assert_int_eq(policy_act(pol, t.obs, BATCH, true, NULL, pol_act, pol_lp, &err), 0);
  ck_assert_int_eq(algo_mpo.act(m, t.obs, BATCH, true, act, lp, &err), 0);
  double *theta = to_double(mpo_policy_net(m));
  for (int i = 0; i < BATCH; i++) {
    double mean[ACT], ls[ACT];
    ref_head(mpo_policy_net(m), theta, t.obs + i * OBS, mean, ls);
    for (int d = 0; d < ACT; d++) {
      ck_assert_float_eq_tol(pol_act[i * ACT + d], act[i * ACT + d], 1e-6f);
      ck_assert_double_eq_tol(act[i * ACT + d], tanh(mean[d]), 1e-5); /* the deterministic action tanh(mu) */
    }
    ck_assert_float_eq_tol(pol_lp[i], lp[i], 1e-4f);
  }
  free(theta);
  policy_destroy(&pol);
  algo_params_free(&p);
  algo_mpo.destroy(m);
}
END_TEST

/* ---- it learns (a one-step problem) and the registry ------------------------------------------------------ */

/* Every episode is one step with reward -(a - 0.5)^2 summed over the action dims, then termination:
 * the deterministic action must move to 0.5. */
START_TEST(one_step_problem_moves_the_action_to_the_optimum) {
  const char *sets[] = {"mpo.hidden_size=32", "mpo.activation=relu", "mpo.policy_lr=1e-3", "mpo.critic_lr=3e-3",
                        "mpo.policy_tau=0.05", "mpo.epsilon_mean=0.05", "mpo.epsilon_std=1e-3"};
  enum { B = 64 };
  config_binding bind = {&mpo_config_section, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&bind, 1, &err), 0);
  apply_sets(&bind, sets, sizeof sets / sizeof *sets);
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = B, .seed = 3,
                      .settings = &settings};
  mpo_t *m = algo_mpo.create(&ctx, &err);
  ck_assert_ptr_nonnull(m);
  static float obs[B * OBS], act[B * ACT], rew[B], term[B], zero[B];
  rng_t r;
  rng_seed(&r, 5, RNG_STREAM_TEST);
  algo_batch b = {.size = B, .obs_dim = OBS, .act_dim = ACT, .obs = obs, .action = act, .reward = rew,
                  .next_obs = obs, .terminated = term, .truncated = zero};
  algo_stats st = {0};
  for (int it = 0; it < 1500; it++) {
    for (int i = 0; i < B; i++) {
      rew[i] = 0, term[i] = 1;
      for (int j = 0; j < OBS; j++) obs[i * OBS + j] = 2 * rng_uniform_f(&r) - 1;
      for (int j = 0; j < ACT; j++) {
        act[i * ACT + j] = 2 * rng_uniform_f(&r) - 1;
        rew[i] -= (act[i * ACT + j] - 0.5f) * (act[i * ACT + j] - 0.5f);
      }
    }
    ck_assert_int_eq(algo_mpo.e_step(m, &b, &st, &err), 0);
    ck_assert_int_eq(algo_mpo.m_step(m, &b, &st, &err), 0);
  }
  float a[B * ACT];
  ck_assert_int_eq(algo_mpo.act(m, obs, B, true, a, NULL, &err), 0);
  double mean = 0;
  for (int i = 0; i < B * ACT; i++) mean += a[i] / (B * ACT);
  ck_assert_msg(fabs(mean - 0.5) < 0.1, "mean deterministic action %g, optimum 0.5", mean);
  ck_assert_msg(st.values[0] < 0.05, "critic loss %g", st.values[0]);
  algo_mpo.destroy(m);
}
END_TEST

START_TEST(registry_finds_mpo) {
  ck_assert_ptr_eq(algo_find("mpo"), &algo_mpo);
  int stats = 0;
  while (algo_mpo.stat_names[stats]) stats++;
  ck_assert_int_le(stats, ALGO_MAX_STATS);
}
END_TEST

int main(void) {
  Suite *s = suite_create("mpo");
  TCase *l = tcase_create("losses");
  tcase_add_test(l, critic_loss_and_gradient_match_the_reference);
  tcase_add_test(l, estep_samples_come_from_the_target_policy_and_critic);
  tcase_add_test(l, temperature_dual_value_gradient_and_weights);
  tcase_add_test(l, temperature_update_reaches_the_duals_brute_force_minimiser);
  tcase_add_test(l, mstep_loss_and_gradient_match_the_reference);
  tcase_add_test(l, mstep_meets_its_kl_constraints_once_the_multipliers_settle);
  suite_add_tcase(s, l);
  TCase *r = tcase_create("refusals");
  tcase_add_test(r, bad_batches_are_refused_without_change);
  tcase_add_test(r, a_loss_that_overflows_is_refused_without_change);
  tcase_add_test(r, bad_settings_are_refused_by_name);
  suite_add_tcase(s, r);
  TCase *st = tcase_create("state");
  tcase_add_test(st, save_load_continue_is_bit_identical);
  tcase_add_test(st, export_is_accepted_by_the_actors_policy);
  tcase_add_test(st, registry_finds_mpo);
  suite_add_tcase(s, st);
  TCase *lr = tcase_create("learning");
  tcase_set_timeout(lr, 120);
  tcase_add_test(lr, one_step_problem_moves_the_action_to_the_optimum);
  suite_add_tcase(s, lr);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

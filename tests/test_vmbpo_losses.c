/* VMBPO / VMBPO-MFE (learner/algo_vmbpo.c): every loss of the E-step and M-step, its value and its
 * gradient, against an independent double-precision reference written here with plain loops (no
 * BLAS, none of ember's nn code), on tiny networks and hand-made batches; the pure pieces against
 * the exact tabular reference (learner/vmbpo_tabular.h); refusals, rollback, save/load, export.
 *
 * The gradient check: the reference recomputes each WHOLE loss in double from the float parameters
 * with the same noise: model samples drawn from q_d, actions drawn from q_c, the task's reward and
 * termination, nu, the targets; central differences with h = 1e-6 then give dL/dtheta to ~1e-9.
 * Each float analytic gradient is compared element by element with
 *   |g - fd| <= RTOL * max(|fd|, 1e-2 * max|fd|),   RTOL = 2e-3,
 * which allows the float rounding of the forward passes and is far below what a missing term, a
 * wrong sign or a factor 2 gives (errors of order 1). Values are compared to 1e-4 relative. Nets use
 * tanh so the losses are smooth where the differences are taken. Step 4's gradient goes through
 * the sampled action into Q and log pi; the M-step's through the KL to a perturbed pi_old. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ref_mlp.h"
#include "algo.h"
#include "algo_vmbpo.h"
#include "nn_gauss_head.h"
#include "nn_optim.h"
#include "rng.h"
#include "vmbpo_tabular.h"

#define RTOL 2e-3
#define VTOL 1e-4
#define FD_STEP 1e-6
#define OBS 3
#define ACT 2
#define BATCH 5
#define KS 2 /* model samples per real sample */
#define ENS 2
#define MAXW 64
#define HALF_LOG_2PI 0.91893853320467274178

/* ---- the task's reward and termination (toy, smooth reward; termination on x'[0]) ---------------- */

static double toy_reward_d(const double *x, const double *a, const double *xn) {
  double r = -0.1 * x[0];
  for (int j = 0; j < OBS; j++) r -= 0.5 * xn[j] * xn[j];
  for (int j = 0; j < ACT; j++) r += 0.3 * a[j];
  return r;
}
static void toy_reward(const void *task, const float *obs, const float *act, const float *next_obs, int n,
                       float *out) {
  (void)task;
  for (int i = 0; i < n; i++) {
    double x[OBS], a[ACT], xn[OBS];
    for (int j = 0; j < OBS; j++) x[j] = obs[i * OBS + j], xn[j] = next_obs[i * OBS + j];
    for (int j = 0; j < ACT; j++) a[j] = act[i * ACT + j];
    out[i] = (float)toy_reward_d(x, a, xn);
  }
}
static void toy_terminated(const void *task, const float *next_obs, int n, float *out) {
  (void)task;
  for (int i = 0; i < n; i++) out[i] = next_obs[i * OBS] > 0.8f ? 1.0f : 0.0f;
}

/* ---- a small instance and a batch ---------------------------------------------------------------- */

static vmbpo_settings settings;

static vmbpo_t *make(const algo_ops *ops, uint64_t seed, bool task_reward, const char *const *sets, size_t nsets) {
  config_binding b = {ops->settings, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  char key[96];
  const char *base[][2] = {{"hidden_size", "5"},     {"model_hidden_size", "5"}, {"activation", "tanh"},
                           {"ensemble_size", "2"},   {"model_samples_per_real", "2"}, {"eta", "0.7"},
                           {"gamma", "0.9"}};
  for (size_t i = 0; i < sizeof base / sizeof *base; i++) {
    snprintf(key, sizeof key, "%s.%s", ops->settings->name, base[i][0]);
    ck_assert_msg(config_set(&b, 1, key, base[i][1], "test", &err) == 0, "%s", err.msg);
  }
  for (size_t i = 0; i < nsets; i++) {
    const char *eq = strchr(sets[i], '=');
    snprintf(key, sizeof key, "%s.%.*s", ops->settings->name, (int)(eq - sets[i]), sets[i]);
    ck_assert_msg(config_set(&b, 1, key, eq + 1, "test", &err) == 0, "%s", err.msg);
  }
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH, .seed = seed,
                      .task = {.task = NULL, .reward_fn = task_reward ? toy_reward : NULL,
                               .terminated_fn = toy_terminated},
                      .settings = &settings};
  vmbpo_t *v = ops->create(&ctx, &err);
  ck_assert_msg(v != NULL, "%s", err.msg);
  return v;
}

typedef struct {
  float obs[BATCH * OBS], action[BATCH * ACT], reward[BATCH], next_obs[BATCH * OBS], terminated[BATCH],
      truncated[BATCH];
  algo_batch b;
} toy_batch;

static void make_batch(toy_batch *t, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST);
  for (int i = 0; i < BATCH * OBS; i++) {
    t->obs[i] = 0.8f * (float)rng_normal(&r);
    t->next_obs[i] = t->obs[i] + 0.3f * (float)rng_normal(&r);
  }
  for (int i = 0; i < BATCH * ACT; i++) t->action[i] = 1.8f * rng_uniform_f(&r) - 0.9f;
  for (int i = 0; i < BATCH; i++) {
    t->reward[i] = (float)rng_normal(&r);
    t->terminated[i] = i % 3 == 0 ? 1.0f : 0.0f;
    t->truncated[i] = i % 3 == 1 ? 1.0f : 0.0f;
  }
  t->b = (algo_batch){.size = BATCH, .obs_dim = OBS, .act_dim = ACT, .obs = t->obs, .action = t->action,
                      .reward = t->reward, .next_obs = t->next_obs, .terminated = t->terminated,
                      .truncated = t->truncated};
}

static void fill_normal(float *x, int n, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 7);
  rng_normal_fill(&r, x, n);
}

/* Moves a network away from its initialisation (targets away from their sources, policies apart). */
static void perturb(nn_mlp *net, uint64_t seed, float scale) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 9);
  for (size_t i = 0; i < net->param_count; i++) net->params[i] += scale * (float)rng_normal(&r);
}

/* ---- the double-precision reference --------------------------------------------------------------- */

typedef struct {
  vmbpo_t *v;
  const algo_batch *b;
  double *th[VMBPO_NET_COUNT]; /* double copies of every network's parameters */
  double head[2 * (OBS + 1)];  /* [max_logvar | min_logvar] */
  int Dm;
  bool learn_reward;
  const float *eps_a, *eps_m, *eps4;
  const int *member;
} ref_t;

/* One member of a network, parameters in nn's flat layout as doubles (ref_mlp.h). */
static void ref_mlp(const ref_t *c, vmbpo_net_id id, int member, const double *x, double *y) {
  ref_mlp_forward(vmbpo_net(c->v, id), c->th[id], member, x, y);
}

static double ref1(const ref_t *c, vmbpo_net_id id, const double *x) {
  double y;
  ref_mlp(c, id, 0, x, &y);
  return y;
}

static void fvec(double *d, const float *f, int n) {
  for (int i = 0; i < n; i++) d[i] = f[i];
}

/* A policy's mean and log-std at x (the head of docs/protocol.md). */
static void ref_dist(const ref_t *c, vmbpo_net_id id, const double *x, double *mean, double *ls) {
  double out[2 * ACT];
  ref_mlp(c, id, 0, x, out);
  for (int j = 0; j < ACT; j++) {
    mean[j] = out[j];
    ls[j] = settings.log_std_min + 0.5 * (settings.log_std_max - settings.log_std_min) * (tanh(out[ACT + j]) + 1);
  }
}

/* log of a tanh-Gaussian at action a (u = atanh of the clamped action, as the library does). */
/* log pi(a) for a = tanh(u), taken at u: a density of a sampled action is taken at its pre-tanh
 * value, which stays exact where tanh(u) rounds to +-1 (nn_dist.h, nn_tanh_gaussian_log_prob_u). */
static double ref_logp_u(const double *mean, const double *ls, const double *u) {
  double lp = 0;
  for (int j = 0; j < ACT; j++) {
    double z = (u[j] - mean[j]) / exp(ls[j]);
    lp += -0.5 * z * z - ls[j] - HALF_LOG_2PI - 2 * (log(2) - fabs(u[j]) - log1p(exp(-2 * fabs(u[j]))));
  }
  return lp;
}

/* Reparameterised sample: u = mean + std eps, a = tanh(u); returns log q(a) (at u). */
static double ref_sample(const double *mean, const double *ls, const float *eps, double *a, double *u) {
  for (int j = 0; j < ACT; j++) {
    u[j] = mean[j] + exp(ls[j]) * eps[j];
    a[j] = tanh(u[j]);
  }
  return ref_logp_u(mean, ls, u);
}

static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double ref_logvar(const ref_t *c, int d, double raw) {
  double mx = c->head[d], mn = c->head[c->Dm + d];
  double lv1 = mx - softplus(mx - raw);
  return mn + softplus(lv1 - mn);
}

/* q_d's sample for (x, a): member m's mean + exp(logvar/2) eps[m]; dx [OBS], *r = reward mean. */
static void ref_model(const ref_t *c, const double *x, const double *a, const float *eps_row, int m, double *dx,
                      double *r) {
  double in[OBS + ACT], raw[2 * (OBS + 1)];
  memcpy(in, x, OBS * sizeof(double));
  memcpy(in + OBS, a, ACT * sizeof(double));
  ref_mlp(c, VMBPO_NET_QD, m, in, raw);
  for (int d = 0; d < OBS; d++) dx[d] = raw[d] + exp(0.5 * ref_logvar(c, d, raw[c->Dm + d])) * eps_row[m * c->Dm + d];
  *r = c->learn_reward ? raw[OBS] : 0;
}

static double ref_nu(const ref_t *c, const double *x, const double *a, const double *dx) {
  double in[2 * OBS + ACT];
  memcpy(in, x, OBS * sizeof(double));
  memcpy(in + OBS, a, ACT * sizeof(double));
  memcpy(in + OBS + ACT, dx, OBS * sizeof(double));
  double nu = ref1(c, VMBPO_NET_NU, in);
  return fmin(fmax(nu, -settings.nu_max), settings.nu_max);
}

/* One critic of Q or Q' (a member of the ensemble) at (x, a). */
static double ref_q_member(const ref_t *c, vmbpo_net_id id, int member, const double *x, const double *a) {
  double in[OBS + ACT], y;
  memcpy(in, x, OBS * sizeof(double));
  memcpy(in + OBS, a, ACT * sizeof(double));
  ref_mlp(c, id, member, in, &y);
  return y;
}

/* Q or Q' as read by eqs. 19, 24, 25: the minimum over its critics (one critic: itself). */
static double ref_q(const ref_t *c, vmbpo_net_id id, const double *x, const double *a) {
  double q = INFINITY;
  for (int m = 0; m < vmbpo_net(c->v, id)->ensemble_size; m++) q = fmin(q, ref_q_member(c, id, m, x, a));
  return q;
}

/* Step 1's weights at the unperturbed parameters (they are sg() in the loss).
 * batch: w = B softmax(t ((1 - d) V'(x') - (Q'(x,a) - eta r) / gamma));
 * model: w_i = exp(min(t (1 - d_i) V'(x'_i) - log mean_k exp(t (1 - d^_ik) V'(x^_ik)), log w_max)),
 *        x^_ik = x_i + the q_d sample of row k*B + i (eps_m, member), d^ the toy termination. */
static double step1_w[BATCH];
static void ref_step1_weights(const ref_t *c) {
  const algo_batch *b = c->b;
  const double t = settings.qd_weight_temperature;
  double delta[BATCH], dmax = -INFINITY, sum = 0;
  for (int i = 0; i < b->size; i++) {
    double x[OBS], a[ACT], xn[OBS];
    fvec(x, b->obs + i * OBS, OBS), fvec(a, b->action + i * ACT, ACT), fvec(xn, b->next_obs + i * OBS, OBS);
    double vt = ref1(c, VMBPO_NET_V_TARGET, xn);
    if (strcmp(settings.qd_weight_norm, "model") == 0) {
      double acc = 0;
      for (int k = 0; k < KS; k++) {
        int r = k * b->size + i;
        double dx[OBS], xm[OBS], rr;
        ref_model(c, x, a, c->eps_m + (size_t)r * ENS * c->Dm, c->member[r], dx, &rr);
        for (int d = 0; d < OBS; d++) xm[d] = x[d] + dx[d];
        acc += exp(t * (xm[0] > 0.8 ? 0 : 1) * ref1(c, VMBPO_NET_V_TARGET, xm));
      }
      double di = t * (1 - b->terminated[i]) * vt - log(acc / KS);
      step1_w[i] = exp(fmin(di, log(settings.qd_weight_max)));
    } else {
      double qt = ref_q(c, VMBPO_NET_Q_TARGET, x, a);
      delta[i] = t * ((1 - b->terminated[i]) * vt - (qt - settings.eta * b->reward[i]) / settings.gamma);
      dmax = fmax(dmax, delta[i]);
    }
  }
  if (strcmp(settings.qd_weight_norm, "model") == 0) return;
  for (int i = 0; i < b->size; i++) sum += exp(delta[i] - dmax);
  for (int i = 0; i < b->size; i++) step1_w[i] = b->size * exp(delta[i] - dmax) / sum;
}

/* Step 1: L_d = -(1/B) sum_i w_i log q_d([x'-x | r] | x, a) + pen sum (max - min), w = step1_w. */
static double ref_step1(const ref_t *c) {
  const algo_batch *b = c->b;
  double loss = 0;
  for (int i = 0; i < b->size; i++) {
    double w = step1_w[i], in[OBS + ACT], y[OBS + 1], nll = 0;
    fvec(in, b->obs + i * OBS, OBS), fvec(in + OBS, b->action + i * ACT, ACT);
    for (int d = 0; d < OBS; d++) y[d] = (double)b->next_obs[i * OBS + d] - b->obs[i * OBS + d];
    y[OBS] = b->reward[i];
    for (int m = 0; m < ENS; m++) {
      double raw[2 * (OBS + 1)];
      ref_mlp(c, VMBPO_NET_QD, m, in, raw);
      for (int d = 0; d < c->Dm; d++) {
        double lv = ref_logvar(c, d, raw[c->Dm + d]), e = y[d] - raw[d];
        nll += 0.5 * (e * e * exp(-lv) + lv) + HALF_LOG_2PI;
      }
    }
    loss += w * nll;
  }
  loss /= b->size;
  for (int d = 0; d < c->Dm; d++) loss += settings.model_bound_penalty * (c->head[d] - c->head[c->Dm + d]);
  return loss;
}

/* Step 2: L_nu = - mean_{i,k} nu(x_i, a_i, x^_ik) + mean_i exp nu(x_i, a_i, x'_i). */
static double ref_step2(const ref_t *c) {
  const algo_batch *b = c->b;
  const int B = b->size, N = B * KS;
  double model = 0, real = 0;
  for (int r = 0; r < N; r++) {
    int i = r % B;
    double x[OBS], a[ACT], dx[OBS], rr;
    fvec(x, b->obs + i * OBS, OBS), fvec(a, b->action + i * ACT, ACT);
    ref_model(c, x, a, c->eps_m + (size_t)r * ENS * c->Dm, c->member[r], dx, &rr);
    model += ref_nu(c, x, a, dx);
  }
  for (int i = 0; i < B; i++) {
    double x[OBS], a[ACT], dx[OBS];
    fvec(x, b->obs + i * OBS, OBS), fvec(a, b->action + i * ACT, ACT);
    for (int d = 0; d < OBS; d++) dx[d] = (double)b->next_obs[i * OBS + d] - b->obs[i * OBS + d];
    real += exp(ref_nu(c, x, a, dx));
  }
  return -model / N + real / B;
}

/* Step 3's samples and targets, row r = k*B + i: action, log q_c, log pi, y_Q. */
typedef struct {
  double a[BATCH * KS][ACT], log_qc[BATCH * KS], log_pi[BATCH * KS], y_q[BATCH * KS];
  double y_real[BATCH]; /* the real rows' targets (real_ratio > 0) */
} ref_samples;

static void ref_critic_samples(const ref_t *c, ref_samples *s) {
  const algo_batch *b = c->b;
  const int B = b->size, N = B * KS;
  for (int r = 0; r < N; r++) {
    int i = r % B;
    double x[OBS], mc[ACT], lc[ACT], mp[ACT], lpp[ACT], dx[OBS], xn[OBS], rr;
    fvec(x, b->obs + i * OBS, OBS);
    ref_dist(c, VMBPO_NET_QC, x, mc, lc);
    double u[ACT];
    s->log_qc[r] = ref_sample(mc, lc, c->eps_a + (size_t)r * ACT, s->a[r], u);
    ref_dist(c, VMBPO_NET_PI, x, mp, lpp);
    s->log_pi[r] = ref_logp_u(mp, lpp, u);
    ref_model(c, x, s->a[r], c->eps_m + (size_t)r * ENS * c->Dm, c->member[r], dx, &rr);
    for (int d = 0; d < OBS; d++) xn[d] = x[d] + dx[d];
    if (!c->learn_reward) rr = toy_reward_d(x, s->a[r], xn);
    double done = xn[0] > 0.8 ? 1 : 0;
    /* eq. (23): y = eta r + gamma ((1 - d) V'(x^) - nu(x, a, x^)) */
    s->y_q[r] = settings.eta * rr + settings.gamma * ((1 - done) * ref1(c, VMBPO_NET_V_TARGET, xn) - ref_nu(c, x, s->a[r], dx));
  }
  /* real rows: y = eta r + gamma ((1 - d) V'(x') - nu(x, a, x')) at the stored transition */
  for (int i = 0; i < B; i++) {
    double x[OBS], a[ACT], xn[OBS], dx[OBS];
    fvec(x, b->obs + i * OBS, OBS), fvec(a, b->action + i * ACT, ACT), fvec(xn, b->next_obs + i * OBS, OBS);
    for (int d = 0; d < OBS; d++) dx[d] = xn[d] - x[d];
    s->y_real[i] = settings.eta * b->reward[i] +
                   settings.gamma * ((1 - b->terminated[i]) * ref1(c, VMBPO_NET_V_TARGET, xn) - ref_nu(c, x, a, dx));
  }
}

static ref_samples fixed_samples; /* the samples at the unperturbed parameters: sg() in the losses */

static double ref_q_loss(const ref_t *c) {
  const int B = c->b->size, N = B * KS, C = vmbpo_net(c->v, VMBPO_NET_Q)->ensemble_size;
  double loss = 0;
  for (int r = 0; r < N; r++) {
    double x[OBS];
    fvec(x, c->b->obs + (r % B) * OBS, OBS);
    for (int m = 0; m < C; m++) {
      double d = ref_q_member(c, VMBPO_NET_Q, m, x, fixed_samples.a[r]) - fixed_samples.y_q[r];
      loss += d * d;
    }
  }
  loss /= N * C;
  const double rho = settings.real_ratio;
  if (rho == 0) return loss;
  double real = 0;
  for (int i = 0; i < B; i++) {
    double x[OBS], a[ACT];
    fvec(x, c->b->obs + i * OBS, OBS), fvec(a, c->b->action + i * ACT, ACT);
    for (int m = 0; m < C; m++) {
      double d = ref_q_member(c, VMBPO_NET_Q, m, x, a) - fixed_samples.y_real[i];
      real += d * d;
    }
  }
  return (1 - rho) * loss + rho * real / (B * C);
}

static double ref_v_loss(const ref_t *c) {
  const int B = c->b->size, N = B * KS;
  double loss = 0;
  for (int r = 0; r < N; r++) {
    double x[OBS];
    fvec(x, c->b->obs + (r % B) * OBS, OBS);
    double y = ref_q(c, VMBPO_NET_Q, x, fixed_samples.a[r]) - fixed_samples.log_qc[r] + fixed_samples.log_pi[r];
    double d = ref1(c, VMBPO_NET_V, x) - y;
    loss += d * d;
  }
  return loss / N;
}

/* Step 4: L_c = mean_i log q_c(a_i|x_i) - Q(x_i, a_i) - log pi(a_i|x_i), a_i = tanh(mu + std eps_i). */
static double ref_qc_loss(const ref_t *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    double x[OBS], mc[ACT], lc[ACT], mp[ACT], lpp[ACT], a[ACT], u[ACT];
    fvec(x, c->b->obs + i * OBS, OBS);
    ref_dist(c, VMBPO_NET_QC, x, mc, lc);
    double lq = ref_sample(mc, lc, c->eps4 + i * ACT, a, u);
    ref_dist(c, VMBPO_NET_PI, x, mp, lpp);
    loss += lq - ref_q(c, VMBPO_NET_Q, x, a) - ref_logp_u(mp, lpp, u);
    for (int j = 0; j < ACT; j++) loss += settings.qc_mean_penalty * mc[j] * mc[j];
  }
  return loss / c->b->size;
}

/* M-step: L_pi = - mean_{i,k} log pi(a_ik|x_i) + lambda mean_i KL(pi_old || pi) (pre-tanh Gaussians). */
static double ref_pi_loss(const ref_t *c) {
  const int B = c->b->size, N = B * KS;
  double nll = 0, kl = 0;
  for (int r = 0; r < N; r++) {
    double x[OBS], mc[ACT], lc[ACT], mp[ACT], lpp[ACT], a[ACT], u[ACT];
    fvec(x, c->b->obs + (r % B) * OBS, OBS);
    ref_dist(c, VMBPO_NET_QC, x, mc, lc);
    ref_sample(mc, lc, c->eps_a + (size_t)r * ACT, a, u);
    ref_dist(c, VMBPO_NET_PI, x, mp, lpp);
    nll -= ref_logp_u(mp, lpp, u);
  }
  for (int i = 0; i < B; i++) {
    double x[OBS], mo[ACT], lo[ACT], mp[ACT], lpp[ACT];
    fvec(x, c->b->obs + i * OBS, OBS);
    ref_dist(c, VMBPO_NET_PI_OLD, x, mo, lo);
    ref_dist(c, VMBPO_NET_PI, x, mp, lpp);
    for (int j = 0; j < ACT; j++) {
      double so = exp(lo[j]), sp = exp(lpp[j]);
      kl += lpp[j] - lo[j] + (so * so + (mo[j] - mp[j]) * (mo[j] - mp[j])) / (2 * sp * sp) - 0.5;
    }
  }
  return nll / N + settings.lambda * kl / B;
}

/* VMBPO-MFE: mean_i sg(coef_i) Q(x_i, a_i), coef from the unperturbed Q. */
static double mfe_coef[BATCH];
static double ref_mfe_coefs(const ref_t *c, double *exp_mean) {
  double loss = 0, em = 0;
  for (int i = 0; i < c->b->size; i++) {
    double x[OBS], a[ACT], xn[OBS];
    fvec(x, c->b->obs + i * OBS, OBS), fvec(a, c->b->action + i * ACT, ACT), fvec(xn, c->b->next_obs + i * OBS, OBS);
    double q = ref_q(c, VMBPO_NET_Q, x, a);
    double delta = (1 - c->b->terminated[i]) * ref1(c, VMBPO_NET_V_TARGET, xn) - (q - settings.eta * c->b->reward[i]) / settings.gamma;
    double e = exp(fmin(settings.mfe_tau * delta, settings.mfe_clamp));
    mfe_coef[i] = settings.gamma * (1 - e) / settings.mfe_tau;
    loss += mfe_coef[i] * q;
    em += e;
  }
  *exp_mean = em / c->b->size;
  return loss / c->b->size;
}
static double ref_mfe_loss(const ref_t *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    double x[OBS], a[ACT];
    fvec(x, c->b->obs + i * OBS, OBS), fvec(a, c->b->action + i * ACT, ACT);
    loss += mfe_coef[i] * ref_q(c, VMBPO_NET_Q, x, a);
  }
  return loss / c->b->size;
}

static void ref_init(ref_t *c, vmbpo_t *v, const algo_batch *b) {
  memset(c, 0, sizeof *c);
  c->v = v;
  c->b = b;
  c->Dm = vmbpo_model_dim(v);
  c->learn_reward = c->Dm == OBS + 1;
  for (int i = 0; i < VMBPO_NET_COUNT; i++) {
    nn_mlp *net = vmbpo_net(v, i);
    c->th[i] = malloc(net->param_count * sizeof(double));
    for (size_t j = 0; j < net->param_count; j++) c->th[i][j] = net->params[j];
  }
  nn_gauss_head *h = vmbpo_qd_head(v);
  for (int j = 0; j < 2 * c->Dm; j++) c->head[j] = h->params[j];
}

static void ref_free(ref_t *c) {
  for (int i = 0; i < VMBPO_NET_COUNT; i++) free(c->th[i]);
}

static double grad_error(const float *g, const double *fd, size_t n) {
  double scale = 0, worst = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(fd[i]));
  double floor_ = fmax(1e-2 * scale, 1e-12);
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(g[i] - fd[i]) / fmax(fabs(fd[i]), floor_));
  return worst;
}

/* Central differences of loss() over theta[0..n), and the check against g; the gradient must not
 * be trivially zero either. */
static void check_grad(double (*loss)(const ref_t *), const ref_t *c, double *theta, const float *g, size_t n,
                       const char *what) {
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
  double e = grad_error(g, fd, n);
  ck_assert_msg(e < RTOL, "%s: gradient error %g (rtol %g)", what, e, RTOL);
  ck_assert_msg(norm > 1e-10, "%s: gradient is zero", what);
  free(fd);
}

static void check_value(double got, double want, const char *what) {
  ck_assert_msg(fabs(got - want) <= VTOL * fmax(1, fabs(want)), "%s: %.9g, reference %.9g", what, got, want);
}

/* Noise for a whole update: eps_model [N, E*Dm], member [N], eps_action [N, A], eps4 [B, A]. */
typedef struct {
  float eps_m[BATCH * KS * ENS * (OBS + 1)], eps_a[BATCH * KS * ACT], eps4[BATCH * ACT];
  int member[BATCH * KS];
} noise;
static void make_noise(noise *z, uint64_t seed) {
  fill_normal(z->eps_m, BATCH * KS * ENS * (OBS + 1), seed);
  fill_normal(z->eps_a, BATCH * KS * ACT, seed + 1);
  fill_normal(z->eps4, BATCH * ACT, seed + 2);
  for (int r = 0; r < BATCH * KS; r++) z->member[r] = (r * 7 + 3) % ENS;
}

/* A VMBPO whose networks are all apart from each other (targets != sources, pi != q_c != pi_old). */
static vmbpo_t *make_apart(const algo_ops *ops, uint64_t seed, bool task_reward, const char *const *sets, size_t n) {
  vmbpo_t *v = make(ops, seed, task_reward, sets, n);
  perturb(vmbpo_net(v, VMBPO_NET_V_TARGET), seed + 1, 0.3f);
  perturb(vmbpo_net(v, VMBPO_NET_Q_TARGET), seed + 2, 0.3f);
  perturb(vmbpo_net(v, VMBPO_NET_QC), seed + 3, 0.3f);
  perturb(vmbpo_net(v, VMBPO_NET_PI_OLD), seed + 4, 0.3f);
  perturb(vmbpo_net(v, VMBPO_NET_Q), seed + 5, 0.3f);
  perturb(vmbpo_net(v, VMBPO_NET_QD), seed + 6, 0.3f);
  nn_gauss_head *h = vmbpo_qd_head(v);
  for (int d = 0; d < h->dim; d++) h->params[d] = -0.5f + 0.1f * d, h->params[h->dim + d] = -3.0f - 0.2f * d;
  return v;
}

/* ---- each loss: value and gradient ---------------------------------------------------------------- */

static void step1_case(bool task_reward, const char *norm, int critics) {
  char set[64], crit[32];
  snprintf(set, sizeof set, "qd_weight_norm=%s", norm);
  snprintf(crit, sizeof crit, "critics=%d", critics);
  const char *sets[] = {set, "qd_weight_max=1.08", crit};
  vmbpo_t *v = make_apart(&algo_vmbpo, 21, task_reward, sets, 3);
  perturb(vmbpo_net(v, VMBPO_NET_V_TARGET), 25, 1.0f); /* weights from 0.25 to 1.7 */
  toy_batch t;
  make_batch(&t, 1);
  noise z;
  make_noise(&z, 60);
  double loss, ess, wmax;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_qd_loss_grad(v, &t.b, z.eps_m, z.member, &loss, &ess, &wmax, &err), 0);
  ref_t c;
  ref_init(&c, v, &t.b);
  c.eps_m = z.eps_m, c.member = z.member;
  ref_step1_weights(&c);
  double rmax = 0;
  for (int i = 0; i < BATCH; i++) rmax = fmax(rmax, step1_w[i]);
  check_value(loss, ref_step1(&c), "step 1 loss");
  check_value(wmax, rmax, "step 1 max weight");
  ck_assert(ess > 0 && ess <= 1 + 1e-6);
  if (strcmp(norm, "batch") == 0) ck_assert(wmax >= 1 - 1e-6);
  if (strcmp(norm, "model") == 0) { /* the clip acts on some weights, not on all */
    double wmin = INFINITY;
    for (int i = 0; i < BATCH; i++) wmin = fmin(wmin, step1_w[i]);
    ck_assert_msg(fabs(wmax - 1.08) < 1e-6 && wmin < 0.5, "weights %g..%g do not straddle the clip", wmin, wmax);
  }
  check_grad(ref_step1, &c, c.th[VMBPO_NET_QD], vmbpo_net(v, VMBPO_NET_QD)->grads,
             vmbpo_net(v, VMBPO_NET_QD)->param_count, "step 1, q_d network");
  check_grad(ref_step1, &c, c.head, vmbpo_qd_head(v)->grads, 2 * (size_t)c.Dm, "step 1, log-variance bounds");
  ref_free(&c);
  algo_vmbpo.destroy(v);
}
START_TEST(step1_qd_loss_and_gradient) {
  step1_case(true, "batch", 1);
  step1_case(false, "batch", 1); /* the reward head too */
  step1_case(true, "batch", 2);  /* Q' read as the minimum of two critics */
  step1_case(true, "model", 1);
  step1_case(false, "model", 1);
}
END_TEST

START_TEST(step2_nu_loss_and_gradient) {
  for (int learned = 0; learned < 2; learned++) {
    vmbpo_t *v = make_apart(&algo_vmbpo, 22, !learned, NULL, 0);
    perturb(vmbpo_net(v, VMBPO_NET_NU), 30, 0.2f);
    toy_batch t;
    make_batch(&t, 2);
    noise z;
    make_noise(&z, 40);
    double loss, crate;
    ember_err err = {0};
    ck_assert_int_eq(vmbpo_nu_loss_grad(v, &t.b, z.eps_m, z.member, &loss, &crate, &err), 0);
    ck_assert(crate == 0);
    ref_t c;
    ref_init(&c, v, &t.b);
    c.eps_m = z.eps_m, c.member = z.member;
    check_value(loss, ref_step2(&c), "step 2 loss");
    check_grad(ref_step2, &c, c.th[VMBPO_NET_NU], vmbpo_net(v, VMBPO_NET_NU)->grads,
               vmbpo_net(v, VMBPO_NET_NU)->param_count, "step 2, nu");
    ref_free(&c);
    algo_vmbpo.destroy(v);
  }
}
END_TEST

START_TEST(step3_critic_losses_and_gradients) {
  for (int learned = 0; learned < 4; learned++) {
    /* case 2: two critics, each regressing, V's target their minimum; case 3: with real rows too */
    const char *twin[] = {"critics=2", "real_ratio=0.3"};
    vmbpo_t *v = make_apart(&algo_vmbpo, 23, learned != 1, twin, learned == 2 ? 1 : learned == 3 ? 2 : 0);
    perturb(vmbpo_net(v, VMBPO_NET_NU), 31, 0.2f);
    perturb(vmbpo_net(v, VMBPO_NET_V), 32, 0.2f);
    toy_batch t;
    make_batch(&t, 3);
    noise z;
    make_noise(&z, 50);
    ember_err err = {0};
    vmbpo_critic_sample(v, &t.b, z.eps_a, z.eps_m, z.member);
    double lq, lv;
    ck_assert_int_eq(vmbpo_q_loss_grad(v, &t.b, &lq, &err), 0);
    ref_t c;
    ref_init(&c, v, &t.b);
    c.eps_a = z.eps_a, c.eps_m = z.eps_m, c.member = z.member;
    ref_critic_samples(&c, &fixed_samples);
    /* some model next states must terminate and some not, or the (1 - d) mask goes untested */
    check_value(lq, ref_q_loss(&c), "L_Q (eq. 23)");
    check_grad(ref_q_loss, &c, c.th[VMBPO_NET_Q], vmbpo_net(v, VMBPO_NET_Q)->grads,
               vmbpo_net(v, VMBPO_NET_Q)->param_count, "L_Q, Q");
    ck_assert_int_eq(vmbpo_v_loss_grad(v, &t.b, &lv, &err), 0);
    check_value(lv, ref_v_loss(&c), "L_V (eq. 24)");
    check_grad(ref_v_loss, &c, c.th[VMBPO_NET_V], vmbpo_net(v, VMBPO_NET_V)->grads,
               vmbpo_net(v, VMBPO_NET_V)->param_count, "L_V, V");
    ref_free(&c);
    algo_vmbpo.destroy(v);
  }
}
END_TEST

START_TEST(step3_target_masks_terminal_value_but_keeps_nu) {
  /* With V' made large, a terminated model state must contribute eta r - gamma nu only. Built so
   * that one q_d sample terminates (x^[0] > 0.8) and one does not. */
  vmbpo_t *v = make_apart(&algo_vmbpo, 24, true, NULL, 0);
  nn_mlp *vt = vmbpo_net(v, VMBPO_NET_V_TARGET);
  float *bias = nn_mlp_bias(vt, vt->layer_count - 1, 0);
  bias[0] += 50.0f;
  toy_batch t;
  make_batch(&t, 4);
  noise z;
  make_noise(&z, 60);
  vmbpo_critic_sample(v, &t.b, z.eps_a, z.eps_m, z.member);
  ref_t c;
  ref_init(&c, v, &t.b);
  c.eps_a = z.eps_a, c.eps_m = z.eps_m, c.member = z.member;
  ref_critic_samples(&c, &fixed_samples);
  int low = 0, high = 0;
  for (int r = 0; r < BATCH * KS; r++) {
    if (fixed_samples.y_q[r] > 20)
      high++;
    else
      low++;
  }
  ck_assert_msg(low > 0 && high > 0, "want both terminal and non-terminal model samples (%d, %d)", low, high);
  double lq;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_q_loss_grad(v, &t.b, &lq, &err), 0);
  check_value(lq, ref_q_loss(&c), "L_Q with terminal model states");
  ref_free(&c);
  algo_vmbpo.destroy(v);
}
END_TEST

/* Row i of a step-4 batch: its state x, and q_c's action a = tanh(u) drawn with eps4 (the reference). */
static void ref_step4_action(const ref_t *c, int i, double *x, double *a, double *u) {
  double mc[ACT], lc[ACT];
  fvec(x, c->b->obs + i * OBS, OBS);
  ref_dist(c, VMBPO_NET_QC, x, mc, lc);
  ref_sample(mc, lc, c->eps4 + i * ACT, a, u);
}

START_TEST(step4_qc_loss_and_gradient_through_the_action) {
  /* _i = 0: with a large mean penalty (its term must match too); _i = 1: through the smaller critic */
  const char *sets[][1] = {{"qc_mean_penalty=0.3"}, {"critics=2"}};
  vmbpo_t *v = make_apart(&algo_vmbpo, 25, true, sets[_i], 1);
  perturb(vmbpo_net(v, VMBPO_NET_Q), 33, 0.5f); /* a Q with slope in a: dQ/da matters */
  toy_batch t;
  make_batch(&t, 5);
  noise z;
  make_noise(&z, 70);
  ref_t c;
  if (_i == 1) { /* shift critic 1 so that each critic is the smaller one on some rows */
    double d[BATCH];
    ref_init(&c, v, &t.b);
    c.eps4 = z.eps4;
    for (int i = 0; i < BATCH; i++) {
      double x[OBS], a[ACT], u[ACT];
      ref_step4_action(&c, i, x, a, u);
      d[i] = ref_q_member(&c, VMBPO_NET_Q, 0, x, a) - ref_q_member(&c, VMBPO_NET_Q, 1, x, a);
    }
    ref_free(&c);
    for (int i = 1; i < BATCH; i++) /* sort */
      for (int j = i; j > 0 && d[j] < d[j - 1]; j--) {
        double tmp = d[j];
        d[j] = d[j - 1], d[j - 1] = tmp;
      }
    nn_mlp *q = vmbpo_net(v, VMBPO_NET_Q);
    nn_mlp_bias(q, q->layer_count - 1, 1)[0] += (float)(0.5 * (d[1] + d[2]));
  }
  double loss;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_qc_loss_grad(v, &t.b, z.eps4, &loss, &err), 0);
  ref_init(&c, v, &t.b);
  c.eps4 = z.eps4;
  if (_i == 1) { /* the minimum must come from each critic on some rows, or the routing goes untested */
    int first = 0;
    for (int i = 0; i < BATCH; i++) {
      double x[OBS], a[ACT], u[ACT];
      ref_step4_action(&c, i, x, a, u);
      first += ref_q_member(&c, VMBPO_NET_Q, 0, x, a) < ref_q_member(&c, VMBPO_NET_Q, 1, x, a);
    }
    ck_assert_msg(first > 0 && first < BATCH, "critic 0 is the minimum on %d of %d rows", first, BATCH);
  }
  check_value(loss, ref_qc_loss(&c), "L_c (eq. 25)");
  check_grad(ref_qc_loss, &c, c.th[VMBPO_NET_QC], vmbpo_net(v, VMBPO_NET_QC)->grads,
             vmbpo_net(v, VMBPO_NET_QC)->param_count, "L_c, q_c");
  ref_free(&c);
  algo_vmbpo.destroy(v);
}
END_TEST

/* q_c = pi, both saturated (pre-tanh means near 10: tanh rounds to 1 in float). Then
 * log q_c(a) - log pi(a) is 0 at every sample, so eq. 25's loss is -mean Q and eq. 24's target is Q.
 * A density recovered from the float action through atanh's clamp was off by tens of nats here,
 * which lifted V (and through V', Q) by that much per step; this pins the densities to u. */
START_TEST(saturated_qc_equal_to_pi_has_a_zero_log_ratio) {
  const char *sets[] = {"qc_mean_penalty=0"}; /* the loss is then exactly -mean Q */
  vmbpo_t *v = make_apart(&algo_vmbpo, 28, true, sets, 1);
  nn_mlp *qc = vmbpo_net(v, VMBPO_NET_QC), *pi = vmbpo_net(v, VMBPO_NET_PI);
  float *bias = nn_mlp_bias(qc, qc->layer_count - 1, 0);
  for (int j = 0; j < ACT; j++) bias[j] += (j % 2 ? -10.0f : 10.0f); /* means of both signs */
  nn_mlp_copy_params(pi, qc);
  perturb(vmbpo_net(v, VMBPO_NET_Q), 34, 0.5f);
  toy_batch t;
  make_batch(&t, 8);
  noise z;
  make_noise(&z, 90);
  ember_err err = {0};
  double loss;
  ck_assert_int_eq(vmbpo_qc_loss_grad(v, &t.b, z.eps4, &loss, &err), 0);
  ref_t c;
  ref_init(&c, v, &t.b);
  c.eps4 = z.eps4;
  double mean_q = 0;
  for (int i = 0; i < BATCH; i++) {
    double x[OBS], a[ACT], u[ACT];
    ref_step4_action(&c, i, x, a, u);
    ck_assert_msg(fabs(u[0]) > 9 && (float)fabs(a[0]) == 1.0f, "row %d is not saturated (u %g)", i, u[0]);
    mean_q += ref_q(&c, VMBPO_NET_Q, x, a);
  }
  mean_q /= BATCH;
  check_value(loss, -mean_q, "L_c (eq. 25) with q_c = pi saturated: -mean Q");
  check_value(loss, ref_qc_loss(&c), "L_c (eq. 25) saturated");
  check_grad(ref_qc_loss, &c, c.th[VMBPO_NET_QC], qc->grads, qc->param_count, "L_c saturated, q_c");
  ref_free(&c);
  /* eq. 24: V's target Q - log q_c + log pi, so with q_c = pi the loss is that of V against Q */
  vmbpo_critic_sample(v, &t.b, z.eps_a, z.eps_m, z.member);
  double lv;
  ck_assert_int_eq(vmbpo_v_loss_grad(v, &t.b, &lv, &err), 0);
  ref_init(&c, v, &t.b);
  c.eps_a = z.eps_a, c.eps_m = z.eps_m, c.member = z.member;
  ref_critic_samples(&c, &fixed_samples);
  for (int r = 0; r < BATCH * KS; r++)
    ck_assert_msg(fabs(fixed_samples.log_qc[r] - fixed_samples.log_pi[r]) < 1e-9, "row %d: log ratio %g", r,
                  fixed_samples.log_qc[r] - fixed_samples.log_pi[r]);
  check_value(lv, ref_v_loss(&c), "L_V (eq. 24) saturated");
  ref_free(&c);
  algo_vmbpo.destroy(v);
}
END_TEST

START_TEST(mstep_pi_loss_and_gradient_with_kl) {
  const char *sets[] = {"pi_equals_qc=false", "lambda=0.6", "mstep_iters=2"};
  vmbpo_t *v = make_apart(&algo_vmbpo, 26, true, sets, 3);
  toy_batch t;
  make_batch(&t, 6);
  noise z;
  make_noise(&z, 80);
  double loss, kl;
  ember_err err = {0};
  ck_assert_int_eq(vmbpo_pi_loss_grad(v, &t.b, z.eps_a, &loss, &kl, &err), 0);
  ck_assert(kl > 1e-3); /* pi_old was moved away from pi */
  ref_t c;
  ref_init(&c, v, &t.b);
  c.eps_a = z.eps_a;
  check_value(loss, ref_pi_loss(&c), "L_pi (eq. 27)");
  check_grad(ref_pi_loss, &c, c.th[VMBPO_NET_PI], vmbpo_net(v, VMBPO_NET_PI)->grads,
             vmbpo_net(v, VMBPO_NET_PI)->param_count, "L_pi, pi");
  /* with lambda large the gradient is dominated by the KL and must still match */
  ref_free(&c);
  algo_vmbpo.destroy(v);
  const char *sets2[] = {"pi_equals_qc=false", "lambda=50", "mstep_iters=2"};
  v = make_apart(&algo_vmbpo, 26, true, sets2, 3);
  ck_assert_int_eq(vmbpo_pi_loss_grad(v, &t.b, z.eps_a, &loss, &kl, &err), 0);
  ref_init(&c, v, &t.b);
  c.eps_a = z.eps_a;
  check_value(loss, ref_pi_loss(&c), "L_pi, lambda 50");
  check_grad(ref_pi_loss, &c, c.th[VMBPO_NET_PI], vmbpo_net(v, VMBPO_NET_PI)->grads,
             vmbpo_net(v, VMBPO_NET_PI)->param_count, "L_pi (lambda 50), pi");
  ref_free(&c);
  algo_vmbpo.destroy(v);
}
END_TEST

START_TEST(mfe_exponential_td_loss_and_gradient) {
  for (int ti = 0; ti < 2; ti++) {
    const char *sets[][1] = {{"mfe_tau=1"}, {"mfe_tau=0.3"}};
    vmbpo_t *v = make_apart(&algo_vmbpo_mfe, 27, true, sets[ti], 1);
    toy_batch t;
    make_batch(&t, 7);
    double loss, etd, crate;
    ember_err err = {0};
    ck_assert_int_eq(vmbpo_mfe_q_loss_grad(v, &t.b, &loss, &etd, &crate, &err), 0);
    ref_t c;
    ref_init(&c, v, &t.b);
    double etd_ref;
    check_value(loss, ref_mfe_coefs(&c, &etd_ref), "MFE pseudo-loss");
    check_value(etd, etd_ref, "MFE mean exp(tau delta)");
    check_grad(ref_mfe_loss, &c, c.th[VMBPO_NET_Q], vmbpo_net(v, VMBPO_NET_Q)->grads,
               vmbpo_net(v, VMBPO_NET_Q)->param_count, "MFE critic, Q");
    /* V on q_c's actions at replay states: the same eq. (24) loss */
    noise z;
    make_noise(&z, 90);
    vmbpo_mfe_sample(v, &t.b, z.eps_a);
    double lv;
    ck_assert_int_eq(vmbpo_v_loss_grad(v, &t.b, &lv, &err), 0);
    c.eps_a = z.eps_a, c.eps_m = z.eps_m, c.member = z.member;
    ref_critic_samples(&c, &fixed_samples); /* its actions and log-probs; the model part is unused */
    check_value(lv, ref_v_loss(&c), "MFE L_V");
    ref_free(&c);
    algo_vmbpo_mfe.destroy(v);
  }
}
END_TEST

/* ---- the pure pieces against the tabular reference ----------------------------------------------- */

START_TEST(step1_weights_match_the_tabular_reference) {
  ember_err err = {0};
  vmbpo_mdp *m = vmbpo_mdp_new(6, 3, 0.9, 0.7, VMBPO_DISCOUNT_PER_STEP);
  rng_t r;
  rng_seed(&r, 5, RNG_STREAM_TEST);
  ck_assert_int_eq(vmbpo_mdp_randomize(m, &r, 1, 1.0, 0.1, &err), 0);
  double V[6], Q[18];
  for (int s = 0; s < 6; s++) V[s] = m->terminal[s] ? 0 : rng_normal(&r);
  vmbpo_q_from_v(m, V, Q);
  enum { N = 12 };
  float vn[N], q[N], rew[N], d[N], w[N];
  double tab[N], tab_sum = 0;
  for (int i = 0; i < N; i++) {
    int s = i % 5, a = i % 3, s2 = (i * 5 + 1) % 6;
    /* a terminal next state carries a garbage value: the weight must ignore it */
    vn[i] = m->terminal[s2] ? 123.0f : (float)V[s2];
    d[i] = m->terminal[s2] ? 1.0f : 0.0f;
    q[i] = (float)Q[s * 3 + a];
    rew[i] = (float)m->r[s * 3 + a];
    tab[i] = vmbpo_step1_weight(m, V, Q, s, a, s2);
    tab_sum += tab[i];
  }
  double ess, wmax;
  vmbpo_step1_weights(vn, q, rew, d, N, 0.7f, 0.9f, 1.0f, NULL, w, &ess, &wmax);
  double sq = 0;
  for (int i = 0; i < N; i++) {
    double want = N * tab[i] / tab_sum; /* B * the tabular weights normalised over the batch */
    ck_assert_msg(fabs(w[i] - want) < 1e-4 * fmax(1, want), "w[%d] %g, tabular %g", i, w[i], want);
    sq += want * want;
  }
  ck_assert_double_eq_tol(ess, N / sq, 1e-5);
  /* temperature 0: every weight 1 (the unweighted likelihood), ESS = B */
  vmbpo_step1_weights(vn, q, rew, d, N, 0.7f, 0.9f, 0.0f, NULL, w, &ess, &wmax);
  for (int i = 0; i < N; i++) ck_assert_float_eq_tol(w[i], 1.0f, 1e-6);
  ck_assert_double_eq_tol(ess, 1.0, 1e-9);
  vmbpo_mdp_destroy(&m);
}
END_TEST

START_TEST(step1_model_weights_are_the_per_state_action_tabular_weights) {
  /* The per-(x, a) normaliser: with K model samples drawn from p itself, log mean_k exp V'(x^_k)
   * estimates (Q(x,a) - eta r)/gamma = log E_p exp V(x') (eq. 9, per-step), so each weight estimates
   * the tabular weight of eq. (19) with no batch normalisation, and averages to 1 over x' ~ p. */
  ember_err err = {0};
  vmbpo_mdp *m = vmbpo_mdp_new(6, 3, 0.9, 0.7, VMBPO_DISCOUNT_PER_STEP);
  rng_t r;
  rng_seed(&r, 5, RNG_STREAM_TEST);
  ck_assert_int_eq(vmbpo_mdp_randomize(m, &r, 1, 1.0, 0.1, &err), 0);
  double V[6], Q[18];
  for (int s = 0; s < 6; s++) V[s] = m->terminal[s] ? 0 : rng_normal(&r);
  vmbpo_q_from_v(m, V, Q);
  enum { S = 6, KM = 20000, NREAL = 6 };
  static float vm[KM * NREAL], dm[KM * NREAL];
  float vn[NREAL], d[NREAL], w[NREAL];
  int s = 1, a = 2;
  const double *p = m->p + (size_t)(s * 3 + a) * S;
  /* row k*n + i: the k-th model sample of real row i; real row i's next state is state i */
  for (int k = 0; k < KM; k++)
    for (int i = 0; i < NREAL; i++) {
      double u = rng_uniform(&r), c = 0;
      int s2 = S - 1;
      for (int j = 0; j < S; j++)
        if ((c += p[j]) > u) { s2 = j; break; }
      vm[(size_t)k * NREAL + i] = m->terminal[s2] ? 99.0f : (float)V[s2]; /* garbage at terminal: masked */
      dm[(size_t)k * NREAL + i] = m->terminal[s2] ? 1.0f : 0.0f;
    }
  for (int i = 0; i < NREAL; i++) {
    vn[i] = m->terminal[i] ? -50.0f : (float)V[i];
    d[i] = m->terminal[i] ? 1.0f : 0.0f;
  }
  double ess, wmax, mean_w = 0;
  vmbpo_step1_weights_model(vn, d, vm, dm, NREAL, KM, 1.0f, 1e6f, NULL, w, &ess, &wmax);
  for (int i = 0; i < NREAL; i++) {
    double want = vmbpo_step1_weight(m, V, Q, s, a, i);
    ck_assert_msg(fabs(w[i] - want) < 0.03 * want, "w[%d] %g, tabular %g", i, w[i], want);
    mean_w += p[i] * w[i];
  }
  ck_assert_msg(fabs(mean_w - 1) < 0.03, "E_p[w] = %g, not 1", mean_w);
  /* the same values at temperature 0: all 1; a clip at 1.2 caps the largest */
  vmbpo_step1_weights_model(vn, d, vm, dm, NREAL, KM, 0.0f, 1e6f, NULL, w, &ess, &wmax);
  for (int i = 0; i < NREAL; i++) ck_assert_float_eq_tol(w[i], 1.0f, 1e-6);
  ck_assert_double_eq_tol(ess, 1.0, 1e-9);
  vmbpo_step1_weights_model(vn, d, vm, dm, NREAL, KM, 1.0f, 1.2f, NULL, w, &ess, &wmax);
  for (int i = 0; i < NREAL; i++) ck_assert(w[i] <= 1.2f + 1e-6f);
  ck_assert_double_eq_tol(wmax, 1.2, 1e-6);
  /* a deterministic task whose model samples all land on the real next state: every weight 1 */
  for (int k = 0; k < 4; k++)
    for (int i = 0; i < NREAL; i++) vm[k * NREAL + i] = vn[i], dm[k * NREAL + i] = d[i];
  vmbpo_step1_weights_model(vn, d, vm, dm, NREAL, 4, 1.0f, 20.0f, NULL, w, &ess, &wmax);
  for (int i = 0; i < NREAL; i++) ck_assert_float_eq_tol(w[i], 1.0f, 1e-5);
  vmbpo_mdp_destroy(&m);
}
END_TEST

START_TEST(nu_loss_is_the_negated_tabular_dual) {
  /* Empirical distributions that equal q = (3, 1, 2, 2)/8 and p = (1, 1, 1, 1)/4 exactly. */
  const int model_outcome[8] = {0, 0, 0, 1, 2, 2, 3, 3}, real_outcome[4] = {0, 1, 2, 3};
  const double q[4] = {3 / 8.0, 1 / 8.0, 2 / 8.0, 2 / 8.0}, p[4] = {0.25, 0.25, 0.25, 0.25};
  const double nus[2][4] = {{0.3, -0.7, 0.1, 1.2}, {0, 0, 0, 0}};
  for (int c = 0; c < 2; c++) {
    float nm[8], nr[4], dm[8], dr[4];
    for (int j = 0; j < 8; j++) nm[j] = (float)nus[c][model_outcome[j]];
    for (int i = 0; i < 4; i++) nr[i] = (float)nus[c][real_outcome[i]];
    int clamped;
    double L = vmbpo_nu_loss(nm, 8, nr, 4, 10.0f, dm, dr, &clamped);
    ck_assert_double_eq_tol(-L, vmbpo_nu_dual_objective(4, q, p, nus[c]), 1e-6);
    ck_assert_int_eq(clamped, 0);
    ck_assert_float_eq_tol(dm[0], -1.0f / 8, 1e-7);
  }
  /* at the optimum nu = log(q/p) the dual is KL(q||p) - 1, so 1 - L estimates the KL */
  double opt[4], kl = 0;
  float nm[8], nr[4];
  for (int j = 0; j < 4; j++) opt[j] = log(q[j] / p[j]), kl += q[j] * opt[j];
  for (int j = 0; j < 8; j++) nm[j] = (float)opt[model_outcome[j]];
  for (int i = 0; i < 4; i++) nr[i] = (float)opt[real_outcome[i]];
  ck_assert_double_eq_tol(1 - vmbpo_nu_loss(nm, 8, nr, 4, 10.0f, NULL, NULL, NULL), kl, 1e-6);
  /* clamping: values beyond nu_max stop contributing gradient and are counted */
  float big[2] = {30, -30}, dd[2];
  int clamped;
  double L = vmbpo_nu_loss(big, 1, big + 1, 1, 10.0f, dd, dd + 1, &clamped);
  ck_assert_int_eq(clamped, 2);
  ck_assert_double_eq_tol(L, -10 + exp(-10), 1e-5);
  ck_assert(dd[0] == 0 && dd[1] == 0);
}
END_TEST

START_TEST(mfe_coefficient_vanishes_in_expectation_at_the_tempered_fixed_point) {
  ember_err err = {0};
  vmbpo_mdp *m = vmbpo_mdp_new(5, 2, 0.9, 0.5, VMBPO_DISCOUNT_PER_STEP);
  rng_t r;
  rng_seed(&r, 8, RNG_STREAM_TEST);
  ck_assert_int_eq(vmbpo_mdp_randomize(m, &r, 1, 1.0, 0.1, &err), 0);
  double V[5], Q[10];
  for (int s = 0; s < 5; s++) V[s] = m->terminal[s] ? 0 : rng_normal(&r);
  const double taus[] = {1.0, 0.3, 2.0};
  for (int ti = 0; ti < 3; ti++) {
    vmbpo_q_from_v_tempered(m, V, taus[ti], Q);
    for (int s = 0; s < 5; s++)
      for (int a = 0; a < 2; a++) {
        double mean = 0, mean_wrong = 0;
        for (int s2 = 0; s2 < 5; s2++) {
          double coef, p = m->p[(s * 2 + a) * 5 + s2];
          vmbpo_mfe_coefficient((float)V[s2], (float)Q[s * 2 + a], (float)m->r[s * 2 + a],
                                m->terminal[s2] ? 1.0f : 0.0f, 0.5f, 0.9f, (float)taus[ti], 20.0f, &coef, NULL);
          mean += p * coef;
          vmbpo_mfe_coefficient((float)V[s2], (float)(Q[s * 2 + a] + 0.2), (float)m->r[s * 2 + a],
                                m->terminal[s2] ? 1.0f : 0.0f, 0.5f, 0.9f, (float)taus[ti], 20.0f, &coef, NULL);
          mean_wrong += p * coef;
        }
        ck_assert_msg(fabs(mean) < 1e-5, "tau %g: E_p[coef] = %g at the fixed point", taus[ti], mean);
        ck_assert_msg(mean_wrong > 1e-3, "Q above its fixed point must be pushed down (E coef %g)", mean_wrong);
      }
  }
  vmbpo_mdp_destroy(&m);
}
END_TEST

/* ---- refusals, rollback, save/load, export ---------------------------------------------------------- */

typedef struct {
  float *p[VMBPO_NET_COUNT + 1];
  size_t n[VMBPO_NET_COUNT + 1];
} params_copy;

static params_copy copy_params(vmbpo_t *v) {
  params_copy x;
  for (int i = 0; i <= VMBPO_NET_COUNT; i++) {
    const float *src = i < VMBPO_NET_COUNT ? vmbpo_net(v, i)->params : vmbpo_qd_head(v)->params;
    x.n[i] = i < VMBPO_NET_COUNT ? vmbpo_net(v, i)->param_count : vmbpo_qd_head(v)->param_count;
    x.p[i] = malloc(x.n[i] * sizeof(float));
    memcpy(x.p[i], src, x.n[i] * sizeof(float));
  }
  return x;
}
static int same_params(vmbpo_t *v, const params_copy *x) {
  for (int i = 0; i <= VMBPO_NET_COUNT; i++) {
    const float *cur = i < VMBPO_NET_COUNT ? vmbpo_net(v, i)->params : vmbpo_qd_head(v)->params;
    if (memcmp(cur, x->p[i], x->n[i] * sizeof(float)) != 0) return 0;
  }
  return 1;
}
static void free_params(params_copy *x) {
  for (int i = 0; i <= VMBPO_NET_COUNT; i++) free(x->p[i]);
}

START_TEST(non_finite_batches_are_refused_without_change) {
  const algo_ops *ops[] = {&algo_vmbpo, &algo_vmbpo_mfe};
  for (int o = 0; o < 2; o++) {
    const char *sets[] = {"pi_equals_qc=false", "lambda=0.6", "mstep_iters=2"};
    vmbpo_t *v = make(ops[o], 31, true, sets, 3);
    toy_batch t;
    make_batch(&t, 8);
    params_copy before = copy_params(v);
    ember_err err = {0};
    algo_stats st = {0};
    float *cells[] = {&t.obs[4], &t.action[1], &t.reward[2], &t.next_obs[7], &t.terminated[0]};
    for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
      float keep = *cells[c];
      *cells[c] = c % 2 ? INFINITY : NAN;
      ck_assert_int_eq(ops[o]->e_step(v, &t.b, &st, &err), EMBER_ENONFINITE);
      ck_assert_ptr_nonnull(strstr(err.msg, "non-finite"));
      ck_assert_int_eq(ops[o]->m_step(v, &t.b, &st, &err), EMBER_ENONFINITE);
      *cells[c] = keep;
    }
    ck_assert(same_params(v, &before));
    ck_assert_int_eq(ops[o]->e_step(v, &t.b, &st, &err), 0);
    ck_assert_int_eq(ops[o]->m_step(v, &t.b, &st, &err), 0);
    ck_assert(!same_params(v, &before));
    for (int i = 0; i < st.count; i++) ck_assert_msg(isfinite(st.values[i]), "stat %s", ops[o]->stat_names[i]);
    free_params(&before);
    ops[o]->destroy(v);
  }
}
END_TEST

START_TEST(a_loss_that_turns_non_finite_rolls_the_whole_update_back) {
  /* A finite batch, but one network's output bias is NaN: for VMBPO nu's (step 2 fails after step 1
   * has already stepped q_d), for VMBPO-MFE q_c's (L_V fails after Q has been stepped). The error
   * must name the loss, and every network, including those already stepped, must be as before. */
  const algo_ops *ops[] = {&algo_vmbpo, &algo_vmbpo_mfe};
  const vmbpo_net_id poisoned[] = {VMBPO_NET_NU, VMBPO_NET_QC};
  const char *names[] = {"L_nu", "L_V"};
  for (int o = 0; o < 2; o++) {
    vmbpo_t *v = make(ops[o], 32, true, NULL, 0);
    nn_mlp *net = vmbpo_net(v, poisoned[o]);
    nn_mlp_bias(net, net->layer_count - 1, 0)[0] = NAN;
    toy_batch t;
    make_batch(&t, 9);
    params_copy before = copy_params(v);
    ember_err err = {0};
    ck_assert_int_eq(ops[o]->e_step(v, &t.b, NULL, &err), EMBER_ENONFINITE);
    ck_assert_msg(strstr(err.msg, "non-finite") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, names[o]) != NULL, "message names %s: %s", names[o], err.msg);
    ck_assert(same_params(v, &before));
    free_params(&before);
    ops[o]->destroy(v);
  }
}
END_TEST

START_TEST(mfe_refuses_the_options_of_the_model_based_critic) {
  const char *keys[][2] = {{"vmbpo_mfe.critics", "2"}, {"vmbpo_mfe.real_ratio", "0.1"}};
  for (int k = 0; k < 2; k++) {
    config_binding b = {algo_vmbpo_mfe.settings, &settings, NULL};
    ember_err err = {0};
    ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
    ck_assert_int_eq(config_set(&b, 1, keys[k][0], keys[k][1], "test", &err), 0);
    algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH, .seed = 1,
                        .task = {.task = NULL, .reward_fn = toy_reward, .terminated_fn = toy_terminated},
                        .settings = &settings};
    ck_assert_ptr_null(algo_vmbpo_mfe.create(&ctx, &err));
    ck_assert_int_eq(err.code, EMBER_EINVAL);
    ck_assert_msg(strstr(err.msg, keys[k][0]) != NULL, "%s", err.msg);
  }
}
END_TEST

START_TEST(wrong_shapes_are_refused) {
  vmbpo_t *v = make(&algo_vmbpo, 33, true, NULL, 0);
  toy_batch t;
  make_batch(&t, 10);
  ember_err err = {0};
  t.b.size = BATCH + 1;
  ck_assert_int_eq(algo_vmbpo.e_step(v, &t.b, NULL, &err), EMBER_ESHAPE);
  t.b.size = BATCH;
  t.b.obs_dim = OBS + 1;
  ck_assert_int_eq(algo_vmbpo.m_step(v, &t.b, NULL, &err), EMBER_ESHAPE);
  ck_assert_ptr_nonnull(strstr(err.msg, "obs_dim"));
  algo_vmbpo.destroy(v);
  /* a bad setting is refused at create, naming the key */
  config_binding b = {&vmbpo_config_section, &settings, NULL};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  ck_assert_int_eq(config_set(&b, 1, "vmbpo.acting_policy", "mu", "test", &err), 0);
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH, .seed = 1,
                      .task = {.reward_fn = toy_reward}, .settings = &settings};
  ck_assert_ptr_null(algo_vmbpo.create(&ctx, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "acting_policy"));
}
END_TEST

START_TEST(lambda_that_cannot_act_is_refused) {
  /* eq. 27's KL to pi_old is zero at an M-step's first step and unused when pi is q_c's copy: a
   * lambda set there would do nothing, so create refuses it and names the keys.
   * k = 0: pi = q_c (the default); 1: pi fitted, one gradient step per M-step; 2: two steps (accepted) */
  for (int k = 0; k < 3; k++) {
    config_binding b = {&vmbpo_config_section, &settings, NULL};
    ember_err err = {0};
    ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
    ck_assert_int_eq(config_set(&b, 1, "vmbpo.lambda", "1", "test", &err), 0);
    if (k >= 1) ck_assert_int_eq(config_set(&b, 1, "vmbpo.pi_equals_qc", "false", "test", &err), 0);
    if (k == 2) ck_assert_int_eq(config_set(&b, 1, "vmbpo.mstep_iters", "2", "test", &err), 0);
    algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH, .seed = 1,
                        .task = {.reward_fn = toy_reward}, .settings = &settings};
    vmbpo_t *v = algo_vmbpo.create(&ctx, &err);
    if (k == 2) {
      ck_assert_msg(v != NULL, "%s", err.msg);
      algo_vmbpo.destroy(v);
      continue;
    }
    ck_assert_ptr_null(v);
    ck_assert_int_eq(err.code, EMBER_EINVAL);
    ck_assert_msg(strstr(err.msg, "vmbpo.lambda") && strstr(err.msg, k == 0 ? "pi_equals_qc" : "mstep_iters"), "%s",
                  err.msg);
  }
}
END_TEST

START_TEST(save_load_continues_bit_identically) {
  const algo_ops *ops[] = {&algo_vmbpo, &algo_vmbpo_mfe};
  for (int o = 0; o < 2; o++) {
    const char *sets[] = {"pi_equals_qc=false", "mfe_model_every=2", "lambda=0.6", "mstep_iters=2"};
    vmbpo_t *a = make(ops[o], 34, false, sets, 4);
    toy_batch t;
    make_batch(&t, 11);
    ember_err err = {0};
    for (int i = 0; i < 3; i++) {
      ck_assert_int_eq(ops[o]->e_step(a, &t.b, NULL, &err), 0);
      ck_assert_int_eq(ops[o]->m_step(a, &t.b, NULL, &err), 0);
    }
    FILE *f = tmpfile();
    ck_assert_int_eq(ops[o]->save(a, f, &err), 0);
    rewind(f);
    vmbpo_t *b = make(ops[o], 999, false, sets, 4); /* another seed: everything must come from the file */
    ck_assert_msg(ops[o]->load(b, f, &err) == 0, "%s", err.msg);
    fclose(f);
    for (int i = 0; i < 2; i++) {
      ck_assert_int_eq(ops[o]->e_step(a, &t.b, NULL, &err), 0);
      ck_assert_int_eq(ops[o]->m_step(a, &t.b, NULL, &err), 0);
      ck_assert_int_eq(ops[o]->e_step(b, &t.b, NULL, &err), 0);
      ck_assert_int_eq(ops[o]->m_step(b, &t.b, NULL, &err), 0);
    }
    params_copy pa = copy_params(a);
    ck_assert(same_params(b, &pa));
    free_params(&pa);
    /* a truncated file is refused, naming what is missing */
    f = tmpfile();
    ck_assert_int_eq(ops[o]->save(a, f, &err), 0);
    long len = ftell(f);
    ck_assert_int_eq(ftruncate(fileno(f), len / 2), 0);
    rewind(f);
    ck_assert_int_ne(ops[o]->load(b, f, &err), 0);
    fclose(f);
    ops[o]->destroy(a);
    ops[o]->destroy(b);
  }
}
END_TEST

START_TEST(export_ships_the_acting_policy) {
  const char *which[] = {"acting_policy=pi", "acting_policy=qc"};
  const vmbpo_net_id nets[] = {VMBPO_NET_PI, VMBPO_NET_QC};
  for (int w = 0; w < 2; w++) {
    vmbpo_t *v = make_apart(&algo_vmbpo, 35, true, which + w, 1);
    Ember__Params p;
    ember_err err = {0};
    ck_assert_int_eq(algo_vmbpo.export_params(v, &p, &err), 0);
    nn_mlp *net = vmbpo_net(v, nets[w]);
    ck_assert_str_eq(p.algorithm, "vmbpo");
    ck_assert_str_eq(p.policy_kind, "tanh_gaussian_mlp");
    ck_assert_int_eq((int)p.n_tensors, 2 * net->layer_count);
    ck_assert_str_eq(p.tensors[0]->name, "pi/l0/w");
    ck_assert_int_eq((int)p.tensors[0]->shape[1], OBS);
    ck_assert(memcmp(p.tensors[0]->data, nn_mlp_weight(net, 0, 0), p.tensors[0]->n_data * sizeof(float)) == 0);
    /* act() runs the same net: its deterministic action is tanh(mu) of that net */
    const float obs[OBS] = {0.3f, -0.2f, 0.5f};
    float act[ACT];
    ck_assert_int_eq(algo_vmbpo.act(v, obs, 1, true, act, NULL, &err), 0);
    toy_batch t;
    make_batch(&t, 12);
    ref_t c;
    ref_init(&c, v, &t.b);
    double x[OBS], mean[ACT], ls[ACT];
    fvec(x, obs, OBS);
    ref_dist(&c, nets[w], x, mean, ls);
    for (int j = 0; j < ACT; j++) ck_assert_double_eq_tol(act[j], tanh(mean[j]), 1e-5);
    ref_free(&c);
    algo_params_free(&p);
    algo_vmbpo.destroy(v);
  }
}
END_TEST

Suite *vmbpo_suite(void) {
  Suite *s = suite_create("vmbpo");
  TCase *tc = tcase_create("losses");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, step1_qd_loss_and_gradient);
  tcase_add_test(tc, step2_nu_loss_and_gradient);
  tcase_add_test(tc, step3_critic_losses_and_gradients);
  tcase_add_test(tc, step3_target_masks_terminal_value_but_keeps_nu);
  tcase_add_loop_test(tc, step4_qc_loss_and_gradient_through_the_action, 0, 2);
  tcase_add_test(tc, saturated_qc_equal_to_pi_has_a_zero_log_ratio);
  tcase_add_test(tc, mstep_pi_loss_and_gradient_with_kl);
  tcase_add_test(tc, mfe_exponential_td_loss_and_gradient);
  tcase_add_test(tc, step1_weights_match_the_tabular_reference);
  tcase_add_test(tc, step1_model_weights_are_the_per_state_action_tabular_weights);
  tcase_add_test(tc, nu_loss_is_the_negated_tabular_dual);
  tcase_add_test(tc, mfe_coefficient_vanishes_in_expectation_at_the_tempered_fixed_point);
  suite_add_tcase(s, tc);
  TCase *tr = tcase_create("update");
  tcase_set_timeout(tr, 120);
  tcase_add_test(tr, non_finite_batches_are_refused_without_change);
  tcase_add_test(tr, a_loss_that_turns_non_finite_rolls_the_whole_update_back);
  tcase_add_test(tr, wrong_shapes_are_refused);
  tcase_add_test(tr, lambda_that_cannot_act_is_refused);
  tcase_add_test(tr, mfe_refuses_the_options_of_the_model_based_critic);
  tcase_add_test(tr, save_load_continues_bit_identically);
  tcase_add_test(tr, export_ships_the_acting_policy);
  suite_add_tcase(s, tr);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(vmbpo_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

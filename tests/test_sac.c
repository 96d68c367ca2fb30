/* SAC (learner/algo_sac.c): the critic and actor gradients against central finite differences of
 * an independent double-precision reference of the losses, refusal of bad batches without any
 * parameter change, save -> load -> continue bit-identical to an uninterrupted run, the exported
 * policy, and a one-step problem where the update must move the action the right way.
 *
 * The gradient check: the reference below recomputes each loss in double with plain loops (no
 * BLAS, none of ember's nn code) from the float parameters, with the same noise, and central
 * differences with h = 1e-6 give dL/dtheta to ~1e-9. The float analytic gradient is compared
 * element by element with |g - fd| <= RTOL * max(|fd|, 1e-2 * max|fd|). RTOL = 2e-3 allows the
 * float rounding of the forward passes (the loss mixes terms of different sizes) and is far
 * below what a missing term, a wrong sign or a factor 2 would give (errors of order 1). The nets
 * use tanh so that the loss is smooth where the differences are taken. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_mlp.h"
#include "algo.h"
#include "algo_sac.h"
#include "policy.h"
#include "rng.h"

#define RTOL 2e-3
#define FD_STEP 1e-6
#define OBS 3
#define ACT 2
#define HIDDEN 5
#define BATCH 6

/* ---- a small SAC and a batch --------------------------------------------------------------------- */

static sac_settings settings;

static sac_t *make_sac(uint64_t seed, int max_batch, const char *const *sets, size_t nsets) {
  config_binding b = {&sac_config_section, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  ck_assert_int_eq(config_set(&b, 1, "sac.hidden_size", "5", "test", &err), 0);
  ck_assert_int_eq(config_set(&b, 1, "sac.activation", "tanh", "test", &err), 0);
  for (size_t i = 0; i < nsets; i++) {
    char key[64];
    const char *eq = strchr(sets[i], '=');
    snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
    ck_assert_msg(config_set(&b, 1, key, eq + 1, "test", &err) == 0, "%s", err.msg);
  }
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = max_batch, .seed = seed,
                      .settings = &settings};
  sac_t *s = algo_sac.create(&ctx, &err);
  ck_assert_msg(s != NULL, "%s", err.msg);
  return s;
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
    t->terminated[i] = i % 3 == 0 ? 1.0f : 0.0f; /* some terminal, some bootstrapped */
    t->truncated[i] = i % 3 == 1 ? 1.0f : 0.0f;
    t->weights[i] = 0.5f + rng_uniform_f(&r);
  }
  t->b = (algo_batch){.size = BATCH, .obs_dim = OBS, .act_dim = ACT, .obs = t->obs, .action = t->action,
                      .reward = t->reward, .next_obs = t->next_obs, .terminated = t->terminated,
                      .truncated = t->truncated, .weights = t->weights};
}

/* ---- the double-precision reference ---------------------------------------------------------------- */


/* Policy sample at obs with noise eps: action and log pi (the tanh-Gaussian of docs/protocol.md). */
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

static double *to_double(const nn_mlp *net) {
  double *d = malloc(net->param_count * sizeof(double));
  for (size_t i = 0; i < net->param_count; i++) d[i] = net->params[i];
  return d;
}

typedef struct {
  const nn_mlp *pi, *q, *qt;
  const double *pi_theta, *q_theta, *qt_theta;
  const algo_batch *b;
  const float *eps;
  double alpha, gamma;
} ref_ctx;

/* L_Q = (1/B) sum_b w_b sum_j (Q_j(s,a) - y)^2, y = r + gamma (1 - d) (min_j Q'_j(s',a') - alpha log pi(a'|s')) */
static double ref_critic_loss(const ref_ctx *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    double a2[ACT], act[ACT];
    double lp = ref_policy(c->pi, c->pi_theta, c->b->next_obs + i * OBS, c->eps + i * ACT, a2);
    double v = fmin(ref_q(c->qt, c->qt_theta, 0, c->b->next_obs + i * OBS, a2),
                    ref_q(c->qt, c->qt_theta, 1, c->b->next_obs + i * OBS, a2)) -
               c->alpha * lp;
    double y = c->b->reward[i] + c->gamma * (1 - c->b->terminated[i]) * v;
    for (int j = 0; j < ACT; j++) act[j] = c->b->action[i * ACT + j];
    for (int m = 0; m < 2; m++) {
      double d = ref_q(c->q, c->q_theta, m, c->b->obs + i * OBS, act) - y;
      loss += c->b->weights[i] * d * d;
    }
  }
  return loss / c->b->size;
}

/* L_pi = (1/B) sum_b alpha log pi(a|s) - min_j Q_j(s, a),  a = tanh(mu + std eps) */
static double ref_actor_loss(const ref_ctx *c) {
  double loss = 0;
  for (int i = 0; i < c->b->size; i++) {
    double a[ACT];
    double lp = ref_policy(c->pi, c->pi_theta, c->b->obs + i * OBS, c->eps + i * ACT, a);
    loss += c->alpha * lp - fmin(ref_q(c->q, c->q_theta, 0, c->b->obs + i * OBS, a),
                                 ref_q(c->q, c->q_theta, 1, c->b->obs + i * OBS, a));
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

/* Central differences of loss() over theta[0..n). */
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

static void fill_eps(float *eps, int n, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 7);
  rng_normal_fill(&r, eps, n);
}

/* Moves the target critic away from the critic so the target path is not the critic's own. */
static void perturb(nn_mlp *net, uint64_t seed, float scale) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST + 9);
  for (size_t i = 0; i < net->param_count; i++) net->params[i] += scale * (float)rng_normal(&r);
}

START_TEST(critic_gradient_matches_finite_differences) {
  sac_t *s = make_sac(11, BATCH, NULL, 0);
  sac_set_alpha(s, 0.3);
  perturb(sac_target_critic_net(s), 5, 0.2f);
  toy_batch t;
  make_batch(&t, 1);
  float eps[BATCH * ACT];
  fill_eps(eps, BATCH * ACT, 2);
  double loss;
  ember_err err = {0};
  ck_assert_int_eq(sac_critic_loss_grad(s, &t.b, eps, &loss, &err), 0);

  double *pt = to_double(sac_policy_net(s)), *qt = to_double(sac_critic_net(s)),
         *qtt = to_double(sac_target_critic_net(s));
  ref_ctx c = {sac_policy_net(s), sac_critic_net(s), sac_target_critic_net(s), pt, qt, qtt, &t.b, eps,
               sac_alpha(s), settings.gamma};
  ck_assert_double_eq_tol(loss, ref_critic_loss(&c), 1e-4 * fmax(1, fabs(loss)));
  size_t n = sac_critic_net(s)->param_count;
  double *fd = finite_diff(ref_critic_loss, &c, qt, n);
  double e = grad_error(sac_critic_net(s)->grads, fd, n);
  ck_assert_msg(e < RTOL, "critic gradient error %g", e);
  free(fd), free(pt), free(qt), free(qtt);
  algo_sac.destroy(s);
}
END_TEST

START_TEST(actor_gradient_matches_finite_differences) {
  sac_t *s = make_sac(12, BATCH, NULL, 0);
  sac_set_alpha(s, 0.7);
  perturb(sac_critic_net(s), 6, 0.3f); /* a less flat critic: dQ/da matters */
  toy_batch t;
  make_batch(&t, 3);
  float eps[BATCH * ACT];
  fill_eps(eps, BATCH * ACT, 4);
  double loss, mean_lp;
  ember_err err = {0};
  ck_assert_int_eq(sac_actor_loss_grad(s, &t.b, eps, &loss, &mean_lp, &err), 0);

  double *pt = to_double(sac_policy_net(s)), *qt = to_double(sac_critic_net(s));
  ref_ctx c = {sac_policy_net(s), sac_critic_net(s), NULL, pt, qt, NULL, &t.b, eps, sac_alpha(s), settings.gamma};
  ck_assert_double_eq_tol(loss, ref_actor_loss(&c), 1e-4 * fmax(1, fabs(loss)));
  size_t n = sac_policy_net(s)->param_count;
  double *fd = finite_diff(ref_actor_loss, &c, pt, n);
  double e = grad_error(sac_policy_net(s)->grads, fd, n);
  ck_assert_msg(e < RTOL, "actor gradient error %g", e);

  /* The dQ/da path alone must matter: with alpha = 0 the gradient is all through the critic. */
  sac_set_alpha(s, 0.0);
  ck_assert_int_eq(sac_actor_loss_grad(s, &t.b, eps, &loss, &mean_lp, &err), 0);
  c.alpha = 0.0;
  free(fd);
  fd = finite_diff(ref_actor_loss, &c, pt, n);
  e = grad_error(sac_policy_net(s)->grads, fd, n);
  ck_assert_msg(e < RTOL, "actor gradient (through dQ/da only) error %g", e);
  double norm = 0;
  for (size_t i = 0; i < n; i++) norm += fd[i] * fd[i];
  ck_assert(norm > 1e-8);
  free(fd), free(pt), free(qt);
  algo_sac.destroy(s);
}
END_TEST

/* ---- refusals ----------------------------------------------------------------------------------- */

typedef struct {
  float *pi, *q, *qt;
  size_t npi, nq;
  double alpha;
} snapshot;

static snapshot snap(sac_t *s) {
  snapshot x = {.npi = sac_policy_net(s)->param_count, .nq = sac_critic_net(s)->param_count, .alpha = sac_alpha(s)};
  x.pi = malloc(x.npi * sizeof(float));
  x.q = malloc(x.nq * sizeof(float));
  x.qt = malloc(x.nq * sizeof(float));
  memcpy(x.pi, sac_policy_net(s)->params, x.npi * sizeof(float));
  memcpy(x.q, sac_critic_net(s)->params, x.nq * sizeof(float));
  memcpy(x.qt, sac_target_critic_net(s)->params, x.nq * sizeof(float));
  return x;
}

static int same_as(sac_t *s, const snapshot *x) {
  return memcmp(x->pi, sac_policy_net(s)->params, x->npi * sizeof(float)) == 0 &&
         memcmp(x->q, sac_critic_net(s)->params, x->nq * sizeof(float)) == 0 &&
         memcmp(x->qt, sac_target_critic_net(s)->params, x->nq * sizeof(float)) == 0 && x->alpha == sac_alpha(s);
}

static void snap_free(snapshot *x) { free(x->pi), free(x->q), free(x->qt); }

START_TEST(non_finite_batches_are_refused_without_change) {
  sac_t *s = make_sac(13, BATCH, NULL, 0);
  toy_batch t;
  make_batch(&t, 5);
  snapshot before = snap(s);
  ember_err err = {0};
  algo_stats st = {0};
  float *cells[] = {&t.obs[4], &t.action[1], &t.reward[2], &t.next_obs[7], &t.terminated[0], &t.weights[3]};
  for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
    float keep = *cells[c];
    *cells[c] = c % 2 ? INFINITY : NAN;
    ck_assert_int_eq(algo_sac.e_step(s, &t.b, &st, &err), EMBER_ENONFINITE);
    ck_assert_int_eq(algo_sac.m_step(s, &t.b, &st, &err), EMBER_ENONFINITE);
    ck_assert_ptr_nonnull(strstr(err.msg, "non-finite"));
    *cells[c] = keep;
  }
  ck_assert(same_as(s, &before));
  /* the clean batch goes through and changes the parameters */
  ck_assert_int_eq(algo_sac.e_step(s, &t.b, &st, &err), 0);
  ck_assert_int_eq(algo_sac.m_step(s, &t.b, &st, &err), 0);
  ck_assert(!same_as(s, &before));
  snap_free(&before);
  algo_sac.destroy(s);
}
END_TEST

START_TEST(a_loss_that_overflows_is_refused_without_change) {
  sac_t *s = make_sac(14, BATCH, NULL, 0);
  toy_batch t;
  make_batch(&t, 6);
  sac_set_alpha(s, 3e38); /* finite inputs, but alpha * log pi overflows the target to inf */
  snapshot before = snap(s);
  ember_err err = {0};
  ck_assert_int_eq(algo_sac.e_step(s, &t.b, NULL, &err), EMBER_ENONFINITE);
  ck_assert_ptr_nonnull(strstr(err.msg, "critic loss"));
  ck_assert(same_as(s, &before));
  snap_free(&before);
  algo_sac.destroy(s);
}
END_TEST

START_TEST(wrong_shapes_are_refused) {
  sac_t *s = make_sac(15, 4, NULL, 0);
  toy_batch t;
  make_batch(&t, 7);
  ember_err err = {0};
  ck_assert_int_eq(algo_sac.e_step(s, &t.b, NULL, &err), EMBER_ESHAPE); /* 6 rows > max_batch 4 */
  t.b.size = 4;
  t.b.obs_dim = OBS + 1;
  ck_assert_int_eq(algo_sac.m_step(s, &t.b, NULL, &err), EMBER_ESHAPE);
  ck_assert_ptr_nonnull(strstr(err.msg, "obs_dim"));
  t.b.obs_dim = OBS;
  t.b.size = 0;
  ck_assert_int_eq(algo_sac.e_step(s, &t.b, NULL, &err), EMBER_ESHAPE);
  float pr[4];
  ck_assert_int_eq(algo_sac.priorities(s, pr, &err), EMBER_ESTATE);
  algo_sac.destroy(s);
}
END_TEST

START_TEST(bad_settings_are_refused) {
  config_binding b = {&sac_config_section, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  snprintf(settings.activation, sizeof settings.activation, "sigmoid");
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = 4, .settings = &settings};
  ck_assert_ptr_null(algo_sac.create(&ctx, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "sac.activation"));
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  settings.log_std_min = 1, settings.log_std_max = 0;
  ck_assert_ptr_null(algo_sac.create(&ctx, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "log_std_min"));
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  ctx.act_dim = 0;
  ck_assert_ptr_null(algo_sac.create(&ctx, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
}
END_TEST

/* ---- save, load, continue ------------------------------------------------------------------------- */

static void updates(sac_t *s, int n, uint64_t batch_seed) {
  ember_err err = {0};
  for (int i = 0; i < n; i++) {
    toy_batch t;
    make_batch(&t, batch_seed + i);
    ck_assert_msg(algo_sac.e_step(s, &t.b, NULL, &err) == 0, "%s", err.msg);
    ck_assert_msg(algo_sac.m_step(s, &t.b, NULL, &err) == 0, "%s", err.msg);
  }
}

START_TEST(save_load_continue_is_bit_identical) {
  sac_t *a = make_sac(21, BATCH, NULL, 0);
  updates(a, 10, 100);
  FILE *f = tmpfile();
  ember_err err = {0};
  ck_assert_int_eq(algo_sac.save(a, f, &err), 0);
  updates(a, 10, 200); /* the uninterrupted run */

  sac_t *b = make_sac(99, BATCH, NULL, 0); /* another seed: everything must come from the file */
  rewind(f);
  ck_assert_msg(algo_sac.load(b, f, &err) == 0, "%s", err.msg);
  updates(b, 10, 200);
  snapshot sa = snap(a);
  ck_assert(same_as(b, &sa));
  /* and the RNG stream continues identically too */
  float obs[OBS] = {0.1f, -0.2f, 0.3f}, act_a[ACT], act_b[ACT];
  ck_assert_int_eq(algo_sac.act(a, obs, 1, false, act_a, NULL, &err), 0);
  ck_assert_int_eq(algo_sac.act(b, obs, 1, false, act_b, NULL, &err), 0);
  ck_assert_mem_eq(act_a, act_b, sizeof act_a);
  snap_free(&sa);

  /* a truncated file and a foreign file are refused */
  rewind(f);
  char junk[64] = "not a sac state";
  FILE *g = tmpfile();
  fwrite(junk, 1, sizeof junk, g);
  rewind(g);
  ck_assert_int_eq(algo_sac.load(b, g, &err), EMBER_ECORRUPT);
  fclose(g);
  g = tmpfile();
  char buf[256];
  size_t got = fread(buf, 1, sizeof buf, f);
  fwrite(buf, 1, got, g);
  rewind(g);
  ck_assert_int_eq(algo_sac.load(b, g, &err), EMBER_ECORRUPT);
  fclose(g);
  /* a state for other sizes is refused by shape */
  sac_t *c = make_sac(21, BATCH, (const char *const[]){"sac.hidden_size=7"}, 1);
  rewind(f);
  ck_assert_int_eq(algo_sac.load(c, f, &err), EMBER_ESHAPE);
  fclose(f);
  algo_sac.destroy(a);
  algo_sac.destroy(b);
  algo_sac.destroy(c);
}
END_TEST

/* ---- export and act -------------------------------------------------------------------------------- */

START_TEST(export_is_the_acting_policy) {
  sac_t *s = make_sac(31, BATCH, NULL, 0);
  updates(s, 3, 300);
  Ember__Params p;
  ember_err err = {0};
  ck_assert_int_eq(algo_sac.export_params(s, &p, &err), 0);
  ck_assert_str_eq(p.policy_kind, "tanh_gaussian_mlp");
  ck_assert_str_eq(p.policy_activation, "tanh");
  ck_assert_str_eq(p.algorithm, "sac");
  ck_assert_str_eq(p.task, "toy");
  ck_assert_uint_eq(p.obs_dim, OBS);
  ck_assert_uint_eq(p.act_dim, ACT);
  ck_assert_float_eq(p.log_std_min, (float)settings.log_std_min);
  ck_assert_float_eq(p.log_std_max, (float)settings.log_std_max);
  ck_assert_uint_eq(p.n_tensors, 6); /* 2 hidden layers + output, weight and bias each */
  const nn_mlp *pi = sac_policy_net(s);
  for (int l = 0; l < 3; l++) {
    char name[32];
    snprintf(name, sizeof name, "pi/l%d/w", l);
    ck_assert_str_eq(p.tensors[2 * l]->name, name);
    ck_assert_uint_eq(p.tensors[2 * l]->n_shape, 2);
    ck_assert_uint_eq(p.tensors[2 * l]->shape[0], pi->dims[l + 1]);
    ck_assert_uint_eq(p.tensors[2 * l]->shape[1], pi->dims[l]);
    ck_assert_mem_eq(p.tensors[2 * l]->data, nn_mlp_weight(pi, l, 0), p.tensors[2 * l]->n_data * sizeof(float));
    snprintf(name, sizeof name, "pi/l%d/b", l);
    ck_assert_str_eq(p.tensors[2 * l + 1]->name, name);
    ck_assert_uint_eq(p.tensors[2 * l + 1]->n_shape, 1);
    ck_assert_uint_eq(p.tensors[2 * l + 1]->n_data, pi->dims[l + 1]);
  }
  ck_assert_uint_eq(p.tensors[4]->shape[0], 2 * ACT);

  /* The deterministic action is tanh(mean) of the exported MLP, computed here from the tensors. */
  toy_batch t;
  make_batch(&t, 9);
  float act[BATCH * ACT];
  ck_assert_int_eq(algo_sac.act(s, t.obs, BATCH, true, act, NULL, &err), 0);
  for (int i = 0; i < BATCH; i++) {
    double x[8], y[16];
    int in = OBS;
    for (int j = 0; j < OBS; j++) x[j] = t.obs[i * OBS + j];
    for (int l = 0; l < 3; l++) {
      const Ember__Tensor *w = p.tensors[2 * l], *b = p.tensors[2 * l + 1];
      int out = (int)w->shape[0];
      for (int o = 0; o < out; o++) {
        double z = b->data[o];
        for (int j = 0; j < in; j++) z += w->data[o * in + j] * x[j];
        y[o] = l < 2 ? tanh(z) : z;
      }
      memcpy(x, y, (size_t)out * sizeof(double));
      in = out;
    }
    for (int j = 0; j < ACT; j++) ck_assert_double_eq_tol(act[i * ACT + j], tanh(x[j]), 1e-5);
  }
  /* The actor's policy (common/policy), built from the export, acts exactly as SAC does. */
  policy_config pc = {.task = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = BATCH};
  policy_t *pol = policy_new(&p, &pc, &err);
  ck_assert_msg(pol != NULL, "%s", err.msg);
  float pol_act[BATCH * ACT], pol_lp[BATCH], sac_lp[BATCH];
  ck_assert_int_eq(policy_act(pol, t.obs, BATCH, true, NULL, pol_act, pol_lp, &err), 0);
  ck_assert_int_eq(algo_sac.act(s, t.obs, BATCH, true, act, sac_lp, &err), 0);
  for (int i = 0; i < BATCH * ACT; i++) ck_assert_float_eq_tol(pol_act[i], act[i], 1e-6f);
  for (int i = 0; i < BATCH; i++) ck_assert_float_eq_tol(pol_lp[i], sac_lp[i], 1e-4f);
  policy_destroy(&pol);
  algo_params_free(&p);
  ck_assert_uint_eq(p.n_tensors, 0);
  algo_sac.destroy(s);
}
END_TEST

START_TEST(act_handles_more_rows_than_max_batch) {
  sac_t *s = make_sac(32, 2, NULL, 0);
  float obs[5 * OBS], a[5 * ACT], lp[5], a1[ACT];
  for (int i = 0; i < 5 * OBS; i++) obs[i] = 0.1f * i;
  ember_err err = {0};
  ck_assert_int_eq(algo_sac.act(s, obs, 5, true, a, lp, &err), 0);
  ck_assert_int_eq(algo_sac.act(s, obs + 4 * OBS, 1, true, a1, NULL, &err), 0);
  ck_assert_mem_eq(a + 4 * ACT, a1, sizeof a1);
  for (int i = 0; i < 5 * ACT; i++) ck_assert(a[i] > -1 && a[i] < 1);
  obs[2] = NAN;
  ck_assert_int_eq(algo_sac.act(s, obs, 5, false, a, lp, &err), EMBER_ENONFINITE);
  algo_sac.destroy(s);
}
END_TEST

/* ---- it learns (a one-step problem) ----------------------------------------------------------------- */

/* Every episode is one step, reward -(a - 0.5)^2 summed over the action dims, then termination.
 * Q must learn the reward and the policy's mean action must move to 0.5 (and alpha down). */
START_TEST(one_step_problem_moves_the_action_to_the_optimum) {
  const char *sets[] = {"sac.hidden_size=32", "sac.activation=relu", "sac.actor_lr=3e-3", "sac.critic_lr=3e-3",
                        "sac.alpha_lr=3e-3", "sac.init_alpha=0.1"};
  enum { B = 64 };
  config_binding bind = {&sac_config_section, &settings, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&bind, 1, &err), 0);
  for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
    char key[64];
    const char *eq = strchr(sets[i], '=');
    snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
    ck_assert_int_eq(config_set(&bind, 1, key, eq + 1, "test", &err), 0);
  }
  algo_context ctx = {.task_name = "toy", .obs_dim = OBS, .act_dim = ACT, .max_batch = B, .seed = 3,
                      .settings = &settings};
  sac_t *s = algo_sac.create(&ctx, &err);
  ck_assert_ptr_nonnull(s);
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
    ck_assert_int_eq(algo_sac.e_step(s, &b, &st, &err), 0);
    ck_assert_int_eq(algo_sac.m_step(s, &b, &st, &err), 0);
  }
  float a[B * ACT];
  ck_assert_int_eq(algo_sac.act(s, obs, B, true, a, NULL, &err), 0);
  double mean = 0;
  for (int i = 0; i < B * ACT; i++) mean += a[i] / (B * ACT);
  ck_assert_msg(fabs(mean - 0.5) < 0.1, "mean deterministic action %g, optimum 0.5", mean);
  ck_assert_int_eq(st.count, 7);
  ck_assert_msg(st.values[4] < 0.1, "alpha %g should have fallen from 0.1", st.values[4]);
  ck_assert(st.values[0] < 0.05); /* the critic fits the reward */
  algo_sac.destroy(s);
}
END_TEST

/* ---- the registry ------------------------------------------------------------------------------------- */

START_TEST(registry_finds_every_algorithm) {
  ck_assert_ptr_eq(algo_find("sac"), &algo_sac);
  ck_assert_ptr_null(algo_find("nope"));
  ck_assert_ptr_null(algo_find(NULL));
  int n = 0;
  for (const algo_ops *const *a = algo_all(); *a; a++, n++) {
    ck_assert_ptr_eq(algo_find((*a)->name), *a);
    int stats = 0;
    while ((*a)->stat_names[stats]) stats++;
    ck_assert_int_le(stats, ALGO_MAX_STATS);
    void *buf = calloc(1, (*a)->settings_size);
    config_binding bind = {(*a)->settings, buf, NULL};
    ember_err err = {0};
    ck_assert_msg(config_defaults(&bind, 1, &err) == 0, "%s", err.msg);
    free(buf);
  }
  ck_assert_int_ge(n, 1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sac");
  TCase *g = tcase_create("gradients");
  tcase_add_test(g, critic_gradient_matches_finite_differences);
  tcase_add_test(g, actor_gradient_matches_finite_differences);
  suite_add_tcase(s, g);
  TCase *r = tcase_create("refusals");
  tcase_add_test(r, non_finite_batches_are_refused_without_change);
  tcase_add_test(r, a_loss_that_overflows_is_refused_without_change);
  tcase_add_test(r, wrong_shapes_are_refused);
  tcase_add_test(r, bad_settings_are_refused);
  suite_add_tcase(s, r);
  TCase *st = tcase_create("state");
  tcase_add_test(st, save_load_continue_is_bit_identical);
  tcase_add_test(st, export_is_the_acting_policy);
  tcase_add_test(st, act_handles_more_rows_than_max_batch);
  tcase_add_test(st, registry_finds_every_algorithm);
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

/* algo_mpo.c: Maximum a Posteriori Policy Optimisation behind algo_ops. See algo_mpo.h for the
 * networks and the two papers ([MPO], [REPI]) and docs/algorithms.md ("MPO as implemented") for the
 * equations in prose. Each loss below names the paper and the section of the equation it computes.
 *
 * Shapes: B = batch rows, N = action_samples, M = target_samples, A = act_dim, O = obs_dim. Sampled
 * tensors are row-major with the samples of one state adjacent: row r = i * n + j is sample j of
 * state i.
 *
 * Memory: everything is allocated in mpo_create for ctx->max_batch rows (times max(N, M) where the
 * samples are); e_step, m_step and act never allocate.
 */
#include "algo_mpo.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "algo_parts.h"
#include "nn_dist.h"
#include "nn_optim.h"
#include "rng.h"

/* ---- settings --------------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, help) {#name, type, offsetof(mpo_settings, name), lo, hi, def, help}
static const config_field mpo_fields[] = {
    F(hidden_size, CONFIG_INT, 1, 4096, "256", "units per hidden layer (policy and both critics)"),
    F(hidden_layers, CONFIG_INT, 1, NN_MAX_HIDDEN, "2", "hidden layers (policy and both critics)"),
    F(activation, CONFIG_STRING, 0, 0, "relu", "hidden activation: relu, tanh or elu"),
    F(policy_lr, CONFIG_FLOAT, 1e-12, 1, "3e-4", "Adam learning rate of the policy (M-step)"),
    F(critic_lr, CONFIG_FLOAT, 1e-12, 1, "3e-4", "Adam learning rate of the twin critics"),
    F(dual_lr, CONFIG_FLOAT, 1e-12, 1, "1e-2", "Adam learning rate of log(eta), log(alpha_mean), log(alpha_std)"),
    F(gamma, CONFIG_FLOAT, 0, 1, "0.99", "discount factor"),
    F(tau, CONFIG_FLOAT, 0, 1, "0.005", "Polyak rate of the target critics (1 = copy)"),
    F(policy_tau, CONFIG_FLOAT, 0, 1, "0.05", "Polyak rate of the target policy pi_old (1 = copy)"),
    F(action_samples, CONFIG_INT, 1, 1024, "20", "N: actions sampled from pi_old per state in the E-step"),
    F(target_samples, CONFIG_INT, 1, 1024, "4", "M: next actions from pi_old per transition in the TD target"),
    F(epsilon, CONFIG_FLOAT, 1e-8, 100, "0.1", "E-step KL bound: KL(q || pi_old), mean over the batch's states, in nats"),
    F(epsilon_mean, CONFIG_FLOAT, 1e-10, 100, "0.01", "M-step KL bound on the mean's change (mean over states, sum over action dims)"),
    F(epsilon_std, CONFIG_FLOAT, 1e-10, 100, "1e-4", "M-step KL bound on the std's change (mean over states, sum over action dims)"),
    F(init_eta, CONFIG_FLOAT, 1e-6, 1e6, "1", "initial temperature eta of the E-step"),
    F(init_alpha_mean, CONFIG_FLOAT, 1e-6, 1e6, "1", "initial Lagrange multiplier of the mean constraint"),
    F(init_alpha_std, CONFIG_FLOAT, 1e-6, 1e6, "100", "initial Lagrange multiplier of the std constraint"),
    F(log_std_min, CONFIG_FLOAT, -20, 0, "-5", "lower bound of the policy's log standard deviation"),
    F(log_std_max, CONFIG_FLOAT, -5, 5, "2", "upper bound of the policy's log standard deviation"),
};
#undef F
const config_section mpo_config_section = {"mpo", mpo_fields, sizeof mpo_fields / sizeof *mpo_fields};

/* e_step fills the first seven, m_step the rest. */
enum {
  ST_CRITIC_LOSS, ST_Q_MEAN, ST_TARGET_MEAN, ST_ETA, ST_DUAL, ST_KL_Q, ST_ESS,
  ST_NLL, ST_KL_MEAN, ST_KL_STD, ST_ALPHA_MEAN, ST_ALPHA_STD, ST_STD, ST_COUNT
};
static const char *const mpo_stat_names[] = {
    "critic_loss", "q_mean",     "target_mean", "eta",       "temperature_dual", "kl_q", "ess",
    "policy_nll",  "kl_mean",    "kl_std",      "alpha_mean", "alpha_std",       "std",  NULL};

/* The log-duals stay in [-18, 18] (Acme's floor for its log-temperature): far enough that a
 * multiplier a constraint no longer needs can come back within a few thousand steps. */
#define LOG_DUAL_MIN -18.0f
#define LOG_DUAL_MAX 18.0f

/* ---- the instance ------------------------------------------------------------------------------ */

struct mpo {
  mpo_settings cfg;
  char task[CONFIG_STRING_MAX];
  int obs_dim, act_dim, max_batch, n_samples, n_target, max_rows;
  float log_std_lo, log_std_hi;

  algo_policy pi;           /* obs -> [mu | raw log-std], with its workspace and head buffers */
  nn_mlp *pi_old;           /* the target policy */
  nn_mlp *q, *q_target;     /* [obs | act] -> [Q_1, Q_2] */
  nn_mlp_ws *pi_old_ws, *q_ws, *q_target_ws; /* q_target_ws holds max_rows sampled rows */
  nn_adam *pi_opt, *q_opt, *eta_opt, *alpha_opt;
  float log_eta[1], log_eta_grad[1];
  float log_alpha[2], log_alpha_grad[2]; /* [mean, std] */

  rng_t rng;
  uint64_t critic_updates, policy_updates;
  int pending_rows; /* rows of the E-step whose samples wait for m_step (0: none) */
  int last_batch;   /* rows of the last critic update (0: none), for priorities */

  /* scratch; [R, ...] is [max_rows, ...], [B, ...] is [max_batch, ...] */
  float *eps;                   /* [R, A] */
  float *old_mean, *old_log_std; /* [B, A]: pi_old at the last forward */
  float *rep_a, *rep_b;         /* [R, A]: a state's mean / log-std repeated over its samples */
  float *action, *xa;           /* [R, A], [R, O + A] */
  float *u_td, *q_td;           /* [R, A], [R]: the TD target's samples */
  float *u, *qv, *w;            /* [R, A], [R], [R]: the E-step's samples, Q-table and weights */
  float *lp, *d_lp;             /* [R] */
  float *d_rep;                 /* [R, A] */
  float *kl, *d_kl;             /* [B] */
  float *target, *d_q, *td_abs; /* [B], [B, 2], [B] */
  float *scratch;
};

nn_mlp *mpo_policy_net(mpo_t *m) { return m->pi.net; }
nn_mlp *mpo_target_policy_net(mpo_t *m) { return m->pi_old; }
nn_mlp *mpo_critic_net(mpo_t *m) { return m->q; }
nn_mlp *mpo_target_critic_net(mpo_t *m) { return m->q_target; }
double mpo_eta(const mpo_t *m) { return exp((double)m->log_eta[0]); }
double mpo_alpha_mean(const mpo_t *m) { return exp((double)m->log_alpha[0]); }
double mpo_alpha_std(const mpo_t *m) { return exp((double)m->log_alpha[1]); }
void mpo_set_duals(mpo_t *m, double eta, double alpha_mean, double alpha_std) {
  m->log_eta[0] = (float)log(eta);
  m->log_alpha[0] = (float)log(alpha_mean);
  m->log_alpha[1] = (float)log(alpha_std);
}

static void mpo_destroy(void *self) {
  mpo_t *m = self;
  if (!m) return;
  algo_policy_free(&m->pi);
  nn_mlp_ws_destroy(&m->pi_old_ws);
  nn_mlp_ws_destroy(&m->q_ws);
  nn_mlp_ws_destroy(&m->q_target_ws);
  nn_adam *opts[] = {m->pi_opt, m->q_opt, m->eta_opt, m->alpha_opt};
  for (int i = 0; i < 4; i++) nn_adam_destroy(&opts[i]);
  nn_mlp_destroy(&m->pi_old);
  nn_mlp_destroy(&m->q);
  nn_mlp_destroy(&m->q_target);
  free(m->scratch);
  free(m);
}

static int check_settings(const mpo_settings *c, const algo_context *ctx, nn_activation *act, ember_err *err) {
  if (ctx->obs_dim < 1 || ctx->act_dim < 1 || ctx->max_batch < 1)
    return ember_fail(err, EMBER_EINVAL, "mpo: obs_dim %d, act_dim %d and max_batch %d must all be >= 1",
                      ctx->obs_dim, ctx->act_dim, ctx->max_batch);
  if (!(c->log_std_min < c->log_std_max))
    return ember_fail(err, EMBER_EINVAL, "mpo.log_std_min %g must be below mpo.log_std_max %g", c->log_std_min,
                      c->log_std_max);
  if (c->action_samples < 1 || c->action_samples > 1024 || c->target_samples < 1 || c->target_samples > 1024)
    return ember_fail(err, EMBER_EINVAL, "mpo.action_samples %lld and mpo.target_samples %lld must be in [1, 1024]",
                      (long long)c->action_samples, (long long)c->target_samples);
  if (!(c->epsilon > 0 && c->epsilon_mean > 0 && c->epsilon_std > 0))
    return ember_fail(err, EMBER_EINVAL, "mpo.epsilon %g, mpo.epsilon_mean %g and mpo.epsilon_std %g must be > 0",
                      c->epsilon, c->epsilon_mean, c->epsilon_std);
  if (!(c->init_eta > 0 && c->init_alpha_mean > 0 && c->init_alpha_std > 0))
    return ember_fail(err, EMBER_EINVAL, "mpo.init_eta, mpo.init_alpha_mean and mpo.init_alpha_std must be > 0");
  if (nn_activation_parse(c->activation, act, err) != 0) return ember_err_prefix(err, "mpo.activation: ");
  return 0;
}

static void *mpo_create(const algo_context *ctx, ember_err *err) {
  mpo_settings defaults;
  const mpo_settings *c = ctx->settings;
  if (!c) {
    config_binding b = {&mpo_config_section, &defaults, NULL};
    if (config_defaults(&b, 1, err) != 0) return NULL;
    c = &defaults;
  }
  nn_activation act;
  if (check_settings(c, ctx, &act, err) != 0) return NULL;
  mpo_t *m = calloc(1, sizeof *m);
  if (!m) {
    ember_fail(err, EMBER_ENOMEM, "mpo: out of memory");
    return NULL;
  }
  m->cfg = *c;
  snprintf(m->task, sizeof m->task, "%s", ctx->task_name ? ctx->task_name : "");
  const int O = ctx->obs_dim, A = ctx->act_dim, B = ctx->max_batch;
  m->obs_dim = O, m->act_dim = A, m->max_batch = B;
  m->n_samples = (int)c->action_samples, m->n_target = (int)c->target_samples;
  m->max_rows = B * (m->n_samples > m->n_target ? m->n_samples : m->n_target);
  m->log_std_lo = (float)c->log_std_min, m->log_std_hi = (float)c->log_std_max;
  mpo_set_duals(m, c->init_eta, c->init_alpha_mean, c->init_alpha_std);
  rng_seed(&m->rng, ctx->seed, RNG_STREAM_LEARNER);

  nn_mlp_spec pi_spec = {.input_dim = O, .output_dim = 2 * A, .hidden_count = (int)c->hidden_layers,
                         .hidden_activation = act, .output_activation = NN_ACT_IDENTITY, .ensemble_size = 1};
  nn_mlp_spec q_spec = {.input_dim = O + A, .output_dim = 1, .hidden_count = (int)c->hidden_layers,
                        .hidden_activation = act, .output_activation = NN_ACT_IDENTITY, .ensemble_size = 2};
  for (int l = 0; l < (int)c->hidden_layers; l++) pi_spec.hidden_dims[l] = q_spec.hidden_dims[l] = (int)c->hidden_size;
  nn_mlp *pi = nn_mlp_new(&pi_spec, err);
  if (!pi || algo_policy_init(&m->pi, pi, A, B, m->log_std_lo, m->log_std_hi, err) != 0) goto fail;
  if (!(m->pi_old = nn_mlp_new(&pi_spec, err)) || !(m->q = nn_mlp_new(&q_spec, err)) ||
      !(m->q_target = nn_mlp_new(&q_spec, err)) || !(m->pi_old_ws = nn_mlp_ws_new(m->pi_old, B, err)) ||
      !(m->q_ws = nn_mlp_ws_new(m->q, B, err)) || !(m->q_target_ws = nn_mlp_ws_new(m->q_target, m->max_rows, err)))
    goto fail;
  nn_mlp_init(m->pi.net, &m->rng, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_init(m->q, &m->rng, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_copy_params(m->pi_old, m->pi.net);
  nn_mlp_copy_params(m->q_target, m->q);
  if (!(m->pi_opt = algo_adam_new(m->pi.net->param_count, c->policy_lr, 0.9, 0.999, 1e-8, err)) ||
      !(m->q_opt = algo_adam_new(m->q->param_count, c->critic_lr, 0.9, 0.999, 1e-8, err)) ||
      !(m->eta_opt = algo_adam_new(1, c->dual_lr, 0.9, 0.999, 1e-8, err)) ||
      !(m->alpha_opt = algo_adam_new(2, c->dual_lr, 0.9, 0.999, 1e-8, err)))
    goto fail;

  const size_t R = (size_t)m->max_rows, RA = R * A, BA = (size_t)B * A;
  struct {
    float **slot;
    size_t floats;
  } bufs[] = {{&m->eps, RA},      {&m->old_mean, BA},  {&m->old_log_std, BA}, {&m->rep_a, RA},
              {&m->rep_b, RA},    {&m->action, RA},    {&m->xa, R * (O + A)}, {&m->u_td, RA},
              {&m->q_td, R},      {&m->u, RA},         {&m->qv, R},           {&m->w, R},
              {&m->lp, R},        {&m->d_lp, R},       {&m->d_rep, RA},       {&m->kl, (size_t)B},
              {&m->d_kl, (size_t)B}, {&m->target, (size_t)B}, {&m->d_q, 2 * (size_t)B}, {&m->td_abs, (size_t)B}};
  size_t total = 0;
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) total += bufs[i].floats;
  if (!(m->scratch = calloc(total, sizeof(float)))) {
    ember_fail(err, EMBER_ENOMEM, "mpo: out of memory for %zu scratch floats", total);
    goto fail;
  }
  float *p = m->scratch;
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) *bufs[i].slot = p, p += bufs[i].floats;
  return m;
fail:
  mpo_destroy(m);
  return NULL;
}

/* ---- sampling from pi_old and scoring with Q' ------------------------------------------------------ */

/* dst [B * n, width]: row i * n + j = src row i. */
static void repeat_rows(float *dst, const float *src, int B, int n, int width) {
  for (int i = 0; i < B; i++)
    for (int j = 0; j < n; j++) memcpy(dst + ((size_t)i * n + j) * width, src + (size_t)i * width, width * sizeof(float));
}

/* pi_old at obs [B, O] into m->old_mean, m->old_log_std [B, A]. */
static void target_policy(mpo_t *m, const float *obs, int B) {
  const float *out = nn_mlp_forward(m->pi_old, m->pi_old_ws, obs, B, NN_INPUT_SHARED);
  nn_policy_head_forward(m->old_mean, m->old_log_std, out, B, m->act_dim, m->log_std_lo, m->log_std_hi);
}

/* n actions per state of obs [B, O] from pi_old with noise eps [B, n, A]:
 *   u [B n, A] = mu'(s) + std'(s) eps (pre-tanh),  q [B n] = min_c Q'_c(s, tanh(u)) */
static void sample_and_score(mpo_t *m, const float *obs, int B, int n, const float *eps, float *u, float *q) {
  const int O = m->obs_dim, A = m->act_dim, R = B * n;
  target_policy(m, obs, B);
  repeat_rows(m->rep_a, m->old_mean, B, n, A);
  repeat_rows(m->rep_b, m->old_log_std, B, n, A);
  nn_tanh_gaussian_pre_u(u, m->rep_a, m->rep_b, eps, (size_t)R * A);
  nn_tanh_gaussian_mode(m->action, u, (size_t)R * A); /* a = tanh(u) */
  for (int r = 0; r < R; r++) {
    memcpy(m->xa + (size_t)r * (O + A), obs + (size_t)(r / n) * O, (size_t)O * sizeof(float));
    memcpy(m->xa + (size_t)r * (O + A) + O, m->action + (size_t)r * A, (size_t)A * sizeof(float));
  }
  const float *qt = nn_mlp_forward(m->q_target, m->q_target_ws, m->xa, R, NN_INPUT_SHARED);
  for (int r = 0; r < R; r++) q[r] = fminf(qt[2 * r], qt[2 * r + 1]);
}

void mpo_estep_samples(mpo_t *m, const float *obs, int B, const float *eps, const float **u, const float **q) {
  sample_and_score(m, obs, B, m->n_samples, eps, m->u, m->qv);
  *u = m->u;
  *q = m->qv;
}

/* ---- policy evaluation: the critics by TD ---------------------------------------------------------- */

int mpo_critic_loss_grad(mpo_t *m, const algo_batch *b, const float *eps_next, double *loss_out, ember_err *err) {
  const int B = b->size, M = m->n_target;
  const double gamma = m->cfg.gamma;
  /* Policy evaluation ([REPI] step 1, [MPO]'s policy evaluation; both use Retrace on trajectories,
   * replay here holds transitions): one-step TD onto pi_old's expected next value, by M samples:
   *   y_i = r_i + gamma (1 - d_i) (1/M) sum_k min_c Q'_c(s'_i, a'_ik),   a'_ik ~ pi_old(.|s'_i)
   * A truncated transition bootstraps; only `terminated` stops the bootstrap. */
  sample_and_score(m, b->next_obs, B, M, eps_next, m->u_td, m->q_td);
  for (int i = 0; i < B; i++) {
    double v = 0;
    for (int k = 0; k < M; k++) v += m->q_td[i * M + k];
    m->target[i] = (float)(b->reward[i] + gamma * (1.0 - b->terminated[i]) * (v / M));
  }
  /* L_Q = (1/B) sum_i w_i sum_{c=1,2} (Q_c(s_i, a_i) - y_i)^2   (w: replay's importance weights, 1 if none)
   * dL_Q/dQ_c(i) = 2 w_i (Q_c(s_i, a_i) - y_i) / B   (SAC's critic loss with MPO's target) */
  algo_concat_obs_action(m->xa, b->obs, b->action, B, m->obs_dim, m->act_dim);
  const float *q = nn_mlp_forward(m->q, m->q_ws, m->xa, B, NN_INPUT_SHARED);
  double loss = 0;
  for (int i = 0; i < B; i++) {
    float wi = b->weights ? b->weights[i] : 1.0f;
    float d1 = q[2 * i] - m->target[i], d2 = q[2 * i + 1] - m->target[i];
    loss += (double)wi * ((double)d1 * d1 + (double)d2 * d2);
    m->d_q[2 * i] = 2.0f * wi * d1 / (float)B;
    m->d_q[2 * i + 1] = 2.0f * wi * d2 / (float)B;
    m->td_abs[i] = 0.5f * (fabsf(d1) + fabsf(d2));
  }
  loss /= B;
  nn_mlp_zero_grad(m->q);
  nn_mlp_backward(m->q, m->q_ws, m->d_q, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "mpo: critic loss is non-finite (%g); parameters unchanged", loss);
  return 0;
}

/* ---- the non-parametric E-step and its temperature ------------------------------------------------- */

double mpo_temperature_dual(const float *q, int rows, int n, double eta, double epsilon, float *weights,
                            double *d_eta, double *kl) {
  /* [MPO]'s non-parametric E-step and its dual, [REPI] section 4.1 ("finding action weights"):
   * the E-step max_q E_mu E_q[Q] s.t. E_mu KL(q(.|s) || pi_old(.|s)) < epsilon is solved by
   *   q(a|s) proportional to pi_old(a|s) exp(Q(s,a) / eta),
   * with eta the minimiser of the convex dual, estimated with the N samples a_ij ~ pi_old(.|s_i):
   *   g(eta)  = eta epsilon + eta mean_i log mean_j exp(Q_ij / eta)
   *   q_ij    = exp(Q_ij / eta) / sum_j exp(Q_ij / eta)            (self-normalised weights)
   *   dg/deta = epsilon + mean_i log mean_j exp(Q_ij/eta) - mean_i sum_j q_ij Q_ij / eta
   *           = epsilon - mean_i KL(q_i || uniform)                 (so at eta*, the KL is epsilon)
   * Everything in double, with the row maximum taken out of the exponentials. */
  double lse_sum = 0, wq_sum = 0, kl_sum = 0;
  for (int i = 0; i < rows; i++) {
    const float *qi = q + (size_t)i * n;
    double qmax = qi[0];
    for (int j = 1; j < n; j++) qmax = fmax(qmax, qi[j]);
    double z = 0, wq = 0, wx = 0; /* z = sum_j e_j, wq = sum_j e_j Q_j, wx = sum_j e_j x_j; x_j = (Q_j - qmax)/eta */
    for (int j = 0; j < n; j++) {
      double x = (qi[j] - qmax) / eta, e = exp(x);
      z += e, wq += e * qi[j], wx += e * x;
    }
    for (int j = 0; weights && j < n; j++) weights[(size_t)i * n + j] = (float)(exp((qi[j] - qmax) / eta) / z);
    lse_sum += qmax / eta + log(z) - log((double)n); /* log mean_j exp(Q_ij / eta) */
    wq_sum += wq / z;
    kl_sum += wx / z - log(z) + log((double)n); /* sum_j q_ij log(n q_ij) */
  }
  if (d_eta) *d_eta = epsilon + lse_sum / rows - wq_sum / rows / eta;
  if (kl) *kl = kl_sum / rows;
  return eta * epsilon + eta * lse_sum / rows;
}

/* g and its gradient with respect to log(eta) into m->log_eta_grad; weights at the current eta. */
static int temperature_grad(mpo_t *m, const float *q, int rows, int n, float *weights, double *dual, double *kl,
                            ember_err *err) {
  if (rows < 1 || rows > m->max_batch || n != m->n_samples)
    return ember_fail(err, EMBER_ESHAPE, "mpo: Q-table of %d x %d (expected 1..%d x %d)", rows, n, m->max_batch,
                      m->n_samples);
  const double eta = mpo_eta(m);
  double d_eta;
  *dual = mpo_temperature_dual(q, rows, n, eta, m->cfg.epsilon, weights, &d_eta, kl);
  if (!isfinite(*dual) || !isfinite(d_eta))
    return ember_fail(err, EMBER_ENONFINITE, "mpo: temperature dual is non-finite (%g); parameters unchanged", *dual);
  m->log_eta_grad[0] = (float)(d_eta * eta); /* d/dlog(eta) = eta d/deta: eta = exp(log eta) stays positive */
  return 0;
}

static int clamped_adam_step(nn_adam *opt, float *log_dual, const float *grad, int n, ember_err *err) {
  int rc = nn_adam_step(opt, log_dual, grad, NULL, err);
  for (int i = 0; i < n; i++) log_dual[i] = fminf(fmaxf(log_dual[i], LOG_DUAL_MIN), LOG_DUAL_MAX);
  return rc;
}

int mpo_temperature_update(mpo_t *m, const float *q, int rows, int n, float *weights, double *dual, double *kl,
                           ember_err *err) {
  int rc = temperature_grad(m, q, rows, n, weights, dual, kl, err);
  if (rc == 0) rc = clamped_adam_step(m->eta_opt, m->log_eta, m->log_eta_grad, 1, err);
  return rc;
}

static int check_batch(const mpo_t *m, const algo_batch *b, ember_err *err) {
  return algo_check_batch("mpo", b, m->obs_dim, m->act_dim, m->max_batch, err);
}

static int mpo_e_step(void *self, const algo_batch *b, algo_stats *stats, ember_err *err) {
  mpo_t *m = self;
  int rc = check_batch(m, b, err);
  if (rc) return rc;
  const int B = b->size, A = m->act_dim, N = m->n_samples;
  m->pending_rows = 0;
  /* Policy evaluation first (gradient only), then the E-step on the target networks, which that
   * step does not change; parameters move only once both are known to be finite. */
  rng_normal_fill(&m->rng, m->eps, B * m->n_target * A);
  double critic_loss = 0, dual = 0, kl_q = 0;
  if ((rc = mpo_critic_loss_grad(m, b, m->eps, &critic_loss, err)) != 0) return rc;
  rng_normal_fill(&m->rng, m->eps, B * N * A);
  sample_and_score(m, b->obs, B, N, m->eps, m->u, m->qv);
  if ((rc = temperature_grad(m, m->qv, B, N, m->w, &dual, &kl_q, err)) != 0) return rc;
  if ((rc = nn_adam_step(m->q_opt, m->q->params, m->q->grads, NULL, err)) != 0)
    return ember_err_prefix(err, "mpo critic: ");
  if ((rc = clamped_adam_step(m->eta_opt, m->log_eta, m->log_eta_grad, 1, err)) != 0)
    return ember_err_prefix(err, "mpo temperature: ");
  m->critic_updates++;
  m->last_batch = B;
  m->pending_rows = B;
  if (stats) {
    const float *q = m->q_ws->activations[m->q->layer_count - 1];
    double q_sum = 0, y_sum = 0, ess = 0;
    for (int i = 0; i < B; i++) {
      q_sum += 0.5 * ((double)q[2 * i] + q[2 * i + 1]);
      y_sum += m->target[i];
      double s2 = 0;
      for (int j = 0; j < N; j++) s2 += (double)m->w[i * N + j] * m->w[i * N + j];
      ess += 1.0 / s2 / N; /* effective sample size of the weights, as a fraction of N */
    }
    if (stats->count < ST_COUNT) stats->count = ST_COUNT;
    stats->values[ST_CRITIC_LOSS] = critic_loss;
    stats->values[ST_Q_MEAN] = q_sum / B;
    stats->values[ST_TARGET_MEAN] = y_sum / B;
    stats->values[ST_ETA] = mpo_eta(m);
    stats->values[ST_DUAL] = dual;
    stats->values[ST_KL_Q] = kl_q;
    stats->values[ST_ESS] = ess / B;
  }
  return 0;
}

/* ---- the M-step: weighted maximum likelihood with decoupled KL constraints -------------------------- */

/* dst [B, A] += sum over the n samples of src [B n, A] */
static void sum_samples(float *dst, const float *src, int B, int n, int A) {
  for (int i = 0; i < B; i++)
    for (int j = 0; j < n; j++)
      for (int d = 0; d < A; d++) dst[(size_t)i * A + d] += src[((size_t)i * n + j) * A + d];
}

int mpo_mstep_loss_grad(mpo_t *m, const float *obs, int B, const float *u, const float *w, mpo_mstep_terms *t,
                        ember_err *err) {
  const int A = m->act_dim, N = m->n_samples, R = B * N;
  if (B < 1 || B > m->max_batch) return ember_fail(err, EMBER_ESHAPE, "mpo: M-step of %d rows", B);
  algo_policy *p = &m->pi;
  const float *out = nn_mlp_forward(p->net, p->ws, obs, B, NN_INPUT_SHARED);
  nn_policy_head_forward(p->mean, p->log_std, out, B, A, m->log_std_lo, m->log_std_hi);
  target_policy(m, obs, B);
  memset(p->d_mean, 0, (size_t)B * A * sizeof(float));
  memset(p->d_log_std, 0, (size_t)B * A * sizeof(float));

  /* [REPI] section 4.2 (fitting an improved policy) with its decoupled Gaussian update (4.2.1; [MPO]
   * section 3.3 is the same weighted maximum likelihood under one KL bound): the E-step's samples, each
   * half of the Gaussian fitted with the other half held at pi_old's,
   *   nll = -(1/B) sum_i sum_j q_ij [ log N(u_ij; mu(s_i), std_old(s_i)) + log N(u_ij; mu_old(s_i), std(s_i)) ]
   * (u is the pre-tanh action: log pi(a) - log N(u) is tanh's Jacobian, with no parameter in it). */
  double nll = 0;
  for (int r = 0; r < R; r++) m->d_lp[r] = -w[r] / (float)B;
  repeat_rows(m->rep_a, p->mean, B, N, A); /* fixed std: N(mu, std_old) */
  repeat_rows(m->rep_b, m->old_log_std, B, N, A);
  nn_gaussian_log_prob(m->lp, u, m->rep_a, m->rep_b, R, A);
  for (int r = 0; r < R; r++) nll -= (double)w[r] * m->lp[r];
  memset(m->d_rep, 0, (size_t)R * A * sizeof(float));
  nn_gaussian_log_prob_backward(NULL, m->d_rep, NULL, m->d_lp, u, m->rep_a, m->rep_b, R, A);
  sum_samples(p->d_mean, m->d_rep, B, N, A);
  repeat_rows(m->rep_a, m->old_mean, B, N, A); /* fixed mean: N(mu_old, std) */
  repeat_rows(m->rep_b, p->log_std, B, N, A);
  nn_gaussian_log_prob(m->lp, u, m->rep_a, m->rep_b, R, A);
  for (int r = 0; r < R; r++) nll -= (double)w[r] * m->lp[r];
  memset(m->d_rep, 0, (size_t)R * A * sizeof(float));
  nn_gaussian_log_prob_backward(NULL, NULL, m->d_rep, m->d_lp, u, m->rep_a, m->rep_b, R, A);
  sum_samples(p->d_log_std, m->d_rep, B, N, A);
  t->nll = nll / B;

  /* The decoupled trust region ([REPI] 4.2.1), as Lagrangian terms with the
   * multipliers held fixed (diagonal Gaussians, summed over the action dimensions):
   *   C_mu    = (1/B) sum_i KL(N(mu_old, std_old) || N(mu, std_old)) = mean_i sum_d (mu - mu_old)^2 / (2 std_old^2)
   *   C_sigma = (1/B) sum_i KL(N(mu_old, std_old) || N(mu_old, std))
   *   loss    = nll + alpha_mean C_mu + alpha_std C_sigma */
  const double alpha_mean = mpo_alpha_mean(m), alpha_std = mpo_alpha_std(m);
  double c_mu = 0, c_sigma = 0;
  nn_gaussian_kl(m->kl, m->old_mean, m->old_log_std, p->mean, m->old_log_std, B, A);
  for (int i = 0; i < B; i++) c_mu += m->kl[i], m->d_kl[i] = (float)(alpha_mean / B);
  nn_gaussian_kl_backward(NULL, NULL, p->d_mean, NULL, m->d_kl, m->old_mean, m->old_log_std, p->mean,
                          m->old_log_std, B, A);
  nn_gaussian_kl(m->kl, m->old_mean, m->old_log_std, m->old_mean, p->log_std, B, A);
  for (int i = 0; i < B; i++) c_sigma += m->kl[i], m->d_kl[i] = (float)(alpha_std / B);
  nn_gaussian_kl_backward(NULL, NULL, NULL, p->d_log_std, m->d_kl, m->old_mean, m->old_log_std, m->old_mean,
                          p->log_std, B, A);
  t->kl_mean = c_mu / B;
  t->kl_std = c_sigma / B;
  t->loss = t->nll + alpha_mean * t->kl_mean + alpha_std * t->kl_std;

  /* The multipliers' own losses: the Lagrangian's alpha (epsilon - C) ([REPI] 4.2.1), minimised
   * over the multiplier with the KL held fixed, written in log(alpha) as SAC writes its temperature
   * loss:
   *   L_alpha = log(alpha) (epsilon - sg(C)),  dL_alpha/dlog(alpha) = epsilon - C
   * alpha grows while the constraint C < epsilon is violated and shrinks while it is slack, with the
   * fixed points of alpha (epsilon - C) (C = epsilon, or alpha -> 0 with C < epsilon). Why not the
   * gradient of alpha (epsilon - C) itself, alpha (epsilon - C): it scales with alpha, so after a
   * burst of violations Adam's second moment remembers gradients of 1e5 and the multiplier, at 1e7,
   * took thousands of updates to come back (measured on pendulum; docs/algorithms.md). */
  t->alpha_mean_loss = log(alpha_mean) * (m->cfg.epsilon_mean - t->kl_mean);
  t->alpha_std_loss = log(alpha_std) * (m->cfg.epsilon_std - t->kl_std);
  t->d_log_alpha_mean = m->cfg.epsilon_mean - t->kl_mean;
  t->d_log_alpha_std = m->cfg.epsilon_std - t->kl_std;

  memset(p->d_out, 0, (size_t)B * 2 * A * sizeof(float));
  nn_policy_head_backward(p->d_out, p->d_mean, p->d_log_std, out, B, A, m->log_std_lo, m->log_std_hi);
  nn_mlp_zero_grad(p->net);
  nn_mlp_backward(p->net, p->ws, p->d_out, NN_PARAM_GRADS_ACCUMULATE, NULL);
  if (!isfinite(t->loss))
    return ember_fail(err, EMBER_ENONFINITE, "mpo: policy loss is non-finite (%g); parameters unchanged", t->loss);
  return 0;
}

int mpo_policy_update(mpo_t *m, const float *obs, int B, const float *u, const float *w, mpo_mstep_terms *t,
                      ember_err *err) {
  int rc = mpo_mstep_loss_grad(m, obs, B, u, w, t, err);
  if (rc) return rc;
  if ((rc = nn_adam_step(m->pi_opt, m->pi.net->params, m->pi.net->grads, NULL, err)) != 0)
    return ember_err_prefix(err, "mpo policy: ");
  m->log_alpha_grad[0] = (float)t->d_log_alpha_mean;
  m->log_alpha_grad[1] = (float)t->d_log_alpha_std;
  if ((rc = clamped_adam_step(m->alpha_opt, m->log_alpha, m->log_alpha_grad, 2, err)) != 0)
    return ember_err_prefix(err, "mpo multipliers: ");
  return 0;
}

static int mpo_m_step(void *self, const algo_batch *b, algo_stats *stats, ember_err *err) {
  mpo_t *m = self;
  int rc = check_batch(m, b, err);
  if (rc) return rc;
  if (m->pending_rows != b->size)
    return ember_fail(err, EMBER_ESTATE, "mpo: m_step on %d rows without an e_step on that batch", b->size);
  mpo_mstep_terms t;
  if ((rc = mpo_policy_update(m, b->obs, b->size, m->u, m->w, &t, err)) != 0) return rc;
  m->pending_rows = 0;
  /* Both targets follow by Polyak averaging, theta' <- (1 - tau) theta' + tau theta: pi_old is the
   * next E-step's prior and the next M-step's trust-region centre. */
  nn_mlp_polyak_update(m->q_target, m->q, (float)m->cfg.tau);
  nn_mlp_polyak_update(m->pi_old, m->pi.net, (float)m->cfg.policy_tau);
  m->policy_updates++;
  if (stats) {
    double std_sum = 0;
    for (int k = 0; k < b->size * m->act_dim; k++) std_sum += exp((double)m->pi.log_std[k]);
    if (stats->count < ST_COUNT) stats->count = ST_COUNT;
    stats->values[ST_NLL] = t.nll;
    stats->values[ST_KL_MEAN] = t.kl_mean;
    stats->values[ST_KL_STD] = t.kl_std;
    stats->values[ST_ALPHA_MEAN] = mpo_alpha_mean(m);
    stats->values[ST_ALPHA_STD] = mpo_alpha_std(m);
    stats->values[ST_STD] = std_sum / (b->size * m->act_dim);
  }
  return 0;
}

/* ---- acting, priorities, export ------------------------------------------------------------------ */

static int mpo_act(void *self, const float *obs, int n, bool deterministic, float *actions, float *log_probs,
                   ember_err *err) {
  mpo_t *m = self;
  return algo_policy_act(&m->pi, &m->rng, m->eps, m->obs_dim, obs, n, deterministic, actions, log_probs, "mpo",
                         err);
}

static int mpo_priorities(void *self, float *out, ember_err *err) {
  mpo_t *m = self;
  if (m->last_batch == 0) return ember_fail(err, EMBER_ESTATE, "mpo: priorities before any e_step");
  memcpy(out, m->td_abs, (size_t)m->last_batch * sizeof(float));
  return 0;
}

static int mpo_export(void *self, Ember__Params *out, ember_err *err) {
  mpo_t *m = self;
  return algo_export_policy(m->pi.net, "mpo", m->task, m->obs_dim, m->act_dim, m->log_std_lo, m->log_std_hi, out,
                            err);
}

/* ---- save / load -------------------------------------------------------------------------------- */

/* File layout (native endianness: a learner's own state, not an interchange format):
 *   "EMBERMPO" u32 version=1 i32 obs_dim act_dim hidden_size hidden_layers u64 pi_count q_count
 *   pi | pi_old | q | q_target params;  Adam (u64 step, m, v) of pi, q, log_eta, log_alpha
 *   log_eta log_alpha[2] rng u64 critic_updates policy_updates "END!"
 * An E-step waiting for its M-step is not saved: the learner saves between whole updates. */
#define MPO_MAGIC "EMBERMPO"
#define MPO_FORMAT 1u

typedef struct {
  char magic[8];
  uint32_t version;
  int32_t obs_dim, act_dim, hidden_size, hidden_layers;
  uint64_t pi_count, q_count;
} mpo_file_header;

static int mpo_save(void *self, FILE *f, ember_err *err) {
  mpo_t *m = self;
  mpo_file_header h = {.version = MPO_FORMAT, .obs_dim = m->obs_dim, .act_dim = m->act_dim,
                       .hidden_size = (int32_t)m->cfg.hidden_size, .hidden_layers = (int32_t)m->cfg.hidden_layers,
                       .pi_count = m->pi.net->param_count, .q_count = m->q->param_count};
  memcpy(h.magic, MPO_MAGIC, 8);
  const size_t pi_bytes = m->pi.net->param_count * sizeof(float), q_bytes = m->q->param_count * sizeof(float);
  if (algo_write(f, &h, sizeof h) || algo_write(f, m->pi.net->params, pi_bytes) ||
      algo_write(f, m->pi_old->params, pi_bytes) || algo_write(f, m->q->params, q_bytes) ||
      algo_write(f, m->q_target->params, q_bytes) || algo_write_adam(f, m->pi_opt) || algo_write_adam(f, m->q_opt) ||
      algo_write_adam(f, m->eta_opt) || algo_write_adam(f, m->alpha_opt) ||
      algo_write(f, m->log_eta, sizeof m->log_eta) || algo_write(f, m->log_alpha, sizeof m->log_alpha) ||
      algo_write(f, &m->rng, sizeof m->rng) || algo_write(f, &m->critic_updates, sizeof m->critic_updates) ||
      algo_write(f, &m->policy_updates, sizeof m->policy_updates) || algo_write(f, "END!", 4))
    return ember_fail(err, EMBER_EIO, "mpo save: write failed");
  return 0;
}

static int mpo_load(void *self, FILE *f, ember_err *err) {
  mpo_t *m = self;
  mpo_file_header h;
  if (algo_read(f, &h, sizeof h)) return ember_fail(err, EMBER_ECORRUPT, "mpo load: truncated header");
  if (memcmp(h.magic, MPO_MAGIC, 8) != 0) return ember_fail(err, EMBER_ECORRUPT, "mpo load: not an MPO state");
  if (h.version != MPO_FORMAT)
    return ember_fail(err, EMBER_ESCHEMA, "mpo load: format %u, this build reads %u", h.version, MPO_FORMAT);
  if (h.obs_dim != m->obs_dim || h.act_dim != m->act_dim || h.pi_count != m->pi.net->param_count ||
      h.q_count != m->q->param_count)
    return ember_fail(err, EMBER_ESHAPE,
                      "mpo load: state is for obs %d act %d with %llu/%llu parameters, this MPO has obs %d act %d "
                      "with %zu/%zu (hidden_size %d x %d layers in the file)",
                      h.obs_dim, h.act_dim, (unsigned long long)h.pi_count, (unsigned long long)h.q_count,
                      m->obs_dim, m->act_dim, m->pi.net->param_count, m->q->param_count, h.hidden_size,
                      h.hidden_layers);
  const size_t pi_bytes = m->pi.net->param_count * sizeof(float), q_bytes = m->q->param_count * sizeof(float);
  char end[4];
  if (algo_read(f, m->pi.net->params, pi_bytes) || algo_read(f, m->pi_old->params, pi_bytes) ||
      algo_read(f, m->q->params, q_bytes) || algo_read(f, m->q_target->params, q_bytes) ||
      algo_read_adam(f, m->pi_opt) || algo_read_adam(f, m->q_opt) || algo_read_adam(f, m->eta_opt) ||
      algo_read_adam(f, m->alpha_opt) || algo_read(f, m->log_eta, sizeof m->log_eta) ||
      algo_read(f, m->log_alpha, sizeof m->log_alpha) || algo_read(f, &m->rng, sizeof m->rng) ||
      algo_read(f, &m->critic_updates, sizeof m->critic_updates) ||
      algo_read(f, &m->policy_updates, sizeof m->policy_updates) || algo_read(f, end, 4) || memcmp(end, "END!", 4))
    return ember_fail(err, EMBER_ECORRUPT, "mpo load: truncated or corrupt state");
  m->pending_rows = 0;
  m->last_batch = 0;
  return 0;
}

const algo_ops algo_mpo = {
    .name = "mpo",
    .summary = "MPO: non-parametric E-step with a temperature dual, KL-constrained weighted-ML M-step, twin critics",
    .settings = &mpo_config_section,
    .settings_size = sizeof(mpo_settings),
    .stat_names = mpo_stat_names,
    .create = mpo_create,
    .destroy = mpo_destroy,
    .e_step = mpo_e_step,
    .m_step = mpo_m_step,
    .act = mpo_act,
    .export_params = mpo_export,
    .save = mpo_save,
    .load = mpo_load,
    .priorities = mpo_priorities,
};

/* algo_virel.c: VIREL's variational actor-critic (Fellows et al., ../shared/papers/004_*, section 4,
 * Appendix C's Algorithm 1) behind algo_ops, as `virel` (VIREL1: two hard critics, their minimum in
 * the forward pass) and `virel-soft` (VIREL2: one hard and one soft critic). algo_virel.h gives the
 * networks; docs/algorithms.md ("VIREL as implemented") the equations in prose and every reading.
 *
 * VIREL's EM swaps the usual roles (section 4): its variational E-step improves the policy
 * pi^q(a|s; theta) (the variational distribution), its variational M-step fits the critic's
 * parameters omega (and the baseline phi) by minimising the mean squared Bellman error beta(omega).
 * ember's interface calls algo_ops.e_step, then algo_ops.m_step, on each batch. Algorithm 1's
 * gradient step is: V(phi) (M-step), Q_1 and Q_2 (M-step), pi (E-step), then phi-bar. So:
 *   algo_ops.e_step  runs VIREL's M-step (virel_mstep): J^V, then J^Q, and beta from beta-hat;
 *   algo_ops.m_step  runs VIREL's E-step (virel_estep): J^pi, then the Polyak update of V(phi-bar).
 * The slot names are ember's; the order is Algorithm 1's (evaluation of the last policy, then its
 * improvement against the critic just fitted).
 *
 * Equation numbers are the VIREL paper's. Its J^V, J^Q, J^pi (Algorithm 1) carry no number there:
 * they are SAC's (Haarnoja et al. 2018) value, critic and reparameterised policy objectives with
 * VIREL's hard targets and beta in place of SAC's temperature.
 *
 * Memory: everything is allocated in create for ctx->max_batch rows; the steps and act never allocate.
 */
#include "algo_virel.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "algo_parts.h"
#include "nn_optim.h"
#include "rng.h"

/* ---- settings --------------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, help) {#name, type, offsetof(virel_settings, name), lo, hi, def, help}
static const config_field virel_fields[] = {
    F(hidden_size, CONFIG_INT, 1, 4096, "256", "units per hidden layer (policy, both critics, value)"),
    F(hidden_layers, CONFIG_INT, 1, NN_MAX_HIDDEN, "2", "hidden layers (policy, both critics, value)"),
    F(activation, CONFIG_STRING, 0, 0, "relu", "hidden activation: relu, tanh or elu"),
    F(actor_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of the policy (the E-step)"),
    F(critic_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of the twin critics (the M-step)"),
    F(value_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of the value baseline V(phi) (the M-step)"),
    F(gamma, CONFIG_FLOAT, 0, 1, "0.99", "discount factor"),
    F(tau, CONFIG_FLOAT, 0, 1, "0.005", "Polyak rate of the value's target V(phi-bar) (1 = copy)"),
    F(beta_mode, CONFIG_STRING, 0, 0, "constant",
      "the entropy weight beta of the E-step: constant (beta = alpha, the paper's experiments) or msbe "
      "(the critic's batch mean squared Bellman error beta-hat, smoothed and bounded)"),
    F(alpha, CONFIG_FLOAT, 0, 1e4, "0.2", "beta in constant mode"),
    F(beta_ema, CONFIG_FLOAT, 1e-6, 1, "0.01", "msbe: rate of the moving average of beta-hat (1 = the last batch)"),
    F(beta_scale, CONFIG_FLOAT, 0, 1e6, "1",
      "msbe: beta = beta_scale * average beta-hat, before the bounds (the same as scaling every reward by it)"),
    F(beta_min, CONFIG_FLOAT, 0, 1e4, "0", "msbe: lower bound of beta"),
    F(beta_max, CONFIG_FLOAT, 0, 1e4, "1", "msbe: upper bound of beta (and beta before the first estimate)"),
    F(log_std_min, CONFIG_FLOAT, -20, 0, "-5", "lower bound of the policy's log standard deviation"),
    F(log_std_max, CONFIG_FLOAT, -5, 5, "2", "upper bound of the policy's log standard deviation"),
    F(adam_beta1, CONFIG_FLOAT, 0, 0.999999, "0.9", "Adam first-moment decay"),
    F(adam_beta2, CONFIG_FLOAT, 0, 0.999999999, "0.999", "Adam second-moment decay"),
    F(adam_eps, CONFIG_FLOAT, 1e-12, 1, "1e-8", "Adam epsilon"),
};
#undef F
const config_section virel_config_section = {"virel", virel_fields, sizeof virel_fields / sizeof *virel_fields};
const config_section virel_soft_config_section = {"virel_soft", virel_fields,
                                                  sizeof virel_fields / sizeof *virel_fields};

/* CSV columns: e_step (VIREL's M-step) fills the first seven, m_step (its E-step) the last two. */
enum { ST_V_LOSS, ST_MSBE, ST_MSBE_EMA, ST_BETA, ST_Q_MEAN, ST_V_MEAN, ST_TARGET_MEAN, ST_POLICY_LOSS, ST_ENTROPY,
       ST_COUNT };
static const char *const virel_stat_names[] = {"v_loss", "msbe",       "msbe_ema", "beta",    "q_mean",
                                               "v_mean", "target_mean", "policy_loss", "entropy", NULL};

/* ---- the instance ------------------------------------------------------------------------------ */

struct virel {
  virel_settings cfg;
  const config_section *section; /* virel or virel_soft: names keys in errors */
  const char *name;              /* "virel" or "virel-soft" */
  bool soft;                     /* VIREL2: Q_2 and V's second member are soft */
  bool beta_msbe;                /* beta_mode == msbe */
  int nv;                        /* value members: 1 (virel) or 2 (virel-soft) */
  char task[CONFIG_STRING_MAX];
  int obs_dim, act_dim, max_batch;

  algo_policy pol;  /* pi^q(a|s; theta) with its last sample */
  nn_mlp *q;        /* [s | a] -> [Q_1, Q_2] (omega_1, omega_2) */
  nn_mlp *v;        /* s -> V (phi); virel-soft: [V_hard, V_soft] */
  nn_mlp *v_target; /* phi-bar */
  nn_mlp_ws *q_ws, *v_ws, *v_target_ws;
  nn_adam *pi_opt, *q_opt, *v_opt;

  double beta;       /* the entropy weight the next loss uses */
  double msbe_ema;   /* moving average of beta-hat; NaN before the first */
  rng_t rng;
  uint64_t msteps, esteps;

  /* per-batch scratch, [max_batch, ...] */
  float *xa;         /* [B, O + A] */
  float *eps;        /* [B, A] */
  float *v_hat;      /* [B, nv]: V's regression target */
  float *y;          /* [B, 2]: each critic's TD target psi */
  float *d_v;        /* [B, nv] */
  float *d_q;        /* [B, 2] */
  float *d_action;   /* [B, A] */
  float *d_log_prob; /* [B] */
  float *baseline;   /* [B]: V(s) in the E-step */
  float *td_abs;     /* [B]: |TD error| averaged over the twins, for priorities */
  int last_batch;
  float *scratch;
};

nn_mlp *virel_policy_net(virel_t *v) { return v->pol.net; }
nn_mlp *virel_critic_net(virel_t *v) { return v->q; }
nn_mlp *virel_value_net(virel_t *v) { return v->v; }
nn_mlp *virel_target_value_net(virel_t *v) { return v->v_target; }
double virel_beta(const virel_t *v) { return v->beta; }
void virel_set_beta(virel_t *v, double beta) { v->beta = beta; }
double virel_msbe_ema(const virel_t *v) { return v->msbe_ema; }

static void virel_destroy(void *self) {
  virel_t *v = self;
  if (!v) return;
  algo_policy_free(&v->pol);
  nn_mlp_ws_destroy(&v->q_ws);
  nn_mlp_ws_destroy(&v->v_ws);
  nn_mlp_ws_destroy(&v->v_target_ws);
  nn_adam_destroy(&v->pi_opt);
  nn_adam_destroy(&v->q_opt);
  nn_adam_destroy(&v->v_opt);
  nn_mlp_destroy(&v->q);
  nn_mlp_destroy(&v->v);
  nn_mlp_destroy(&v->v_target);
  free(v->scratch);
  free(v);
}

/* Settings create refuses, each named by its key. */
static int check_settings(const virel_settings *c, const config_section *sec, nn_activation *act, ember_err *err) {
  if (strcmp(c->beta_mode, "constant") != 0 && strcmp(c->beta_mode, "msbe") != 0)
    return ember_fail(err, EMBER_EINVAL, "%s.beta_mode '%s' is neither constant nor msbe", sec->name, c->beta_mode);
  if (!(c->beta_min <= c->beta_max))
    return ember_fail(err, EMBER_EINVAL, "%s.beta_min %g must not exceed %s.beta_max %g", sec->name, c->beta_min,
                      sec->name, c->beta_max);
  if (!(c->log_std_min < c->log_std_max))
    return ember_fail(err, EMBER_EINVAL, "%s.log_std_min %g must be below %s.log_std_max %g", sec->name,
                      c->log_std_min, sec->name, c->log_std_max);
  if (nn_activation_parse(c->activation, act, err) != 0) return ember_err_prefix(err, "%s.activation: ", sec->name);
  return 0;
}

static void *create_common(const algo_context *ctx, bool soft, ember_err *err) {
  const config_section *sec = soft ? &virel_soft_config_section : &virel_config_section;
  const char *name = soft ? "virel-soft" : "virel";
  virel_settings defaults;
  const virel_settings *c = ctx->settings;
  if (!c) {
    config_binding b = {sec, &defaults, NULL};
    if (config_defaults(&b, 1, err) != 0) return NULL;
    c = &defaults;
  }
  if (ctx->obs_dim < 1 || ctx->act_dim < 1 || ctx->max_batch < 1) {
    ember_fail(err, EMBER_EINVAL, "%s: obs_dim %d, act_dim %d and max_batch %d must all be >= 1", name, ctx->obs_dim,
               ctx->act_dim, ctx->max_batch);
    return NULL;
  }
  nn_activation act;
  if (check_settings(c, sec, &act, err) != 0) return NULL;
  virel_t *v = calloc(1, sizeof *v);
  if (!v) {
    ember_fail(err, EMBER_ENOMEM, "%s: out of memory", name);
    return NULL;
  }
  v->cfg = *c;
  v->section = sec;
  v->name = name;
  v->soft = soft;
  v->nv = soft ? 2 : 1;
  v->beta_msbe = strcmp(c->beta_mode, "msbe") == 0;
  v->beta = v->beta_msbe ? c->beta_max : c->alpha;
  v->msbe_ema = NAN;
  snprintf(v->task, sizeof v->task, "%s", ctx->task_name ? ctx->task_name : "");
  v->obs_dim = ctx->obs_dim;
  v->act_dim = ctx->act_dim;
  v->max_batch = ctx->max_batch;
  rng_seed(&v->rng, ctx->seed, RNG_STREAM_LEARNER);

  const int A = v->act_dim, O = v->obs_dim, B = v->max_batch;
  nn_mlp_spec pi_spec = {.input_dim = O, .output_dim = 2 * A, .hidden_count = (int)c->hidden_layers,
                         .hidden_activation = act, .output_activation = NN_ACT_IDENTITY, .ensemble_size = 1};
  nn_mlp_spec q_spec = pi_spec, v_spec = pi_spec;
  q_spec.input_dim = O + A, q_spec.output_dim = 1, q_spec.ensemble_size = 2;
  v_spec.output_dim = 1, v_spec.ensemble_size = v->nv;
  for (int l = 0; l < (int)c->hidden_layers; l++)
    pi_spec.hidden_dims[l] = q_spec.hidden_dims[l] = v_spec.hidden_dims[l] = (int)c->hidden_size;

  nn_mlp *pi = nn_mlp_new(&pi_spec, err);
  if (!pi || algo_policy_init(&v->pol, pi, A, B, (float)c->log_std_min, (float)c->log_std_max, err) != 0 ||
      !(v->q = nn_mlp_new(&q_spec, err)) || !(v->v = nn_mlp_new(&v_spec, err)) ||
      !(v->v_target = nn_mlp_new(&v_spec, err)) || !(v->q_ws = nn_mlp_ws_new(v->q, B, err)) ||
      !(v->v_ws = nn_mlp_ws_new(v->v, B, err)) || !(v->v_target_ws = nn_mlp_ws_new(v->v_target, B, err)))
    goto fail;
  nn_mlp_init(v->pol.net, &v->rng, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_init(v->q, &v->rng, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_init(v->v, &v->rng, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_copy_params(v->v_target, v->v);
  if (!(v->pi_opt = algo_adam_new(pi->param_count, c->actor_lr, c->adam_beta1, c->adam_beta2, c->adam_eps, err)) ||
      !(v->q_opt = algo_adam_new(v->q->param_count, c->critic_lr, c->adam_beta1, c->adam_beta2, c->adam_eps, err)) ||
      !(v->v_opt = algo_adam_new(v->v->param_count, c->value_lr, c->adam_beta1, c->adam_beta2, c->adam_eps, err)))
    goto fail;

  const size_t BA = (size_t)B * A;
  struct {
    float **slot;
    size_t floats;
  } bufs[] = {{&v->xa, (size_t)B * (O + A)}, {&v->eps, BA},           {&v->v_hat, (size_t)B * 2},
              {&v->y, (size_t)B * 2},        {&v->d_v, (size_t)B * 2}, {&v->d_q, (size_t)B * 2},
              {&v->d_action, BA},            {&v->d_log_prob, (size_t)B}, {&v->baseline, (size_t)B},
              {&v->td_abs, (size_t)B}};
  const size_t nbufs = sizeof bufs / sizeof *bufs;
  size_t total = 0;
  for (size_t i = 0; i < nbufs; i++) total += bufs[i].floats;
  if (!(v->scratch = calloc(total, sizeof(float)))) {
    ember_fail(err, EMBER_ENOMEM, "%s: out of memory for %zu scratch floats", name, total);
    goto fail;
  }
  float *p = v->scratch;
  for (size_t i = 0; i < nbufs; i++) {
    *bufs[i].slot = p;
    p += bufs[i].floats;
  }
  return v;
fail:
  virel_destroy(v);
  return NULL;
}

static void *virel_create(const algo_context *ctx, ember_err *err) { return create_common(ctx, false, err); }
static void *virel_soft_create(const algo_context *ctx, ember_err *err) { return create_common(ctx, true, err); }

/* ---- the variational M-step: the critic (algo_ops.e_step) -------------------------------------- */

int virel_critic_losses_grad(virel_t *v, const algo_batch *b, const float *eps, double *v_loss_out,
                             double *q_loss_out, ember_err *err) {
  const int B = b->size, O = v->obs_dim, A = v->act_dim, nv = v->nv;
  const float beta = (float)v->beta, gamma = (float)v->cfg.gamma;

  /* The value baseline V(phi), Algorithm 1's J^V with VIREL's hard value, a~ ~ pi(.|s) drawn with eps:
   *   virel:       v^(s) = min_j Q_j(s, a~)                              (no entropy term: hard)
   *   virel-soft:  v^_hard(s) = Q_hard(s, a~),  v^_soft(s) = Q_soft(s, a~) - beta log pi(a~|s)
   *   J^V(phi) = (1/2)(1/B) sum_b sum_k ( V_k(s_b) - sg(v^_k(s_b)) )^2,   dJ^V/dV_k(b) = (V_k - v^_k) / B */
  algo_policy_sample(&v->pol, b->obs, eps, B);
  algo_concat_obs_action(v->xa, b->obs, v->pol.action, B, O, A);
  const float *qa = nn_mlp_forward(v->q, v->q_ws, v->xa, B, NN_INPUT_SHARED);
  for (int i = 0; i < B; i++) {
    if (!v->soft) {
      v->v_hat[i] = fminf(qa[2 * i], qa[2 * i + 1]);
    } else {
      v->v_hat[2 * i] = qa[2 * i];
      v->v_hat[2 * i + 1] = qa[2 * i + 1] - beta * v->pol.log_prob[i];
    }
  }
  const float *val = nn_mlp_forward(v->v, v->v_ws, b->obs, B, NN_INPUT_SHARED);
  double v_loss = 0;
  for (int i = 0; i < B * nv; i++) {
    float d = val[i] - v->v_hat[i];
    v_loss += (double)d * d;
    v->d_v[i] = d / (float)B;
  }
  v_loss *= 0.5 / B;
  nn_mlp_zero_grad(v->v);
  nn_mlp_backward(v->v, v->v_ws, v->d_v, NN_PARAM_GRADS_ACCUMULATE, NULL);

  /* The twin critics by TD regression onto hard targets, section 4.1's M-step with
   * psi(h) = r + gamma (1 - terminated) V(phi-bar)(s') (no entropy term in the Q target):
   *   virel:       psi_j = r + gamma (1 - d) V'(s')                                 j = 1, 2
   *   virel-soft:  psi_1 = r + gamma (1 - d) V'_hard(s'),  psi_2 = r + gamma (1 - d) V'_soft(s')
   *   J^Q(omega) = (1/2)(1/B) sum_b w_b sum_j ( Q_j(s_b, a_b) - sg(psi_j) )^2
   * which is the batch estimate beta-hat(omega) = E_D[(psi(h) - Q^(h; omega))^2] of section 4.1
   * (and B.2), averaged over the two critics (w: importance weights, 1 without prioritized replay).
   * Minimising it is eq. 10 (argmin_omega beta(omega)); its gradient is section 4.1's
   *   dJ^Q/dQ_j(b) = w_b (Q_j - psi_j) / B.
   * A truncated transition bootstraps (only the time limit cut it); a terminated one does not. */
  const float *vt = nn_mlp_forward(v->v_target, v->v_target_ws, b->next_obs, B, NN_INPUT_SHARED);
  for (int i = 0; i < B; i++)
    for (int j = 0; j < 2; j++)
      v->y[2 * i + j] = b->reward[i] + gamma * (1.0f - b->terminated[i]) * vt[i * nv + (v->soft ? j : 0)];
  algo_concat_obs_action(v->xa, b->obs, b->action, B, O, A);
  const float *q = nn_mlp_forward(v->q, v->q_ws, v->xa, B, NN_INPUT_SHARED);
  double q_loss = 0;
  for (int i = 0; i < B; i++) {
    float w = b->weights ? b->weights[i] : 1.0f;
    float d1 = q[2 * i] - v->y[2 * i], d2 = q[2 * i + 1] - v->y[2 * i + 1];
    q_loss += (double)w * ((double)d1 * d1 + (double)d2 * d2);
    v->d_q[2 * i] = w * d1 / (float)B;
    v->d_q[2 * i + 1] = w * d2 / (float)B;
    v->td_abs[i] = 0.5f * (fabsf(d1) + fabsf(d2));
  }
  q_loss *= 0.5 / B;
  nn_mlp_zero_grad(v->q);
  nn_mlp_backward(v->q, v->q_ws, v->d_q, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *v_loss_out = v_loss;
  *q_loss_out = q_loss;
  if (!isfinite(v_loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: value loss J^V is non-finite (%g); parameters unchanged", v->name,
                      v_loss);
  if (!isfinite(q_loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: critic loss J^Q is non-finite (%g); parameters unchanged",
                      v->name, q_loss);
  v->last_batch = B;
  return 0;
}

/* beta in msbe mode (section 4's beta(omega) = the critic's MSBE, estimated by beta-hat): the batch's
 * J^Q, smoothed, scaled and bounded. As the critic becomes exact beta falls towards beta_min, and with
 * beta_min = 0 the E-step's target becomes greedy (Lemma 1). The average is kept in both modes (a
 * column of the learner's CSV); only msbe uses it. */
static void update_beta(virel_t *v, double beta_hat) {
  if (isnan(v->msbe_ema))
    v->msbe_ema = beta_hat;
  else
    v->msbe_ema += v->cfg.beta_ema * (beta_hat - v->msbe_ema);
  if (v->beta_msbe) v->beta = fmin(fmax(v->cfg.beta_scale * v->msbe_ema, v->cfg.beta_min), v->cfg.beta_max);
}

static int virel_mstep(void *self, const algo_batch *b, algo_stats *stats, ember_err *err) {
  virel_t *v = self;
  int rc = algo_check_batch(v->name, b, v->obs_dim, v->act_dim, v->max_batch, err);
  if (rc) return rc;
  rng_normal_fill(&v->rng, v->eps, b->size * v->act_dim);
  double v_loss, q_loss;
  if ((rc = virel_critic_losses_grad(v, b, v->eps, &v_loss, &q_loss, err)) != 0) return rc;
  /* Both gradients are checked before either network moves, so a refusal changes nothing. */
  if (!isfinite(nn_grad_norm(v->v->grads, v->v->param_count)) || !isfinite(nn_grad_norm(v->q->grads, v->q->param_count)))
    return ember_fail(err, EMBER_ENONFINITE, "%s: a non-finite M-step gradient; parameters unchanged", v->name);
  if ((rc = nn_adam_step(v->v_opt, v->v->params, v->v->grads, NULL, err)) != 0 ||
      (rc = nn_adam_step(v->q_opt, v->q->params, v->q->grads, NULL, err)) != 0)
    return ember_err_prefix(err, "%s M-step: ", v->name);
  update_beta(v, q_loss);
  v->msteps++;
  if (stats) {
    const float *q = v->q_ws->activations[v->q->layer_count - 1];
    const float *val = v->v_ws->activations[v->v->layer_count - 1];
    double q_sum = 0, v_sum = 0, y_sum = 0;
    for (int i = 0; i < b->size; i++) {
      q_sum += 0.5 * ((double)q[2 * i] + q[2 * i + 1]);
      v_sum += val[i * v->nv];
      y_sum += 0.5 * ((double)v->y[2 * i] + v->y[2 * i + 1]);
    }
    if (stats->count < ST_COUNT) stats->count = ST_COUNT;
    stats->values[ST_V_LOSS] = v_loss;
    stats->values[ST_MSBE] = q_loss;
    stats->values[ST_MSBE_EMA] = v->msbe_ema;
    stats->values[ST_BETA] = v->beta;
    stats->values[ST_Q_MEAN] = q_sum / b->size;
    stats->values[ST_V_MEAN] = v_sum / b->size;
    stats->values[ST_TARGET_MEAN] = y_sum / b->size;
  }
  return 0;
}

/* ---- the variational E-step: the policy (algo_ops.m_step) -------------------------------------- */

int virel_policy_loss_grad(virel_t *v, const algo_batch *b, const float *eps, double *loss_out,
                           double *mean_log_prob, ember_err *err) {
  const int B = b->size;
  /* Eq. 9 (section 4.1's E-step): grad_theta sum_t [ int Q^(s_t, a; omega) pi(a|s_t; theta) da
   * + beta H(pi(.|s_t; theta)) ], with the critic held fixed, through the reparameterised action
   * a~ = tanh(mu(s) + std(s) eps) (Algorithm 1's J^pi; the paper's experiments use this estimator):
   *   J^pi(theta) = (1/B) sum_b [ beta log pi(a~_b|s_b) - ( min_j Q_j(s_b, a~_b) - V(s_b) ) ]
   * min_j over the two critics (virel-soft: over Q_hard and Q_soft); V(s) = V(phi) (virel-soft: V_hard)
   * is section 4.1's baseline: it depends on no theta, so the gradient is the same without it. */
  const float *val = nn_mlp_forward(v->v, v->v_ws, b->obs, B, NN_INPUT_SHARED);
  for (int i = 0; i < B; i++) v->baseline[i] = val[i * v->nv];
  double loss = algo_actor_loss_grad(&v->pol, v->q, v->q_ws, b->obs, v->obs_dim, eps, B, (float)v->beta,
                                     v->baseline, v->xa, v->d_q, v->d_action, v->d_log_prob, mean_log_prob);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: policy loss J^pi is non-finite (%g); parameters unchanged",
                      v->name, loss);
  return 0;
}

static int virel_estep(void *self, const algo_batch *b, algo_stats *stats, ember_err *err) {
  virel_t *v = self;
  int rc = algo_check_batch(v->name, b, v->obs_dim, v->act_dim, v->max_batch, err);
  if (rc) return rc;
  rng_normal_fill(&v->rng, v->eps, b->size * v->act_dim);
  double loss, mean_lp;
  if ((rc = virel_policy_loss_grad(v, b, v->eps, &loss, &mean_lp, err)) != 0) return rc;
  if ((rc = nn_adam_step(v->pi_opt, v->pol.net->params, v->pol.net->grads, NULL, err)) != 0)
    return ember_err_prefix(err, "%s E-step: ", v->name);
  /* Algorithm 1's last line (printed "phi-bar <- tau phi-bar + (1 - tau) phi-bar"; read as Polyak
   * averaging towards phi): phi-bar <- (1 - tau) phi-bar + tau phi */
  nn_mlp_polyak_update(v->v_target, v->v, (float)v->cfg.tau);
  v->esteps++;
  if (stats) {
    if (stats->count < ST_COUNT) stats->count = ST_COUNT;
    stats->values[ST_POLICY_LOSS] = loss;
    stats->values[ST_ENTROPY] = -mean_lp;
  }
  return 0;
}

/* ---- acting, priorities, export ------------------------------------------------------------------- */

static int virel_act(void *self, const float *obs, int n, bool deterministic, float *actions, float *log_probs,
                     ember_err *err) {
  virel_t *v = self;
  return algo_policy_act(&v->pol, &v->rng, v->eps, v->obs_dim, obs, n, deterministic, actions, log_probs, v->name,
                         err);
}

static int virel_priorities(void *self, float *out, ember_err *err) {
  virel_t *v = self;
  if (v->last_batch == 0) return ember_fail(err, EMBER_ESTATE, "%s: priorities before any e_step", v->name);
  memcpy(out, v->td_abs, (size_t)v->last_batch * sizeof(float));
  return 0;
}

static int virel_export(void *self, Ember__Params *out, ember_err *err) {
  virel_t *v = self;
  return algo_export_policy(v->pol.net, v->name, v->task, v->obs_dim, v->act_dim, v->pol.log_std_lo,
                            v->pol.log_std_hi, out, err);
}

/* ---- save / load -------------------------------------------------------------------------------- */

/* File layout (native endianness: a learner's own state, not an interchange format):
 *   header (below)  pi params | q params | v params | v_target params
 *   Adam (u64 step, m, v) of pi, q, v   f64 beta, msbe_ema   rng   u64 msteps, esteps   "END!" */
#define VIREL_MAGIC "EMBERVRL"
#define VIREL_FORMAT 1u

typedef struct {
  char magic[8];
  uint32_t version;
  int32_t soft, obs_dim, act_dim, hidden_size, hidden_layers;
  uint64_t pi_count, q_count, v_count;
} virel_file_header;

static int virel_save(void *self, FILE *out, ember_err *err) {
  virel_t *v = self;
  virel_file_header h = {.version = VIREL_FORMAT, .soft = v->soft, .obs_dim = v->obs_dim, .act_dim = v->act_dim,
                         .hidden_size = (int32_t)v->cfg.hidden_size, .hidden_layers = (int32_t)v->cfg.hidden_layers,
                         .pi_count = v->pol.net->param_count, .q_count = v->q->param_count,
                         .v_count = v->v->param_count};
  memcpy(h.magic, VIREL_MAGIC, 8);
  const nn_mlp *nets[] = {v->pol.net, v->q, v->v, v->v_target};
  const nn_adam *opts[] = {v->pi_opt, v->q_opt, v->v_opt};
  int bad = algo_write(out, &h, sizeof h);
  for (int i = 0; i < 4 && !bad; i++) bad = algo_write(out, nets[i]->params, nets[i]->param_count * sizeof(float));
  for (int i = 0; i < 3 && !bad; i++) bad = algo_write_adam(out, opts[i]);
  if (bad || algo_write(out, &v->beta, sizeof v->beta) || algo_write(out, &v->msbe_ema, sizeof v->msbe_ema) ||
      algo_write(out, &v->rng, sizeof v->rng) || algo_write(out, &v->msteps, sizeof v->msteps) ||
      algo_write(out, &v->esteps, sizeof v->esteps) || algo_write(out, "END!", 4))
    return ember_fail(err, EMBER_EIO, "%s save: write failed", v->name);
  return 0;
}

static int virel_load(void *self, FILE *in, ember_err *err) {
  virel_t *v = self;
  virel_file_header h;
  if (algo_read(in, &h, sizeof h)) return ember_fail(err, EMBER_ECORRUPT, "%s load: truncated header", v->name);
  if (memcmp(h.magic, VIREL_MAGIC, 8) != 0)
    return ember_fail(err, EMBER_ECORRUPT, "%s load: not a VIREL state", v->name);
  if (h.version != VIREL_FORMAT)
    return ember_fail(err, EMBER_ESCHEMA, "%s load: format %u, this build reads %u", v->name, h.version, VIREL_FORMAT);
  if (h.soft != (int32_t)v->soft || h.obs_dim != v->obs_dim || h.act_dim != v->act_dim ||
      h.pi_count != v->pol.net->param_count || h.q_count != v->q->param_count || h.v_count != v->v->param_count)
    return ember_fail(err, EMBER_ESHAPE,
                      "%s load: state is for %s, obs %d act %d with %llu/%llu/%llu parameters (hidden_size %d x %d "
                      "layers); this one has obs %d act %d with %zu/%zu/%zu",
                      v->name, h.soft ? "virel-soft" : "virel", h.obs_dim, h.act_dim, (unsigned long long)h.pi_count,
                      (unsigned long long)h.q_count, (unsigned long long)h.v_count, h.hidden_size, h.hidden_layers,
                      v->obs_dim, v->act_dim, v->pol.net->param_count, v->q->param_count, v->v->param_count);
  nn_mlp *nets[] = {v->pol.net, v->q, v->v, v->v_target};
  nn_adam *opts[] = {v->pi_opt, v->q_opt, v->v_opt};
  for (int i = 0; i < 4; i++)
    if (algo_read(in, nets[i]->params, nets[i]->param_count * sizeof(float)))
      return ember_fail(err, EMBER_ECORRUPT, "%s load: truncated parameters", v->name);
  for (int i = 0; i < 3; i++)
    if (algo_read_adam(in, opts[i])) return ember_fail(err, EMBER_ECORRUPT, "%s load: truncated optimiser state", v->name);
  char end[4];
  if (algo_read(in, &v->beta, sizeof v->beta) || algo_read(in, &v->msbe_ema, sizeof v->msbe_ema) ||
      algo_read(in, &v->rng, sizeof v->rng) || algo_read(in, &v->msteps, sizeof v->msteps) ||
      algo_read(in, &v->esteps, sizeof v->esteps) || algo_read(in, end, 4) || memcmp(end, "END!", 4))
    return ember_fail(err, EMBER_ECORRUPT, "%s load: truncated or corrupt tail", v->name);
  return 0;
}

const algo_ops algo_virel = {
    .name = "virel",
    .summary = "VIREL1: variational actor-critic EM (E-step policy, M-step two hard critics + V), Fellows et al.",
    .settings = &virel_config_section,
    .settings_size = sizeof(virel_settings),
    .stat_names = virel_stat_names,
    .create = virel_create,
    .destroy = virel_destroy,
    .e_step = virel_mstep, /* Algorithm 1's order: VIREL's M-step (critic) first ... */
    .m_step = virel_estep, /* ... then its E-step (policy) */
    .act = virel_act,
    .export_params = virel_export,
    .save = virel_save,
    .load = virel_load,
    .priorities = virel_priorities,
};

const algo_ops algo_virel_soft = {
    .name = "virel-soft",
    .summary = "VIREL2: the same EM with one hard and one soft critic (and a hard and a soft V), Fellows et al.",
    .settings = &virel_soft_config_section,
    .settings_size = sizeof(virel_settings),
    .stat_names = virel_stat_names,
    .create = virel_soft_create,
    .destroy = virel_destroy,
    .e_step = virel_mstep,
    .m_step = virel_estep,
    .act = virel_act,
    .export_params = virel_export,
    .save = virel_save,
    .load = virel_load,
    .priorities = virel_priorities,
};

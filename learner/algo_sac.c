/* algo_sac.c: Soft Actor-Critic (Haarnoja et al. 2018, with the automatic temperature of the
 * "applications" paper) behind algo_ops. See algo_sac.h for the shape of the networks and
 * docs/algorithms.md ("SAC as implemented") for the equations in prose.
 *
 * Memory: everything (networks, workspaces, optimiser moments, per-batch scratch) is allocated in
 * sac_create for ctx->max_batch rows; e_step, m_step and act never allocate.
 */
#include "algo_sac.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "algo_parts.h"
#include "nn_dist.h"
#include "nn_optim.h"
#include "rng.h"

/* ---- settings --------------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, help) {#name, type, offsetof(sac_settings, name), lo, hi, def, help}
static const config_field sac_fields[] = {
    F(hidden_size, CONFIG_INT, 1, 4096, "256", "units per hidden layer (actor and both critics)"),
    F(hidden_layers, CONFIG_INT, 1, NN_MAX_HIDDEN, "2", "hidden layers (actor and both critics)"),
    F(activation, CONFIG_STRING, 0, 0, "relu", "hidden activation: relu, tanh or elu"),
    F(actor_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of the policy"),
    F(critic_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of the twin critics"),
    F(alpha_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of log(alpha)"),
    F(gamma, CONFIG_FLOAT, 0, 1, "0.99", "discount factor"),
    F(tau, CONFIG_FLOAT, 0, 1, "0.005", "Polyak rate of the target critics (1 = copy)"),
    F(init_alpha, CONFIG_FLOAT, 1e-8, 1e4, "1.0", "initial entropy temperature alpha"),
    F(learn_alpha, CONFIG_BOOL, 0, 0, "true", "tune alpha so the policy's entropy tracks the target"),
    F(target_entropy_scale, CONFIG_FLOAT, -100, 100, "1.0", "target entropy = -scale * act_dim"),
    F(log_std_min, CONFIG_FLOAT, -20, 0, "-5", "lower bound of the policy's log standard deviation"),
    F(log_std_max, CONFIG_FLOAT, -5, 5, "2", "upper bound of the policy's log standard deviation"),
    F(adam_beta1, CONFIG_FLOAT, 0, 0.999999, "0.9", "Adam first-moment decay"),
    F(adam_beta2, CONFIG_FLOAT, 0, 0.999999999, "0.999", "Adam second-moment decay"),
    F(adam_eps, CONFIG_FLOAT, 1e-12, 1, "1e-8", "Adam epsilon"),
};
#undef F
const config_section sac_config_section = {"sac", sac_fields, sizeof sac_fields / sizeof *sac_fields};

/* The CSV columns an update reports; e_step fills the first three, m_step the rest. */
enum { ST_CRITIC_LOSS, ST_Q_MEAN, ST_TARGET_MEAN, ST_ACTOR_LOSS, ST_ALPHA, ST_ALPHA_LOSS, ST_ENTROPY, ST_COUNT };
static const char *const sac_stat_names[] = {"critic_loss", "q_mean",  "target_mean", "actor_loss",
                                             "alpha",       "alpha_loss", "entropy",   NULL};

/* ---- the instance ------------------------------------------------------------------------------ */

struct sac {
  sac_settings cfg;
  char task[CONFIG_STRING_MAX];
  int obs_dim, act_dim, max_batch;
  float log_std_lo, log_std_hi;
  double target_entropy;

  algo_policy pol;  /* obs -> [mu | raw log-std], 2 * act_dim, with its last sample */
  nn_mlp *q;        /* [obs | act] -> [Q_1, Q_2]: an E = 2 ensemble with a shared input */
  nn_mlp *q_target; /* Q'_1, Q'_2 */
  nn_mlp_ws *q_ws, *q_target_ws;
  nn_adam *pi_opt, *q_opt, *alpha_opt;
  float log_alpha[1], log_alpha_grad[1]; /* alpha = exp(log_alpha): Adam on an unconstrained scalar */

  rng_t rng;
  uint64_t critic_updates, actor_updates;

  /* per-batch scratch, [max_batch, ...] */
  float *xa;       /* [B, obs + act]: critic input */
  float *eps;      /* [B, act] */
  float *d_log_prob; /* [B] */
  float *target;   /* [B]: y */
  float *d_q;      /* [B, 2]: dL/dQ */
  float *d_action; /* [B, act] */
  float *td_abs;   /* [B]: |TD error| averaged over the twins, for priorities */
  int last_batch;  /* rows of the last e_step (0: none) */
  float *scratch;  /* the one allocation behind the buffers above */
};

nn_mlp *sac_policy_net(sac_t *s) { return s->pol.net; }
nn_mlp *sac_critic_net(sac_t *s) { return s->q; }
nn_mlp *sac_target_critic_net(sac_t *s) { return s->q_target; }
double sac_alpha(const sac_t *s) { return exp((double)s->log_alpha[0]); }
void sac_set_alpha(sac_t *s, double alpha) { s->log_alpha[0] = (float)log(alpha); }

static void sac_destroy(void *self) {
  sac_t *s = self;
  if (!s) return;
  algo_policy_free(&s->pol);
  nn_mlp_ws_destroy(&s->q_ws);
  nn_mlp_ws_destroy(&s->q_target_ws);
  nn_adam_destroy(&s->pi_opt);
  nn_adam_destroy(&s->q_opt);
  nn_adam_destroy(&s->alpha_opt);
  nn_mlp_destroy(&s->q);
  nn_mlp_destroy(&s->q_target);
  free(s->scratch);
  free(s);
}

static nn_adam *make_adam(size_t n, double lr, const sac_settings *c, ember_err *err) {
  return algo_adam_new(n, lr, c->adam_beta1, c->adam_beta2, c->adam_eps, err);
}

static void *sac_create(const algo_context *ctx, ember_err *err) {
  sac_settings defaults;
  const sac_settings *c = ctx->settings;
  if (!c) {
    config_binding b = {&sac_config_section, &defaults, NULL};
    if (config_defaults(&b, 1, err) != 0) return NULL;
    c = &defaults;
  }
  if (ctx->obs_dim < 1 || ctx->act_dim < 1 || ctx->max_batch < 1) {
    ember_fail(err, EMBER_EINVAL, "sac: obs_dim %d, act_dim %d and max_batch %d must all be >= 1", ctx->obs_dim,
               ctx->act_dim, ctx->max_batch);
    return NULL;
  }
  if (!(c->log_std_min < c->log_std_max)) {
    ember_fail(err, EMBER_EINVAL, "sac.log_std_min %g must be below sac.log_std_max %g", c->log_std_min,
               c->log_std_max);
    return NULL;
  }
  nn_activation act;
  if (nn_activation_parse(c->activation, &act, err) != 0) {
    ember_err_prefix(err, "sac.activation: ");
    return NULL;
  }
  sac_t *s = calloc(1, sizeof *s);
  if (!s) {
    ember_fail(err, EMBER_ENOMEM, "sac: out of memory");
    return NULL;
  }
  s->cfg = *c;
  snprintf(s->task, sizeof s->task, "%s", ctx->task_name ? ctx->task_name : "");
  s->obs_dim = ctx->obs_dim;
  s->act_dim = ctx->act_dim;
  s->max_batch = ctx->max_batch;
  s->log_std_lo = (float)c->log_std_min;
  s->log_std_hi = (float)c->log_std_max;
  s->target_entropy = -c->target_entropy_scale * ctx->act_dim;
  s->log_alpha[0] = (float)log(c->init_alpha);
  rng_seed(&s->rng, ctx->seed, RNG_STREAM_LEARNER);

  const int A = s->act_dim, O = s->obs_dim, B = s->max_batch;
  nn_mlp_spec pi_spec = {.input_dim = O, .output_dim = 2 * A, .hidden_count = (int)c->hidden_layers,
                         .hidden_activation = act, .output_activation = NN_ACT_IDENTITY, .ensemble_size = 1};
  nn_mlp_spec q_spec = {.input_dim = O + A, .output_dim = 1, .hidden_count = (int)c->hidden_layers,
                        .hidden_activation = act, .output_activation = NN_ACT_IDENTITY, .ensemble_size = 2};
  for (int l = 0; l < (int)c->hidden_layers; l++) pi_spec.hidden_dims[l] = q_spec.hidden_dims[l] = (int)c->hidden_size;

  nn_mlp *pi = nn_mlp_new(&pi_spec, err);
  if (!pi || algo_policy_init(&s->pol, pi, A, B, s->log_std_lo, s->log_std_hi, err) != 0 ||
      !(s->q = nn_mlp_new(&q_spec, err)) || !(s->q_target = nn_mlp_new(&q_spec, err)) ||
      !(s->q_ws = nn_mlp_ws_new(s->q, B, err)) || !(s->q_target_ws = nn_mlp_ws_new(s->q_target, B, err)))
    goto fail;
  nn_mlp_init(s->pol.net, &s->rng, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_init(s->q, &s->rng, NN_INIT_FAN_IN_UNIFORM);
  nn_mlp_copy_params(s->q_target, s->q);
  if (!(s->pi_opt = make_adam(s->pol.net->param_count, c->actor_lr, c, err)) ||
      !(s->q_opt = make_adam(s->q->param_count, c->critic_lr, c, err)) ||
      !(s->alpha_opt = make_adam(1, c->alpha_lr, c, err)))
    goto fail;

  const size_t BA = (size_t)B * A;
  struct {
    float **slot;
    size_t floats;
  } bufs[] = {{&s->xa, (size_t)B * (O + A)}, {&s->eps, BA},           {&s->d_log_prob, (size_t)B},
              {&s->target, (size_t)B},      {&s->d_q, (size_t)B * 2}, {&s->d_action, BA},
              {&s->td_abs, (size_t)B}};
  const size_t nbufs = sizeof bufs / sizeof *bufs;
  size_t total = 0;
  for (size_t i = 0; i < nbufs; i++) total += bufs[i].floats;
  if (!(s->scratch = calloc(total, sizeof(float)))) {
    ember_fail(err, EMBER_ENOMEM, "sac: out of memory for %zu scratch floats", total);
    goto fail;
  }
  float *p = s->scratch;
  for (size_t i = 0; i < nbufs; i++) {
    *bufs[i].slot = p;
    p += bufs[i].floats;
  }
  return s;
fail:
  sac_destroy(s);
  return NULL;
}

static int check_batch(const sac_t *s, const algo_batch *b, ember_err *err) {
  return algo_check_batch("sac", b, s->obs_dim, s->act_dim, s->max_batch, err);
}

/* ---- E-step: the critic -------------------------------------------------------------------------- */

int sac_critic_loss_grad(sac_t *s, const algo_batch *b, const float *eps_next, double *loss_out, ember_err *err) {
  const int B = b->size, O = s->obs_dim, A = s->act_dim;
  const float alpha = expf(s->log_alpha[0]), gamma = (float)s->cfg.gamma;

  /* Soft target, with a' = tanh(mu(s') + std(s') eps'):
   *   y = r + gamma * (1 - terminated) * (min_j Q'_j(s', a') - alpha * log pi(a'|s'))
   * A truncated transition bootstraps (only the time limit cut it); a terminated one does not. */
  algo_policy_sample(&s->pol, b->next_obs, eps_next, B);
  algo_concat_obs_action(s->xa, b->next_obs, s->pol.action, B, O, A);
  const float *qt = nn_mlp_forward(s->q_target, s->q_target_ws, s->xa, B, NN_INPUT_SHARED);
  for (int i = 0; i < B; i++) {
    float v_next = fminf(qt[2 * i], qt[2 * i + 1]) - alpha * s->pol.log_prob[i];
    s->target[i] = b->reward[i] + gamma * (1.0f - b->terminated[i]) * v_next;
  }

  /* Critic loss, w = importance weights (1 without prioritized replay):
   *   L_Q = (1/B) sum_b w_b sum_{j=1,2} (Q_j(s_b, a_b) - y_b)^2
   *   dL_Q/dQ_j(b) = 2 w_b (Q_j(s_b, a_b) - y_b) / B */
  algo_concat_obs_action(s->xa, b->obs, b->action, B, O, A);
  const float *q = nn_mlp_forward(s->q, s->q_ws, s->xa, B, NN_INPUT_SHARED);
  double loss = 0;
  for (int i = 0; i < B; i++) {
    float w = b->weights ? b->weights[i] : 1.0f;
    float d1 = q[2 * i] - s->target[i], d2 = q[2 * i + 1] - s->target[i];
    loss += (double)w * ((double)d1 * d1 + (double)d2 * d2);
    s->d_q[2 * i] = 2.0f * w * d1 / (float)B;
    s->d_q[2 * i + 1] = 2.0f * w * d2 / (float)B;
    s->td_abs[i] = 0.5f * (fabsf(d1) + fabsf(d2));
  }
  loss /= B;
  nn_mlp_zero_grad(s->q);
  nn_mlp_backward(s->q, s->q_ws, s->d_q, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "sac: critic loss is non-finite (%g); parameters unchanged", loss);
  s->last_batch = B;
  return 0;
}

static int sac_e_step(void *self, const algo_batch *b, algo_stats *stats, ember_err *err) {
  sac_t *s = self;
  int rc = check_batch(s, b, err);
  if (rc) return rc;
  rng_normal_fill(&s->rng, s->eps, b->size * s->act_dim);
  double loss;
  if ((rc = sac_critic_loss_grad(s, b, s->eps, &loss, err)) != 0) return rc;
  if ((rc = nn_adam_step(s->q_opt, s->q->params, s->q->grads, NULL, err)) != 0)
    return ember_err_prefix(err, "sac critic: ");
  /* Target critics follow by Polyak averaging: theta' <- (1 - tau) theta' + tau theta */
  nn_mlp_polyak_update(s->q_target, s->q, (float)s->cfg.tau);
  s->critic_updates++;
  if (stats) {
    const float *q = s->q_ws->activations[s->q->layer_count - 1];
    double q_sum = 0, y_sum = 0;
    for (int i = 0; i < b->size; i++) {
      q_sum += 0.5 * ((double)q[2 * i] + q[2 * i + 1]);
      y_sum += s->target[i];
    }
    if (stats->count < ST_COUNT) stats->count = ST_COUNT;
    stats->values[ST_CRITIC_LOSS] = loss;
    stats->values[ST_Q_MEAN] = q_sum / b->size;
    stats->values[ST_TARGET_MEAN] = y_sum / b->size;
  }
  return 0;
}

/* ---- M-step: the actor and the temperature ------------------------------------------------------ */

int sac_actor_loss_grad(sac_t *s, const algo_batch *b, const float *eps, double *loss_out, double *mean_log_prob,
                        ember_err *err) {
  const float alpha = expf(s->log_alpha[0]);

  /* Actor loss through the reparameterised action a = tanh(mu(s) + std(s) eps):
   *   L_pi = (1/B) sum_b [ alpha * log pi(a_b|s_b) - min_j Q_j(s_b, a_b) ]
   * The gradient reaches the policy two ways: through log pi directly, and through a via dQ/da
   * (the critic's input gradient; the critic's parameters are not changed by this loss). */
  double loss = algo_actor_loss_grad(&s->pol, s->q, s->q_ws, b->obs, s->obs_dim, eps, b->size, alpha, NULL, s->xa,
                                     s->d_q, s->d_action, s->d_log_prob, mean_log_prob);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "sac: actor loss is non-finite (%g); parameters unchanged", loss);
  return 0;
}

static int sac_m_step(void *self, const algo_batch *b, algo_stats *stats, ember_err *err) {
  sac_t *s = self;
  int rc = check_batch(s, b, err);
  if (rc) return rc;
  rng_normal_fill(&s->rng, s->eps, b->size * s->act_dim);
  double loss, mean_lp;
  if ((rc = sac_actor_loss_grad(s, b, s->eps, &loss, &mean_lp, err)) != 0) return rc;
  if ((rc = nn_adam_step(s->pi_opt, s->pol.net->params, s->pol.net->grads, NULL, err)) != 0)
    return ember_err_prefix(err, "sac actor: ");

  /* Temperature, with log pi held fixed:
   *   L_alpha = -(1/B) sum_b log(alpha) * (log pi(a_b|s_b) + H_target)
   *   dL_alpha/dlog(alpha) = -(mean log pi + H_target)
   * so alpha grows while the entropy -mean log pi is below H_target = -scale * act_dim. */
  double alpha_loss = -(double)s->log_alpha[0] * (mean_lp + s->target_entropy);
  if (s->cfg.learn_alpha) {
    s->log_alpha_grad[0] = (float)-(mean_lp + s->target_entropy);
    if ((rc = nn_adam_step(s->alpha_opt, s->log_alpha, s->log_alpha_grad, NULL, err)) != 0)
      return ember_err_prefix(err, "sac temperature: ");
  }
  s->actor_updates++;
  if (stats) {
    if (stats->count < ST_COUNT) stats->count = ST_COUNT;
    stats->values[ST_ACTOR_LOSS] = loss;
    stats->values[ST_ALPHA] = exp((double)s->log_alpha[0]);
    stats->values[ST_ALPHA_LOSS] = alpha_loss;
    stats->values[ST_ENTROPY] = -mean_lp;
  }
  return 0;
}

/* ---- acting ------------------------------------------------------------------------------------- */

static int sac_act(void *self, const float *obs, int n, bool deterministic, float *actions, float *log_probs,
                   ember_err *err) {
  sac_t *s = self;
  return algo_policy_act(&s->pol, &s->rng, s->eps, s->obs_dim, obs, n, deterministic, actions, log_probs, "sac", err);
}

static int sac_priorities(void *self, float *out, ember_err *err) {
  sac_t *s = self;
  if (s->last_batch == 0) return ember_fail(err, EMBER_ESTATE, "sac: priorities before any e_step");
  memcpy(out, s->td_abs, (size_t)s->last_batch * sizeof(float));
  return 0;
}

/* ---- export ------------------------------------------------------------------------------------- */

static int sac_export(void *self, Ember__Params *out, ember_err *err) {
  sac_t *s = self;
  return algo_export_policy(s->pol.net, "sac", s->task, s->obs_dim, s->act_dim, s->log_std_lo, s->log_std_hi, out, err);
}

/* ---- save / load -------------------------------------------------------------------------------- */

/* File layout (native endianness: a learner's own state, not an interchange format):
 *   "EMBERSAC" u32 version=1 i32 obs_dim act_dim hidden_size hidden_layers
 *   u64 pi_count q_count  pi params | q params | q_target params
 *   Adam (u64 step, m, v) of pi, q, log_alpha  log_alpha  rng  u64 critic_updates actor_updates
 *   "END!" */
#define SAC_MAGIC "EMBERSAC"
#define SAC_FORMAT 1u

typedef struct {
  char magic[8];
  uint32_t version;
  int32_t obs_dim, act_dim, hidden_size, hidden_layers;
  uint64_t pi_count, q_count;
} sac_file_header;

static int sac_save(void *self, FILE *out, ember_err *err) {
  sac_t *s = self;
  sac_file_header h = {.version = SAC_FORMAT, .obs_dim = s->obs_dim, .act_dim = s->act_dim,
                       .hidden_size = (int32_t)s->cfg.hidden_size, .hidden_layers = (int32_t)s->cfg.hidden_layers,
                       .pi_count = s->pol.net->param_count, .q_count = s->q->param_count};
  memcpy(h.magic, SAC_MAGIC, 8);
  if (algo_write(out, &h, sizeof h) || algo_write(out, s->pol.net->params, s->pol.net->param_count * sizeof(float)) ||
      algo_write(out, s->q->params, s->q->param_count * sizeof(float)) ||
      algo_write(out, s->q_target->params, s->q->param_count * sizeof(float)))
    return ember_fail(err, EMBER_EIO, "sac save: write failed");
  const nn_adam *opts[] = {s->pi_opt, s->q_opt, s->alpha_opt};
  for (int i = 0; i < 3; i++)
    if (algo_write_adam(out, opts[i]))
      return ember_fail(err, EMBER_EIO, "sac save: write failed");
  if (algo_write(out, s->log_alpha, sizeof s->log_alpha) || algo_write(out, &s->rng, sizeof s->rng) ||
      algo_write(out, &s->critic_updates, sizeof s->critic_updates) ||
      algo_write(out, &s->actor_updates, sizeof s->actor_updates) || algo_write(out, "END!", 4))
    return ember_fail(err, EMBER_EIO, "sac save: write failed");
  return 0;
}

static int sac_load(void *self, FILE *in, ember_err *err) {
  sac_t *s = self;
  sac_file_header h;
  if (algo_read(in, &h, sizeof h)) return ember_fail(err, EMBER_ECORRUPT, "sac load: truncated header");
  if (memcmp(h.magic, SAC_MAGIC, 8) != 0) return ember_fail(err, EMBER_ECORRUPT, "sac load: not a SAC state");
  if (h.version != SAC_FORMAT)
    return ember_fail(err, EMBER_ESCHEMA, "sac load: format %u, this build reads %u", h.version, SAC_FORMAT);
  if (h.obs_dim != s->obs_dim || h.act_dim != s->act_dim || h.pi_count != s->pol.net->param_count ||
      h.q_count != s->q->param_count)
    return ember_fail(err, EMBER_ESHAPE,
                      "sac load: state is for obs %d act %d with %llu/%llu parameters, this SAC has obs %d act %d "
                      "with %zu/%zu (hidden_size %d x %d layers in the file)",
                      h.obs_dim, h.act_dim, (unsigned long long)h.pi_count, (unsigned long long)h.q_count,
                      s->obs_dim, s->act_dim, s->pol.net->param_count, s->q->param_count, h.hidden_size,
                      h.hidden_layers);
  if (algo_read(in, s->pol.net->params, s->pol.net->param_count * sizeof(float)) ||
      algo_read(in, s->q->params, s->q->param_count * sizeof(float)) ||
      algo_read(in, s->q_target->params, s->q->param_count * sizeof(float)))
    return ember_fail(err, EMBER_ECORRUPT, "sac load: truncated parameters");
  nn_adam *opts[] = {s->pi_opt, s->q_opt, s->alpha_opt};
  for (int i = 0; i < 3; i++)
    if (algo_read_adam(in, opts[i]))
      return ember_fail(err, EMBER_ECORRUPT, "sac load: truncated optimiser state");
  char end[4];
  if (algo_read(in, s->log_alpha, sizeof s->log_alpha) || algo_read(in, &s->rng, sizeof s->rng) ||
      algo_read(in, &s->critic_updates, sizeof s->critic_updates) ||
      algo_read(in, &s->actor_updates, sizeof s->actor_updates) || algo_read(in, end, 4) || memcmp(end, "END!", 4))
    return ember_fail(err, EMBER_ECORRUPT, "sac load: truncated or corrupt tail");
  return 0;
}

const algo_ops algo_sac = {
    .name = "sac",
    .summary = "Soft Actor-Critic: twin critics, target networks, automatic entropy temperature",
    .settings = &sac_config_section,
    .settings_size = sizeof(sac_settings),
    .stat_names = sac_stat_names,
    .create = sac_create,
    .destroy = sac_destroy,
    .e_step = sac_e_step,
    .m_step = sac_m_step,
    .act = sac_act,
    .export_params = sac_export,
    .save = sac_save,
    .load = sac_load,
    .priorities = sac_priorities,
};

/* algo_vmbpo.c: VMBPO and VMBPO-MFE behind algo_ops: the shared lifecycle. See algo_vmbpo.h for the
 * networks and the sample layout, docs/algorithms.md ("VMBPO", "VMBPO-MFE", "VMBPO as implemented")
 * for every loss against the paper's equations and every reading ember takes, and
 * vmbpo_internal.h for how the work is split across files along the paper's structure (q_d in
 * vmbpo_model.c, the rest of the E-step in vmbpo_estep.c, the M-step in vmbpo_mstep.c).
 *
 * One e_step call = estep_iters rounds of
 *   VMBPO:     step 1 (q_d, eq. 19) -> step 2 (nu, eq. 21) -> step 3 (Q eq. 23, then V eq. 24)
 *              -> step 4 (q_c, eq. 25) -> Polyak V', Q'
 *   VMBPO-MFE: Q by exponential TD on real transitions (eq. 9 / 10) -> V (eq. 24, a ~ q_c at replay
 *              states) -> step 4 (q_c, eq. 25) -> Polyak V', Q'   [-> step 1 every mfe_model_every]
 * and one m_step call runs the M-step (eq. 27, or pi <- q_c) at every mstep_every-th call.
 *
 * This file owns: the settings and config sections, the CSV columns' names, create (every network,
 * workspace, optimiser and scratch buffer, allocated for B = ctx->max_batch real rows and N = B * K
 * model rows: e_step, m_step and act never allocate), destroy, the state regions (what save/load
 * write, and what e_step snapshots at its start and restores when any loss turns non-finite, so a
 * failed update leaves no trace), the batch checks, act, export_params, save, load and the two
 * algo_ops tables.
 */
#include "algo_vmbpo.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "vmbpo_internal.h"

/* ---- settings --------------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, help) {#name, type, offsetof(vmbpo_settings, name), lo, hi, def, help}
static const config_field vmbpo_fields[] = {
    F(hidden_size, CONFIG_INT, 1, 4096, "256", "units per hidden layer of pi, q_c, nu, V, Q"),
    F(hidden_layers, CONFIG_INT, 1, NN_MAX_HIDDEN, "2", "hidden layers of pi, q_c, nu, V, Q"),
    F(model_hidden_size, CONFIG_INT, 1, 4096, "256", "units per hidden layer of the dynamics model q_d"),
    F(model_hidden_layers, CONFIG_INT, 1, NN_MAX_HIDDEN, "2", "hidden layers of the dynamics model q_d"),
    F(activation, CONFIG_STRING, 0, 0, "relu", "hidden activation of every network: relu, tanh or elu"),
    F(eta, CONFIG_FLOAT, 1e-6, 1e6, "1.0", "temperature: p(O=1|x,a) = exp(eta r), nats per unit of reward"),
    F(gamma, CONFIG_FLOAT, 0, 1, "0.99", "discount (per-step reading of footnote 1)"),
    F(polyak, CONFIG_FLOAT, 0, 1, "0.005", "Polyak rate of the targets V', Q' (1 = copy)"),
    F(lambda, CONFIG_FLOAT, 0, 1e6, "0", "M-step trust region: weight of KL(pi_old || pi) (eq. 27)"),
    F(mfe_tau, CONFIG_FLOAT, 1e-4, 100, "1.0", "VMBPO-MFE: temperature of the exponential TD update"),
    F(pi_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of pi (M-step)"),
    F(qc_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of q_c (step 4)"),
    F(qd_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of q_d and its log-variance bounds (step 1)"),
    F(nu_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of nu (step 2)"),
    F(q_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of Q (step 3)"),
    F(v_lr, CONFIG_FLOAT, 0, 1, "3e-4", "Adam learning rate of V (step 3)"),
    F(model_samples_per_real, CONFIG_INT, 1, 4096, "1", "K: model samples per real sample (paper: 128/256/512)"),
    F(estep_iters, CONFIG_INT, 1, 1000, "1", "gradient rounds of E-step steps 1-4 per update"),
    F(mstep_every, CONFIG_INT, 1, 1000000, "1",
      "run the M-step at every n-th update (a fitted pi, pi_equals_qc false, wants tens: docs/algorithms.md)"),
    F(mstep_iters, CONFIG_INT, 1, 1000, "1", "gradient steps on pi per M-step (when pi_equals_qc is false)"),
    F(pi_equals_qc, CONFIG_BOOL, 0, 0, "true", "M-step copies q_c into pi (the paper's experiments)"),
    F(acting_policy, CONFIG_STRING, 0, 0, "pi", "policy the actors run and export_params ships: pi or qc"),
    F(ensemble_size, CONFIG_INT, 1, 32, "1", "members of the dynamics model q_d"),
    F(critics, CONFIG_INT, 1, 8, "1",
      "members of Q and Q'; above 1 their minimum is read (clipped double Q, not in the paper; vmbpo only)"),
    F(qc_mean_penalty, CONFIG_FLOAT, 0, 100, "1e-3",
      "step 4: weight of the squared pre-tanh mean of q_c, a brake on saturation (SAC v1's policy regulariser)"),
    F(real_ratio, CONFIG_FLOAT, 0, 1, "0",
      "weight of the real transitions in step 3's Q regression, with their own x' and termination (MBPO's real "
      "ratio, not in the paper; vmbpo only)"),
    F(model_weight_decay, CONFIG_FLOAT, 0, 1, "0", "decoupled weight decay of q_d's network"),
    F(model_bound_penalty, CONFIG_FLOAT, 0, 10, "0.01", "weight of the log-variance bound width in step 1"),
    F(nu_max, CONFIG_FLOAT, 0.1, 80, "10", "nu is clamped to [-nu_max, nu_max]"),
    F(mfe_clamp, CONFIG_FLOAT, 0.1, 80, "20", "VMBPO-MFE: tau * delta clamped at this before exp"),
    F(mfe_model_every, CONFIG_INT, 0, 1000000000, "0", "VMBPO-MFE: fit q_d every n updates (0 = never)"),
    F(qd_weight_temperature, CONFIG_FLOAT, 0, 1, "1", "step 1: weights exp(t delta); 1 = eq. (19), 0 = plain likelihood"),
    F(qd_weight_norm, CONFIG_STRING, 0, 0, "model",
      "step 1's normaliser of exp(t (1-d) V'(x')): model = per (x,a), log-mean-exp over K q_d samples; batch = softmax over the batch"),
    F(qd_weight_max, CONFIG_FLOAT, 1, 1e6, "20", "step 1 (norm model): each weight clipped at this"),
    F(log_std_min, CONFIG_FLOAT, -20, 0, "-5", "lower bound of the policies' log standard deviation"),
    F(log_std_max, CONFIG_FLOAT, -5, 5, "2", "upper bound of the policies' log standard deviation"),
    F(adam_beta1, CONFIG_FLOAT, 0, 0.999999, "0.9", "Adam first-moment decay"),
    F(adam_beta2, CONFIG_FLOAT, 0, 0.999999999, "0.999", "Adam second-moment decay"),
    F(adam_eps, CONFIG_FLOAT, 1e-12, 1, "1e-8", "Adam epsilon"),
};
#undef F
const config_section vmbpo_config_section = {"vmbpo", vmbpo_fields, sizeof vmbpo_fields / sizeof *vmbpo_fields};
const config_section vmbpo_mfe_config_section = {"vmbpo_mfe", vmbpo_fields,
                                                 sizeof vmbpo_fields / sizeof *vmbpo_fields};

/* CSV columns, in the order of the ST_* (VMBPO) and MS_* (VMBPO-MFE) indices of vmbpo_internal.h. */
static const char *const vmbpo_stat_names[] = {
    "qd_loss", "weight_ess", "weight_max", "nu_loss", "model_kl", "nu_clamp_rate", "q_loss", "q_mean", "target_mean",
    "v_loss", "v_mean", "qc_loss", "qc_entropy", "log_qc_over_pi", "model_reward_mean", "pi_loss", "pi_kl", NULL};
/* VMBPO-MFE: its own columns (no nu, no model samples). */
static const char *const mfe_stat_names[] = {"q_pseudo_loss", "exp_td_mean", "td_clamp_rate", "q_mean", "v_loss",
                                             "v_mean", "qc_loss", "qc_entropy", "log_qc_over_pi", "qd_loss",
                                             "weight_ess", "pi_loss", "pi_kl", NULL};
/* The indices live in vmbpo_internal.h, the names here: they must not drift apart. */
_Static_assert(sizeof vmbpo_stat_names / sizeof *vmbpo_stat_names == ST_COUNT + 1, "ST_* and vmbpo_stat_names");
_Static_assert(sizeof mfe_stat_names / sizeof *mfe_stat_names == MS_COUNT + 1, "MS_* and mfe_stat_names");

/* ---- the instance (struct vmbpo: vmbpo_internal.h) ------------------------------------------------ */

nn_mlp *vmbpo_net(vmbpo_t *v, vmbpo_net_id id) { return id >= 0 && id < VMBPO_NET_COUNT ? v->net[id] : NULL; }
nn_gauss_head *vmbpo_qd_head(vmbpo_t *v) { return v->head; }
int vmbpo_model_dim(const vmbpo_t *v) { return v->Dm; }
int vmbpo_samples_per_real(const vmbpo_t *v) { return v->K; }

static void vmbpo_destroy(void *self) {
  vmbpo_t *v = self;
  if (!v) return;
  for (int i = 0; i < VMBPO_NET_COUNT; i++) {
    nn_mlp_ws_destroy(&v->ws[i]);
    nn_mlp_destroy(&v->net[i]);
  }
  nn_gauss_head_destroy(&v->head);
  nn_adam *opts[] = {v->opt_pi, v->opt_qc, v->opt_qd, v->opt_head, v->opt_nu, v->opt_q, v->opt_v};
  for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) nn_adam_destroy(&opts[i]);
  free(v->snapshot);
  free(v->scratch);
  free(v->iscratch);
  free(v);
}

static nn_adam *make_adam(size_t n, double lr, double weight_decay, const vmbpo_settings *c, ember_err *err) {
  nn_adam_config ac = nn_adam_default_config((float)lr);
  ac.beta1 = (float)c->adam_beta1;
  ac.beta2 = (float)c->adam_beta2;
  ac.epsilon = (float)c->adam_eps;
  ac.weight_decay = (float)weight_decay;
  return nn_adam_new(&ac, n, err);
}

static void add_region(vmbpo_t *v, const char *name, void *data, size_t bytes, bool in_estep) {
  /* MAX_REGIONS is sized for the fixed list in build_regions: overflowing it is a programmer error. */
  if (v->region_count >= MAX_REGIONS) abort();
  v->regions[v->region_count++] = (state_region){name, data, bytes, in_estep};
}

static void add_adam_regions(vmbpo_t *v, const char *name_step, const char *name_m, const char *name_v, nn_adam *a,
                             bool in_estep) {
  add_region(v, name_step, &a->step, sizeof a->step, in_estep);
  add_region(v, name_m, a->m, a->count * sizeof(float), in_estep);
  add_region(v, name_v, a->v, a->count * sizeof(float), in_estep);
}

/* The complete learner state, in the order save writes it. */
static int build_regions(vmbpo_t *v, ember_err *err) {
  static const char *const net_names[VMBPO_NET_COUNT] = {"pi", "pi_old", "q_c", "q_d", "nu",
                                                         "V",  "Q",      "V'",  "Q'"};
  for (int i = 0; i < VMBPO_NET_COUNT; i++)
    add_region(v, net_names[i], v->net[i]->params, v->net[i]->param_count * sizeof(float),
               i != VMBPO_NET_PI && i != VMBPO_NET_PI_OLD);
  add_region(v, "q_d bounds", v->head->params, v->head->param_count * sizeof(float), true);
  add_adam_regions(v, "adam pi step", "adam pi m", "adam pi v", v->opt_pi, false);
  add_adam_regions(v, "adam q_c step", "adam q_c m", "adam q_c v", v->opt_qc, true);
  add_adam_regions(v, "adam q_d step", "adam q_d m", "adam q_d v", v->opt_qd, true);
  add_adam_regions(v, "adam bounds step", "adam bounds m", "adam bounds v", v->opt_head, true);
  add_adam_regions(v, "adam nu step", "adam nu m", "adam nu v", v->opt_nu, true);
  add_adam_regions(v, "adam Q step", "adam Q m", "adam Q v", v->opt_q, true);
  add_adam_regions(v, "adam V step", "adam V m", "adam V v", v->opt_v, true);
  add_region(v, "rng", &v->rng, sizeof v->rng, true);
  add_region(v, "updates", &v->updates, sizeof v->updates, true);
  add_region(v, "mstep calls", &v->mstep_calls, sizeof v->mstep_calls, false);
  add_region(v, "msteps", &v->msteps, sizeof v->msteps, false);
  size_t total = 0;
  for (int i = 0; i < v->region_count; i++)
    if (v->regions[i].in_estep) total += v->regions[i].bytes;
  if (!(v->snapshot = malloc(total)))
    return ember_fail(err, EMBER_ENOMEM, "%s: out of memory for a %zu-byte update snapshot", v->algo_name, total);
  v->snapshot_bytes = total;
  return 0;
}

void vmbpo_snapshot_take(vmbpo_t *v) {
  unsigned char *p = v->snapshot;
  for (int i = 0; i < v->region_count; i++)
    if (v->regions[i].in_estep) {
      memcpy(p, v->regions[i].data, v->regions[i].bytes);
      p += v->regions[i].bytes;
    }
}

void vmbpo_snapshot_restore(vmbpo_t *v) {
  const unsigned char *p = v->snapshot;
  for (int i = 0; i < v->region_count; i++)
    if (v->regions[i].in_estep) {
      memcpy(v->regions[i].data, p, v->regions[i].bytes);
      p += v->regions[i].bytes;
    }
}

static int alloc_scratch(vmbpo_t *v, ember_err *err) {
  const size_t O = v->O, A = v->A, B = v->B, N = v->N, E = v->E, Dm = v->Dm, C = v->C, NB = N > B ? N : B;
  struct {
    float **slot;
    size_t floats;
  } bufs[] = {
      {&v->xa, (N + B) * (O + A)}, {&v->nu_in, (N + B) * (2 * O + A)}, {&v->obs_rep, N * O},
      {&v->next_rep, (N + B) * O},      {&v->target_d, B * Dm},             {&v->d_raw, N * E * 2 * Dm},
      {&v->head_grad, 2 * Dm},    {&v->model_draw, N * E * Dm},       {&v->eps_model, N * E * Dm},
      {&v->eps_a, N * A},         {&v->delta, B},                     {&v->w, B},
      {&v->r_model, N},           {&v->d_model, N},                   {&v->nu_s, N + B},
      {&v->vt_s, N + B},          {&v->y_q, N + B},                   {&v->y_v, N},
      {&v->d_out1, N + B},        {&v->log_qc, N},                    {&v->log_pi, N},
      {&v->q_min, NB},            {&v->d_q, (N + B) * C},             {&v->u_c, N * A},
      {&v->a_c, N * A},           {&v->mean_c, B * A},                {&v->lstd_c, B * A},
      {&v->mean_p, B * A},        {&v->lstd_p, B * A},                {&v->mean_o, B * A},
      {&v->lstd_o, B * A},        {&v->mean_rep, N * A},              {&v->lstd_rep, N * A},
      {&v->mean_rep2, N * A},     {&v->lstd_rep2, N * A},             {&v->d_mean_n, N * A},
      {&v->d_lstd_n, N * A},      {&v->d_mean, B * A},                {&v->d_lstd, B * A},
      {&v->d_action, B * A},      {&v->g_u, B * A},                   {&v->d_logp, B},
      {&v->kl, B},                {&v->d_head_out, B * 2 * A},        {&v->d_v, B},
  };
  size_t total = 0, n = sizeof bufs / sizeof *bufs;
  for (size_t i = 0; i < n; i++) total += bufs[i].floats;
  v->scratch = calloc(total, sizeof(float));
  v->iscratch = calloc(N + NB, sizeof(int));
  if (!v->scratch || !v->iscratch)
    return ember_fail(err, EMBER_ENOMEM, "%s: out of memory for %zu scratch floats", v->algo_name, total);
  float *p = v->scratch;
  for (size_t i = 0; i < n; i++) {
    *bufs[i].slot = p;
    p += bufs[i].floats;
  }
  v->member = v->iscratch;
  v->q_arg = v->iscratch + N;
  return 0;
}

static void *create_common(const algo_context *ctx, bool mfe, ember_err *err) {
  const char *name = mfe ? "vmbpo-mfe" : "vmbpo";
  const config_section *section = mfe ? &vmbpo_mfe_config_section : &vmbpo_config_section;
  vmbpo_settings defaults;
  const vmbpo_settings *c = ctx->settings;
  if (!c) {
    config_binding bind = {section, &defaults, NULL};
    if (config_defaults(&bind, 1, err) != 0) return NULL;
    c = &defaults;
  }
  if (ctx->obs_dim < 1 || ctx->act_dim < 1 || ctx->max_batch < 1) {
    ember_fail(err, EMBER_EINVAL, "%s: obs_dim %d, act_dim %d and max_batch %d must all be >= 1", name, ctx->obs_dim,
               ctx->act_dim, ctx->max_batch);
    return NULL;
  }
  if (!(c->log_std_min < c->log_std_max)) {
    ember_fail(err, EMBER_EINVAL, "%s.log_std_min %g must be below %s.log_std_max %g", section->name, c->log_std_min,
               section->name, c->log_std_max);
    return NULL;
  }
  if (c->gamma <= 0) {
    ember_fail(err, EMBER_EINVAL, "%s.gamma must be > 0 (step 1 divides by it), got %g", section->name, c->gamma);
    return NULL;
  }
  bool act_qc;
  if (strcmp(c->acting_policy, "pi") == 0)
    act_qc = false;
  else if (strcmp(c->acting_policy, "qc") == 0)
    act_qc = true;
  else {
    ember_fail(err, EMBER_EINVAL, "%s.acting_policy must be pi or qc, got '%s'", section->name, c->acting_policy);
    return NULL;
  }
  if ((double)ctx->max_batch * (double)c->model_samples_per_real > 1e7) {
    ember_fail(err, EMBER_EINVAL, "%s: max_batch %d x model_samples_per_real %lld model rows is too many",
               section->name, ctx->max_batch, (long long)c->model_samples_per_real);
    return NULL;
  }
  if (mfe && c->real_ratio != 0) {
    ember_fail(err, EMBER_EINVAL,
               "%s.real_ratio must be 0: VMBPO-MFE's critic is trained on real transitions only, got %g",
               section->name, c->real_ratio);
    return NULL;
  }
  if (mfe && c->critics != 1) {
    ember_fail(err, EMBER_EINVAL,
               "%s.critics must be 1: the exponential TD update of VMBPO-MFE is written for one critic, got %lld",
               section->name, (long long)c->critics);
    return NULL;
  }
  /* eq. 27's trust region: pi_old is pi at the start of each M-step, so the KL and its gradient are
   * zero at the first gradient step; a lambda that cannot act is refused rather than ignored. */
  if (c->lambda > 0 && c->pi_equals_qc) {
    ember_fail(err, EMBER_EINVAL,
               "%s.lambda %g has no effect while %s.pi_equals_qc is true (the M-step copies q_c into pi); set "
               "pi_equals_qc false or lambda 0",
               section->name, c->lambda, section->name);
    return NULL;
  }
  if (c->lambda > 0 && c->mstep_iters < 2) {
    ember_fail(err, EMBER_EINVAL,
               "%s.lambda %g has no effect with %s.mstep_iters 1: KL(pi_old || pi) and its gradient are zero at an "
               "M-step's first gradient step (pi_old is pi at its start); set mstep_iters 2 or more",
               section->name, c->lambda, section->name);
    return NULL;
  }
  bool norm_model;
  if (strcmp(c->qd_weight_norm, "model") == 0)
    norm_model = true;
  else if (strcmp(c->qd_weight_norm, "batch") == 0)
    norm_model = false;
  else {
    ember_fail(err, EMBER_EINVAL, "%s.qd_weight_norm must be model or batch, got '%s'", section->name,
               c->qd_weight_norm);
    return NULL;
  }
  nn_activation act;
  if (nn_activation_parse(c->activation, &act, err) != 0) {
    ember_err_prefix(err, "%s.activation: ", section->name);
    return NULL;
  }
  vmbpo_t *v = calloc(1, sizeof *v);
  if (!v) {
    ember_fail(err, EMBER_ENOMEM, "%s: out of memory", name);
    return NULL;
  }
  v->cfg = *c;
  v->mfe = mfe;
  v->algo_name = name;
  snprintf(v->task, sizeof v->task, "%s", ctx->task_name ? ctx->task_name : "");
  v->fns = ctx->task;
  v->O = ctx->obs_dim;
  v->A = ctx->act_dim;
  v->B = ctx->max_batch;
  v->K = (int)c->model_samples_per_real;
  v->N = v->B * v->K;
  v->E = (int)c->ensemble_size;
  v->C = (int)c->critics;
  v->learn_reward = ctx->task.reward_fn == NULL;
  v->Dm = v->O + (v->learn_reward ? 1 : 0);
  v->act_with_qc = act_qc;
  v->qd_norm_model = norm_model;
  v->eta = (float)c->eta;
  v->gamma = (float)c->gamma;
  v->lo = (float)c->log_std_min;
  v->hi = (float)c->log_std_max;
  v->nu_max = (float)c->nu_max;
  rng_seed(&v->rng, ctx->seed, RNG_STREAM_LEARNER);

  const int O = v->O, A = v->A, H = (int)c->hidden_size, L = (int)c->hidden_layers;
  nn_mlp_spec spec[VMBPO_NET_COUNT];
  const struct {
    int in, out, ens, model;
  } shape[VMBPO_NET_COUNT] = {
      [VMBPO_NET_PI] = {O, 2 * A, 1, 0},       [VMBPO_NET_PI_OLD] = {O, 2 * A, 1, 0},
      [VMBPO_NET_QC] = {O, 2 * A, 1, 0},       [VMBPO_NET_QD] = {O + A, 2 * v->Dm, v->E, 1},
      [VMBPO_NET_NU] = {2 * O + A, 1, 1, 0},   [VMBPO_NET_V] = {O, 1, 1, 0},
      [VMBPO_NET_Q] = {O + A, 1, v->C, 0},     [VMBPO_NET_V_TARGET] = {O, 1, 1, 0},
      [VMBPO_NET_Q_TARGET] = {O + A, 1, v->C, 0},
  };
  /* Rows each network's workspace must hold (module comment: N = B*K model rows). */
  const int rows[VMBPO_NET_COUNT] = {
      [VMBPO_NET_PI] = v->B,     [VMBPO_NET_PI_OLD] = v->B, [VMBPO_NET_QC] = v->B,
      [VMBPO_NET_QD] = v->N,     [VMBPO_NET_NU] = v->N + v->B, [VMBPO_NET_V] = v->B,
      [VMBPO_NET_Q] = v->N + v->B, [VMBPO_NET_V_TARGET] = v->N + v->B, [VMBPO_NET_Q_TARGET] = v->B,
  };
  for (int i = 0; i < VMBPO_NET_COUNT; i++) {
    int hl = shape[i].model ? (int)c->model_hidden_layers : L, hs = shape[i].model ? (int)c->model_hidden_size : H;
    spec[i] = (nn_mlp_spec){.input_dim = shape[i].in, .output_dim = shape[i].out, .hidden_count = hl,
                            .hidden_activation = act, .output_activation = NN_ACT_IDENTITY,
                            .ensemble_size = shape[i].ens};
    for (int l = 0; l < hl; l++) spec[i].hidden_dims[l] = hs;
    if (!(v->net[i] = nn_mlp_new(&spec[i], err)) || !(v->ws[i] = nn_mlp_ws_new(v->net[i], rows[i], err))) goto fail;
  }
  const vmbpo_net_id trained[] = {VMBPO_NET_PI, VMBPO_NET_QC, VMBPO_NET_QD, VMBPO_NET_NU, VMBPO_NET_V, VMBPO_NET_Q};
  for (size_t i = 0; i < sizeof trained / sizeof *trained; i++)
    nn_mlp_init(v->net[trained[i]], &v->rng, NN_INIT_FAN_IN_UNIFORM);
  /* q_c starts as pi (the E-step's q_c* is a twist of pi; with pi = q_c they must agree at first). */
  nn_mlp_copy_params(v->net[VMBPO_NET_QC], v->net[VMBPO_NET_PI]);
  nn_mlp_copy_params(v->net[VMBPO_NET_PI_OLD], v->net[VMBPO_NET_PI]);
  nn_mlp_copy_params(v->net[VMBPO_NET_V_TARGET], v->net[VMBPO_NET_V]);
  nn_mlp_copy_params(v->net[VMBPO_NET_Q_TARGET], v->net[VMBPO_NET_Q]);
  if (!(v->head = nn_gauss_head_new(v->Dm, v->E, err))) goto fail;
  if (!(v->opt_pi = make_adam(v->net[VMBPO_NET_PI]->param_count, c->pi_lr, 0, c, err)) ||
      !(v->opt_qc = make_adam(v->net[VMBPO_NET_QC]->param_count, c->qc_lr, 0, c, err)) ||
      !(v->opt_qd = make_adam(v->net[VMBPO_NET_QD]->param_count, c->qd_lr, c->model_weight_decay, c, err)) ||
      !(v->opt_head = make_adam(v->head->param_count, c->qd_lr, 0, c, err)) ||
      !(v->opt_nu = make_adam(v->net[VMBPO_NET_NU]->param_count, c->nu_lr, 0, c, err)) ||
      !(v->opt_q = make_adam(v->net[VMBPO_NET_Q]->param_count, c->q_lr, 0, c, err)) ||
      !(v->opt_v = make_adam(v->net[VMBPO_NET_V]->param_count, c->v_lr, 0, c, err)))
    goto fail;
  if (alloc_scratch(v, err) != 0 || build_regions(v, err) != 0) goto fail;
  return v;
fail:
  vmbpo_destroy(v);
  return NULL;
}

static void *vmbpo_create(const algo_context *ctx, ember_err *err) { return create_common(ctx, false, err); }
static void *mfe_create(const algo_context *ctx, ember_err *err) { return create_common(ctx, true, err); }

/* ---- batch checks ------------------------------------------------------------------------------- */

static int all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

int vmbpo_check_batch(const vmbpo_t *v, const algo_batch *b, ember_err *err) {
  if (!b || b->size < 1 || b->size > v->B)
    return ember_fail(err, EMBER_ESHAPE, "%s: batch of %d rows (expected 1..%d)", v->algo_name, b ? b->size : 0,
                      v->B);
  if (b->obs_dim != v->O || b->act_dim != v->A)
    return ember_fail(err, EMBER_ESHAPE, "%s: batch has obs_dim %d act_dim %d, the networks expect %d and %d",
                      v->algo_name, b->obs_dim, b->act_dim, v->O, v->A);
  if (!b->obs || !b->action || !b->reward || !b->next_obs || !b->terminated)
    return ember_fail(err, EMBER_EINVAL, "%s: batch is missing a column", v->algo_name);
  const size_t n = (size_t)b->size;
  const struct {
    const char *name;
    const float *x;
    size_t len;
  } cols[] = {{"obs", b->obs, n * v->O},           {"action", b->action, n * v->A},
              {"reward", b->reward, n},            {"next_obs", b->next_obs, n * v->O},
              {"terminated", b->terminated, n}};
  for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
    for (size_t i = 0; i < cols[c].len; i++)
      if (!isfinite(cols[c].x[i]))
        return ember_fail(err, EMBER_ENONFINITE, "%s: batch column %s has a non-finite value at index %zu",
                          v->algo_name, cols[c].name, i);
  return 0;
}

/* ---- acting ------------------------------------------------------------------------------------- */

static vmbpo_net_id acting_net(const vmbpo_t *v) { return v->act_with_qc ? VMBPO_NET_QC : VMBPO_NET_PI; }

static int act(void *self, const float *obs, int n, bool deterministic, float *actions, float *log_probs,
               ember_err *err) {
  vmbpo_t *v = self;
  const int A = v->A;
  if (n < 0 || !obs || !actions) return ember_fail(err, EMBER_EINVAL, "%s act: bad arguments (n = %d)", v->algo_name, n);
  if (!all_finite(obs, (size_t)n * v->O))
    return ember_fail(err, EMBER_ENONFINITE, "%s act: non-finite observation", v->algo_name);
  for (int start = 0; start < n; start += v->B) {
    int m = n - start < v->B ? n - start : v->B;
    if (deterministic)
      memset(v->eps_a, 0, (size_t)m * A * sizeof(float)); /* tanh(mu) */
    else
      rng_normal_fill(&v->rng, v->eps_a, m * A);
    vmbpo_policy_dist(v, acting_net(v), obs + (size_t)start * v->O, m, v->mean_c, v->lstd_c);
    nn_tanh_gaussian_sample(actions + (size_t)start * A, log_probs ? log_probs + start : NULL, v->mean_c, v->lstd_c,
                            v->eps_a, m, A);
  }
  return 0;
}

/* ---- export ------------------------------------------------------------------------------------- */

static int export_params(void *self, Ember__Params *out, ember_err *err) {
  vmbpo_t *v = self;
  return algo_export_policy(v->net[acting_net(v)], v->algo_name, v->task, v->O, v->A, v->lo, v->hi, out, err);
}

/* ---- save / load -------------------------------------------------------------------------------- */

/* A sequence of named checkpoint records (common/checkpoint.h): a header naming the algorithm and
 * the sizes, then every state region in build_regions' order. Native endianness: a learner's own
 * state, not an interchange format. */
#define VMBPO_FORMAT 1u
typedef struct {
  char algo[16];
  uint32_t version;
  int32_t obs_dim, act_dim, model_dim, ensemble, samples_per_real;
  uint64_t param_counts[VMBPO_NET_COUNT];
} vmbpo_file_header;

static void fill_header(const vmbpo_t *v, vmbpo_file_header *h) {
  memset(h, 0, sizeof *h);
  snprintf(h->algo, sizeof h->algo, "%s", v->algo_name);
  h->version = VMBPO_FORMAT;
  h->obs_dim = v->O;
  h->act_dim = v->A;
  h->model_dim = v->Dm;
  h->ensemble = v->E;
  h->samples_per_real = v->K;
  for (int i = 0; i < VMBPO_NET_COUNT; i++) h->param_counts[i] = v->net[i]->param_count;
}

static int save(void *self, FILE *out, ember_err *err) {
  vmbpo_t *v = self;
  vmbpo_file_header h;
  fill_header(v, &h);
  int rc = checkpoint_put(out, "vmbpo header", &h, sizeof h, err);
  for (int i = 0; !rc && i < v->region_count; i++)
    rc = checkpoint_put(out, v->regions[i].name, v->regions[i].data, v->regions[i].bytes, err);
  if (rc) ember_err_prefix(err, "%s save: ", v->algo_name);
  return rc;
}

static int load(void *self, FILE *in, ember_err *err) {
  vmbpo_t *v = self;
  vmbpo_file_header h, mine;
  fill_header(v, &mine);
  int rc = checkpoint_get(in, "vmbpo header", &h, sizeof h, err);
  if (rc) return ember_err_prefix(err, "%s load: ", v->algo_name);
  if (memcmp(h.algo, mine.algo, sizeof h.algo) != 0)
    return ember_fail(err, EMBER_ECORRUPT, "%s load: the state is from algorithm '%.15s'", v->algo_name, h.algo);
  if (h.version != VMBPO_FORMAT)
    return ember_fail(err, EMBER_ESCHEMA, "%s load: format %u, this build reads %u", v->algo_name, h.version,
                      VMBPO_FORMAT);
  if (memcmp(&h, &mine, sizeof h) != 0)
    return ember_fail(err, EMBER_ESHAPE,
                      "%s load: the state is for obs %d act %d model_dim %d ensemble %d K %d (or other layer sizes); "
                      "this instance has obs %d act %d model_dim %d ensemble %d K %d",
                      v->algo_name, h.obs_dim, h.act_dim, h.model_dim, h.ensemble, h.samples_per_real, v->O, v->A,
                      v->Dm, v->E, v->K);
  /* Read into the snapshot-sized scratch first would need another buffer the size of the state;
   * instead a failed load is reported and leaves a partly loaded instance, which the caller must
   * discard (the learner exits on a load failure). */
  for (int i = 0; i < v->region_count; i++)
    if ((rc = checkpoint_get(in, v->regions[i].name, v->regions[i].data, v->regions[i].bytes, err)) != 0)
      return ember_err_prefix(err, "%s load: ", v->algo_name);
  return 0;
}

const algo_ops algo_vmbpo = {
    .name = "vmbpo",
    .summary = "VMBPO: variational model-based EM (q_d, nu, Q, V, q_c E-step; pi M-step), Chow et al.",
    .settings = &vmbpo_config_section,
    .settings_size = sizeof(vmbpo_settings),
    .stat_names = vmbpo_stat_names,
    .create = vmbpo_create,
    .destroy = vmbpo_destroy,
    .e_step = vmbpo_e_step,
    .m_step = vmbpo_m_step,
    .act = act,
    .export_params = export_params,
    .save = save,
    .load = load,
    .priorities = NULL,
};

const algo_ops algo_vmbpo_mfe = {
    .name = "vmbpo-mfe",
    .summary = "VMBPO-MFE: the same EM with the model-free E-step (exponential TD critic), Chow et al.",
    .settings = &vmbpo_mfe_config_section,
    .settings_size = sizeof(vmbpo_settings),
    .stat_names = mfe_stat_names,
    .create = mfe_create,
    .destroy = vmbpo_destroy,
    .e_step = vmbpo_e_step,
    .m_step = vmbpo_m_step,
    .act = act,
    .export_params = export_params,
    .save = save,
    .load = load,
    .priorities = NULL,
};
/* algo_vmbpo.c: VMBPO and VMBPO-MFE behind algo_ops. See algo_vmbpo.h for the networks and the
 * sample layout, docs/algorithms.md ("VMBPO", "VMBPO-MFE", "VMBPO as implemented") for every loss
 * against the paper's equations and every reading ember takes.
 *
 * One e_step call = estep_iters rounds of
 *   VMBPO:     step 1 (q_d, eq. 19) -> step 2 (nu, eq. 21) -> step 3 (Q eq. 23, then V eq. 24)
 *              -> step 4 (q_c, eq. 25) -> Polyak V', Q'
 *   VMBPO-MFE: Q by exponential TD on real transitions (eq. 9 / 10) -> V (eq. 24, a ~ q_c at replay
 *              states) -> step 4 (q_c, eq. 25) -> Polyak V', Q'   [-> step 1 every mfe_model_every]
 * and one m_step call runs the M-step (eq. 27, or pi <- q_c) at every mstep_every-th call.
 *
 * Memory: every network, workspace, optimiser and scratch buffer is allocated in create for
 * B = ctx->max_batch real rows and N = B * K model rows; e_step, m_step and act never allocate.
 * Non-finite losses: e_step snapshots everything it changes (parameters, Adam moments, RNG) at its
 * start and restores it when any loss turns non-finite, so a failed update leaves no trace.
 */
#include "algo_vmbpo.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "nn_dist.h"
#include "nn_optim.h"
#include "rng.h"

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

/* CSV columns. VMBPO: e_step fills up to ST_MODEL_REWARD, m_step the last two. */
enum {
  ST_QD_LOSS, ST_WEIGHT_ESS, ST_WEIGHT_MAX, ST_NU_LOSS, ST_MODEL_KL, ST_NU_CLAMP, ST_Q_LOSS, ST_Q_MEAN,
  ST_TARGET_MEAN, ST_V_LOSS, ST_V_MEAN, ST_QC_LOSS, ST_QC_ENTROPY, ST_LOG_RATIO, ST_MODEL_REWARD, ST_PI_LOSS,
  ST_PI_KL, ST_COUNT
};
static const char *const vmbpo_stat_names[] = {
    "qd_loss", "weight_ess", "weight_max", "nu_loss", "model_kl", "nu_clamp_rate", "q_loss", "q_mean", "target_mean",
    "v_loss", "v_mean", "qc_loss", "qc_entropy", "log_qc_over_pi", "model_reward_mean", "pi_loss", "pi_kl", NULL};
/* VMBPO-MFE: its own columns (no nu, no model samples). */
enum {
  MS_Q_LOSS, MS_EXP_TD, MS_TD_CLAMP, MS_Q_MEAN, MS_V_LOSS, MS_V_MEAN, MS_QC_LOSS, MS_QC_ENTROPY, MS_LOG_RATIO,
  MS_QD_LOSS, MS_WEIGHT_ESS, MS_PI_LOSS, MS_PI_KL, MS_COUNT
};
static const char *const mfe_stat_names[] = {"q_pseudo_loss", "exp_td_mean", "td_clamp_rate", "q_mean", "v_loss",
                                             "v_mean", "qc_loss", "qc_entropy", "log_qc_over_pi", "qd_loss",
                                             "weight_ess", "pi_loss", "pi_kl", NULL};

/* ---- the instance ------------------------------------------------------------------------------ */

/* One piece of learner state: what save/load write and what e_step snapshots. */
typedef struct {
  const char *name;
  void *data;
  size_t bytes;
  bool in_estep; /* changed by e_step (so snapshotted for the non-finite rollback) */
} state_region;

#define MAX_REGIONS 48

struct vmbpo {
  vmbpo_settings cfg;
  bool mfe;
  const char *algo_name;
  char task[CONFIG_STRING_MAX];
  algo_task_fns fns;
  int O, A, B, K, N, E, Dm; /* obs, act, max batch, samples per real, B*K, members, model dim */
  int C;                    /* critics: members of Q and Q' */
  bool learn_reward;
  bool act_with_qc;
  bool qd_norm_model; /* step 1's normaliser per (x, a) from model samples (else over the batch) */
  int real_rows;      /* B real rows in step 3's critic rows (real_ratio > 0) or 0; set per batch */
  float eta, gamma, lo, hi, nu_max;

  nn_mlp *net[VMBPO_NET_COUNT];
  nn_mlp_ws *ws[VMBPO_NET_COUNT];
  nn_gauss_head *head;
  nn_adam *opt_pi, *opt_qc, *opt_qd, *opt_head, *opt_nu, *opt_q, *opt_v;

  rng_t rng;
  uint64_t updates, mstep_calls, msteps;

  state_region regions[MAX_REGIONS];
  int region_count;
  unsigned char *snapshot; /* in_estep regions, back to back */
  size_t snapshot_bytes;

  /* scratch; [rows, cols] with N = B*K model rows, B real rows */
  float *xa;          /* [N + B, O + A]: [x_i | a_ik], the input of q_d and Q (+ the real rows, step 3) */
  float *nu_in;       /* [N + B, 2O + A]: [x | a | dx] */
  float *obs_rep;     /* [N, O]: x_i tiled K times */
  float *next_rep;    /* [N + B, O]: model next states x^ (+ the real x', step 3) */
  float *target_d;    /* [B, Dm]: step 1's regression targets [x' - x | r] */
  float *d_raw;       /* [N, E * 2 Dm] */
  float *head_grad;   /* [2 Dm]: one row's bound gradients */
  float *model_draw;  /* [N, E * Dm]: every member's sample */
  float *eps_model;   /* [N, E * Dm] */
  int *member;        /* [N] */
  float *eps_a;       /* [N, A] */
  float *delta, *w;   /* [B] */
  float *r_model, *d_model, *nu_s, *vt_s, *y_q, *y_v, *d_out1; /* [N] (nu_s, vt_s, y_q, d_out1: [N + B]) */
  float *log_qc, *log_pi; /* [N] */
  float *q_min;           /* [max(N, B)]: the minimum over the critics */
  float *d_q;             /* [N + B, C]: dL/dQ per member */
  int *q_arg;             /* [max(N, B)]: which critic is the minimum */
  float *a_c;         /* [N, A] */
  float *u_c;         /* [N, A]: a_c before tanh; every density of a sampled action is taken at it */
  float *mean_c, *lstd_c, *mean_p, *lstd_p, *mean_o, *lstd_o; /* [B, A] */
  float *mean_rep, *lstd_rep, *mean_rep2, *lstd_rep2;         /* [N, A] */
  float *d_mean_n, *d_lstd_n;  /* [N, A] */
  float *d_mean, *d_lstd, *d_action, *g_u; /* [B, A] */
  float *d_logp, *kl;          /* [B] */
  float *d_head_out;           /* [B, 2A] */
  float *d_v;                  /* [B] */
  float *scratch;
  int *iscratch;
};

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

static void snapshot_take(vmbpo_t *v) {
  unsigned char *p = v->snapshot;
  for (int i = 0; i < v->region_count; i++)
    if (v->regions[i].in_estep) {
      memcpy(p, v->regions[i].data, v->regions[i].bytes);
      p += v->regions[i].bytes;
    }
}

static void snapshot_restore(vmbpo_t *v) {
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

/* ---- batch checks and small helpers ------------------------------------------------------------- */

static int all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

static int check_batch(const vmbpo_t *v, const algo_batch *b, ember_err *err) {
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

/* out [rows, O + A] = [x | a] */
static void concat2(float *out, const float *x, int dx, const float *a, int da, int rows) {
  for (int r = 0; r < rows; r++) {
    memcpy(out + (size_t)r * (dx + da), x + (size_t)r * dx, (size_t)dx * sizeof(float));
    memcpy(out + (size_t)r * (dx + da) + dx, a + (size_t)r * da, (size_t)da * sizeof(float));
  }
}

/* nu's input row: [x | a | x' - x] */
static void nu_row(float *out, const float *x, const float *a, const float *x_next, int O, int A) {
  memcpy(out, x, (size_t)O * sizeof(float));
  memcpy(out + O, a, (size_t)A * sizeof(float));
  for (int j = 0; j < O; j++) out[O + A + j] = x_next[j] - x[j];
}

/* dst [K * rows, cols] = src [rows, cols] repeated K times (k-major) */
static void tile(float *dst, const float *src, int rows, int cols, int K) {
  const size_t block = (size_t)rows * cols;
  for (int k = 0; k < K; k++) memcpy(dst + (size_t)k * block, src, block * sizeof(float));
}

/* out [rows] = min over the C critics of q [rows, C]; arg [rows] = the member that gives it. */
static const float *critic_min(const float *q, int rows, int C, float *out, int *arg) {
  if (C == 1) {
    for (int r = 0; r < rows; r++) arg[r] = 0;
    return q;
  }
  for (int r = 0; r < rows; r++) {
    const float *row = q + (size_t)r * C;
    int m = 0;
    for (int j = 1; j < C; j++)
      if (row[j] < row[m]) m = j;
    out[r] = row[m];
    arg[r] = m;
  }
  return out;
}

/* A policy network's (mean, log_std) at obs [rows, O]; returns the raw output (inside ws). */
static const float *policy_dist(vmbpo_t *v, vmbpo_net_id id, const float *obs, int rows, float *mean,
                                float *log_std) {
  const float *out = nn_mlp_forward(v->net[id], v->ws[id], obs, rows, NN_INPUT_SHARED);
  nn_policy_head_forward(mean, log_std, out, rows, v->A, v->lo, v->hi);
  return out;
}

/* ---- pure pieces ------------------------------------------------------------------------------- */

void vmbpo_step1_weights(const float *v_next, const float *q, const float *reward, const float *terminated, int n,
                         float eta, float gamma, float temperature, float *delta_out, float *w_out,
                         double *ess_fraction, double *w_max) {
  double dmax = -INFINITY;
  for (int i = 0; i < n; i++) {
    /* delta_i = (1 - d_i) V'(x'_i) - (Q'(x_i,a_i) - eta r_i) / gamma   (eq. 19, per-step reading) */
    double d = (1.0 - terminated[i]) * v_next[i] - ((double)q[i] - (double)eta * reward[i]) / gamma;
    if (delta_out) delta_out[i] = (float)d;
    d *= temperature;
    w_out[i] = (float)d;
    if (d > dmax) dmax = d;
  }
  double sum = 0;
  for (int i = 0; i < n; i++) sum += exp((double)w_out[i] - dmax);
  double sq = 0, wm = 0;
  for (int i = 0; i < n; i++) {
    double wi = n * exp((double)w_out[i] - dmax) / sum; /* w = B softmax(delta) */
    w_out[i] = (float)wi;
    sq += wi * wi;
    if (wi > wm) wm = wi;
  }
  if (ess_fraction) *ess_fraction = n / sq; /* ESS / B = (sum w)^2 / (B sum w^2) with sum w = B */
  if (w_max) *w_max = wm;
}

double vmbpo_nu_loss(const float *nu_model, int n_model, const float *nu_real, int n_real, float nu_max,
                     float *d_model, float *d_real, int *clamped) {
  /* L_nu = - mean_j nu(model_j) + mean_i exp(nu(real_i))   (eq. 21 negated, means; docs step 2) */
  double sum_model = 0, sum_real = 0;
  int nclamp = 0;
  for (int j = 0; j < n_model; j++) {
    float x = nu_model[j];
    bool c = x > nu_max || x < -nu_max;
    if (c) x = x > 0 ? nu_max : -nu_max;
    nclamp += c;
    sum_model += x;
    if (d_model) d_model[j] = c ? 0.0f : -1.0f / (float)n_model;
  }
  for (int i = 0; i < n_real; i++) {
    float x = nu_real[i];
    bool c = x > nu_max || x < -nu_max;
    if (c) x = x > 0 ? nu_max : -nu_max;
    nclamp += c;
    double e = exp((double)x);
    sum_real += e;
    if (d_real) d_real[i] = c ? 0.0f : (float)(e / n_real);
  }
  if (clamped) *clamped = nclamp;
  return -sum_model / n_model + sum_real / n_real;
}

double vmbpo_mfe_coefficient(float v_next, float q, float reward, float terminated, float eta, float gamma, float tau,
                             float clamp, double *coef, int *was_clamped) {
  double delta = (1.0 - terminated) * v_next - ((double)q - (double)eta * reward) / gamma;
  double z = tau * delta;
  int c = z > clamp;
  if (c) z = clamp;
  double e = exp(z);
  *coef = gamma * (1.0 - e) / tau;
  if (was_clamped) *was_clamped = c;
  return e;
}

static float clamp_nu(float x, float m) { return x > m ? m : (x < -m ? -m : x); }

/* ---- step 1: q_d by weighted maximum likelihood (eqs. 17-19) ------------------------------------- */

static void model_sample(vmbpo_t *v, const float *obs_rows, int rows, const float *eps, const int *member);

void vmbpo_step1_weights_model(const float *v_next, const float *terminated, const float *v_model,
                               const float *d_model, int n, int K, float temperature, float w_clip, float *delta_out,
                               float *w_out, double *ess_fraction, double *w_max) {
  const double log_clip = log((double)w_clip);
  double sum = 0, sq = 0, wm = 0;
  for (int i = 0; i < n; i++) {
    /* log Z_i = log mean_k exp(t (1 - d^_ik) V'(x^_ik)), x^_ik ~ q_d(.|x_i, a_i): eq. (9)'s
     * (Q'(x,a) - eta r) / gamma = log E_p[exp V'(x')] estimated with the model's samples */
    double zmax = -INFINITY;
    for (int k = 0; k < K; k++) {
      double z = (double)temperature * (1.0 - d_model[(size_t)k * n + i]) * v_model[(size_t)k * n + i];
      if (z > zmax) zmax = z;
    }
    double acc = 0;
    for (int k = 0; k < K; k++)
      acc += exp((double)temperature * (1.0 - d_model[(size_t)k * n + i]) * v_model[(size_t)k * n + i] - zmax);
    const double log_z = zmax + log(acc / K);
    const double d = (double)temperature * (1.0 - terminated[i]) * v_next[i] - log_z;
    if (delta_out) delta_out[i] = (float)d;
    const double wi = exp(d < log_clip ? d : log_clip);
    w_out[i] = (float)wi;
    sum += wi;
    sq += wi * wi;
    if (wi > wm) wm = wi;
  }
  if (ess_fraction) *ess_fraction = sq > 0 ? sum * sum / (n * sq) : 0; /* every weight underflowed: ESS 0 */
  if (w_max) *w_max = wm;
}

int vmbpo_qd_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_model, const int *member, double *loss_out,
                       double *ess, double *w_max, ember_err *err) {
  const int B = b->size, O = v->O, A = v->A, Dm = v->Dm, E = v->E;
  nn_mlp *qd = v->net[VMBPO_NET_QD];
  const float temp = (float)v->cfg.qd_weight_temperature;
  /* Weights from the targets (sg). V'(x'_i) first, kept in y_v (free scratch here). */
  const float *vt = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], b->next_obs, B,
                                   NN_INPUT_SHARED);
  memcpy(v->y_v, vt, (size_t)B * sizeof(float));
  if (v->qd_norm_model) {
    /* w_i = exp(t (1 - d_i) V'(x'_i) - log mean_k exp(t (1 - d^_ik) V'(x^_ik))), x^_ik ~ q_d(.|x_i, a_i)
     * (eq. 19 with its per-(x, a) normaliser from eq. 9 estimated by K model samples), clipped. */
    const int K = v->K, N = B * K;
    tile(v->obs_rep, b->obs, B, O, K);
    tile(v->a_c, b->action, B, A, K);
    concat2(v->xa, v->obs_rep, O, v->a_c, A, N);
    model_sample(v, v->obs_rep, N, eps_model, member);
    if (v->fns.terminated_fn)
      v->fns.terminated_fn(v->fns.task, v->next_rep, N, v->d_model);
    else
      memset(v->d_model, 0, (size_t)N * sizeof(float));
    const float *vm = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], v->next_rep, N,
                                     NN_INPUT_SHARED);
    vmbpo_step1_weights_model(v->y_v, b->terminated, vm, v->d_model, B, K, temp, (float)v->cfg.qd_weight_max,
                              v->delta, v->w, ess, w_max);
    concat2(v->xa, b->obs, O, b->action, A, B);
  } else {
    /* w = B softmax(t ((1 - d) V'(x') - (Q'(x,a) - eta r) / gamma)) over the batch */
    concat2(v->xa, b->obs, O, b->action, A, B);
    const float *qt = critic_min(nn_mlp_forward(v->net[VMBPO_NET_Q_TARGET], v->ws[VMBPO_NET_Q_TARGET], v->xa, B,
                                                NN_INPUT_SHARED),
                                 B, v->C, v->q_min, v->q_arg);
    vmbpo_step1_weights(v->y_v, qt, b->reward, b->terminated, B, v->eta, v->gamma, temp, v->delta, v->w, ess,
                        w_max);
  }

  /* L_d = - mean_i w_i log q_d([x'_i - x_i | r_i] | x_i, a_i) + penalty * sum(max_logvar - min_logvar)
   * (eq. 19 as a weighted NLL; every ensemble member gets the same weights). The head's NLL is a
   * batch mean, so each row is taken alone (batch 1) and scaled by w_i / B; the bound gradients of
   * that row go to head_grad first (the head's grads pointer is pointed there for the call). */
  for (int i = 0; i < B; i++) {
    for (int j = 0; j < O; j++) v->target_d[(size_t)i * Dm + j] = b->next_obs[(size_t)i * O + j] - b->obs[(size_t)i * O + j];
    if (v->learn_reward) v->target_d[(size_t)i * Dm + O] = b->reward[i];
  }
  const float *raw = nn_mlp_forward(qd, v->ws[VMBPO_NET_QD], v->xa, B, NN_INPUT_SHARED);
  const size_t row_out = (size_t)E * 2 * Dm;
  memset(v->d_raw, 0, (size_t)B * row_out * sizeof(float));
  nn_gauss_head_zero_grad(v->head);
  float *head_grads = v->head->grads;
  double loss = 0;
  for (int i = 0; i < B; i++) {
    memset(v->head_grad, 0, 2 * (size_t)Dm * sizeof(float));
    v->head->grads = v->head_grad;
    double nll = nn_gauss_head_nll(v->head, v->d_raw + i * row_out, raw + i * row_out, v->target_d + (size_t)i * Dm,
                                   NN_INPUT_SHARED, 1, 0.0f);
    v->head->grads = head_grads;
    const float s = v->w[i] / (float)B;
    loss += (double)v->w[i] * nll;
    for (size_t j = 0; j < row_out; j++) v->d_raw[i * row_out + j] *= s;
    for (int j = 0; j < 2 * Dm; j++) head_grads[j] += s * v->head_grad[j];
  }
  loss /= B;
  const float pen = (float)v->cfg.model_bound_penalty;
  for (int d = 0; d < Dm; d++) {
    loss += pen * ((double)v->head->params[d] - v->head->params[Dm + d]);
    head_grads[d] += pen;
    head_grads[Dm + d] -= pen;
  }
  nn_mlp_zero_grad(qd);
  nn_mlp_backward(qd, v->ws[VMBPO_NET_QD], v->d_raw, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: step 1 loss L_d of q_d (eq. 19) is non-finite (%g)", v->algo_name,
                      loss);
  return 0;
}

/* Draws model next states for rows [x | a] already in v->xa (rows of them): q_d forward, every
 * member sampled with eps (rows x E*Dm), member[r] picked. Writes next_rep [rows, O] = x + dx and,
 * when the reward is learned, r_model [rows] = the picked member's reward mean. */
static void model_sample(vmbpo_t *v, const float *obs_rows, int rows, const float *eps, const int *member) {
  const int O = v->O, Dm = v->Dm, E = v->E;
  const float *raw = nn_mlp_forward(v->net[VMBPO_NET_QD], v->ws[VMBPO_NET_QD], v->xa, rows, NN_INPUT_SHARED);
  nn_gauss_head_sample(v->head, v->model_draw, raw, eps, rows);
  for (int r = 0; r < rows; r++) {
    int e = member ? member[r] : 0;
    const float *s = v->model_draw + ((size_t)r * E + e) * Dm;
    for (int j = 0; j < O; j++) v->next_rep[(size_t)r * O + j] = obs_rows[(size_t)r * O + j] + s[j];
    /* The learned reward enters through its mean (docs/algorithms.md, reading 5). */
    if (v->learn_reward) v->r_model[r] = raw[((size_t)r * E + e) * 2 * Dm + O];
  }
}

/* ---- step 2: nu by the dual of the reverse KL (eqs. 20-21) --------------------------------------- */

int vmbpo_nu_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_model, const int *member, double *loss_out,
                       double *clamp_rate, ember_err *err) {
  const int B = b->size, K = v->K, O = v->O, A = v->A, N = B * K, W = 2 * O + A;
  /* x^_ik ~ q_d(.|x_i, a_i), no gradient into q_d: rows k*B + i of [x_i | a_i] */
  tile(v->obs_rep, b->obs, B, O, K);
  tile(v->a_c, b->action, B, A, K);
  concat2(v->xa, v->obs_rep, O, v->a_c, A, N);
  model_sample(v, v->obs_rep, N, eps_model, member);
  for (int r = 0; r < N; r++)
    nu_row(v->nu_in + (size_t)r * W, v->obs_rep + (size_t)r * O, v->a_c + (size_t)r * A, v->next_rep + (size_t)r * O,
           O, A);
  for (int i = 0; i < B; i++)
    nu_row(v->nu_in + (size_t)(N + i) * W, b->obs + (size_t)i * O, b->action + (size_t)i * A,
           b->next_obs + (size_t)i * O, O, A);
  /* L_nu = - mean_{i,k} nu(x_i, a_i, x^_ik) + mean_i exp(nu(x_i, a_i, x'_i))   (eq. 21, means) */
  nn_mlp *nu = v->net[VMBPO_NET_NU];
  const float *out = nn_mlp_forward(nu, v->ws[VMBPO_NET_NU], v->nu_in, N + B, NN_INPUT_SHARED);
  int clamped;
  double loss = vmbpo_nu_loss(out, N, out + N, B, v->nu_max, v->d_out1, v->d_out1 + N, &clamped);
  nn_mlp_zero_grad(nu);
  nn_mlp_backward(nu, v->ws[VMBPO_NET_NU], v->d_out1, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (clamp_rate) *clamp_rate = (double)clamped / (N + B);
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: step 2 loss L_nu (eq. 21) is non-finite (%g)", v->algo_name, loss);
  return 0;
}

/* ---- step 3: the critic on model samples (eqs. 22-24) -------------------------------------------- */

/* a_ik ~ q_c(.|x_i) with eps [N, A]: fills obs_rep, a_c, log_qc, log_pi, xa = [x_i | a_ik]. */
static void sample_qc_actions(vmbpo_t *v, const algo_batch *b, const float *eps_action) {
  const int B = b->size, K = v->K, O = v->O, A = v->A, N = B * K;
  tile(v->obs_rep, b->obs, B, O, K);
  policy_dist(v, VMBPO_NET_QC, b->obs, B, v->mean_c, v->lstd_c);
  tile(v->mean_rep, v->mean_c, B, A, K);
  tile(v->lstd_rep, v->lstd_c, B, A, K);
  nn_tanh_gaussian_sample(v->a_c, v->log_qc, v->mean_rep, v->lstd_rep, eps_action, N, A);
  nn_tanh_gaussian_pre_u(v->u_c, v->mean_rep, v->lstd_rep, eps_action, (size_t)N * A);
  policy_dist(v, VMBPO_NET_PI, b->obs, B, v->mean_p, v->lstd_p);
  tile(v->mean_rep2, v->mean_p, B, A, K);
  tile(v->lstd_rep2, v->lstd_p, B, A, K);
  nn_tanh_gaussian_log_prob_u(v->log_pi, v->u_c, v->mean_rep2, v->lstd_rep2, N, A);
  concat2(v->xa, v->obs_rep, O, v->a_c, A, N);
}

void vmbpo_critic_sample(vmbpo_t *v, const algo_batch *b, const float *eps_action, const float *eps_model,
                         const int *member) {
  const int B = b->size, K = v->K, O = v->O, A = v->A, N = B * K, W = 2 * O + A;
  sample_qc_actions(v, b, eps_action);
  /* x^_ik ~ q_d(.|x_i, a_ik); r^ from the task (or the learned mean), d^ from the task */
  model_sample(v, v->obs_rep, N, eps_model, member);
  if (!v->learn_reward) v->fns.reward_fn(v->fns.task, v->obs_rep, v->a_c, v->next_rep, N, v->r_model);
  if (v->fns.terminated_fn)
    v->fns.terminated_fn(v->fns.task, v->next_rep, N, v->d_model);
  else
    memset(v->d_model, 0, (size_t)N * sizeof(float));
  for (int r = 0; r < N; r++)
    nu_row(v->nu_in + (size_t)r * W, v->obs_rep + (size_t)r * O, v->a_c + (size_t)r * A, v->next_rep + (size_t)r * O,
           O, A);
  /* real rows (real_ratio > 0): (x_i, a_i) with their own x'_i, r_i and d_i, after the N model rows */
  const int R = v->cfg.real_ratio > 0 ? B : 0;
  v->real_rows = R;
  for (int i = 0; i < R; i++) {
    nu_row(v->nu_in + (size_t)(N + i) * W, b->obs + (size_t)i * O, b->action + (size_t)i * A,
           b->next_obs + (size_t)i * O, O, A);
    memcpy(v->next_rep + (size_t)(N + i) * O, b->next_obs + (size_t)i * O, (size_t)O * sizeof(float));
  }
  if (R) concat2(v->xa + (size_t)N * (O + A), b->obs, O, b->action, A, R);
  const float *nu = nn_mlp_forward(v->net[VMBPO_NET_NU], v->ws[VMBPO_NET_NU], v->nu_in, N + R, NN_INPUT_SHARED);
  const float *vt = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], v->next_rep, N + R,
                                   NN_INPUT_SHARED);
  /* y_Q = eta r^ + gamma ((1 - d^) V'(x^) - nu(x, a, x^))   (eq. 23; nu kept at terminal x^) */
  for (int r = 0; r < N + R; r++) {
    const float rew = r < N ? v->r_model[r] : b->reward[r - N], done = r < N ? v->d_model[r] : b->terminated[r - N];
    v->nu_s[r] = clamp_nu(nu[r], v->nu_max);
    v->vt_s[r] = vt[r];
    v->y_q[r] = v->eta * rew + v->gamma * ((1.0f - done) * vt[r] - v->nu_s[r]);
  }
}

int vmbpo_q_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss_out, ember_err *err) {
  const int N = b->size * v->K;
  nn_mlp *q = v->net[VMBPO_NET_Q];
  /* L_Q = mean_{i,k,m} (Q_m(x_i, a_ik) - sg(y_Q))^2   (eq. 23; every critic m regresses to the same y),
   * with real rows: (1 - rho) that + rho mean_{i,m} (Q_m(x_i, a_i) - sg(y_i))^2 */
  const int C = v->C, R = v->real_rows;
  const double rho = R ? v->cfg.real_ratio : 0.0;
  const float *qv = nn_mlp_forward(q, v->ws[VMBPO_NET_Q], v->xa, N + R, NN_INPUT_SHARED);
  double loss = 0;
  for (int r = 0; r < N + R; r++) {
    const double wr = r < N ? (1.0 - rho) / ((double)N * C) : rho / ((double)R * C);
    for (int m = 0; m < C; m++) {
      float d = qv[(size_t)r * C + m] - v->y_q[r];
      loss += wr * d * d;
      v->d_q[(size_t)r * C + m] = (float)(2.0 * wr * d);
    }
  }
  nn_mlp_zero_grad(q);
  nn_mlp_backward(q, v->ws[VMBPO_NET_Q], v->d_q, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: critic loss L_Q (eq. 23) is non-finite (%g)", v->algo_name, loss);
  return 0;
}

int vmbpo_v_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss_out, ember_err *err) {
  const int B = b->size, N = B * v->K;
  /* y_V = Q(x_i, a_ik) - log q_c(a_ik|x_i) + log pi(a_ik|x_i), with the current (updated) Q   (eq. 24) */
  const float *qv = critic_min(nn_mlp_forward(v->net[VMBPO_NET_Q], v->ws[VMBPO_NET_Q], v->xa, N, NN_INPUT_SHARED), N,
                               v->C, v->q_min, v->q_arg);
  for (int r = 0; r < N; r++) v->y_v[r] = qv[r] - v->log_qc[r] + v->log_pi[r];
  /* L_V = mean_{i,k} (V(x_i) - sg(y_V))^2;  dL/dV(x_i) = 2 sum_k (V(x_i) - y_ik) / N */
  nn_mlp *vn = v->net[VMBPO_NET_V];
  const float *vv = nn_mlp_forward(vn, v->ws[VMBPO_NET_V], b->obs, B, NN_INPUT_SHARED);
  double loss = 0;
  memset(v->d_v, 0, (size_t)B * sizeof(float));
  for (int r = 0; r < N; r++) {
    int i = r % B;
    float d = vv[i] - v->y_v[r];
    loss += (double)d * d;
    v->d_v[i] += 2.0f * d / (float)N;
  }
  loss /= N;
  nn_mlp_zero_grad(vn);
  nn_mlp_backward(vn, v->ws[VMBPO_NET_V], v->d_v, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: value loss L_V (eq. 24) is non-finite (%g)", v->algo_name, loss);
  return 0;
}

/* ---- step 4: q_c by the reparameterised reverse KL (eq. 25) -------------------------------------- */

int vmbpo_qc_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps, double *loss_out, ember_err *err) {
  const int B = b->size, O = v->O, A = v->A;
  const size_t BA = (size_t)B * A;
  nn_mlp *qc = v->net[VMBPO_NET_QC], *q = v->net[VMBPO_NET_Q];
  /* a_i = tanh(mu_c(x_i) + std_c(x_i) eps_i); log q_c(a_i|x_i) with the squash term */
  const float *qc_out = policy_dist(v, VMBPO_NET_QC, b->obs, B, v->mean_c, v->lstd_c);
  nn_tanh_gaussian_sample(v->a_c, v->log_qc, v->mean_c, v->lstd_c, eps, B, A);
  nn_tanh_gaussian_pre_u(v->u_c, v->mean_c, v->lstd_c, eps, BA);
  policy_dist(v, VMBPO_NET_PI, b->obs, B, v->mean_p, v->lstd_p);
  nn_tanh_gaussian_log_prob_u(v->log_pi, v->u_c, v->mean_p, v->lstd_p, B, A);
  concat2(v->xa, b->obs, O, v->a_c, A, B);
  const int C = v->C;
  const float *qv = critic_min(nn_mlp_forward(q, v->ws[VMBPO_NET_Q], v->xa, B, NN_INPUT_SHARED), B, C, v->q_min,
                               v->q_arg);
  /* L_c = mean_i [ log q_c(a_i|x_i) - Q(x_i, a_i) - log pi(a_i|x_i) ]   (eq. 25; Q = min over the critics) */
  double loss = 0;
  memset(v->d_q, 0, (size_t)B * C * sizeof(float));
  for (int i = 0; i < B; i++) {
    loss += (double)v->log_qc[i] - qv[i] - v->log_pi[i];
    v->d_q[(size_t)i * C + v->q_arg[i]] = -1.0f / (float)B; /* dL/dQ, to the row's smallest critic */
    v->d_out1[i] = -1.0f / (float)B;                         /* dL/dlog pi */
    v->d_logp[i] = 1.0f / (float)B;                          /* dL/dlog q_c */
  }
  loss /= B;
  /* Through the action: dL/da from -Q (Q's input gradient, Q's parameters untouched) ... */
  memset(v->d_action, 0, BA * sizeof(float));
  nn_mlp_backward_input_cols(q, v->ws[VMBPO_NET_Q], v->d_q, NN_PARAM_GRADS_SKIP, v->d_action, O, A);
  memset(v->d_mean, 0, BA * sizeof(float));
  memset(v->d_lstd, 0, BA * sizeof(float));
  /* ... + pen mean_i |mu_i|^2: with pi = q_c nothing else in eq. 25 opposes a mean that runs into
   * tanh's flat tails, where dQ/da no longer reaches it (docs/algorithms.md) ... */
  const double pen = v->cfg.qc_mean_penalty;
  if (pen > 0) {
    double sq = 0;
    for (size_t j = 0; j < BA; j++) {
      sq += (double)v->mean_c[j] * v->mean_c[j];
      v->d_mean[j] += (float)(2.0 * pen * v->mean_c[j] / B);
    }
    loss += pen * sq / B;
  }
  /* ... and from log q_c, both arguments (the sample path and the density's own parameters) ... */
  nn_tanh_gaussian_sample_backward(v->d_mean, v->d_lstd, v->d_action, v->d_logp, v->mean_c, v->lstd_c, eps, B, A);
  /* ... and from -log pi(a): pi fixed, the gradient reaches q_c through u = mu_c + std_c eps only
   * (dL/dlog pi = -1/B in d_out1). Its squash term cancels log q_c's. */
  memset(v->g_u, 0, BA * sizeof(float));
  nn_tanh_gaussian_log_prob_u_backward(NULL, NULL, v->g_u, v->d_out1, v->u_c, v->mean_p, v->lstd_p, B, A);
  nn_gaussian_sample_backward(v->d_mean, v->d_lstd, v->g_u, v->lstd_c, eps, B, A);
  memset(v->d_head_out, 0, 2 * BA * sizeof(float));
  nn_policy_head_backward(v->d_head_out, v->d_mean, v->d_lstd, qc_out, B, A, v->lo, v->hi);
  nn_mlp_zero_grad(qc);
  nn_mlp_backward(qc, v->ws[VMBPO_NET_QC], v->d_head_out, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: step 4 loss L_c of q_c (eq. 25) is non-finite (%g)",
                      v->algo_name, loss);
  return 0;
}

/* ---- M-step: pi by maximum likelihood of q_c's actions, KL trust region (eq. 27) ---------------- */

int vmbpo_pi_loss_grad(vmbpo_t *v, const algo_batch *b, const float *eps_action, double *loss_out, double *kl_out,
                       ember_err *err) {
  const int B = b->size, K = v->K, A = v->A, N = B * K;
  const size_t BA = (size_t)B * A;
  nn_mlp *pi = v->net[VMBPO_NET_PI];
  /* a_ik = tanh(u_ik) ~ q_c(.|x_i), no gradient; pi's likelihood is taken at u_ik */
  policy_dist(v, VMBPO_NET_QC, b->obs, B, v->mean_c, v->lstd_c);
  tile(v->mean_rep, v->mean_c, B, A, K);
  tile(v->lstd_rep, v->lstd_c, B, A, K);
  nn_tanh_gaussian_pre_u(v->u_c, v->mean_rep, v->lstd_rep, eps_action, (size_t)N * A);
  /* L_pi = - mean_{i,k} log pi(a_ik|x_i) + lambda mean_i KL(pi_old(.|x_i) || pi(.|x_i))   (eq. 27);
   * the KL of two tanh-Gaussians is the KL of their pre-tanh Gaussians (tanh is invertible). */
  const float *pi_out = policy_dist(v, VMBPO_NET_PI, b->obs, B, v->mean_p, v->lstd_p);
  tile(v->mean_rep2, v->mean_p, B, A, K);
  tile(v->lstd_rep2, v->lstd_p, B, A, K);
  nn_tanh_gaussian_log_prob_u(v->log_pi, v->u_c, v->mean_rep2, v->lstd_rep2, N, A);
  policy_dist(v, VMBPO_NET_PI_OLD, b->obs, B, v->mean_o, v->lstd_o);
  nn_gaussian_kl(v->kl, v->mean_o, v->lstd_o, v->mean_p, v->lstd_p, B, A);
  const float lambda = (float)v->cfg.lambda;
  double nll = 0, kl = 0;
  for (int r = 0; r < N; r++) {
    nll -= v->log_pi[r];
    v->d_out1[r] = -1.0f / (float)N;
  }
  for (int i = 0; i < B; i++) {
    kl += v->kl[i];
    v->d_logp[i] = lambda / (float)B;
  }
  nll /= N;
  kl /= B;
  const double loss = nll + lambda * kl;
  memset(v->d_mean_n, 0, (size_t)N * A * sizeof(float));
  memset(v->d_lstd_n, 0, (size_t)N * A * sizeof(float));
  nn_tanh_gaussian_log_prob_u_backward(v->d_mean_n, v->d_lstd_n, NULL, v->d_out1, v->u_c, v->mean_rep2, v->lstd_rep2,
                                       N, A);
  /* fold the K tiled copies back onto their state */
  memset(v->d_mean, 0, BA * sizeof(float));
  memset(v->d_lstd, 0, BA * sizeof(float));
  for (int k = 0; k < K; k++)
    for (size_t j = 0; j < BA; j++) {
      v->d_mean[j] += v->d_mean_n[(size_t)k * BA + j];
      v->d_lstd[j] += v->d_lstd_n[(size_t)k * BA + j];
    }
  if (lambda > 0)
    nn_gaussian_kl_backward(NULL, NULL, v->d_mean, v->d_lstd, v->d_logp, v->mean_o, v->lstd_o, v->mean_p, v->lstd_p,
                            B, A);
  memset(v->d_head_out, 0, 2 * BA * sizeof(float));
  nn_policy_head_backward(v->d_head_out, v->d_mean, v->d_lstd, pi_out, B, A, v->lo, v->hi);
  nn_mlp_zero_grad(pi);
  nn_mlp_backward(pi, v->ws[VMBPO_NET_PI], v->d_head_out, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (kl_out) *kl_out = kl;
  if (!isfinite(loss))
    return ember_fail(err, EMBER_ENONFINITE, "%s: M-step loss L_pi (eq. 27) is non-finite (%g)", v->algo_name,
                      loss);
  return 0;
}

/* ---- VMBPO-MFE's critic: exponential TD on real transitions ------------------------------------- */

void vmbpo_mfe_sample(vmbpo_t *v, const algo_batch *b, const float *eps_action) { sample_qc_actions(v, b, eps_action); }

int vmbpo_mfe_q_loss_grad(vmbpo_t *v, const algo_batch *b, double *loss_out, double *exp_td_mean, double *clamp_rate,
                          ember_err *err) {
  const int B = b->size, O = v->O, A = v->A;
  nn_mlp *q = v->net[VMBPO_NET_Q];
  const float *vt = nn_mlp_forward(v->net[VMBPO_NET_V_TARGET], v->ws[VMBPO_NET_V_TARGET], b->next_obs, B,
                                   NN_INPUT_SHARED);
  concat2(v->xa, b->obs, O, b->action, A, B);
  const float *qv = nn_mlp_forward(q, v->ws[VMBPO_NET_Q], v->xa, B, NN_INPUT_SHARED);
  /* L_Q^MFE = mean_i sg(gamma (1 - exp(tau delta_i)) / tau) Q(x_i, a_i),
   * delta_i = (1 - d_i) V'(x'_i) - (Q(x_i, a_i) - eta r_i) / gamma: its gradient step is the
   * exponential TD update of eq. (9) (docs/algorithms.md, VMBPO-MFE); tau enters in the exponent. */
  double loss = 0, e_sum = 0;
  int clamped = 0;
  for (int i = 0; i < B; i++) {
    double coef;
    int c;
    e_sum += vmbpo_mfe_coefficient(vt[i], qv[i], b->reward[i], b->terminated[i], v->eta, v->gamma,
                                   (float)v->cfg.mfe_tau, (float)v->cfg.mfe_clamp, &coef, &c);
    clamped += c;
    loss += coef * qv[i];
    v->d_out1[i] = (float)(coef / B);
  }
  loss /= B;
  nn_mlp_zero_grad(q);
  nn_mlp_backward(q, v->ws[VMBPO_NET_Q], v->d_out1, NN_PARAM_GRADS_ACCUMULATE, NULL);
  *loss_out = loss;
  if (exp_td_mean) *exp_td_mean = e_sum / B;
  if (clamp_rate) *clamp_rate = (double)clamped / B;
  if (!isfinite(loss) || !isfinite(e_sum))
    return ember_fail(err, EMBER_ENONFINITE, "%s: exponential-TD critic loss (eq. 9) is non-finite (%g)",
                      v->algo_name, loss);
  return 0;
}

/* ---- the update ---------------------------------------------------------------------------------- */

static int adam(vmbpo_t *v, nn_adam *opt, float *params, const float *grads, const char *what, ember_err *err) {
  int rc = nn_adam_step(opt, params, grads, NULL, err);
  if (rc) ember_err_prefix(err, "%s %s: ", v->algo_name, what);
  return rc;
}

static void draw_model_noise(vmbpo_t *v, int rows) {
  rng_normal_fill(&v->rng, v->eps_model, rows * v->E * v->Dm);
  for (int r = 0; r < rows; r++) v->member[r] = v->E > 1 ? (int)rng_below(&v->rng, (uint64_t)v->E) : 0;
}

static void stat(algo_stats *s, int i, double x, int count) {
  if (!s) return;
  if (s->count < count) s->count = count;
  s->values[i] = x;
}

static double mean_of(const float *x, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += x[i];
  return s / n;
}

/* Step 1 with its optimiser steps (q_d's network and its bounds). */
static int step1(vmbpo_t *v, const algo_batch *b, double *loss, double *ess, double *wmax, ember_err *err) {
  int rc;
  if (v->qd_norm_model) draw_model_noise(v, b->size * v->K);
  if ((rc = vmbpo_qd_loss_grad(v, b, v->eps_model, v->member, loss, ess, wmax, err)) != 0) return rc;
  if ((rc = adam(v, v->opt_qd, v->net[VMBPO_NET_QD]->params, v->net[VMBPO_NET_QD]->grads, "q_d", err)) != 0)
    return rc;
  return adam(v, v->opt_head, v->head->params, v->head->grads, "q_d bounds", err);
}

/* Steps 1-4 once (VMBPO). */
static int vmbpo_round(vmbpo_t *v, const algo_batch *b, algo_stats *st, ember_err *err) {
  const int B = b->size, N = B * v->K;
  double l1, ess, wmax, l2, crate, lq, lv, lc;
  int rc;
  if ((rc = step1(v, b, &l1, &ess, &wmax, err)) != 0) return rc;

  draw_model_noise(v, N);
  if ((rc = vmbpo_nu_loss_grad(v, b, v->eps_model, v->member, &l2, &crate, err)) != 0) return rc;
  if ((rc = adam(v, v->opt_nu, v->net[VMBPO_NET_NU]->params, v->net[VMBPO_NET_NU]->grads, "nu", err)) != 0)
    return rc;

  rng_normal_fill(&v->rng, v->eps_a, N * v->A);
  draw_model_noise(v, N);
  vmbpo_critic_sample(v, b, v->eps_a, v->eps_model, v->member);
  if ((rc = vmbpo_q_loss_grad(v, b, &lq, err)) != 0) return rc;
  const double q_mean = mean_of(v->ws[VMBPO_NET_Q]->activations[v->net[VMBPO_NET_Q]->layer_count - 1], N * v->C);
  if ((rc = adam(v, v->opt_q, v->net[VMBPO_NET_Q]->params, v->net[VMBPO_NET_Q]->grads, "Q", err)) != 0) return rc;
  if ((rc = vmbpo_v_loss_grad(v, b, &lv, err)) != 0) return rc;
  const double v_mean = mean_of(v->ws[VMBPO_NET_V]->activations[v->net[VMBPO_NET_V]->layer_count - 1], B);
  if ((rc = adam(v, v->opt_v, v->net[VMBPO_NET_V]->params, v->net[VMBPO_NET_V]->grads, "V", err)) != 0) return rc;
  double lq_sum = 0, ratio = 0;
  for (int r = 0; r < N; r++) ratio += (double)v->log_qc[r] - v->log_pi[r];
  lq_sum = mean_of(v->r_model, N);

  rng_normal_fill(&v->rng, v->eps_a, B * v->A);
  if ((rc = vmbpo_qc_loss_grad(v, b, v->eps_a, &lc, err)) != 0) return rc;
  const double entropy = -mean_of(v->log_qc, B);
  if ((rc = adam(v, v->opt_qc, v->net[VMBPO_NET_QC]->params, v->net[VMBPO_NET_QC]->grads, "q_c", err)) != 0)
    return rc;

  const int C = ST_COUNT;
  stat(st, ST_QD_LOSS, l1, C);
  stat(st, ST_WEIGHT_ESS, ess, C);
  stat(st, ST_WEIGHT_MAX, wmax, C);
  stat(st, ST_NU_LOSS, l2, C);
  stat(st, ST_MODEL_KL, 1.0 - l2, C);
  stat(st, ST_NU_CLAMP, crate, C);
  stat(st, ST_Q_LOSS, lq, C);
  stat(st, ST_Q_MEAN, q_mean, C);
  stat(st, ST_TARGET_MEAN, mean_of(v->y_q, N), C);
  stat(st, ST_V_LOSS, lv, C);
  stat(st, ST_V_MEAN, v_mean, C);
  stat(st, ST_QC_LOSS, lc, C);
  stat(st, ST_QC_ENTROPY, entropy, C);
  stat(st, ST_LOG_RATIO, ratio / N, C);
  stat(st, ST_MODEL_REWARD, lq_sum, C);
  return 0;
}

/* The model-free E-step once (VMBPO-MFE). */
static int mfe_round(vmbpo_t *v, const algo_batch *b, algo_stats *st, ember_err *err) {
  const int B = b->size, N = B * v->K;
  double lq, etd, crate, lv, lc;
  int rc;
  if ((rc = vmbpo_mfe_q_loss_grad(v, b, &lq, &etd, &crate, err)) != 0) return rc;
  const double q_mean = mean_of(v->ws[VMBPO_NET_Q]->activations[v->net[VMBPO_NET_Q]->layer_count - 1], B);
  if ((rc = adam(v, v->opt_q, v->net[VMBPO_NET_Q]->params, v->net[VMBPO_NET_Q]->grads, "Q", err)) != 0) return rc;

  rng_normal_fill(&v->rng, v->eps_a, N * v->A);
  vmbpo_mfe_sample(v, b, v->eps_a);
  if ((rc = vmbpo_v_loss_grad(v, b, &lv, err)) != 0) return rc;
  const double v_mean = mean_of(v->ws[VMBPO_NET_V]->activations[v->net[VMBPO_NET_V]->layer_count - 1], B);
  if ((rc = adam(v, v->opt_v, v->net[VMBPO_NET_V]->params, v->net[VMBPO_NET_V]->grads, "V", err)) != 0) return rc;
  double ratio = 0;
  for (int r = 0; r < N; r++) ratio += (double)v->log_qc[r] - v->log_pi[r];

  rng_normal_fill(&v->rng, v->eps_a, B * v->A);
  if ((rc = vmbpo_qc_loss_grad(v, b, v->eps_a, &lc, err)) != 0) return rc;
  const double entropy = -mean_of(v->log_qc, B);
  if ((rc = adam(v, v->opt_qc, v->net[VMBPO_NET_QC]->params, v->net[VMBPO_NET_QC]->grads, "q_c", err)) != 0)
    return rc;

  /* q_d "computed only at the end" (section 4.2): optionally fitted alongside, never used here. */
  if (v->cfg.mfe_model_every > 0 && (v->updates + 1) % (uint64_t)v->cfg.mfe_model_every == 0) {
    double l1, ess, wmax;
    if ((rc = step1(v, b, &l1, &ess, &wmax, err)) != 0) return rc;
    stat(st, MS_QD_LOSS, l1, MS_COUNT);
    stat(st, MS_WEIGHT_ESS, ess, MS_COUNT);
  }
  const int C = MS_COUNT;
  stat(st, MS_Q_LOSS, lq, C);
  stat(st, MS_EXP_TD, etd, C);
  stat(st, MS_TD_CLAMP, crate, C);
  stat(st, MS_Q_MEAN, q_mean, C);
  stat(st, MS_V_LOSS, lv, C);
  stat(st, MS_V_MEAN, v_mean, C);
  stat(st, MS_QC_LOSS, lc, C);
  stat(st, MS_QC_ENTROPY, entropy, C);
  stat(st, MS_LOG_RATIO, ratio / N, C);
  return 0;
}

static int e_step(void *self, const algo_batch *b, algo_stats *st, ember_err *err) {
  vmbpo_t *v = self;
  int rc = check_batch(v, b, err);
  if (rc) return rc;
  snapshot_take(v);
  for (int it = 0; it < (int)v->cfg.estep_iters; it++) {
    rc = v->mfe ? mfe_round(v, b, st, err) : vmbpo_round(v, b, st, err);
    if (rc) {
      snapshot_restore(v); /* a failed update leaves no trace (algo.h) */
      return rc;
    }
    /* V' <- (1 - tau_p) V' + tau_p V,  Q' <- (1 - tau_p) Q' + tau_p Q */
    nn_mlp_polyak_update(v->net[VMBPO_NET_V_TARGET], v->net[VMBPO_NET_V], (float)v->cfg.polyak);
    nn_mlp_polyak_update(v->net[VMBPO_NET_Q_TARGET], v->net[VMBPO_NET_Q], (float)v->cfg.polyak);
  }
  v->updates++;
  return 0;
}

static int m_step(void *self, const algo_batch *b, algo_stats *st, ember_err *err) {
  vmbpo_t *v = self;
  int rc = check_batch(v, b, err);
  if (rc) return rc;
  const int pi_loss_col = v->mfe ? MS_PI_LOSS : ST_PI_LOSS, kl_col = v->mfe ? MS_PI_KL : ST_PI_KL;
  const int count = v->mfe ? MS_COUNT : ST_COUNT;
  v->mstep_calls++;
  if (v->mstep_calls % (uint64_t)v->cfg.mstep_every != 0) return 0;
  nn_mlp *pi = v->net[VMBPO_NET_PI];
  if (v->cfg.pi_equals_qc) {
    /* pi <- q_c: the paper's experimental M-step (eq. 27 with lambda = 0 solved exactly) */
    nn_mlp_copy_params(pi, v->net[VMBPO_NET_QC]);
    v->msteps++;
    stat(st, pi_loss_col, 0.0, count);
    stat(st, kl_col, 0.0, count);
    return 0;
  }
  nn_mlp_copy_params(v->net[VMBPO_NET_PI_OLD], pi);
  /* Keep pi, its moments and the RNG to undo a non-finite step (the same promise as e_step). */
  rng_t rng_keep = v->rng;
  double loss = 0, kl = 0;
  for (int it = 0; it < (int)v->cfg.mstep_iters; it++) {
    rng_normal_fill(&v->rng, v->eps_a, b->size * v->K * v->A);
    if ((rc = vmbpo_pi_loss_grad(v, b, v->eps_a, &loss, &kl, err)) != 0 ||
        (rc = adam(v, v->opt_pi, pi->params, pi->grads, "pi", err)) != 0) {
      /* Parameters back to pi_old (its copy at the start of this M-step); the Adam moments of the
       * steps taken inside this M-step stay (at most mstep_iters - 1 finite steps). */
      nn_mlp_copy_params(pi, v->net[VMBPO_NET_PI_OLD]);
      v->rng = rng_keep;
      return rc;
    }
  }
  v->msteps++;
  stat(st, pi_loss_col, loss, count);
  stat(st, kl_col, kl, count);
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
    policy_dist(v, acting_net(v), obs + (size_t)start * v->O, m, v->mean_c, v->lstd_c);
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
    .e_step = e_step,
    .m_step = m_step,
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
    .e_step = e_step,
    .m_step = m_step,
    .act = act,
    .export_params = export_params,
    .save = save,
    .load = load,
    .priorities = NULL,
};

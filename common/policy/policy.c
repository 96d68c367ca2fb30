/* policy.c: the tanh-Gaussian MLP acting policy built from Params (see policy.h). */
#include "policy.h"

#include "nn_dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_TASK_MAX 128
/* Widest layer accepted from the wire: refuses absurd shapes before anything is allocated. */
#define POLICY_MAX_WIDTH 65536


struct policy {
  char task[POLICY_TASK_MAX];
  int obs_dim, act_dim, max_batch;
  uint64_t version;
  float log_std_min, log_std_max;
  nn_mlp *net;
  nn_mlp_ws *ws;
  /* [max_batch, act_dim] each: one act call's noise and the policy head's split of the output */
  float *eps, *mean, *log_std;
  float *arena; /* the one allocation behind eps, mean and log_std */
};

/* What validation learns from a Params: where each layer's tensors are and the layer sizes. */
typedef struct {
  int layer_count;
  int dims[NN_MAX_LAYERS + 1];
  const Ember__Tensor *w[NN_MAX_LAYERS];
  const Ember__Tensor *b[NN_MAX_LAYERS];
  nn_activation activation;
} params_layout;

/* ---- validation ---------------------------------------------------------------------------- */

/* "[256, 17]" into buf. */
static const char *shape_text(const Ember__Tensor *t, char *buf, size_t cap) {
  size_t used = (size_t)snprintf(buf, cap, "[");
  for (size_t i = 0; i < t->n_shape && used < cap; i++) {
    if (i == 4 && t->n_shape > 5) {
      used += (size_t)snprintf(buf + used, cap - used, ", ...");
      break;
    }
    used += (size_t)snprintf(buf + used, cap - used, "%s%u", i ? ", " : "", t->shape[i]);
  }
  if (used < cap) snprintf(buf + used, cap - used, "]");
  return buf;
}

/* Parses "pi/l<k>/w" or "pi/l<k>/b". Returns 1 (parsed), 0 (not a pi/ tensor) or -1 (a pi/ name
 * of no known form). */
static int parse_tensor_name(const char *name, int *layer, char *which) {
  if (!name || strncmp(name, "pi/", 3) != 0) return 0;
  const char *p = name + 3;
  if (*p++ != 'l') return -1;
  if (*p < '0' || *p > '9') return -1;
  if (*p == '0' && p[1] >= '0' && p[1] <= '9') return -1; /* no leading zeros: one name per layer */
  int k = 0;
  while (*p >= '0' && *p <= '9') {
    k = k * 10 + (*p - '0');
    if (k > 1000) return -1;
    p++;
  }
  if (*p++ != '/') return -1;
  if ((*p != 'w' && *p != 'b') || p[1] != '\0') return -1;
  *layer = k;
  *which = *p;
  return 1;
}

static int check_finite(const Ember__Tensor *t, ember_err *err) {
  for (size_t i = 0; i < t->n_data; i++) {
    if (!isfinite(t->data[i]))
      return ember_fail(err, EMBER_ENONFINITE, "Params tensor %s has a non-finite value (%g) at index %zu",
                        t->name, (double)t->data[i], i);
  }
  return EMBER_OK;
}

static int check_header(const Ember__Params *p, const policy_config *cfg, ember_err *err) {
  const char *kind = p->policy_kind ? p->policy_kind : "";
  if (strcmp(kind, POLICY_KIND_TANH_GAUSSIAN_MLP) != 0)
    return ember_fail(err, EMBER_EINVAL, "Params policy_kind is '%s', expected '%s'", kind,
                      POLICY_KIND_TANH_GAUSSIAN_MLP);
  const char *task = p->task ? p->task : "";
  if (cfg->task && cfg->task[0] && strcmp(task, cfg->task) != 0)
    return ember_fail(err, EMBER_EINVAL, "Params are for task '%s', this policy is for '%s'", task, cfg->task);
  if ((int64_t)p->obs_dim != cfg->obs_dim || (int64_t)p->act_dim != cfg->act_dim)
    return ember_fail(err, EMBER_ESHAPE, "Params have obs_dim %u, act_dim %u; expected obs_dim %d, act_dim %d",
                      p->obs_dim, p->act_dim, cfg->obs_dim, cfg->act_dim);
  if (!isfinite(p->log_std_min) || !isfinite(p->log_std_max) || !(p->log_std_min < p->log_std_max))
    return ember_fail(err, EMBER_EINVAL,
                      "Params log-std bounds [%g, %g] are not finite with log_std_min < log_std_max",
                      (double)p->log_std_min, (double)p->log_std_max);
  return EMBER_OK;
}

/* Finds the pi/ tensors and checks that they form contiguous layers with both w and b. */
static int collect_layers(const Ember__Params *p, params_layout *lay, ember_err *err) {
  memset(lay->w, 0, sizeof lay->w);
  memset(lay->b, 0, sizeof lay->b);
  int highest = -1;
  for (size_t i = 0; i < p->n_tensors; i++) {
    const Ember__Tensor *t = p->tensors[i];
    if (!t) return ember_fail(err, EMBER_EDECODE, "Params tensor %zu is missing", i);
    int k = 0;
    char which = 0;
    int parsed = parse_tensor_name(t->name, &k, &which);
    if (parsed == 0) continue;
    if (parsed < 0)
      return ember_fail(err, EMBER_EINVAL, "Params tensor name '%s' is not of the form pi/l<k>/w or pi/l<k>/b",
                        t->name);
    if (k >= NN_MAX_LAYERS)
      return ember_fail(err, EMBER_ESHAPE, "Params tensor %s: at most %d policy layers are supported", t->name,
                        NN_MAX_LAYERS);
    const Ember__Tensor **slot = which == 'w' ? &lay->w[k] : &lay->b[k];
    if (*slot) return ember_fail(err, EMBER_ESHAPE, "Params tensor %s appears twice", t->name);
    *slot = t;
    if (k > highest) highest = k;
  }
  if (highest < 0) return ember_fail(err, EMBER_ESHAPE, "Params have no pi/ tensors (expected pi/l0/w, pi/l0/b, ...)");
  for (int k = 0; k <= highest; k++) {
    if (!lay->w[k]) return ember_fail(err, EMBER_ESHAPE, "Params tensor pi/l%d/w is missing (layers go up to %d)", k, highest);
    if (!lay->b[k]) return ember_fail(err, EMBER_ESHAPE, "Params tensor pi/l%d/b is missing (layers go up to %d)", k, highest);
  }
  lay->layer_count = highest + 1;
  return EMBER_OK;
}

/* Shapes chain obs_dim -> hidden... -> 2 act_dim, data lengths match, values finite. */
static int check_shapes(const params_layout *in, int obs_dim, int act_dim, params_layout *lay, ember_err *err) {
  char got[96];
  int L = in->layer_count;
  lay->dims[0] = obs_dim;
  for (int k = 0; k < L; k++) {
    const Ember__Tensor *w = in->w[k], *b = in->b[k];
    int last = k == L - 1;
    if (w->n_shape != 2 || w->shape[1] != (uint32_t)lay->dims[k] ||
        (last && w->shape[0] != (uint32_t)(2 * act_dim)) || w->shape[0] == 0 || w->shape[0] > POLICY_MAX_WIDTH) {
      if (last)
        return ember_fail(err, EMBER_ESHAPE, "Params tensor %s has shape %s, expected [%d, %d] (2 x act_dim, %s)",
                          w->name, shape_text(w, got, sizeof got), 2 * act_dim, lay->dims[k],
                          k == 0 ? "obs_dim" : "the previous layer's outputs");
      return ember_fail(err, EMBER_ESHAPE, "Params tensor %s has shape %s, expected [n, %d] (n in 1..%d; %d = %s)",
                        w->name, shape_text(w, got, sizeof got), lay->dims[k], POLICY_MAX_WIDTH, lay->dims[k],
                        k == 0 ? "obs_dim" : "the previous layer's outputs");
    }
    lay->dims[k + 1] = (int)w->shape[0];
    if (b->n_shape != 1 || b->shape[0] != w->shape[0])
      return ember_fail(err, EMBER_ESHAPE, "Params tensor %s has shape %s, expected [%u] (the rows of %s)", b->name,
                        shape_text(b, got, sizeof got), w->shape[0], w->name);
    size_t wn = (size_t)w->shape[0] * w->shape[1];
    if (w->n_data != wn)
      return ember_fail(err, EMBER_ESHAPE, "Params tensor %s has %zu values, its shape %s needs %zu", w->name,
                        w->n_data, shape_text(w, got, sizeof got), wn);
    if (b->n_data != b->shape[0])
      return ember_fail(err, EMBER_ESHAPE, "Params tensor %s has %zu values, its shape %s needs %u", b->name,
                        b->n_data, shape_text(b, got, sizeof got), b->shape[0]);
    int rc = check_finite(w, err);
    if (rc == EMBER_OK) rc = check_finite(b, err);
    if (rc) return rc;
    lay->w[k] = w;
    lay->b[k] = b;
  }
  lay->layer_count = L;
  return EMBER_OK;
}

static int layout_from_params(const Ember__Params *p, const policy_config *cfg, params_layout *lay, ember_err *err) {
  if (!p) return ember_fail(err, EMBER_EINVAL, "no Params given");
  int rc = check_header(p, cfg, err);
  if (rc) return rc;
  const char *act_name = p->policy_activation ? p->policy_activation : "";
  rc = nn_activation_parse(act_name, &lay->activation, err);
  if (rc) return ember_err_prefix(err, "Params policy_activation: ");
  params_layout found = {.layer_count = 0};
  rc = collect_layers(p, &found, err);
  if (rc) return rc;
  return check_shapes(&found, cfg->obs_dim, cfg->act_dim, lay, err);
}

static int check_config(const policy_config *cfg, ember_err *err) {
  if (!cfg) return ember_fail(err, EMBER_EINVAL, "no policy_config given");
  if (cfg->obs_dim <= 0 || cfg->act_dim <= 0 || cfg->max_batch <= 0)
    return ember_fail(err, EMBER_EINVAL, "policy_config needs obs_dim, act_dim and max_batch > 0 (got %d, %d, %d)",
                      cfg->obs_dim, cfg->act_dim, cfg->max_batch);
  if (cfg->task && strlen(cfg->task) >= POLICY_TASK_MAX)
    return ember_fail(err, EMBER_EINVAL, "policy_config task name is longer than %d bytes", POLICY_TASK_MAX - 1);
  return EMBER_OK;
}

int policy_check_params(const Ember__Params *params, const policy_config *cfg, ember_err *err) {
  int rc = check_config(cfg, err);
  if (rc) return rc;
  params_layout lay;
  return layout_from_params(params, cfg, &lay, err);
}

/* ---- building and updating ----------------------------------------------------------------- */

static void copy_weights(policy_t *pol, const Ember__Params *p, const params_layout *lay) {
  for (int k = 0; k < lay->layer_count; k++) {
    memcpy(nn_mlp_weight(pol->net, k, 0), lay->w[k]->data, lay->w[k]->n_data * sizeof(float));
    memcpy(nn_mlp_bias(pol->net, k, 0), lay->b[k]->data, lay->b[k]->n_data * sizeof(float));
  }
  pol->version = p->version;
  pol->log_std_min = p->log_std_min;
  pol->log_std_max = p->log_std_max;
}

policy_t *policy_new(const Ember__Params *params, const policy_config *cfg, ember_err *err) {
  if (check_config(cfg, err)) return NULL;
  params_layout lay;
  if (layout_from_params(params, cfg, &lay, err)) return NULL;

  policy_t *pol = calloc(1, sizeof *pol);
  if (!pol) {
    ember_fail(err, EMBER_ENOMEM, "policy: out of memory");
    return NULL;
  }
  /* The policy is for the task the caller asked for, or the Params' own when it accepts any. */
  const char *task = cfg->task && cfg->task[0] ? cfg->task : (params->task ? params->task : "");
  snprintf(pol->task, sizeof pol->task, "%s", task);
  pol->obs_dim = cfg->obs_dim;
  pol->act_dim = cfg->act_dim;
  pol->max_batch = cfg->max_batch;

  nn_mlp_spec spec = {0};
  spec.input_dim = cfg->obs_dim;
  spec.output_dim = 2 * cfg->act_dim;
  spec.hidden_count = lay.layer_count - 1;
  for (int k = 0; k < spec.hidden_count; k++) spec.hidden_dims[k] = lay.dims[k + 1];
  spec.hidden_activation = lay.activation;
  spec.output_activation = NN_ACT_IDENTITY;
  spec.ensemble_size = 1;
  pol->net = nn_mlp_new(&spec, err);
  if (pol->net) pol->ws = nn_mlp_ws_new(pol->net, cfg->max_batch, err);
  if (pol->ws) {
    size_t n = (size_t)cfg->max_batch * (size_t)cfg->act_dim;
    pol->arena = calloc(3 * n, sizeof *pol->arena);
    if (!pol->arena) ember_fail(err, EMBER_ENOMEM, "policy: out of memory for %d x %d scratch", cfg->max_batch, cfg->act_dim);
    else {
      pol->eps = pol->arena;
      pol->mean = pol->arena + n;
      pol->log_std = pol->arena + 2 * n;
    }
  }
  if (!pol->arena) {
    policy_destroy(&pol);
    return NULL;
  }
  copy_weights(pol, params, &lay);
  return pol;
}

void policy_destroy(policy_t **pol_p) {
  if (!pol_p || !*pol_p) return;
  policy_t *pol = *pol_p;
  nn_mlp_ws_destroy(&pol->ws);
  nn_mlp_destroy(&pol->net);
  free(pol->arena);
  free(pol);
  *pol_p = NULL;
}

int policy_update(policy_t *pol, const Ember__Params *params, ember_err *err) {
  policy_config cfg = {pol->task, pol->obs_dim, pol->act_dim, pol->max_batch};
  params_layout lay;
  int rc = layout_from_params(params, &cfg, &lay, err);
  if (rc) return rc;
  const nn_mlp *net = pol->net;
  if (lay.activation != net->spec.hidden_activation)
    return ember_fail(err, EMBER_ESHAPE, "Params policy_activation is '%s', this policy uses '%s'",
                      nn_activation_name(lay.activation), nn_activation_name(net->spec.hidden_activation));
  if (lay.layer_count != net->layer_count)
    return ember_fail(err, EMBER_ESHAPE, "Params have %d policy layers, this policy has %d", lay.layer_count,
                      net->layer_count);
  for (int k = 0; k < lay.layer_count; k++) {
    if (lay.dims[k + 1] != net->dims[k + 1]) {
      char got[96];
      return ember_fail(err, EMBER_ESHAPE, "Params tensor %s has shape %s, this policy has [%d, %d]", lay.w[k]->name,
                        shape_text(lay.w[k], got, sizeof got), net->dims[k + 1], net->dims[k]);
    }
  }
  copy_weights(pol, params, &lay);
  return EMBER_OK;
}

/* ---- acting -------------------------------------------------------------------------------- */

int policy_act(policy_t *pol, const float *obs, int n, bool deterministic, rng_t *rng, float *actions,
               float *log_probs, ember_err *err) {
  if (n < 1 || n > pol->max_batch)
    return ember_fail(err, EMBER_EINVAL, "policy_act: %d observations, this policy takes 1..%d", n, pol->max_batch);
  if (!deterministic && !rng) return ember_fail(err, EMBER_EINVAL, "policy_act: a stochastic action needs an rng");
  const int A = pol->act_dim;
  /* out [n, 2A]: row i = mu_i [A] then raw log-std_i [A] */
  const float *out = nn_mlp_forward(pol->net, pol->ws, obs, n, NN_INPUT_SHARED);
  nn_policy_head_forward(pol->mean, pol->log_std, out, n, A, pol->log_std_min, pol->log_std_max);
  if (deterministic)
    memset(pol->eps, 0, (size_t)n * A * sizeof *pol->eps); /* u = mu: tanh(mu) and the density there */
  else
    rng_normal_fill(rng, pol->eps, n * A);
  nn_tanh_gaussian_sample(actions, log_probs, pol->mean, pol->log_std, pol->eps, n, A);
  return EMBER_OK;
}

uint64_t policy_version(const policy_t *pol) { return pol->version; }
int policy_obs_dim(const policy_t *pol) { return pol->obs_dim; }
int policy_act_dim(const policy_t *pol) { return pol->act_dim; }
const nn_mlp *policy_net(const policy_t *pol) { return pol->net; }
float policy_log_std_min(const policy_t *pol) { return pol->log_std_min; }
float policy_log_std_max(const policy_t *pol) { return pol->log_std_max; }

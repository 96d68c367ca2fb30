/* algo_registry.c: the list of algorithms --algo can name. Adding one is one extern line and one
 * entry below (and its file, learner/algo_<name>.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo.h"
#include "nn.h"

extern const algo_ops algo_sac;
extern const algo_ops algo_vmbpo, algo_vmbpo_mfe;
extern const algo_ops algo_virel, algo_virel_soft;
extern const algo_ops algo_mpo;

static const algo_ops *const registry[] = {
    &algo_sac,
    &algo_vmbpo,
    &algo_vmbpo_mfe,
    &algo_virel,
    &algo_virel_soft,
    &algo_mpo,
    NULL,
};

const algo_ops *algo_find(const char *name) {
  for (size_t i = 0; name && registry[i]; i++)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

const algo_ops *const *algo_all(void) { return registry; }

/* Strings a fresh message points at protobuf-c's shared empty string, which is not ours to free. */
static void free_str(char *x) {
  if (x != protobuf_c_empty_string) free(x);
}

void algo_params_free(Ember__Params *p) {
  if (!p) return;
  for (size_t i = 0; p->tensors && i < p->n_tensors; i++) {
    Ember__Tensor *t = p->tensors[i];
    if (!t) continue;
    free_str(t->name);
    free(t->shape);
    free(t->data);
    free(t);
  }
  free(p->tensors);
  free_str(p->algorithm);
  free_str(p->task);
  free_str(p->policy_kind);
  free_str(p->policy_activation);
  ember__params__init(p);
}

static char *dup_str(const char *x) {
  size_t n = strlen(x) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, x, n);
  return p;
}

/* One tensor, [rows, cols] (cols 0: a vector of rows), with copies of name and data. */
static Ember__Tensor *tensor_new(const char *name, const float *data, uint32_t rows, uint32_t cols) {
  Ember__Tensor *t = malloc(sizeof *t);
  if (!t) return NULL;
  ember__tensor__init(t);
  size_t count = (size_t)rows * (cols ? cols : 1);
  t->name = dup_str(name);
  t->n_shape = cols ? 2 : 1;
  t->shape = malloc(2 * sizeof(uint32_t));
  t->data = malloc(count * sizeof(float));
  if (!t->name || !t->shape || !t->data) {
    free(t->name), free(t->shape), free(t->data), free(t);
    return NULL;
  }
  t->shape[0] = rows;
  t->shape[1] = cols;
  t->n_data = count;
  memcpy(t->data, data, count * sizeof(float));
  return t;
}

int algo_export_policy(const nn_mlp *pi, const char *algorithm, const char *task, int obs_dim, int act_dim,
                       float log_std_min, float log_std_max, Ember__Params *out, ember_err *err) {
  ember__params__init(out);
  const int L = pi->layer_count;
  out->tensors = calloc((size_t)2 * L, sizeof *out->tensors);
  out->algorithm = dup_str(algorithm);
  out->task = dup_str(task);
  out->policy_kind = dup_str("tanh_gaussian_mlp");
  out->policy_activation = dup_str(nn_activation_name(pi->spec.hidden_activation));
  if (!out->tensors || !out->algorithm || !out->task || !out->policy_kind || !out->policy_activation) goto oom;
  out->obs_dim = (uint32_t)obs_dim;
  out->act_dim = (uint32_t)act_dim;
  out->log_std_min = log_std_min;
  out->log_std_max = log_std_max;
  for (int l = 0; l < L; l++) {
    char name[32];
    uint32_t in = (uint32_t)pi->dims[l], o = (uint32_t)pi->dims[l + 1];
    snprintf(name, sizeof name, "pi/l%d/w", l);
    if (!(out->tensors[out->n_tensors] = tensor_new(name, nn_mlp_weight(pi, l, 0), o, in))) goto oom;
    out->n_tensors++;
    snprintf(name, sizeof name, "pi/l%d/b", l);
    if (!(out->tensors[out->n_tensors] = tensor_new(name, nn_mlp_bias(pi, l, 0), o, 0))) goto oom;
    out->n_tensors++;
  }
  return 0;
oom:
  algo_params_free(out);
  return ember_fail(err, EMBER_ENOMEM, "%s: out of memory exporting parameters", algorithm);
}

/* nn_params.c: named tensor sets to and from the Params message (see nn_params.h). */
#include "nn_params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

nn_param_set *nn_param_set_new(ember_err *err) {
  nn_param_set *set = calloc(1, sizeof *set);
  if (!set) ember_fail(err, EMBER_ENOMEM, "param set: out of memory");
  return set;
}

void nn_param_set_destroy(nn_param_set **set_p) {
  if (!set_p || !*set_p) return;
  free((*set_p)->tensors);
  free(*set_p);
  *set_p = NULL;
}

static const nn_tensor_ref *find_in_set(const nn_param_set *set, const char *name) {
  for (int i = 0; i < set->count; i++)
    if (strcmp(set->tensors[i].name, name) == 0) return &set->tensors[i];
  return NULL;
}

/* "[256, 17]" */
static const char *format_shape(char *buf, size_t cap, const uint32_t *shape, size_t rank) {
  size_t used = (size_t)snprintf(buf, cap, "[");
  for (size_t i = 0; i < rank && used < cap; i++)
    used += (size_t)snprintf(buf + used, cap - used, i ? ", %u" : "%u", shape[i]);
  if (used < cap) snprintf(buf + used, cap - used, "]");
  return buf;
}

int nn_param_set_add(nn_param_set *set, const char *name, float *data, int rank, const uint32_t *shape,
                     ember_err *err) {
  if (!name || !name[0]) return ember_fail(err, EMBER_EINVAL, "param set: empty tensor name");
  if (strlen(name) >= NN_TENSOR_NAME_MAX)
    return ember_fail(err, EMBER_EINVAL, "param set: tensor name '%s' is longer than %d bytes", name,
                      NN_TENSOR_NAME_MAX - 1);
  if (find_in_set(set, name)) return ember_fail(err, EMBER_EINVAL, "param set: tensor '%s' added twice", name);
  if (rank < 1 || rank > NN_TENSOR_MAX_RANK)
    return ember_fail(err, EMBER_EINVAL, "param set: tensor '%s' has rank %d, must be 1..%d", name, rank,
                      NN_TENSOR_MAX_RANK);
  size_t count = 1;
  for (int i = 0; i < rank; i++) {
    if (shape[i] == 0) return ember_fail(err, EMBER_EINVAL, "param set: tensor '%s' has a zero dimension", name);
    count *= shape[i];
  }
  if (set->count == set->capacity) {
    int capacity = set->capacity ? 2 * set->capacity : 16;
    nn_tensor_ref *grown = realloc(set->tensors, (size_t)capacity * sizeof *grown);
    if (!grown) return ember_fail(err, EMBER_ENOMEM, "param set: out of memory");
    set->tensors = grown;
    set->capacity = capacity;
  }
  nn_tensor_ref *t = &set->tensors[set->count++];
  memset(t, 0, sizeof *t);
  memcpy(t->name, name, strlen(name) + 1);
  t->data = data;
  t->rank = rank;
  memcpy(t->shape, shape, (size_t)rank * sizeof *shape);
  t->count = count;
  return EMBER_OK;
}

int nn_param_set_add_mlp(nn_param_set *set, const char *prefix, const nn_mlp *net, ember_err *err) {
  const uint32_t members = (uint32_t)net->ensemble_size;
  const int ensemble = members > 1;
  for (int l = 0; l < net->layer_count; l++) {
    char name[NN_TENSOR_NAME_MAX + 32];
    uint32_t out = (uint32_t)net->dims[l + 1], in = (uint32_t)net->dims[l];
    uint32_t w_shape[3] = {members, out, in}, b_shape[2] = {members, out};
    snprintf(name, sizeof name, "%s/l%d/w", prefix, l);
    int rc = nn_param_set_add(set, name, net->params + net->weight_offset[l], 2 + ensemble, w_shape + !ensemble, err);
    if (rc) return rc;
    snprintf(name, sizeof name, "%s/l%d/b", prefix, l);
    rc = nn_param_set_add(set, name, net->params + net->bias_offset[l], 1 + ensemble, b_shape + !ensemble, err);
    if (rc) return rc;
  }
  return EMBER_OK;
}

int nn_param_set_add_gauss_head(nn_param_set *set, const char *prefix, const nn_gauss_head *head,
                                ember_err *err) {
  char name[NN_TENSOR_NAME_MAX + 32];
  uint32_t shape[1] = {(uint32_t)head->dim};
  snprintf(name, sizeof name, "%s/max_logvar", prefix);
  int rc = nn_param_set_add(set, name, head->params, 1, shape, err);
  if (rc) return rc;
  snprintf(name, sizeof name, "%s/min_logvar", prefix);
  return nn_param_set_add(set, name, head->params + head->dim, 1, shape, err);
}

size_t nn_param_set_float_count(const nn_param_set *set) {
  size_t total = 0;
  for (int i = 0; i < set->count; i++) total += set->tensors[i].count;
  return total;
}

/* ---- export ------------------------------------------------------------------------------ */

static void free_tensor(Ember__Tensor *t) {
  if (!t) return;
  free(t->name);
  free(t->shape);
  free(t->data);
  free(t);
}

static Ember__Tensor *copy_tensor(const nn_tensor_ref *ref) {
  Ember__Tensor *t = malloc(sizeof *t);
  if (!t) return NULL;
  ember__tensor__init(t);
  t->name = strdup(ref->name);
  t->shape = malloc((size_t)ref->rank * sizeof *t->shape);
  t->data = malloc(ref->count * sizeof *t->data);
  if (!t->name || !t->shape || !t->data) {
    free_tensor(t);
    return NULL;
  }
  t->n_shape = (size_t)ref->rank;
  memcpy(t->shape, ref->shape, t->n_shape * sizeof *t->shape);
  t->n_data = ref->count;
  memcpy(t->data, ref->data, ref->count * sizeof *t->data);
  return t;
}

int nn_params_export(const nn_param_set *set, Ember__Params *msg, ember_err *err) {
  for (int i = 0; i < set->count; i++)
    for (size_t j = 0; j < msg->n_tensors; j++)
      if (msg->tensors[j]->name && strcmp(msg->tensors[j]->name, set->tensors[i].name) == 0)
        return ember_fail(err, EMBER_EINVAL, "params export: the message already holds a tensor '%s'",
                          set->tensors[i].name);
  const size_t before = msg->n_tensors;
  Ember__Tensor **grown = realloc(msg->tensors, (before + (size_t)set->count + 1) * sizeof *grown);
  if (!grown) return ember_fail(err, EMBER_ENOMEM, "params export: out of memory");
  msg->tensors = grown;
  for (int i = 0; i < set->count; i++) {
    Ember__Tensor *t = copy_tensor(&set->tensors[i]);
    if (!t) {
      for (size_t j = before; j < msg->n_tensors; j++) free_tensor(msg->tensors[j]);
      msg->n_tensors = before;
      return ember_fail(err, EMBER_ENOMEM, "params export: out of memory copying '%s'", set->tensors[i].name);
    }
    msg->tensors[msg->n_tensors++] = t;
  }
  return EMBER_OK;
}

void nn_params_free_tensors(Ember__Params *msg) {
  if (!msg) return;
  for (size_t i = 0; i < msg->n_tensors; i++) free_tensor(msg->tensors[i]);
  free(msg->tensors);
  msg->tensors = NULL;
  msg->n_tensors = 0;
}

/* ---- import ------------------------------------------------------------------------------ */

static const Ember__Tensor *find_in_msg(const Ember__Params *msg, const char *name) {
  for (size_t i = 0; i < msg->n_tensors; i++)
    if (msg->tensors[i] && msg->tensors[i]->name && strcmp(msg->tensors[i]->name, name) == 0)
      return msg->tensors[i];
  return NULL;
}

/* The message's own consistency: names present and unique, data length = product of shape. */
static int check_message(const Ember__Params *msg, ember_err *err) {
  char shape_text[128];
  for (size_t i = 0; i < msg->n_tensors; i++) {
    const Ember__Tensor *t = msg->tensors[i];
    if (!t || !t->name || !t->name[0])
      return ember_fail(err, EMBER_EDECODE, "params import: tensor %zu has no name", i);
    for (size_t j = 0; j < i; j++)
      if (strcmp(msg->tensors[j]->name, t->name) == 0)
        return ember_fail(err, EMBER_EDECODE, "params import: tensor '%s' appears twice", t->name);
    uint64_t count = t->n_shape ? 1 : 0;
    for (size_t d = 0; d < t->n_shape && count <= UINT32_MAX; d++) count *= t->shape[d];
    if (count != t->n_data)
      return ember_fail(err, EMBER_EDECODE, "params import: tensor '%s' of shape %s holds %zu values",
                        t->name, format_shape(shape_text, sizeof shape_text, t->shape, t->n_shape), t->n_data);
  }
  return EMBER_OK;
}

int nn_params_import(const nn_param_set *set, const Ember__Params *msg, nn_import_mode mode, ember_err *err) {
  char got[128], want[128];
  int rc = check_message(msg, err);
  if (rc) return rc;
  for (int i = 0; i < set->count; i++) {
    const nn_tensor_ref *ref = &set->tensors[i];
    const Ember__Tensor *t = find_in_msg(msg, ref->name);
    format_shape(want, sizeof want, ref->shape, (size_t)ref->rank);
    if (!t)
      return ember_fail(err, EMBER_ENOENT, "params import: no tensor '%s' (expected shape %s)", ref->name, want);
    int same = t->n_shape == (size_t)ref->rank;
    for (size_t d = 0; same && d < t->n_shape; d++) same = t->shape[d] == ref->shape[d];
    if (!same)
      return ember_fail(err, EMBER_ESHAPE, "params import: tensor '%s' has shape %s, expected %s", ref->name,
                        format_shape(got, sizeof got, t->shape, t->n_shape), want);
    for (size_t k = 0; k < t->n_data; k++)
      if (!isfinite(t->data[k]))
        return ember_fail(err, EMBER_ENONFINITE, "params import: tensor '%s' has %g at index %zu", ref->name,
                          t->data[k], k);
  }
  if (mode == NN_IMPORT_EXACT)
    for (size_t i = 0; i < msg->n_tensors; i++)
      if (!find_in_set(set, msg->tensors[i]->name))
        return ember_fail(err, EMBER_ENOENT, "params import: unknown tensor '%s' of shape %s (no network has it)",
                          msg->tensors[i]->name,
                          format_shape(got, sizeof got, msg->tensors[i]->shape, msg->tensors[i]->n_shape));
  for (int i = 0; i < set->count; i++) {
    const Ember__Tensor *t = find_in_msg(msg, set->tensors[i].name);
    memcpy(set->tensors[i].data, t->data, t->n_data * sizeof(float));
  }
  return EMBER_OK;
}

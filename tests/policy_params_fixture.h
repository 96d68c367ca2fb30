/* policy_params_fixture.h: builds acting-policy Params (docs/protocol.md, "The acting policy") for
 * the policy and actor tests. Test-only; everything is heap-allocated and freed by fixture_free. */
#ifndef EMBER_TEST_POLICY_PARAMS_FIXTURE_H
#define EMBER_TEST_POLICY_PARAMS_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.pb-c.h"
#include "rng.h"

#define FIXTURE_MAX_TENSORS 16

typedef struct {
  Ember__Params params;
  Ember__Tensor tensors[FIXTURE_MAX_TENSORS];
  Ember__Tensor *tensor_ptrs[FIXTURE_MAX_TENSORS];
  char names[FIXTURE_MAX_TENSORS][32];
  uint32_t shapes[FIXTURE_MAX_TENSORS][2];
  char task[64], kind[64], activation[32];
} params_fixture;

static inline Ember__Tensor *fixture_add_tensor(params_fixture *f, const char *name, uint32_t rows, uint32_t cols,
                                                int n_shape) {
  size_t i = f->params.n_tensors++;
  Ember__Tensor *t = &f->tensors[i];
  ember__tensor__init(t);
  snprintf(f->names[i], sizeof f->names[i], "%s", name);
  t->name = f->names[i];
  f->shapes[i][0] = rows;
  f->shapes[i][1] = cols;
  t->shape = f->shapes[i];
  t->n_shape = (size_t)n_shape;
  t->n_data = (size_t)rows * (n_shape == 2 ? cols : 1);
  t->data = calloc(t->n_data ? t->n_data : 1, sizeof(float));
  f->tensor_ptrs[i] = t;
  return t;
}

/* A tanh-Gaussian MLP obs_dim -> hidden[0] -> ... -> 2 act_dim, weights drawn from seed with scale. */
static inline void fixture_build(params_fixture *f, const char *task, int obs_dim, int act_dim, const int *hidden,
                                 int hidden_count, const char *activation, uint64_t version, uint64_t seed,
                                 float scale) {
  memset(f, 0, sizeof *f);
  ember__params__init(&f->params);
  snprintf(f->task, sizeof f->task, "%.63s", task); /* bounded: -O3 checks the callers' buffers */
  snprintf(f->kind, sizeof f->kind, "tanh_gaussian_mlp");
  snprintf(f->activation, sizeof f->activation, "%.31s", activation);
  f->params.task = f->task;
  f->params.policy_kind = f->kind;
  f->params.policy_activation = f->activation;
  f->params.algorithm = "test";
  f->params.obs_dim = (uint32_t)obs_dim;
  f->params.act_dim = (uint32_t)act_dim;
  f->params.version = version;
  f->params.log_std_min = -5.0f;
  f->params.log_std_max = 2.0f;
  f->params.tensors = f->tensor_ptrs;
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST);
  int in = obs_dim;
  for (int k = 0; k <= hidden_count; k++) {
    int out = k < hidden_count ? hidden[k] : 2 * act_dim;
    char name[32];
    snprintf(name, sizeof name, "pi/l%d/w", k);
    Ember__Tensor *w = fixture_add_tensor(f, name, (uint32_t)out, (uint32_t)in, 2);
    snprintf(name, sizeof name, "pi/l%d/b", k);
    Ember__Tensor *b = fixture_add_tensor(f, name, (uint32_t)out, 0, 1);
    for (size_t i = 0; i < w->n_data; i++) w->data[i] = scale * (2.0f * rng_uniform_f(&r) - 1.0f);
    for (size_t i = 0; i < b->n_data; i++) b->data[i] = scale * (2.0f * rng_uniform_f(&r) - 1.0f);
    in = out;
  }
}

static inline Ember__Tensor *fixture_find(params_fixture *f, const char *name) {
  for (size_t i = 0; i < f->params.n_tensors; i++)
    if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
  return NULL;
}

static inline void fixture_free(params_fixture *f) {
  for (size_t i = 0; i < f->params.n_tensors; i++) free(f->tensors[i].data);
  f->params.n_tensors = 0;
}

#endif

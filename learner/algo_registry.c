/* algo_registry.c: the list of algorithms --algo can name. Adding one is one extern line and one
 * entry below (and its file, learner/algo_<name>.c). */
#include <stdlib.h>
#include <string.h>

#include "algo.h"

extern const algo_ops algo_sac;
extern const algo_ops algo_vmbpo, algo_vmbpo_mfe;

static const algo_ops *const registry[] = {
    &algo_sac,
    &algo_vmbpo,
    &algo_vmbpo_mfe,
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

/* nn_params.h: export and import of any set of networks (and other float buffers) as the wire's
 * Params message: named tensors with row-major shapes.
 *
 * An nn_param_set is a list of named views into buffers that stay their owners' (networks, heads,
 * optimiser moments, a log-temperature): it never copies or frees the data it names. Build it once
 * at start-up; export and import then walk it.
 *
 * Names (docs/nn.md):
 *   MLP, E = 1:  "<prefix>/l<k>/w" [out, in],    "<prefix>/l<k>/b" [out]      k = 0 .. L-1
 *   MLP, E > 1:  "<prefix>/l<k>/w" [E, out, in], "<prefix>/l<k>/b" [E, out]
 *   Gaussian head: "<prefix>/max_logvar" [D], "<prefix>/min_logvar" [D]
 * e.g. the acting policy of docs/protocol.md is nn_param_set_add_mlp(set, "pi", policy).
 *
 * Export appends one Ember__Tensor per entry to msg->tensors (so several sets, or a set plus
 * tensors of your own, can share one message). The appended tensors, their names, shapes and data
 * are malloc'd copies that belong to msg; free them with nn_params_free_tensors(msg), which frees
 * every tensor in msg->tensors and the array (not msg itself, nor its other fields). A message from
 * ember__params__unpack is freed with ember__params__free_unpacked instead, as usual.
 *
 * Import reads msg and never keeps a pointer into it. It checks everything before it copies
 * anything, so a refused message leaves every network as it was:
 *   EMBER_ENOENT     a set tensor is missing from msg (names it and its expected shape), or, with
 *                    NN_IMPORT_EXACT, msg holds a tensor the set does not know (names it and its shape)
 *   EMBER_ESHAPE     same name, other shape: "tensor 'pi/l0/w' has shape [256, 18], expected [256, 17]"
 *   EMBER_EDECODE    a tensor whose data length does not match its shape, or a name given twice
 *   EMBER_ENONFINITE a NaN or infinite value (names the tensor and the index)
 *
 * Thread-safety: a set is read-only after it is built; export reads the named buffers and import
 * writes them, so neither may run while those buffers are being updated.
 */
#ifndef EMBER_NN_PARAMS_H
#define EMBER_NN_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "ember.pb-c.h"
#include "err.h"
#include "nn.h"
#include "nn_gauss_head.h"

#define NN_TENSOR_NAME_MAX 96
#define NN_TENSOR_MAX_RANK 4

typedef struct {
  char name[NN_TENSOR_NAME_MAX];
  float *data; /* not owned */
  int rank;
  uint32_t shape[NN_TENSOR_MAX_RANK];
  size_t count; /* product of shape */
} nn_tensor_ref;

typedef struct {
  nn_tensor_ref *tensors; /* owned array of views */
  int count;
  int capacity;
} nn_param_set;

typedef enum {
  NN_IMPORT_EXACT = 0,  /* msg must hold exactly the set's tensors */
  NN_IMPORT_SUBSET = 1, /* msg may hold more (an actor taking "pi/..." from the learner's message) */
} nn_import_mode;

nn_param_set *nn_param_set_new(ember_err *err);
void nn_param_set_destroy(nn_param_set **set_p);

/* Adds one named view of data[product(shape)]. EMBER_EINVAL for an empty, too long or duplicate
 * name, rank outside [1, NN_TENSOR_MAX_RANK] or a zero dimension; EMBER_ENOMEM. */
int nn_param_set_add(nn_param_set *set, const char *name, float *data, int rank, const uint32_t *shape,
                     ember_err *err);
/* Adds every layer of net (names above). */
int nn_param_set_add_mlp(nn_param_set *set, const char *prefix, const nn_mlp *net, ember_err *err);
/* Adds the head's two bound vectors. */
int nn_param_set_add_gauss_head(nn_param_set *set, const char *prefix, const nn_gauss_head *head,
                                ember_err *err);
/* Total floats the set names. */
size_t nn_param_set_float_count(const nn_param_set *set);

/* Appends copies of the set's tensors to msg->tensors. EMBER_EINVAL when msg already holds a tensor
 * of the same name; EMBER_ENOMEM (msg is then as it was). */
int nn_params_export(const nn_param_set *set, Ember__Params *msg, ember_err *err);
/* Frees every tensor in msg->tensors and the array; leaves msg->n_tensors = 0. */
void nn_params_free_tensors(Ember__Params *msg);

/* Copies msg's tensors into the set's buffers, after checking all of them (errors above). */
int nn_params_import(const nn_param_set *set, const Ember__Params *msg, nn_import_mode mode, ember_err *err);

#endif

/* nn_optim.h: Adam (with bias correction, optional global-norm gradient clipping and decoupled
 * weight decay), Polyak (soft) target updates and hard copies, all single loops over the flat
 * parameter buffers of nn.h (net->params / net->grads, head->params / head->grads).
 *
 * Adam, one step t (t counts from 1), for every parameter i, as PyTorch's AdamW computes it:
 *   g      = grad_i * clip,  clip = min(1, max_grad_norm / (||grad||_2 + 1e-6))   (when clipping)
 *   p_i   *= 1 - lr * weight_decay                                  (decoupled weight decay)
 *   m_i    = beta1 m_i + (1 - beta1) g;   v_i = beta2 v_i + (1 - beta2) g^2
 *   p_i   -= lr / (1 - beta1^t) * m_i / (sqrt(v_i) / sqrt(1 - beta2^t) + epsilon)
 * The norm ||grad||_2 is over the whole buffer given to the step (accumulated in double). The
 * step reads the gradients and never changes them: zero them yourself before the next backward.
 * One nn_adam per buffer; networks updated together with one clip norm belong in one buffer (an
 * ensemble, nn.h), or clip by hand with nn_grad_norm before stepping each.
 *
 * Ownership: nn_adam_new returns an optimiser the caller owns (moments sized for `count`
 * parameters); nn_adam_destroy(&a) frees it and sets a to NULL. opt->m, opt->v and opt->step are
 * plain data: a checkpoint saves and restores them directly.
 * Thread-safety: none inside; one thread per optimiser and per parameter buffer.
 */
#ifndef EMBER_NN_OPTIM_H
#define EMBER_NN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "nn.h"

typedef struct {
  float learning_rate; /* lr > 0 */
  float beta1;         /* in [0, 1) */
  float beta2;         /* in [0, 1) */
  float epsilon;       /* > 0 */
  float weight_decay;  /* >= 0; decoupled (AdamW), 0 = off */
  float max_grad_norm; /* >= 0; global L2 clipping, 0 = off */
} nn_adam_config;

typedef struct {
  nn_adam_config config;
  size_t count;  /* parameters this optimiser updates */
  uint64_t step; /* t: steps taken so far */
  float *m;      /* first moments [count] */
  float *v;      /* second moments [count] */
} nn_adam;

/* beta1 0.9, beta2 0.999, epsilon 1e-8, no weight decay, no clipping. */
nn_adam_config nn_adam_default_config(float learning_rate);

/* EMBER_EINVAL naming the field for a bad config or count 0; EMBER_ENOMEM. */
nn_adam *nn_adam_new(const nn_adam_config *config, size_t count, ember_err *err);
void nn_adam_destroy(nn_adam **opt_p);
/* Zero moments and step count (the next step is t = 1 again). */
void nn_adam_reset(nn_adam *opt);

/* One step on params[count] from grads[count]. Writes the gradient norm before clipping to
 * *grad_norm (may be NULL). A non-finite gradient norm fails with EMBER_ENONFINITE and changes
 * nothing (parameters, moments and step stay as they were). */
int nn_adam_step(nn_adam *opt, float *params, const float *grads, double *grad_norm, ember_err *err);

/* ||grads||_2 over n values, accumulated in double. */
double nn_grad_norm(const float *grads, size_t n);

/* target = (1 - tau) * target + tau * source over n values (tau in [0, 1]). */
void nn_polyak_update(float *target, const float *source, size_t n, float tau);

/* The same for networks of one shape (nn_mlp_same_shape, asserted). */
void nn_mlp_polyak_update(nn_mlp *target, const nn_mlp *source, float tau);
/* Hard copy of the parameters (not gradients) of source into target (same shape, asserted). */
void nn_mlp_copy_params(nn_mlp *target, const nn_mlp *source);

#endif

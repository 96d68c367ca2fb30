/* nn_gauss_head.h: the Gaussian regression head of the dynamics model (PETS / MBPO), with learned
 * soft bounds on the log-variance, and its negative log-likelihood loss.
 *
 * An MLP (often an ensemble, nn.h) outputs raw [B, E * 2D]: for member e, columns e*2D .. e*2D+D
 * are the predicted mean and the next D columns the unbounded log-variance. The head squeezes the
 * log-variance between two trainable vectors, shared by all members (as in PETS and MBPO):
 *   lv1    = max_logvar - softplus(max_logvar - raw)
 *   logvar = min_logvar + softplus(lv1 - min_logvar)
 * Both are smooth, so gradients reach the bounds themselves; the loss adds
 * bound_penalty * (sum(max_logvar) - sum(min_logvar)) so that they tighten around the data.
 * Initial bounds: max_logvar = 0.5, min_logvar = -10 (the PETS values).
 *
 * Parameters: head->params = [max_logvar (D) | min_logvar (D)], head->grads alike (2D floats), one
 * contiguous buffer each so Adam and export treat the head like any network.
 *
 * Gradients ACCUMULATE (+=) into d_raw and head->grads (nn.h). Ownership: nn_gauss_head_new
 * returns an object the caller owns; nn_gauss_head_destroy(&h) frees it and sets h to NULL.
 * Thread-safety: forward only reads the head; nll writes head->grads (one thread per head).
 */
#ifndef EMBER_NN_GAUSS_HEAD_H
#define EMBER_NN_GAUSS_HEAD_H

#include <stddef.h>

#include "err.h"
#include "nn.h"

typedef struct {
  int dim;            /* D: predicted dimensions */
  int ensemble_size;  /* E: members whose outputs sit side by side in raw */
  size_t param_count; /* 2D */
  float *params;      /* [max_logvar (D) | min_logvar (D)], owned */
  float *grads;       /* same layout, owned */
} nn_gauss_head;

/* EMBER_EINVAL naming the argument for dim < 1 or ensemble_size < 1; EMBER_ENOMEM. */
nn_gauss_head *nn_gauss_head_new(int dim, int ensemble_size, ember_err *err);
void nn_gauss_head_destroy(nn_gauss_head **head_p);
void nn_gauss_head_zero_grad(nn_gauss_head *head);

/* forward: raw [B, E*2D] -> mean [B, E*D], logvar [B, E*D] (bounded); either output may be NULL. */
void nn_gauss_head_forward(const nn_gauss_head *head, float *mean, float *logvar, const float *raw, int batch);

/* Negative log-likelihood of targets, averaged over the batch, summed over dimensions and members:
 *   loss = (1/B) sum_b sum_e sum_d [ (y - mean)^2 exp(-logvar) + logvar + log(2 pi) ] / 2
 *          + bound_penalty * sum_d (max_logvar_d - min_logvar_d)
 *   raw    [B, E*2D] the network output;  target [B, D] (NN_INPUT_SHARED: every member fits the same
 *          rows) or [B, E*D] (NN_INPUT_PER_MEMBER: each member its own bootstrap rows)
 * Returns the loss (double); d_raw [B, E*2D] += dloss/draw (may be NULL); head->grads += dloss/dbounds.
 * Summing over members gives each member the gradient it would get if trained alone. */
double nn_gauss_head_nll(nn_gauss_head *head, float *d_raw, const float *raw, const float *target,
                         nn_input_mode target_mode, int batch, float bound_penalty);

/* A sample per member: out [B, E*D] = mean + exp(logvar / 2) * eps, eps [B, E*D] from the caller. */
void nn_gauss_head_sample(const nn_gauss_head *head, float *out, const float *raw, const float *eps, int batch);

#endif

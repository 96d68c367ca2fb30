/* policy.h: the acting policy, built from Params (docs/protocol.md, "The acting policy").
 *
 * Every algorithm exports the policy the actors act with in one form, so the actor needs no
 * algorithm-specific code:
 *   Params.policy_kind       "tanh_gaussian_mlp"
 *   tensors                  pi/l<k>/w [out, in] and pi/l<k>/b [out], k = 0 .. L-1, contiguous
 *   Params.policy_activation hidden activation ("relu", "tanh", "elu"), none after the last layer
 *   last layer               2 * act_dim outputs: mu [act_dim], then raw log-std [act_dim]
 *   log-std                  log_std = lo + 0.5 * (hi - lo) * (tanh(raw) + 1), lo/hi =
 *                            Params.log_std_min/max: nn_policy_head_forward (nn_dist.h), the same
 *                            function the learner's algorithms train through
 *   stochastic action        a = tanh(u), u = mu + exp(log_std) * eps, eps ~ N(0, I)
 *   deterministic action     a = tanh(mu)
 *   log-prob                 log pi(a|s) = sum_j [ log N(u_j; mu_j, std_j) - log(1 - tanh(u_j)^2) ],
 *                            by nn_tanh_gaussian_sample (finite where tanh(u) rounds to +-1). For
 *                            the deterministic action the same formula at u = mu (eps = 0): the
 *                            density at the mode.
 * Tensors whose names do not begin with "pi/" are ignored (an algorithm may ship other networks in
 * the same Params); any other "pi/..." name is refused.
 *
 * Building (policy_new) validates the kind, the task, obs_dim and act_dim against what the caller
 * expects, the activation, the log-std bounds (finite, lo < hi), every pi/ tensor name, that the
 * layers are contiguous and each has both w and b, that the shapes chain (obs_dim -> ... ->
 * 2 * act_dim), that every data array has product(shape) values, and that every value is finite.
 * Updating (policy_update) checks the same and, in addition, that the new Params have exactly this
 * policy's shapes and activation; it copies the values in place without allocating. A refused
 * Params changes nothing: validation runs completely before the first value is copied.
 *
 * Errors: EMBER_EINVAL (kind, task, activation, log-std bounds, tensor name), EMBER_ESHAPE (dims,
 * shapes, data lengths, missing/duplicate tensors; the message names the tensor and both shapes),
 * EMBER_ENONFINITE (a NaN or Inf value, naming the tensor and index), EMBER_ENOMEM.
 *
 * Ownership: policy_new returns a policy the caller owns; policy_destroy(&p) frees it and sets p to
 * NULL. The policy keeps no pointer into the Params it was given. Outputs of policy_act are
 * caller-owned arrays.
 *
 * Thread-safety: one thread per policy (act writes the policy's workspace and scratch).
 */
#ifndef EMBER_POLICY_H
#define EMBER_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "ember.pb-c.h"
#include "err.h"
#include "nn.h"
#include "rng.h"

#define POLICY_KIND_TANH_GAUSSIAN_MLP "tanh_gaussian_mlp"

typedef struct policy policy_t;

/* What the caller expects the Params to be for. */
typedef struct {
  const char *task; /* required task name; NULL or "" accepts any task */
  int obs_dim;      /* > 0 */
  int act_dim;      /* > 0 */
  int max_batch;    /* the most observations one policy_act call will see (> 0) */
} policy_config;

/* Builds a policy from params. NULL with err set when params are refused (see the list above). */
policy_t *policy_new(const Ember__Params *params, const policy_config *cfg, ember_err *err);
void policy_destroy(policy_t **pol_p);

/* Validates params against cfg without building anything: 0 or the error policy_new would give. */
int policy_check_params(const Ember__Params *params, const policy_config *cfg, ember_err *err);

/* Replaces the policy's weights, bounds and version with those of params, in place (no allocation).
 * params must have this policy's task, dims, activation and tensor shapes; otherwise an error and
 * the policy is unchanged. */
int policy_update(policy_t *pol, const Ember__Params *params, ember_err *err);

/* Acts on n observations with one batched forward pass (one sgemm per layer over the n rows).
 *   obs       [n, obs_dim]
 *   actions   [n, act_dim] out, in [-1, 1]
 *   log_probs [n] out, may be NULL
 *   rng       the caller's stream for eps; unused (may be NULL) when deterministic
 * 1 <= n <= max_batch, else EMBER_EINVAL. Observations are not checked for finiteness (they come
 * from the caller's own env); a non-finite observation gives non-finite actions. */
int policy_act(policy_t *pol, const float *obs, int n, bool deterministic, rng_t *rng, float *actions,
               float *log_probs, ember_err *err);

/* The Params.version the policy's weights came from. */
uint64_t policy_version(const policy_t *pol);
int policy_obs_dim(const policy_t *pol);
int policy_act_dim(const policy_t *pol);
/* The network (borrowed): its spec gives the hidden sizes and activation. */
const nn_mlp *policy_net(const policy_t *pol);
float policy_log_std_min(const policy_t *pol);
float policy_log_std_max(const policy_t *pol);

#endif

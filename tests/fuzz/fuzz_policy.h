/* fuzz_policy.h: Params imported into an acting policy, as every receiver of Params does (the actor
 * from the learner's broadcast, `ember eval` from a checkpoint), for the targets that reach Params.
 *
 * Properties: policy_check_params and policy_new agree (a policy is built exactly when the check
 * passes, out of memory aside); a built policy acts: deterministic actions are in [-1, 1] (or NaN:
 * finite weights can still overflow a forward pass, which the actor's peers refuse as non-finite);
 * policy_update with the same Params succeeds and acting again gives the same actions bit for bit;
 * the same Params for other dims are refused, not built. */
#ifndef EMBER_FUZZ_POLICY_H
#define EMBER_FUZZ_POLICY_H

#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "policy.h"

#define FUZZ_POLICY_BATCH 2
#define FUZZ_POLICY_MAX_DIM 64

static inline void fuzz_act(policy_t *pol, int obs_dim, int act_dim, float *actions) {
  float obs[FUZZ_POLICY_BATCH * FUZZ_POLICY_MAX_DIM];
  for (int i = 0; i < FUZZ_POLICY_BATCH * obs_dim; i++) obs[i] = (float)(i % 7) * 0.25f - 0.75f;
  float logp[FUZZ_POLICY_BATCH];
  ember_err err = {0};
  FUZZ_ASSERT(policy_act(pol, obs, FUZZ_POLICY_BATCH, true, NULL, actions, logp, &err) == 0, "policy_act: %s", err.msg);
  for (int i = 0; i < FUZZ_POLICY_BATCH * act_dim; i++)
    FUZZ_ASSERT(isnan(actions[i]) || (actions[i] >= -1.0f && actions[i] <= 1.0f), "action %d is %g", i,
                (double)actions[i]);
}

/* Imports p as a policy for the dims it names (when they are small enough to act with here), and
 * for the fixed dims of pendulum (obs 3, act 1) under task, as an actor of that task would. */
static inline void fuzz_import_params(const Ember__Params *p, const char *task) {
  policy_config fixed = {.task = task, .obs_dim = 3, .act_dim = 1, .max_batch = FUZZ_POLICY_BATCH};
  ember_err err = {0};
  int checked = policy_check_params(p, &fixed, &err);
  policy_t *pol = policy_new(p, &fixed, &err);
  FUZZ_ASSERT((checked == 0) == (pol != NULL) || err.code == EMBER_ENOMEM, "check %d, new %s: %s", checked,
              pol ? "built" : "refused", err.msg);
  policy_destroy(&pol);

  if (p->obs_dim < 1 || p->obs_dim > FUZZ_POLICY_MAX_DIM || p->act_dim < 1 || p->act_dim > FUZZ_POLICY_MAX_DIM / 2)
    return;
  int od = (int)p->obs_dim, ad = (int)p->act_dim;
  policy_config own = {.task = NULL, .obs_dim = od, .act_dim = ad, .max_batch = FUZZ_POLICY_BATCH};
  checked = policy_check_params(p, &own, &err);
  pol = policy_new(p, &own, &err);
  FUZZ_ASSERT((checked == 0) == (pol != NULL) || err.code == EMBER_ENOMEM, "check %d, new %s: %s", checked,
              pol ? "built" : "refused", err.msg);
  if (!pol) return;
  FUZZ_ASSERT(policy_version(pol) == p->version, "version");
  float first[FUZZ_POLICY_BATCH * FUZZ_POLICY_MAX_DIM], again[FUZZ_POLICY_BATCH * FUZZ_POLICY_MAX_DIM];
  fuzz_act(pol, od, ad, first);
  FUZZ_ASSERT(policy_update(pol, p, &err) == 0, "policy_update with the Params it was built from: %s", err.msg);
  fuzz_act(pol, od, ad, again);
  FUZZ_ASSERT(memcmp(first, again, (size_t)(FUZZ_POLICY_BATCH * ad) * sizeof(float)) == 0,
              "the same Params act differently after policy_update");
  policy_destroy(&pol);

  policy_config other = {.task = NULL, .obs_dim = od + 1, .act_dim = ad, .max_batch = FUZZ_POLICY_BATCH};
  FUZZ_ASSERT(policy_check_params(p, &other, &err) != 0, "Params for obs_dim %d accepted for obs_dim %d", od, od + 1);
}

#endif

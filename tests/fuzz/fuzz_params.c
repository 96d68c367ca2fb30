/* fuzz_params: an Envelope as it reaches an actor on the learner's Params broadcast (or as the answer
 * to its ParamsRequest).
 *
 * The path (actor/actor_learner.c, take_params): net_decode as net_recv does, then for Params the
 * actor's import: policy_check_params (the evaluator), policy_new (the first Params), policy_update
 * (every later one), and acting with the result (fuzz_policy.h lists the properties). */
#include "fuzz.h"
#include "fuzz_policy.h"
#include "net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  int rc = net_decode(data, size, 0, &env, &err);
  FUZZ_ASSERT((rc == 0) == (env != NULL), "net_decode returned %d with an Envelope %s", rc, env ? "set" : "unset");
  if (rc == 0 && env->body_case == EMBER__ENVELOPE__BODY_PARAMS) fuzz_import_params(env->params, "pendulum");
  net_envelope_free(env);
  return 0;
}

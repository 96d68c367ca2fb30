/* fuzz_policy_import: a Params message alone (not in an Envelope), as a learner checkpoint stores it
 * and `ember eval` imports it into a policy (app/cmd_eval.c: learner_checkpoint_params, then
 * policy_new), without the checkpoint file around it, so that every mutation lands in the Params.
 *
 * The path: ember__params__unpack, then the import of fuzz_policy.h (policy_check_params,
 * policy_new, policy_act, policy_update), with its properties. */
#include "fuzz.h"
#include "fuzz_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  Ember__Params *p = ember__params__unpack(NULL, size, data);
  if (!p) return 0;
  fuzz_import_params(p, NULL);
  fuzz_import_params(p, p->task); /* the checkpoint's own task, as `ember eval` asks for it */
  ember__params__free_unpacked(p, NULL);
  return 0;
}

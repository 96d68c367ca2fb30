/* fuzz_evaluation_report: an Envelope as it reaches the learner's control socket with a complete
 * evaluation from an evaluator actor.
 *
 * The path (learner/learner.c handle_control, learner_report.c learner_take_evaluation): net_decode as
 * net_recv does, then for an EvaluationReport the learner's checks (learner_check_evaluation, which
 * the learner calls before recording anything), and the summary the learner would record.
 *
 * Properties: an accepted report has 1..LEARNER_MAX_EVAL_EPISODES returns, as many lengths and
 * terminated flags, a version >= 1 and finite returns, so its mean is finite (the learner's stop
 * criterion compares it); a refusal says why. */
#include <math.h>

#include "fuzz.h"
#include "learner.h"
#include "net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  if (net_decode(data, size, 0, &env, &err) != 0) return 0;
  if (env->body_case == EMBER__ENVELOPE__BODY_EVALUATION) {
    const Ember__EvaluationReport *r = env->evaluation;
    char why[256] = "";
    int rc = learner_check_evaluation(r, why, sizeof why);
    if (rc != 0) {
      FUZZ_ASSERT((rc == EMBER_ESHAPE || rc == EMBER_ENONFINITE) && why[0], "refused with %d, '%s'", rc, why);
    } else {
      size_t n = r->n_returns;
      FUZZ_ASSERT(n >= 1 && n <= LEARNER_MAX_EVAL_EPISODES && r->n_lengths == n && r->n_terminated == n &&
                      r->policy_version >= 1,
                  "accepted %zu returns, %zu lengths, %zu flags, version %llu", n, r->n_lengths, r->n_terminated,
                  (unsigned long long)r->policy_version);
      double sum = 0, lengths = 0;
      for (size_t i = 0; i < n; i++) sum += r->returns[i], lengths += r->lengths[i];
      /* finite returns of doubles can still sum to Inf (two of 1e308): the learner's mean is then Inf */
      FUZZ_ASSERT(!isnan(sum / (double)n) && isfinite(lengths / (double)n), "mean %g, mean length %g",
                  sum / (double)n, lengths / (double)n);
    }
  }
  net_envelope_free(env);
  return 0;
}

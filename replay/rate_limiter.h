/* rate_limiter.h: Reverb's SampleToInsertRatio rate limiter, counted in transitions.
 *
 * State: inserts, samples and deletes (evictions) since the table was created (restored from a
 * snapshot with the table). diff = inserts * samples_per_insert - samples.
 *   - No sample is allowed while size = inserts - deletes < min_size_to_sample.
 *   - A sample of n transitions is allowed when diff - n >= min_diff.
 *   - Inserts are allowed while size < min_size_to_sample, and otherwise while diff <= max_diff.
 *     ember admits a whole batch when one more transition is allowed (a batch may overshoot
 *     max_diff by at most one batch): batches are atomic, and this is what keeps a batch that is
 *     larger than the error buffer from deadlocking against it.
 *   - min_diff = samples_per_insert * min_size_to_sample - error_buffer,
 *     max_diff = samples_per_insert * min_size_to_sample + error_buffer (Reverb's definition).
 *   - samples_per_insert <= 0 turns the ratio off: only min_size_to_sample applies (Reverb's
 *     MinSize limiter).
 * A sample request larger than max_diff - min_diff = 2 * error_buffer could wait forever once the
 * inserts stop at max_diff; rate_limiter_sample_feasible says so, and the server refuses such a
 * request instead of parking it.
 *
 * A plain value: no allocation, not thread-safe, copy it freely.
 */
#ifndef EMBER_REPLAY_RATE_LIMITER_H
#define EMBER_REPLAY_RATE_LIMITER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

typedef struct {
  double samples_per_insert;  /* <= 0: ratio off */
  uint64_t min_size_to_sample; /* >= 1 */
  double error_buffer;        /* >= 1 when the ratio is on */
  double min_diff, max_diff;
  uint64_t inserts, samples, deletes;
} rate_limiter;

/* EMBER_EINVAL (naming the value) for min_size_to_sample 0, a non-finite ratio, or an error buffer
 * below max(1, samples_per_insert) while the ratio is on. */
int rate_limiter_init(rate_limiter *rl, double samples_per_insert, uint64_t min_size_to_sample, double error_buffer,
                      ember_err *err);

static inline uint64_t rate_limiter_size(const rate_limiter *rl) { return rl->inserts - rl->deletes; }
static inline double rate_limiter_diff(const rate_limiter *rl) {
  return (double)rl->inserts * rl->samples_per_insert - (double)rl->samples;
}

bool rate_limiter_can_insert(const rate_limiter *rl);
bool rate_limiter_can_sample(const rate_limiter *rl, uint64_t n);
/* Whether a sample of n can ever be allowed (ignores the current state). */
bool rate_limiter_sample_feasible(const rate_limiter *rl, uint64_t n);

static inline void rate_limiter_on_insert(rate_limiter *rl, uint64_t n) { rl->inserts += n; }
static inline void rate_limiter_on_delete(rate_limiter *rl, uint64_t n) { rl->deletes += n; }
static inline void rate_limiter_on_sample(rate_limiter *rl, uint64_t n) { rl->samples += n; }

#endif

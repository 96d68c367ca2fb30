#include "rate_limiter.h"

#include <math.h>

int rate_limiter_init(rate_limiter *rl, double samples_per_insert, uint64_t min_size_to_sample, double error_buffer,
                      ember_err *err) {
  if (min_size_to_sample < 1)
    return ember_fail(err, EMBER_EINVAL, "rate limiter: min_size_to_sample must be >= 1");
  if (!isfinite(samples_per_insert))
    return ember_fail(err, EMBER_EINVAL, "rate limiter: samples_per_insert must be finite");
  if (samples_per_insert > 0) {
    double floor_buffer = samples_per_insert > 1 ? samples_per_insert : 1;
    if (!isfinite(error_buffer) || error_buffer < floor_buffer)
      return ember_fail(err, EMBER_EINVAL,
                        "rate limiter: error_buffer %g must be finite and >= max(1, samples_per_insert) = %g",
                        error_buffer, floor_buffer);
  }
  *rl = (rate_limiter){.samples_per_insert = samples_per_insert > 0 ? samples_per_insert : 0,
                       .min_size_to_sample = min_size_to_sample,
                       .error_buffer = samples_per_insert > 0 ? error_buffer : 0};
  if (samples_per_insert > 0) {
    double center = samples_per_insert * (double)min_size_to_sample;
    rl->min_diff = center - error_buffer;
    rl->max_diff = center + error_buffer;
  } else {
    rl->min_diff = -INFINITY;
    rl->max_diff = INFINITY;
  }
  return 0;
}

bool rate_limiter_can_insert(const rate_limiter *rl) {
  if (rate_limiter_size(rl) < rl->min_size_to_sample) return true;
  return rate_limiter_diff(rl) <= rl->max_diff;
}

bool rate_limiter_can_sample(const rate_limiter *rl, uint64_t n) {
  if (n == 0 || rate_limiter_size(rl) < rl->min_size_to_sample) return false;
  if (rl->samples_per_insert <= 0) return true;
  return rate_limiter_diff(rl) - (double)n >= rl->min_diff;
}

bool rate_limiter_sample_feasible(const rate_limiter *rl, uint64_t n) {
  if (n == 0) return false;
  if (rl->samples_per_insert <= 0) return true;
  return (double)n <= rl->max_diff - rl->min_diff;
}

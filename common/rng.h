/* rng.h: ember's seeded random numbers (xoshiro256**, seeded through splitmix64).
 *
 * One rng_t per consumer: a component derives its own stream from the run seed and a stream id
 * (rng_seed(&r, seed, RNG_STREAM_ACTOR + actor_id)), so every stream is reproducible on its own and
 * streams never share state. rng_t is a plain value: no allocation, copy it to save it (checkpoints
 * store it as bytes). Not thread-safe: one thread per rng_t.
 */
#ifndef EMBER_RNG_H
#define EMBER_RNG_H

#include <stdint.h>

typedef struct {
  uint64_t s[4];
  double spare_normal;  /* the second value of the last Box-Muller pair */
  int has_spare;
} rng_t;

/* Well-known stream ids, so components never collide. Add new ones at the end. */
enum {
  RNG_STREAM_LEARNER = 1,
  RNG_STREAM_REPLAY = 2,
  RNG_STREAM_EVAL = 3,
  RNG_STREAM_TEST = 4,
  RNG_STREAM_ACTOR = 1000000, /* + actor id (ids up to 1e9) */
};
/* Environments: + a global environment index (actor id x envs per actor + i). Above every other
 * stream, so no id or env count can run into them. */
#define RNG_STREAM_ENV (1ULL << 62)

void rng_seed(rng_t *r, uint64_t seed, uint64_t stream);
uint64_t rng_u64(rng_t *r);
/* Uniform in [0, 1) with 53 (double) or 24 (float) random bits. */
double rng_uniform(rng_t *r);
float rng_uniform_f(rng_t *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t rng_below(rng_t *r, uint64_t n);
/* Standard normal N(0, 1). */
double rng_normal(rng_t *r);
/* Fills out[0..n) with N(0, 1) floats. */
void rng_normal_fill(rng_t *r, float *out, int n);

#endif

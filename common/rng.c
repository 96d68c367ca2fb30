#include "rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rng_seed(rng_t *r, uint64_t seed, uint64_t stream) {
  /* Mix seed and stream through two splitmix chains so nearby seeds and streams are unrelated. */
  uint64_t x = seed;
  uint64_t mixed = splitmix64(&x);
  uint64_t y = stream ^ 0x5851f42d4c957f2dULL;
  mixed ^= splitmix64(&y);
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&mixed);
  if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* the all-zero state is a fixed point */
  r->has_spare = 0;
  r->spare_normal = 0.0;
}

uint64_t rng_u64(rng_t *r) {
  uint64_t *s = r->s;
  const uint64_t result = rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double rng_uniform(rng_t *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

float rng_uniform_f(rng_t *r) { return (float)(rng_u64(r) >> 40) * 0x1.0p-24f; }

uint64_t rng_below(rng_t *r, uint64_t n) {
  /* Lemire's multiply-shift with rejection of the biased low range. */
  unsigned __int128 m = (unsigned __int128)rng_u64(r) * n;
  uint64_t low = (uint64_t)m;
  if (low < n) {
    uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = (unsigned __int128)rng_u64(r) * n;
      low = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

double rng_normal(rng_t *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare_normal;
  }
  /* Box-Muller; u1 in (0, 1] so the log is finite. */
  double u1 = 1.0 - rng_uniform(r);
  double u2 = rng_uniform(r);
  double radius = sqrt(-2.0 * log(u1));
  double angle = 6.283185307179586 * u2;
  r->spare_normal = radius * sin(angle);
  r->has_spare = 1;
  return radius * cos(angle);
}

void rng_normal_fill(rng_t *r, float *out, int n) {
  for (int i = 0; i < n; i++) out[i] = (float)rng_normal(r);
}

/* sumtree: sums and minima stay exact under updates, find() inverts the prefix sums, and sampling
 * frequencies match the priorities (chi-square with a fixed seed). */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "rng.h"
#include "sumtree.h"

static double brute_sum(const float *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += v[i];
  return s;
}

START_TEST(sums_and_min_track_updates) {
  /* sizes around the fan-out boundaries, including 1 and a 3-level tree */
  const size_t sizes[] = {1, 2, 15, 16, 17, 255, 256, 257, 5000};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    size_t n = sizes[k];
    sumtree *t = sumtree_new(n, NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert(sumtree_total(t) == 0.0);
    ck_assert(isinf(sumtree_min_positive(t)));
    float *ref = calloc(n, sizeof *ref);
    rng_t r;
    rng_seed(&r, 7, RNG_STREAM_TEST);
    for (int step = 0; step < 3000; step++) {
      size_t i = rng_below(&r, n);
      float v = rng_below(&r, 5) == 0 ? 0.0f : (float)(rng_uniform(&r) * 10.0);
      sumtree_set(t, i, v);
      ref[i] = v;
    }
    ck_assert_double_eq_tol(sumtree_total(t), brute_sum(ref, n), 1e-6 * (1 + brute_sum(ref, n)));
    float m = INFINITY;
    for (size_t i = 0; i < n; i++)
      if (ref[i] > 0 && ref[i] < m) m = ref[i];
    ck_assert(sumtree_min_positive(t) == m);
    sumtree_set_range(t, 0, n, 0.5f);
    ck_assert_double_eq_tol(sumtree_total(t), 0.5 * (double)n, 1e-9);
    ck_assert(sumtree_min_positive(t) == 0.5f);
    sumtree_set_range(t, 0, n, 0.0f);
    ck_assert(sumtree_total(t) == 0.0);
    free(ref);
    sumtree_destroy(&t);
    ck_assert_ptr_null(t);
  }
}
END_TEST

START_TEST(find_inverts_prefix_sums) {
  const size_t n = 1000;
  sumtree *t = sumtree_new(n, NULL);
  double prefix = 0;
  for (size_t i = 0; i < n; i++) sumtree_set(t, i, (i % 7 == 3) ? 0.0f : (float)(i % 13 + 1));
  for (size_t i = 0; i < n; i++) {
    float v = sumtree_get(t, i);
    if (v > 0) {
      ck_assert_uint_eq(sumtree_find(t, prefix + 0.25 * v), i);
      ck_assert_uint_eq(sumtree_find(t, prefix + 0.75 * v), i);
    }
    prefix += v;
  }
  /* edges: u at or beyond the total lands on the last positive leaf, never on a zero one */
  size_t last = sumtree_find(t, sumtree_total(t) * 1.0000001);
  ck_assert(sumtree_get(t, last) > 0);
  ck_assert_uint_eq(last, n - 1 - ((n - 1) % 7 == 3));
  ck_assert(sumtree_get(t, sumtree_find(t, 0.0)) > 0);
  sumtree_destroy(&t);
}
END_TEST

START_TEST(rebuild_matches_incremental) {
  const size_t n = 777;
  sumtree *a = sumtree_new(n, NULL), *b = sumtree_new(n, NULL);
  float *leaves = sumtree_leaves(b);
  for (size_t i = 0; i < n; i++) {
    float v = (float)((i * 2654435761u) % 1000) / 100.0f;
    sumtree_set(a, i, v);
    leaves[i] = v;
  }
  sumtree_rebuild(b);
  ck_assert(sumtree_total(a) == sumtree_total(b));
  ck_assert(sumtree_min_positive(a) == sumtree_min_positive(b));
  sumtree_destroy(&a);
  sumtree_destroy(&b);
}
END_TEST

/* Pearson chi-square over 100 cells with the seed fixed: 99 degrees of freedom, the 0.999 quantile
 * is 148.2. A biased sampler (for example one that ignores a level's last child, or favours the
 * first leaf on rounding) lands far above it. */
START_TEST(sampling_frequencies_match_priorities_chi_square) {
  const size_t n = 100;
  const int draws = 200000;
  sumtree *t = sumtree_new(n, NULL);
  rng_t r;
  rng_seed(&r, 12345, RNG_STREAM_TEST);
  for (size_t i = 0; i < n; i++) sumtree_set(t, i, (float)(0.1 + rng_uniform(&r) * 5.0));
  long counts[100] = {0};
  double total = sumtree_total(t);
  for (int d = 0; d < draws; d++) counts[sumtree_find(t, rng_uniform(&r) * total)]++;
  double chi2 = 0;
  for (size_t i = 0; i < n; i++) {
    double expected = draws * sumtree_get(t, i) / total;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  ck_assert_msg(chi2 < 148.2, "chi-square %.1f over 99 dof: frequencies do not match priorities", chi2);
  /* and the test has teeth: the same counts against uniform expectations fail it */
  double chi2_uniform = 0;
  for (size_t i = 0; i < n; i++) {
    double expected = (double)draws / n;
    chi2_uniform += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  ck_assert(chi2_uniform > 1000);
  sumtree_destroy(&t);
}
END_TEST

START_TEST(capacity_zero_is_an_error) {
  ember_err err = {0};
  ck_assert_ptr_null(sumtree_new(0, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
}
END_TEST

int main(void) {
  Suite *s = suite_create("replay_sumtree");
  TCase *tc = tcase_create("sumtree");
  tcase_add_test(tc, sums_and_min_track_updates);
  tcase_add_test(tc, find_inverts_prefix_sums);
  tcase_add_test(tc, rebuild_matches_incremental);
  tcase_add_test(tc, sampling_frequencies_match_priorities_chi_square);
  tcase_add_test(tc, capacity_zero_is_an_error);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

/* rng: reproducible streams, independent streams, and distributions with the right moments. */
#include <check.h>
#include <math.h>

#include "rng.h"

START_TEST(same_seed_same_stream) {
  rng_t a, b;
  rng_seed(&a, 42, 7);
  rng_seed(&b, 42, 7);
  for (int i = 0; i < 1000; i++) ck_assert_uint_eq(rng_u64(&a), rng_u64(&b));
}
END_TEST

START_TEST(streams_differ) {
  rng_t a, b, c;
  rng_seed(&a, 42, 1);
  rng_seed(&b, 42, 2);
  rng_seed(&c, 43, 1);
  int same_ab = 0, same_ac = 0;
  for (int i = 0; i < 100; i++) {
    uint64_t x = rng_u64(&a), y = rng_u64(&b), z = rng_u64(&c);
    same_ab += x == y;
    same_ac += x == z;
  }
  ck_assert_int_eq(same_ab, 0);
  ck_assert_int_eq(same_ac, 0);
}
END_TEST

START_TEST(uniform_and_normal_moments) {
  rng_t r;
  rng_seed(&r, 1, RNG_STREAM_TEST);
  const int n = 200000;
  double su = 0, sn = 0, sn2 = 0, sn4 = 0;
  for (int i = 0; i < n; i++) {
    double u = rng_uniform(&r);
    ck_assert(u >= 0.0 && u < 1.0);
    su += u;
    double z = rng_normal(&r);
    sn += z, sn2 += z * z, sn4 += z * z * z * z;
  }
  /* standard errors: uniform mean 0.29/sqrt(n) ~ 6.5e-4; normal mean 2.2e-3, var ~3.2e-3 */
  ck_assert_double_eq_tol(su / n, 0.5, 4e-3);
  ck_assert_double_eq_tol(sn / n, 0.0, 1.2e-2);
  ck_assert_double_eq_tol(sn2 / n, 1.0, 1.6e-2);
  ck_assert_double_eq_tol(sn4 / n, 3.0, 0.1);
}
END_TEST

START_TEST(below_is_unbiased_and_in_range) {
  rng_t r;
  rng_seed(&r, 9, RNG_STREAM_TEST);
  int counts[7] = {0};
  const int n = 70000;
  for (int i = 0; i < n; i++) {
    uint64_t k = rng_below(&r, 7);
    ck_assert_uint_lt(k, 7);
    counts[k]++;
  }
  /* chi-square with 6 degrees of freedom; 22.46 is the 0.999 quantile */
  double chi2 = 0;
  for (int k = 0; k < 7; k++) chi2 += pow(counts[k] - n / 7.0, 2) / (n / 7.0);
  ck_assert_double_lt(chi2, 22.46);
}
END_TEST

int main(void) {
  Suite *s = suite_create("rng");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, same_seed_same_stream);
  tcase_add_test(tc, streams_differ);
  tcase_add_test(tc, uniform_and_normal_moments);
  tcase_add_test(tc, below_is_unbiased_and_in_range);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

/* rate_limiter: Reverb's SampleToInsertRatio semantics, counted in transitions. */
#include <check.h>
#include <math.h>
#include <string.h>

#include "rate_limiter.h"

START_TEST(min_size_gates_sampling) {
  rate_limiter rl;
  ck_assert_int_eq(rate_limiter_init(&rl, 0, 100, 0, NULL), 0);
  ck_assert(!rate_limiter_can_sample(&rl, 1));
  rate_limiter_on_insert(&rl, 99);
  ck_assert(!rate_limiter_can_sample(&rl, 1));
  ck_assert(rate_limiter_can_insert(&rl));
  rate_limiter_on_insert(&rl, 1);
  ck_assert(rate_limiter_can_sample(&rl, 1));
  ck_assert(!rate_limiter_can_sample(&rl, 0));
  /* ratio off: sampling never blocks on the ratio and inserts never block */
  rate_limiter_on_sample(&rl, 1000000);
  ck_assert(rate_limiter_can_sample(&rl, 256));
  ck_assert(rate_limiter_can_insert(&rl));
  ck_assert(rate_limiter_sample_feasible(&rl, 1 << 20));
  /* evictions that shrink the table below the minimum block sampling again */
  rate_limiter_on_delete(&rl, 1);
  ck_assert(!rate_limiter_can_sample(&rl, 1));
}
END_TEST

START_TEST(ratio_blocks_both_sides) {
  /* 4 samples per insert, min size 10, error buffer 20: diff = 4*inserts - samples must stay in
   * [40 - 20, 40 + 20] = [20, 60]. */
  rate_limiter rl;
  ck_assert_int_eq(rate_limiter_init(&rl, 4, 10, 20, NULL), 0);
  ck_assert(rl.min_diff == 20 && rl.max_diff == 60);
  rate_limiter_on_insert(&rl, 10); /* diff 40 */
  ck_assert(rate_limiter_can_sample(&rl, 20));   /* 40 - 20 = 20 >= 20 */
  ck_assert(!rate_limiter_can_sample(&rl, 21));  /* would leave 19 */
  rate_limiter_on_sample(&rl, 20);               /* diff 20 */
  ck_assert(!rate_limiter_can_sample(&rl, 1));   /* the learner waits for actors */
  ck_assert(rate_limiter_can_insert(&rl));
  rate_limiter_on_insert(&rl, 10);               /* diff 60 */
  ck_assert(rate_limiter_can_insert(&rl));       /* 60 <= 60: one more batch is admitted */
  rate_limiter_on_insert(&rl, 5);                /* diff 80: overshoot by one batch */
  ck_assert(!rate_limiter_can_insert(&rl));      /* the actors wait for the learner */
  ck_assert(rate_limiter_can_sample(&rl, 40));   /* 80 - 40 = 40 >= 20: a blocked insert never starves samples */
  rate_limiter_on_sample(&rl, 40);               /* diff 40 */
  ck_assert(rate_limiter_can_insert(&rl));
}
END_TEST

START_TEST(inserts_free_below_min_size) {
  rate_limiter rl;
  ck_assert_int_eq(rate_limiter_init(&rl, 1, 1000, 10, NULL), 0);
  /* diff would exceed max_diff (1010) only in theory: below min size inserts are always allowed */
  for (int i = 0; i < 999; i++) {
    ck_assert(rate_limiter_can_insert(&rl));
    rate_limiter_on_insert(&rl, 1);
  }
  ck_assert(!rate_limiter_can_sample(&rl, 1));
}
END_TEST

START_TEST(feasibility_and_validation) {
  rate_limiter rl;
  ck_assert_int_eq(rate_limiter_init(&rl, 2, 100, 128, NULL), 0);
  ck_assert(rate_limiter_sample_feasible(&rl, 256));
  ck_assert(!rate_limiter_sample_feasible(&rl, 257));
  ck_assert(!rate_limiter_sample_feasible(&rl, 0));
  ember_err err = {0};
  ck_assert_int_eq(rate_limiter_init(&rl, 1, 0, 10, &err), EMBER_EINVAL);
  ck_assert_int_eq(rate_limiter_init(&rl, 8, 10, 4, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "error_buffer"));
  ck_assert_int_eq(rate_limiter_init(&rl, INFINITY, 10, 4, &err), EMBER_EINVAL);
}
END_TEST

/* A long run against a simulated actor and learner: the ratio holds within the error buffer plus
 * one batch, and neither side deadlocks. */
START_TEST(long_run_keeps_the_ratio) {
  rate_limiter rl;
  const double spi = 8;
  ck_assert_int_eq(rate_limiter_init(&rl, spi, 1000, 4096, NULL), 0);
  int stalled = 0;
  for (int step = 0; step < 200000 && stalled < 3; step++) {
    int progressed = 0;
    if (step % 3 != 0 && rate_limiter_can_insert(&rl)) rate_limiter_on_insert(&rl, 64), progressed = 1;
    if (rate_limiter_can_sample(&rl, 256)) rate_limiter_on_sample(&rl, 256), progressed = 1;
    stalled = progressed ? 0 : stalled + 1;
    double diff = rate_limiter_diff(&rl);
    if (rate_limiter_size(&rl) >= 1000) {
      ck_assert(diff >= rl.min_diff);
      ck_assert(diff <= rl.max_diff + 64 * spi);
    }
  }
  ck_assert_int_eq(stalled, 0);
  ck_assert(rl.samples > 1000000);
}
END_TEST

int main(void) {
  Suite *s = suite_create("replay_rate_limiter");
  TCase *tc = tcase_create("rate_limiter");
  tcase_add_test(tc, min_size_gates_sampling);
  tcase_add_test(tc, ratio_blocks_both_sides);
  tcase_add_test(tc, inserts_free_below_min_size);
  tcase_add_test(tc, feasibility_and_validation);
  tcase_add_test(tc, long_run_keeps_the_ratio);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

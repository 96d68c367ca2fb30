/* metrics: counters and gauges, concurrent updates, Prometheus text that a scraper can parse. */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

START_TEST(counters_gauges_and_render) {
  metrics_registry *reg = metrics_new();
  metric *ins = metrics_counter(reg, "replay_inserts_total", NULL, "transitions inserted");
  metric *rej_nan = metrics_counter(reg, "replay_rejected_total", "reason=\"nan\"", "batches rejected");
  metric *size = metrics_gauge(reg, "replay_size", NULL, "transitions held");
  metric *rej_dims = metrics_counter(reg, "replay_rejected_total", "reason=\"dims\"", NULL);
  ck_assert_ptr_eq(metrics_counter(reg, "replay_inserts_total", NULL, NULL), ins); /* same metric back */
  ck_assert_ptr_null(metrics_gauge(reg, "replay_inserts_total", NULL, NULL));     /* kind clash */
  ck_assert_ptr_null(metrics_counter(reg, "9bad name", NULL, NULL));
  metric_add(ins, 64);
  metric_inc(rej_nan);
  metric_inc(rej_dims), metric_inc(rej_dims);
  metric_set(size, 1234.5);
  ck_assert_double_eq(metric_value(ins), 64);
  char *text;
  size_t len;
  ck_assert_int_eq(metrics_render(reg, &text, &len), 0);
  ck_assert_uint_eq(strlen(text), len);
  const char *expect =
      "# HELP replay_inserts_total transitions inserted\n"
      "# TYPE replay_inserts_total counter\n"
      "replay_inserts_total 64\n"
      "# HELP replay_rejected_total batches rejected\n"
      "# TYPE replay_rejected_total counter\n"
      "replay_rejected_total{reason=\"nan\"} 1\n"
      "replay_rejected_total{reason=\"dims\"} 2\n"
      "# HELP replay_size transitions held\n"
      "# TYPE replay_size gauge\n"
      "replay_size 1234.5\n";
  ck_assert_str_eq(text, expect);
  free(text);
  metrics_destroy(&reg);
  ck_assert_ptr_null(reg);
}
END_TEST

static void *hammer(void *arg) {
  for (int i = 0; i < 100000; i++) metric_inc(arg);
  return NULL;
}

START_TEST(concurrent_increments_are_not_lost) {
  metrics_registry *reg = metrics_new();
  metric *m = metrics_counter(reg, "hits_total", NULL, NULL);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, m);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  ck_assert_double_eq(metric_value(m), 400000);
  metrics_destroy(&reg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("metrics");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, counters_gauges_and_render);
  tcase_add_test(tc, concurrent_increments_are_not_lost);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

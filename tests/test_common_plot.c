/* plot: gnuplot turns a learning-curve CSV into real PNG files; bad inputs are named. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plot.h"

static int is_png(const char *path, long *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  unsigned char sig[8];
  int ok = fread(sig, 1, 8, f) == 8 && memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0;
  fseek(f, 0, SEEK_END);
  *size = ftell(f);
  fclose(f);
  return ok;
}

START_TEST(plots_returns_and_losses) {
  char dir[] = "/tmp/ember_plot_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char csv[256];
  snprintf(csv, sizeof csv, "%s/curves.csv", dir);
  FILE *f = fopen(csv, "w");
  fprintf(f, "env_steps,wall_s,updates,train_return,eval_return,loss_q,loss_pi,alpha\n");
  for (int i = 1; i <= 30; i++)
    fprintf(f, "%d,%d,%d,%g,%s,%g,%g,%g\n", i * 500, i, i * 400, -1500.0 + i * 40, i % 5 ? "nan" : "-300",
            10.0 / i, -1.0 * i, 0.2);
  fclose(f);
  char out[256];
  snprintf(out, sizeof out, "%s/plots", dir);
  ember_err err = {0};
  const char *runs[] = {dir, dir};
  ck_assert_msg(plot_runs(runs, 2, out, &err) == 0, "%s", err.msg);
  char png[300];
  long size;
  snprintf(png, sizeof png, "%s/returns.png", out);
  ck_assert(is_png(png, &size));
  ck_assert_int_gt(size, 5000);
  snprintf(png, sizeof png, "%s/losses.png", out);
  ck_assert(is_png(png, &size));
  ck_assert_int_gt(size, 5000);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(bad_inputs_are_named) {
  ember_err err = {0};
  const char *missing[] = {"/tmp/ember-no-such-run"};
  ck_assert_int_eq(plot_runs(missing, 1, "/tmp/ember-plot-out", &err), EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "/tmp/ember-no-such-run/curves.csv"));
  char dir[] = "/tmp/ember_plot_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char csv[256];
  snprintf(csv, sizeof csv, "%s/curves.csv", dir);
  FILE *f = fopen(csv, "w");
  fprintf(f, "a,b\n1,2\n");
  fclose(f);
  const char *runs[] = {dir};
  ck_assert_int_eq(plot_runs(runs, 1, dir, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "env_steps"));
  remove(csv);
  remove(dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("plot");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, plots_returns_and_losses);
  tcase_add_test(tc, bad_inputs_are_named);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

/* TensorBoard events from the learner: a short `ember train --deterministic` (and a plain `ember
 * train` with actors) leaves run_dir/tb/events.out.tfevents.* whose records frame and checksum
 * correctly and decode to the CSV's scalars: return/train, the algorithm's losses (loss/critic_loss,
 * ...), rate/updates_per_s, rate/env_steps_per_s, progress/updates; steps are env steps and never
 * decrease; the last progress/updates equals the CSV's last updates column. Each complete evaluation
 * is one eval/return_mean point (and eval/return_std) at its policy's publication: as many as
 * evals.csv has rows, their steps increasing among themselves. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb.h"
#include "tensorboard.pb-c.h"

typedef struct {
  int events, train_returns, eval_returns, eval_stds, critic_losses, updates_rates, steps_rates;
  double last_updates;
  int64_t last_step, last_eval_step;
  int steps_decrease, eval_steps_decrease;
} tb_summary;

static void read_events(const char *dir, tb_summary *s) {
  memset(s, 0, sizeof *s);
  s->last_updates = NAN;
  DIR *d = opendir(dir);
  ck_assert_msg(d != NULL, "no %s", dir);
  struct dirent *e;
  int files = 0;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "events.out.tfevents.", 20) != 0) continue;
    files++;
    char path[4600];
    snprintf(path, sizeof path, "%.4096s/%.256s", dir, e->d_name);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    for (;;) {
      uint64_t len;
      uint32_t len_crc, data_crc;
      if (fread(&len, sizeof len, 1, f) != 1) break;
      ck_assert_int_eq(fread(&len_crc, sizeof len_crc, 1, f), 1);
      ck_assert_uint_eq(len_crc, tb_masked_crc(&len, sizeof len));
      ck_assert_uint_lt(len, 1 << 20);
      uint8_t *buf = malloc(len);
      ck_assert_uint_eq(fread(buf, 1, len, f), len);
      ck_assert_int_eq(fread(&data_crc, sizeof data_crc, 1, f), 1);
      ck_assert_uint_eq(data_crc, tb_masked_crc(buf, len));
      Tensorboard__Event *ev = tensorboard__event__unpack(NULL, len, buf);
      ck_assert_ptr_nonnull(ev);
      s->events++;
      if (ev->what_case == TENSORBOARD__EVENT__WHAT_SUMMARY) {
        for (size_t i = 0; i < ev->summary->n_value; i++) {
          const char *tag = ev->summary->value[i]->tag;
          double v = ev->summary->value[i]->simple_value;
          ck_assert_msg(isfinite(v), "%s is %g", tag, v);
          if (!strncmp(tag, "eval/", 5)) { /* placed at its publication: increasing among themselves */
            if (!strcmp(tag, "eval/return_mean")) {
              if (ev->step <= s->last_eval_step && s->eval_returns) s->eval_steps_decrease = 1;
              s->last_eval_step = ev->step;
              s->eval_returns++;
            }
            if (!strcmp(tag, "eval/return_std")) s->eval_stds++;
            continue;
          }
          if (ev->step < s->last_step) s->steps_decrease = 1;
          s->last_step = ev->step;
          if (!strcmp(tag, "return/train")) s->train_returns++;
          if (!strcmp(tag, "loss/critic_loss")) s->critic_losses++;
          if (!strcmp(tag, "rate/updates_per_s")) s->updates_rates++;
          if (!strcmp(tag, "rate/env_steps_per_s")) s->steps_rates++;
          if (!strcmp(tag, "progress/updates")) s->last_updates = v;
        }
      }
      tensorboard__event__free_unpacked(ev, NULL);
      free(buf);
    }
    fclose(f);
  }
  closedir(d);
  ck_assert_int_eq(files, 1);
}

/* Rows (without the header) of run/name. */
static int csv_rows(const char *run, const char *name) {
  char path[4200], line[4096];
  snprintf(path, sizeof path, "%s/%s", run, name);
  FILE *f = fopen(path, "r");
  ck_assert_msg(f != NULL, "no %s", path);
  int n = -1;
  while (fgets(line, sizeof line, f)) n++;
  fclose(f);
  return n;
}

static double csv_last_updates(const char *run) {
  char path[4200], line[4096], last[4096] = "";
  snprintf(path, sizeof path, "%s/curves.csv", run);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  while (fgets(line, sizeof line, f)) snprintf(last, sizeof last, "%s", line);
  fclose(f);
  double steps, wall, updates;
  ck_assert_int_eq(sscanf(last, "%lf,%lf,%lf", &steps, &wall, &updates), 3);
  return updates;
}

static void run_and_check(const char *extra, int want_eval) {
  const char *bin = getenv("EMBER_BINARY_DIR");
  ck_assert_msg(bin != NULL, "EMBER_BINARY_DIR is not set");
  char dir[] = "/tmp/ember-tb-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "'%s/app/ember' train --task pendulum --steps 3000 --seed 2 --run-dir '%s/run' --set sac.hidden_size=16 "
           "--set learner.batch_size=32 --set replay.min_size_to_sample=200 --set learner.csv_interval_s=0.02 "
           "--set learner.log_interval_s=0.1 --set train.progress_interval_s=0 --set actor.eval_every_steps=200 "
           "--set actor.eval_episodes=2 --set learner.publish_every=50 %s > /dev/null",
           bin, dir, extra);
  ck_assert_int_eq(system(cmd), 0);
  char run[4096], tb[4200];
  snprintf(run, sizeof run, "%s/run", dir);
  snprintf(tb, sizeof tb, "%s/tb", run);
  tb_summary s;
  read_events(tb, &s);
  ck_assert_int_gt(s.events, 10);
  ck_assert_int_gt(s.train_returns, 0);
  int eval_rows = csv_rows(run, "evals.csv");
  if (want_eval) ck_assert_int_gt(eval_rows, 0);
  ck_assert_int_eq(s.eval_returns, eval_rows);
  ck_assert_int_eq(s.eval_stds, eval_rows);
  ck_assert_int_eq(s.eval_steps_decrease, 0);
  ck_assert_int_gt(s.critic_losses, 0);
  ck_assert_int_gt(s.updates_rates, 0);
  ck_assert_int_gt(s.steps_rates, 0);
  ck_assert_int_eq(s.steps_decrease, 0);
  ck_assert_int_ge(s.last_step, 3000);
  ck_assert_double_eq(s.last_updates, csv_last_updates(run));
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

START_TEST(deterministic_run_writes_the_csv_scalars) { run_and_check("--deterministic", 1); }
END_TEST

START_TEST(threaded_run_writes_the_csv_scalars) { run_and_check("--actors 1 --set actor.num_envs=1", 1); }
END_TEST

int main(void) {
  Suite *s = suite_create("resume_tb");
  TCase *tc = tcase_create("tensorboard");
  tcase_set_timeout(tc, 150);
  tcase_add_test(tc, deterministic_run_writes_the_csv_scalars);
  tcase_add_test(tc, threaded_run_writes_the_csv_scalars);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}

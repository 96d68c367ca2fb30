/* Physics faults in `ember train --deterministic`: the local source leaves them out of replay as
 * the actor does, logs a burst once when it starts, says the run's total when it ends, and keeps
 * the count across a resume (it is part of the deterministic checkpoint). The model is half_cheetah
 * with room for one contact (env_test_models.h), which faults every few steps. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "env_test_models.h"

static int count_of(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

/* The value of "physics_fault_transitions_total" in the last line that says msg; -1 if none. */
static long long last_total(const char *text, const char *msg) {
  long long v = -1;
  char needle[128];
  snprintf(needle, sizeof needle, "\"msg\":\"%s\"", msg);
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
    const char *end = strchr(p, '\n');
    const char *k = strstr(p, "\"physics_fault_transitions_total\":");
    if (k && (!end || k < end)) v = atoll(k + strlen("\"physics_fault_transitions_total\":"));
  }
  return v;
}

static void run(const char *dir, long max_updates, char *text, size_t cap) {
  const char *bin = getenv("EMBER_BINARY_DIR");
  ck_assert_msg(bin != NULL, "EMBER_BINARY_DIR is not set");
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "EMBER_LOG_FORMAT=json '%s/app/ember' train --deterministic --task half_cheetah --algo sac --steps 3000 "
           "--seed 3 --run-dir '%s/run' --set actor.model_dir='%s/models' --set actor.num_envs=4 "
           "--set sac.hidden_size=16 --set learner.batch_size=32 --set replay.min_size_to_sample=200 "
           "--set learner.max_updates=%ld --set train.progress_interval_s=0 --set train.log_level=info "
           "--set train.evaluator=false --set learner.tensorboard=false "
           "> '%s/out.txt' 2> '%s/err.txt'",
           bin, dir, dir, max_updates, dir, dir);
  ck_assert_int_eq(system(cmd), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/err.txt", dir);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(text, 1, cap - 1, f);
  text[n] = 0;
  fclose(f);
}

START_TEST(deterministic_run_leaves_out_counts_and_resumes_the_physics_fault_count) {
  char dir[] = "/tmp/ember-faults-XXXXXX", models[256], model[320];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(models, sizeof models, "%s/models", dir);
  ck_assert_int_eq(mkdir(models, 0755), 0);
  snprintf(model, sizeof model, "%s/half_cheetah.xml", models);
  write_cheetah_with_one_contact(model);

  static char text[1 << 18];
  run(dir, 1000, text, sizeof text); /* stopped early, with a checkpoint */
  long long first = last_total(text, "physics_faults_total");
  ck_assert_msg(first >= 20, "the first run reports %lld faulted transitions:\n%s", first, text);
  int bursts = count_of(text, "\"msg\":\"physics_fault\"");
  ck_assert_msg(bursts >= 1 && bursts < first, "%d burst lines for %lld faulted transitions", bursts, first);
  ck_assert_msg(last_total(text, "physics_fault") <= first, "a burst line counts past the run's total");

  /* the same run dir without the update limit: resumed from its checkpoint, the count goes on */
  run(dir, 0, text, sizeof text);
  ck_assert_msg(strstr(text, "deterministic_resumed") != NULL, "the second run did not resume:\n%s", text);
  long long second = last_total(text, "physics_faults_total");
  ck_assert_msg(second > first, "after the resume the total is %lld, before it %lld", second, first);

  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("train_faults");
  TCase *tc = tcase_create("deterministic");
  tcase_set_timeout(tc, 150);
  tcase_add_test(tc, deterministic_run_leaves_out_counts_and_resumes_the_physics_fault_count);
  suite_add_tcase(s, tc);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}

/* proc_harness.h: helpers for tests that run ember's programs as real processes (fork/exec) on
 * 127.0.0.1: spawning with a log file, reading --ready-file endpoints, waiting for exits and
 * conditions, asking a server for a metric, reading fields of JSON log lines. One test program
 * includes it once (the state below is per program). Every child is killed by proc_kill_children,
 * which a test registers as its fixture teardown so no program outlives a failed assertion. */
#ifndef EMBER_TEST_PROC_HARNESS_H
#define EMBER_TEST_PROC_HARNESS_H

#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net.h"
#include "replay_client.h"

/* Each test uses some of these; the rest are not warnings. */
#define PROC_FN static __attribute__((unused))

static char proc_dir[256]; /* logs and ready files of this test */
static pid_t proc_children[32];
static int proc_n_children;

PROC_FN void proc_kill_children(void) {
  for (int i = 0; i < proc_n_children; i++)
    if (proc_children[i] > 0 && waitpid(proc_children[i], NULL, WNOHANG) == 0) {
      kill(proc_children[i], SIGKILL);
      waitpid(proc_children[i], NULL, 0);
    }
  proc_n_children = 0;
}

PROC_FN double proc_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Starts argv with stdout+stderr in proc_dir/<log>, logging at info level. */
PROC_FN pid_t proc_spawn(const char *log, char *const argv[]) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", proc_dir, log);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("EMBER_LOG_LEVEL", "info", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    execv(argv[0], argv);
    _exit(127);
  }
  if (proc_n_children < 32) proc_children[proc_n_children++] = pid;
  return pid;
}

/* Reads the two lines of proc_dir/<name> (a --ready-file), waiting for it while pid lives. */
PROC_FN void proc_read_ready(const char *name, char *a, char *b, pid_t pid) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", proc_dir, name);
  double t0 = proc_now_s();
  FILE *f = NULL;
  while (!(f = fopen(path, "r"))) {
    int st;
    ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "%s: the program exited before it was ready", name);
    ck_assert_msg(proc_now_s() - t0 < 30, "%s never appeared", path);
    usleep(20000);
  }
  ck_assert(fscanf(f, "%255s %255s", a, b) == 2);
  fclose(f);
}

/* Exit code of pid (128 + signal when killed), waiting up to seconds; -1 (and SIGKILL) on timeout. */
PROC_FN int proc_exit_status(pid_t pid, double seconds) {
  double t0 = proc_now_s();
  int st;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (proc_now_s() - t0 > seconds) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    usleep(20000);
  }
}

/* Waits until cond holds, for up to seconds, then fails naming what it waited for. */
#define PROC_WAIT_UNTIL(cond, seconds, what)                                           \
  do {                                                                                 \
    double t0_ = proc_now_s();                                                         \
    while (!(cond)) {                                                                  \
      ck_assert_msg(proc_now_s() - t0_ < (seconds), "timed out waiting for %s", what); \
      usleep(50000);                                                                   \
    }                                                                                  \
  } while (0)

/* One metric from a server's Stats reply (NaN when it does not answer within 2 s). */
PROC_FN double proc_metric(void *zmq, const char *endpoint, const char *name, const char *labels) {
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  double v = NAN;
  if (replay_client_stats(zmq, endpoint, 2000, &env, &err) == 0) v = replay_stats_get(env->stats, name, labels);
  if (env) net_envelope_free(env);
  return v;
}

/* The unsigned number after "key": in a JSON log line (fails when absent). */
PROC_FN unsigned long long proc_json_u64(const char *line, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *p = strstr(line, k);
  ck_assert_msg(p != NULL, "no %s in: %s", key, line);
  return strtoull(p + strlen(k), NULL, 10);
}

/* The last line of proc_dir/<log> containing needle, copied into out (0 when none). */
PROC_FN int proc_log_line(const char *log, const char *needle, char *out, size_t cap) {
  char path[512], line[4096];
  snprintf(path, sizeof path, "%s/%s", proc_dir, log);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int found = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, needle)) {
      snprintf(out, cap, "%s", line);
      found = 1;
    }
  fclose(f);
  return found;
}

/* Removes proc_dir and everything in it (the end of a passing test). */
PROC_FN void proc_remove_dir(void) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", proc_dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* main() of a one-test process suite: no fork by Check (the test forks its own children, which
 * proc_kill_children reaps whatever happens), a generous timeout. */
PROC_FN int proc_run_suite(const char *suite, const TTest *test) {
  Suite *s = suite_create(suite);
  TCase *tc = tcase_create("processes");
  tcase_set_timeout(tc, 240);
  tcase_add_checked_fixture(tc, NULL, proc_kill_children);
  tcase_add_test(tc, test);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif

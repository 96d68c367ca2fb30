/* ember-actor as a process: it starts with nothing to talk to (the loop never waits for replay or
 * learner), stops cleanly with exit status 0 on SIGTERM and on SIGINT, and refuses a bad setting
 * with exit status 2 naming the key. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char binary[1024];
static char output[1 << 16];
static size_t output_len;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts ember-actor with args; its stderr comes back through *fd. */
static pid_t spawn(const char *const *args, int *fd) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(p[1], 2);
    close(p[0]);
    close(p[1]);
    const char *argv[32] = {binary};
    int n = 1;
    for (; args[n - 1] && n < 31; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    setenv("EMBER_LOG_LEVEL", "info", 1);
    unsetenv("EMBER_CONFIG");
    execv(binary, (char *const *)argv);
    _exit(127);
  }
  close(p[1]);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  *fd = p[0];
  output_len = 0;
  output[0] = 0;
  return pid;
}

/* Reads what the child wrote until `text` shows up or timeout_ms passes; 1 when it showed up. */
static int read_until(int fd, const char *text, int timeout_ms) {
  int64_t until = mono_ms() + timeout_ms;
  while (!strstr(output, text)) {
    int64_t left = until - mono_ms();
    if (left <= 0) return 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, (int)left) <= 0) continue;
    ssize_t n = read(fd, output + output_len, sizeof output - 1 - output_len);
    if (n <= 0) {
      if (n < 0 && errno == EAGAIN) continue;
      return strstr(output, text) != NULL;
    }
    output_len += (size_t)n;
    output[output_len] = 0;
  }
  return 1;
}

/* Waits for the child's exit up to timeout_ms; returns its wait status, or kills it and fails. */
static int wait_exit(pid_t pid, int timeout_ms) {
  int64_t until = mono_ms() + timeout_ms;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (mono_ms() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ck_abort_msg("ember-actor did not exit within %d ms", timeout_ms);
    }
    usleep(10000);
  }
  return status;
}

static void setup(void) {
  const char *dir = getenv("EMBER_BINARY_DIR");
  ck_assert_msg(dir != NULL, "EMBER_BINARY_DIR is not set (run through ctest)");
  snprintf(binary, sizeof binary, "%s/app/ember-actor", dir);
  ck_assert_msg(access(binary, X_OK) == 0, "%s is not built", binary);
}

static void stops_cleanly_on(int sig) {
  /* nothing listens on these loopback ports: replay and learner are both absent */
  const char *args[] = {"--set", "actor.task=pendulum", "--set", "actor.num_envs=2",
                        "--set", "actor.replay_endpoint=tcp://127.0.0.1:1",
                        "--set", "actor.params_endpoint=tcp://127.0.0.1:2",
                        "--set", "actor.control_endpoint=tcp://127.0.0.1:3",
                        "--set", "metrics.actor_port=-1", "--set", "actor.drain_ms=100",
                        "--set", "actor.log_interval_s=1", NULL};
  int fd;
  pid_t pid = spawn(args, &fd);
  /* a progress line means the env loop is running without replay or learner */
  ck_assert_msg(read_until(fd, "\"progress\"", 10000), "no progress line; output:\n%s", output);
  kill(pid, sig);
  int status = wait_exit(pid, 10000);
  read_until(fd, "\"stopped\"", 1000);
  close(fd);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d; output:\n%s", status, output);
  ck_assert_msg(strstr(output, "\"stopped\""), "no stopped line; output:\n%s", output);
  ck_assert_msg(strstr(output, "\"dropped\":"), "the stopped line has no accounting; output:\n%s", output);
}

START_TEST(sigterm_stops_cleanly) { stops_cleanly_on(SIGTERM); }
END_TEST

START_TEST(sigint_stops_cleanly) { stops_cleanly_on(SIGINT); }
END_TEST

START_TEST(bad_setting_is_refused_naming_the_key) {
  const char *args[] = {"--set", "actor.num_envs=0", NULL};
  int fd;
  pid_t pid = spawn(args, &fd);
  int status = wait_exit(pid, 10000);
  read_until(fd, "actor.num_envs", 1000);
  close(fd);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 2, "exit status %d", status);
  ck_assert_msg(strstr(output, "actor.num_envs"), "output:\n%s", output);
}
END_TEST

/* --role eval starts the evaluator: no replay endpoint needed, its own started and stopped lines */
START_TEST(role_eval_runs_the_evaluator) {
  const char *args[] = {"--role", "eval", "--set", "actor.task=pendulum", "--set", "actor.replay_endpoint=",
                        "--set", "actor.params_endpoint=tcp://127.0.0.1:2", "--set",
                        "actor.control_endpoint=tcp://127.0.0.1:3", "--set", "metrics.actor_port=-1", NULL};
  int fd;
  pid_t pid = spawn(args, &fd);
  ck_assert_msg(read_until(fd, "\"role\":\"eval\"", 10000), "no evaluator started line; output:\n%s", output);
  kill(pid, SIGTERM);
  int status = wait_exit(pid, 10000);
  read_until(fd, "\"evaluator_stopped\"", 1000);
  close(fd);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d; output:\n%s", status, output);
  ck_assert_msg(strstr(output, "\"evaluator_stopped\""), "no evaluator_stopped line; output:\n%s", output);
}
END_TEST

START_TEST(bad_role_is_refused_naming_it) {
  const char *args[] = {"--role", "teacher", "--set", "actor.task=pendulum", "--set", "metrics.actor_port=-1", NULL};
  int fd;
  pid_t pid = spawn(args, &fd);
  int status = wait_exit(pid, 10000);
  read_until(fd, "teacher", 1000);
  close(fd);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 0, "exit status %d", status);
  ck_assert_msg(strstr(output, "actor.role") && strstr(output, "teacher"), "output:\n%s", output);
}
END_TEST

START_TEST(unknown_task_is_refused) {
  const char *args[] = {"--set", "actor.task=no_such_task", "--set", "metrics.actor_port=-1", NULL};
  int fd;
  pid_t pid = spawn(args, &fd);
  int status = wait_exit(pid, 10000);
  read_until(fd, "no_such_task", 1000);
  close(fd);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status %d", status);
  ck_assert_msg(strstr(output, "no_such_task"), "output:\n%s", output);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("actor_process");
  TCase *tc = tcase_create("process");
  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, NULL);
  tcase_add_test(tc, sigterm_stops_cleanly);
  tcase_add_test(tc, sigint_stops_cleanly);
  tcase_add_test(tc, bad_setting_is_refused_naming_the_key);
  tcase_add_test(tc, unknown_task_is_refused);
  tcase_add_test(tc, role_eval_runs_the_evaluator);
  tcase_add_test(tc, bad_role_is_refused_naming_it);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

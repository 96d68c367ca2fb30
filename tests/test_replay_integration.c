/* ember-replay as a real process on tcp loopback: several client processes insert, the test
 * samples, the server is killed with SIGKILL and restarted on the same ports, and everything up to
 * the last snapshot is back with consistent counters; a client that lived through the crash
 * reconnects by itself and its batches are stored. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "net.h"
#include "replay_client.h"
#include "replay_test_util.h"

#define CLIENTS 3
#define BATCHES 40
#define PER_BATCH 32

static char dir[256], snapdir[300], ready[300], logpath[300];
static char iep[256], sep[256];

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static pid_t start_server(const char *insert_ep, const char *sample_ep) {
  const char *bin_dir = getenv("EMBER_BINARY_DIR");
  ck_assert_msg(bin_dir != NULL, "EMBER_BINARY_DIR is not set (run through ctest)");
  char bin[512], a_ins[320], a_smp[320], a_dir[400];
  snprintf(bin, sizeof bin, "%s/app/ember-replay", bin_dir);
  snprintf(a_ins, sizeof a_ins, "replay.insert_endpoint=%s", insert_ep);
  snprintf(a_smp, sizeof a_smp, "replay.sample_endpoint=%s", sample_ep);
  snprintf(a_dir, sizeof a_dir, "replay.snapshot_dir=%s", snapdir);
  unlink(ready);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    FILE *log = freopen(logpath, "a", stderr);
    (void)log;
    execl(bin, bin, "--ready-file", ready, "--set", a_ins, "--set", a_smp, "--set", a_dir, "--set",
          "replay.snapshot_interval_s=0.2", "--set", "replay.capacity=100000", "--set",
          "replay.min_size_to_sample=64", "--set", "replay.poll_interval_ms=10", "--set", "replay.log_interval_s=1",
          "--set", "metrics.replay_port=-1", (char *)NULL); /* not the fixed 9101: tests run side by side */
    _exit(127);
  }
  for (int i = 0; i < 1000; i++) { /* up to 20 s (ASan start-up is slow) */
    FILE *f = fopen(ready, "r");
    if (f) {
      int ok = fscanf(f, "%255s %255s", iep, sep) == 2;
      fclose(f);
      if (ok) return pid;
    }
    int status;
    ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "ember-replay exited at start (see %s)", logpath);
    sleep_ms(20);
  }
  ck_abort_msg("ember-replay did not become ready (see %s)", logpath);
  return -1;
}

/* A client process: its own context, BATCHES batches of PER_BATCH transitions, all must be stored. */
static int client_main(int actor) {
  void *ctx = zmq_ctx_new();
  ember_err err = {0};
  replay_insert_opts o = {.endpoint = iep, .actor_id = (uint64_t)actor, .max_in_flight = 4};
  replay_insert_client *c = replay_insert_client_new(ctx, &o, &err);
  if (!c) return 10;
  for (int b = 0; b < BATCHES; b++) {
    test_batch tb;
    test_batch_fill(&tb, "itest", 3, 1, PER_BATCH, (uint64_t)actor * 100000 + (uint64_t)b * PER_BATCH, 0, 0);
    if (replay_insert_client_send(c, &tb.b, &err) != 0) return 11;
    test_batch_free(&tb);
  }
  int rc = replay_insert_client_flush(c, 20000);
  replay_insert_stats st;
  replay_insert_client_stats(c, &st);
  replay_insert_client_destroy(&c);
  zmq_ctx_term(ctx);
  if (rc != 0) return 12;
  return st.transitions_stored == BATCHES * PER_BATCH && st.transitions_dropped == 0 ? 0 : 13;
}

static double stat_value(void *ctx, const char *name) {
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  ck_assert_msg(replay_client_stats(ctx, sep, 5000, &env, &err) == 0, "%s", err.msg);
  double v = replay_stats_get(env->stats, name, NULL);
  net_envelope_free(env);
  return v;
}

/* Each sampled row must be one transition that went in: the columns encode the same id. */
static void check_batch(const Ember__SampleBatch *b, uint64_t table_inserts) {
  const Ember__TransitionBatch *t = b->transitions;
  for (uint32_t i = 0; i < t->count; i++) {
    float base = t->obs[i * 3];
    ck_assert_float_eq_tol(t->obs[i * 3 + 2], base + 0.002f, 1e-2f);
    ck_assert_float_eq_tol(t->next_obs[i * 3], base + 0.064f, 1e-2f);
    ck_assert(t->action[i] == test_action((uint64_t)base, 0));
    ck_assert_float_eq_tol(t->reward[i], base + 0.192f, 1e-2f);
    ck_assert(b->actor_ids[i] >= 1 && b->actor_ids[i] <= CLIENTS + 1);
    ck_assert_uint_lt(b->keys[i], table_inserts);
  }
}

START_TEST(kill_and_restart_keeps_the_last_snapshot) {
  snprintf(dir, sizeof dir, "/tmp/ember-test-replay-int-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(snapdir, sizeof snapdir, "%s/snap", dir);
  snprintf(ready, sizeof ready, "%s/ready", dir);
  snprintf(logpath, sizeof logpath, "%s/replay.log", dir);
  pid_t server = start_server("tcp://127.0.0.1:*", "tcp://127.0.0.1:*");

  pid_t kids[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    kids[i] = fork();
    ck_assert_int_ge(kids[i], 0);
    if (kids[i] == 0) _exit(client_main(i + 1));
  }
  for (int i = 0; i < CLIENTS; i++) {
    int status;
    ck_assert_int_eq(waitpid(kids[i], &status, 0), kids[i]);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client %d failed with %d", i + 1,
                  WEXITSTATUS(status));
  }
  const double total = CLIENTS * BATCHES * PER_BATCH;

  void *ctx = zmq_ctx_new();
  ck_assert(stat_value(ctx, "replay_size") == total);
  ember_err err = {0};
  replay_sample_opts so = {.endpoint = sep, .batch_size = 256, .prefetch = 1};
  replay_sample_client *sc = replay_sample_client_new(ctx, &so, &err);
  for (int i = 0; i < 10; i++) {
    const Ember__SampleBatch *b = NULL;
    ck_assert_msg(replay_sample_client_next(sc, 5000, &b, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(b->transitions->count, 256);
    check_batch(b, (uint64_t)total);
  }
  replay_sample_client_destroy(&sc); /* with prefetch 1, the 10 answered requests are all there were, or 11 */

  /* wait until a snapshot holds every insert and every sample */
  double sampled = 0;
  for (int i = 0; i < 500; i++) {
    sampled = stat_value(ctx, "replay_table_sampled_transitions");
    if (stat_value(ctx, "replay_last_snapshot_inserted_transitions") == total &&
        stat_value(ctx, "replay_last_snapshot_sampled_transitions") == sampled)
      break;
    sleep_ms(20);
  }
  ck_assert(stat_value(ctx, "replay_last_snapshot_inserted_transitions") == total);
  ck_assert(sampled >= 2560);

  /* a client that lives through the crash */
  replay_insert_opts io = {.endpoint = iep, .actor_id = CLIENTS + 1, .ack_timeout_ms = 2000};
  replay_insert_client *survivor = replay_insert_client_new(ctx, &io, &err);
  ck_assert_ptr_nonnull(survivor);

  char old_iep[256], old_sep[256];
  snprintf(old_iep, sizeof old_iep, "%s", iep);
  snprintf(old_sep, sizeof old_sep, "%s", sep);
  ck_assert_int_eq(kill(server, SIGKILL), 0);
  int status;
  ck_assert_int_eq(waitpid(server, &status, 0), server);
  ck_assert(WIFSIGNALED(status));

  /* while it is down the client neither blocks nor loses count: batches wait in its queue */
  for (int b = 0; b < 5; b++) {
    test_batch tb;
    test_batch_fill(&tb, "itest", 3, 1, PER_BATCH, 900000 + (uint64_t)b * PER_BATCH, 0, 0);
    ck_assert_int_eq(replay_insert_client_send(survivor, &tb.b, &err), 0);
    test_batch_free(&tb);
  }
  replay_insert_stats st;
  replay_insert_client_poll(survivor, 50);
  replay_insert_client_stats(survivor, &st);
  ck_assert_uint_eq(st.transitions_stored, 0);
  ck_assert_uint_eq(st.transitions_queued + st.transitions_in_flight + st.transitions_unconfirmed, 5 * PER_BATCH);

  /* restart on the same ports: the table is back as of the last snapshot */
  server = start_server(old_iep, old_sep);
  ck_assert_str_eq(iep, old_iep);
  ck_assert(stat_value(ctx, "replay_restored_transitions") == total);
  ck_assert(stat_value(ctx, "replay_table_inserted_transitions") >= total);
  ck_assert(stat_value(ctx, "replay_table_sampled_transitions") == sampled);
  ck_assert(stat_value(ctx, "replay_last_snapshot_inserted_transitions") == total);

  /* the survivor reconnects by itself and what it queued is stored now */
  ck_assert_int_eq(replay_insert_client_flush(survivor, 15000), 0);
  replay_insert_client_stats(survivor, &st);
  ck_assert_uint_eq(st.transitions_stored + st.transitions_unconfirmed, 5 * PER_BATCH);
  ck_assert_uint_eq(st.transitions_dropped, 0);
  double size_now = stat_value(ctx, "replay_size");
  ck_assert(size_now == total + (double)st.transitions_stored);
  ck_assert(stat_value(ctx, "replay_table_inserted_transitions") == size_now);
  replay_insert_client_destroy(&survivor);

  /* and it samples restored data, with keys below the restored key counter */
  sc = replay_sample_client_new(ctx, &so, &err);
  const Ember__SampleBatch *b = NULL;
  ck_assert_msg(replay_sample_client_next(sc, 5000, &b, &err) == 0, "%s", err.msg);
  check_batch(b, (uint64_t)size_now);
  replay_sample_client_destroy(&sc);
  zmq_ctx_term(ctx);

  /* SIGTERM: a clean stop with a final snapshot */
  ck_assert_int_eq(kill(server, SIGTERM), 0);
  ck_assert_int_eq(waitpid(server, &status, 0), server);
  ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "grep -q '\"msg\":\"restored\".*\"transitions\":%d' '%s'", (int)total, logpath);
  ck_assert_msg(system(cmd) == 0, "no 'restored' log line with %d transitions in %s", (int)total, logpath);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void) {
  log_set_level(LOG_ERROR);
  Suite *s = suite_create("replay_integration");
  TCase *tc = tcase_create("process");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, kill_and_restart_keeps_the_last_snapshot);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

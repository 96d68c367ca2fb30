/* End to end over tcp loopback, as separate processes: ember-replay, ember-learner and ember-actor
 * (the built programs, started with fork/exec; every endpoint tcp://127.0.0.1:* with the real port
 * read from --ready-file, so parallel runs never collide). Checks:
 *   - transitions flow (replay stores them) and parameter versions advance and reach every actor
 *     (each actor's Heartbeat reports the version it acts with; the learner exports it per actor);
 *   - counters agree: for each actor, made = stored + rejected + dropped + unconfirmed + in flight
 *     (its "stopped" log line), and replay stored exactly what the actors say was stored;
 *   - SIGKILL of an actor mid-run neither stops nor corrupts training (updates go on, no batch is
 *     refused, no message rejected), and a new actor joins and receives the current parameters;
 *   - SIGTERM stops every program cleanly (exit 0, curves.csv and the learner state written). */
#include <sys/stat.h>
#include <zmq.h>

#include "proc_harness.h"

static char bin[512];
static char replay_insert[256], replay_sample[256], learner_params[256], learner_control[256];
static void *zmq;

static pid_t start_actor(int id) {
  char prog[600], sid[64], p[300], c[300], r[300];
  snprintf(prog, sizeof prog, "%s/app/ember-actor", bin);
  snprintf(sid, sizeof sid, "actor.id=%d", id);
  snprintf(p, sizeof p, "actor.params_endpoint=%s", learner_params);
  snprintf(c, sizeof c, "actor.control_endpoint=%s", learner_control);
  snprintf(r, sizeof r, "actor.replay_endpoint=%s", replay_insert);
  char log[32];
  snprintf(log, sizeof log, "actor%d.log", id);
  char *argv[] = {prog,  "--set", sid, "--set", p, "--set", c, "--set", r, "--set", "actor.task=pendulum",
                  "--set", "actor.num_envs=2", "--set", "metrics.actor_port=-1", "--set", "actor.seed=2",
                  "--set", "actor.heartbeat_ms=100", NULL};
  return proc_spawn(log, argv);
}

static double metric_of(const char *endpoint, const char *name, const char *labels) {
  return proc_metric(zmq, endpoint, name, labels);
}

static double actor_version(int id) {
  char labels[64];
  snprintf(labels, sizeof labels, "actor=\"%d\"", id);
  return metric_of(learner_control, "learner_actor_policy_version", labels);
}

typedef struct {
  unsigned long long env_steps, stored, rejected, dropped, unconfirmed, in_flight, policy_version;
} actor_final;

static actor_final actor_stopped_line(int id) {
  char log[32], line[4096];
  snprintf(log, sizeof log, "actor%d.log", id);
  ck_assert_msg(proc_log_line(log, "\"msg\":\"stopped\"", line, sizeof line), "actor %d wrote no 'stopped' line", id);
  return (actor_final){proc_json_u64(line, "env_steps"), proc_json_u64(line, "stored"),
                       proc_json_u64(line, "rejected"),  proc_json_u64(line, "dropped"),
                       proc_json_u64(line, "unconfirmed"), proc_json_u64(line, "in_flight"),
                       proc_json_u64(line, "policy_version")};
}

START_TEST(replay_learner_and_actors_as_processes) {
  const char *bd = getenv("EMBER_BINARY_DIR");
  ck_assert_msg(bd != NULL, "EMBER_BINARY_DIR is not set (ctest sets it)");
  snprintf(bin, sizeof bin, "%s", bd);
  snprintf(proc_dir, sizeof proc_dir, "/tmp/ember-it-procs.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(proc_dir));
  zmq = zmq_ctx_new();

  char prog[600], ready[600];
  snprintf(prog, sizeof prog, "%s/app/ember-replay", bin);
  snprintf(ready, sizeof ready, "%s/replay.ready", proc_dir);
  char *replay_argv[] = {prog, "--set", "replay.insert_endpoint=tcp://127.0.0.1:*", "--set",
                         "replay.sample_endpoint=tcp://127.0.0.1:*", "--set", "replay.min_size_to_sample=200",
                         "--set", "replay.log_interval_s=0", "--set", "metrics.replay_port=-1", "--ready-file", ready,
                         NULL};
  pid_t replay = proc_spawn("replay.log", replay_argv);
  proc_read_ready("replay.ready", replay_insert, replay_sample, replay);

  char lprog[600], lready[600], rep[300], run_dir[600];
  snprintf(lprog, sizeof lprog, "%s/app/ember-learner", bin);
  snprintf(lready, sizeof lready, "%s/learner.ready", proc_dir);
  snprintf(rep, sizeof rep, "learner.replay_endpoint=%s", replay_sample);
  snprintf(run_dir, sizeof run_dir, "%s/run", proc_dir);
  char *learner_argv[] = {lprog, "--task", "pendulum", "--steps", "0", "--seed", "2", "--run-dir", run_dir,
                          "--set", "learner.params_endpoint=tcp://127.0.0.1:*", "--set",
                          "learner.control_endpoint=tcp://127.0.0.1:*", "--set", rep, "--set", "sac.hidden_size=32",
                          "--set", "learner.batch_size=64", "--set", "learner.publish_every=10", "--set",
                          "learner.csv_interval_s=0.5", "--set", "metrics.learner_port=-1", "--ready-file", lready,
                          NULL};
  pid_t learner = proc_spawn("learner.log", learner_argv);
  proc_read_ready("learner.ready", learner_params, learner_control, learner);

  /* Phase 1: two actors; transitions flow, versions advance and reach both. */
  pid_t a1 = start_actor(1), a2 = start_actor(2);
  PROC_WAIT_UNTIL(metric_of(replay_sample, "replay_inserted_transitions_total", NULL) >= 1000, 60, "1000 stored transitions");
  PROC_WAIT_UNTIL(metric_of(learner_control, "learner_params_version", NULL) >= 5, 60, "5 parameter versions");
  double v = metric_of(learner_control, "learner_params_version", NULL);
  PROC_WAIT_UNTIL(actor_version(1) >= v && actor_version(2) >= v, 30, "both actors acting with the published version");

  /* counters agree: stop both cleanly, then every transition made is accounted for */
  kill(a1, SIGTERM);
  kill(a2, SIGTERM);
  ck_assert_int_eq(proc_exit_status(a1, 30), 0);
  ck_assert_int_eq(proc_exit_status(a2, 30), 0);
  actor_final f1 = actor_stopped_line(1), f2 = actor_stopped_line(2);
  const actor_final *fs[] = {&f1, &f2};
  for (int i = 0; i < 2; i++) {
    const actor_final *f = fs[i];
    ck_assert_msg(f->env_steps == f->stored + f->rejected + f->dropped + f->unconfirmed + f->in_flight,
                  "actor %d: made %llu != stored %llu + rejected %llu + dropped %llu + unconfirmed %llu + in flight "
                  "%llu",
                  i + 1, f->env_steps, f->stored, f->rejected, f->dropped, f->unconfirmed, f->in_flight);
    ck_assert_uint_eq(f->rejected, 0);
    ck_assert_uint_gt(f->policy_version, 0); /* the parameters reached it */
  }
  double inserted = metric_of(replay_sample, "replay_inserted_transitions_total", NULL);
  for (int i = 0; i < 2; i++)
    printf("actor %d: made %llu stored %llu dropped %llu unconfirmed %llu in flight %llu version %llu\n", i + 1,
           fs[i]->env_steps, fs[i]->stored, fs[i]->dropped, fs[i]->unconfirmed, fs[i]->in_flight,
           fs[i]->policy_version);
  printf("replay stored %.0f; learner version %.0f\n", inserted, v);
  /* what was still unacknowledged when an actor stopped may or may not have been stored */
  ck_assert_msg(inserted >= (double)(f1.stored + f2.stored) &&
                    inserted <= (double)(f1.stored + f2.stored + f1.in_flight + f2.in_flight + f1.unconfirmed +
                                         f2.unconfirmed),
                "replay stored %.0f, the actors say %llu + %llu (+ %llu in flight, %llu unconfirmed)", inserted,
                f1.stored, f2.stored, f1.in_flight + f2.in_flight, f1.unconfirmed + f2.unconfirmed);

  /* Phase 2: SIGKILL one actor mid-run; training goes on and a newcomer gets the parameters. */
  pid_t a3 = start_actor(3), a4 = start_actor(4);
  PROC_WAIT_UNTIL(actor_version(3) > 0 && actor_version(4) > 0, 60, "actors 3 and 4 to receive parameters");
  kill(a4, SIGKILL);
  ck_assert_int_eq(proc_exit_status(a4, 10), 128 + SIGKILL);
  double u0 = metric_of(learner_control, "learner_updates_total", NULL);
  double stored0 = metric_of(replay_sample, "replay_inserted_transitions_total", NULL);
  PROC_WAIT_UNTIL(metric_of(learner_control, "learner_updates_total", NULL) > u0 + 50, 30, "updates after the SIGKILL");
  PROC_WAIT_UNTIL(metric_of(replay_sample, "replay_inserted_transitions_total", NULL) > stored0 + 200, 30,
             "transitions from the surviving actor");
  pid_t a5 = start_actor(5);
  double v5 = metric_of(learner_control, "learner_params_version", NULL);
  PROC_WAIT_UNTIL(actor_version(5) >= v5, 60, "the new actor to act with the current parameters");
  ck_assert_int_eq(waitpid(learner, NULL, WNOHANG), 0);
  ck_assert_int_eq(waitpid(replay, NULL, WNOHANG), 0);
  ck_assert_double_eq(metric_of(learner_control, "learner_batches_refused_total", NULL), 0);

  /* everyone stops cleanly */
  kill(a3, SIGTERM);
  kill(a5, SIGTERM);
  ck_assert_int_eq(proc_exit_status(a3, 30), 0);
  ck_assert_int_eq(proc_exit_status(a5, 30), 0);
  kill(learner, SIGTERM);
  ck_assert_int_eq(proc_exit_status(learner, 30), 0);
  kill(replay, SIGTERM);
  ck_assert_int_eq(proc_exit_status(replay, 30), 0);
  char path[700];
  struct stat st;
  snprintf(path, sizeof path, "%s/curves.csv", run_dir);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_gt(st.st_size, 100);
  snprintf(path, sizeof path, "%s/learner_state.bin", run_dir);
  ck_assert_int_eq(stat(path, &st), 0);
  zmq_ctx_term(zmq);
  proc_remove_dir();
}
END_TEST

int main(void) { return proc_run_suite("learner_processes", replay_learner_and_actors_as_processes); }

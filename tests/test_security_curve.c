/* CurveZMQ across processes, as docs/operations.md sets it up: ember-replay and ember-learner with
 * the servers' key pair and an allow list, actors with their own keys.
 *   - an actor whose key is listed trains: its transitions are stored, it acts with published Params;
 *   - an actor with a key nobody listed is refused at the handshake: it stops by itself within seconds
 *     with an error that says so (not hanging), and the servers count the refusal in
 *     auth_refused_total, which their Prometheus endpoints serve;
 *   - a client without keys at all gets nothing from a CURVE server.
 * Endpoints are tcp://127.0.0.1:* with the real ports read from --ready-file. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <zmq.h>

#include "auth.h"
#include "proc_harness.h"

static char bin[512], keys[300];
static char replay_insert[256], replay_sample[256], learner_params[256], learner_control[256];
static void *zmq;
static char server_pub[41], server_sec[41];

static void key_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", keys, name); }

/* Stats over a CURVE socket: the test speaks with the servers' pair (which the allow list admits,
 * since the learner connects to replay with it). */
static double secured_metric(const char *endpoint, const char *name) {
  net_socket_opts o = {.curve_public_key = server_pub, .curve_secret_key = server_sec,
                       .curve_server_key = server_pub, .recv_timeout_ms = 2000, .linger_ms = 0};
  ember_err err = {0};
  void *s = net_socket(zmq, ZMQ_DEALER, endpoint, false, &o, &err);
  ck_assert_msg(s != NULL, "%s", err.msg);
  Ember__StatsRequest req = EMBER__STATS_REQUEST__INIT;
  double v = NAN;
  Ember__Envelope *env = NULL;
  if (net_send_body(s, EMBER__ENVELOPE__BODY_STATS_REQUEST, &req, NULL, 0, &err) == 0 &&
      net_recv(s, &env, NULL, 0, &err) == 0 && env->body_case == EMBER__ENVELOPE__BODY_STATS)
    v = replay_stats_get(env->stats, name, NULL);
  net_envelope_free(env);
  zmq_close(s);
  return v;
}

/* GET /metrics from a port on 127.0.0.1; returns the value of an unlabelled series or NaN. */
static double scrape(int port, const char *series) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return NAN;
  }
  const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
  ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
  static char buf[1 << 17];
  size_t len = 0;
  ssize_t r;
  while (len < sizeof buf - 1 && (r = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
  buf[len] = 0;
  close(fd);
  char needle[128];
  snprintf(needle, sizeof needle, "\n%s ", series);
  const char *p = strstr(buf, needle);
  return p ? strtod(p + strlen(needle), NULL) : NAN;
}

/* The port a program logged for its /metrics endpoint. */
static int metrics_port_of(const char *log) {
  char line[4096];
  PROC_WAIT_UNTIL(proc_log_line(log, "\"msg\":\"metrics\"", line, sizeof line), 20, "a metrics port line");
  return (int)proc_json_u64(line, "port");
}

static pid_t start_actor(int id, const char *key_name) {
  char prog[600], sid[64], p[300], c[300], r[300], kf[400], sk[400];
  snprintf(prog, sizeof prog, "%s/app/ember-actor", bin);
  snprintf(sid, sizeof sid, "actor.id=%d", id);
  snprintf(p, sizeof p, "actor.params_endpoint=%s", learner_params);
  snprintf(c, sizeof c, "actor.control_endpoint=%s", learner_control);
  snprintf(r, sizeof r, "actor.replay_endpoint=%s", replay_insert);
  snprintf(kf, sizeof kf, "security.key_file=%s/%s.key", keys, key_name);
  snprintf(sk, sizeof sk, "security.server_key_file=%s/server.pub", keys);
  char log[32];
  snprintf(log, sizeof log, "actor%d.log", id);
  char *argv[] = {prog, "--task", "pendulum", "--set", sid, "--set", p, "--set", c, "--set", r, "--set", kf,
                  "--set", sk, "--set", "actor.num_envs=2", "--set", "metrics.actor_port=-1", "--set",
                  "actor.heartbeat_ms=100", NULL};
  return proc_spawn(log, argv);
}

START_TEST(only_listed_actors_train) {
  const char *bd = getenv("EMBER_BINARY_DIR");
  ck_assert_msg(bd != NULL, "EMBER_BINARY_DIR is not set (ctest sets it)");
  snprintf(bin, sizeof bin, "%s", bd);
  snprintf(proc_dir, sizeof proc_dir, "/tmp/ember-it-curve.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(proc_dir));
  zmq = zmq_ctx_new();

  /* keys: the servers' pair (replay and learner share it; the learner also presents it to replay),
   * a listed actor's, an intruder's */
  snprintf(keys, sizeof keys, "%s/keys", proc_dir);
  char allow[400], path[400];
  snprintf(allow, sizeof allow, "%s/allow", keys);
  ck_assert_int_eq(mkdir(keys, 0700), 0);
  ck_assert_int_eq(mkdir(allow, 0700), 0);
  ember_err err = {0};
  ck_assert_int_eq(auth_keygen(keys, "server", &err), 0);
  ck_assert_int_eq(auth_keygen(keys, "actor1", &err), 0);
  ck_assert_int_eq(auth_keygen(keys, "intruder", &err), 0);
  const char *listed[] = {"server", "actor1"};
  for (int i = 0; i < 2; i++) {
    char from[500], to[500], cmd[1100];
    snprintf(from, sizeof from, "%s/%s.pub", keys, listed[i]);
    snprintf(to, sizeof to, "%s/%s.pub", allow, listed[i]);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    ck_assert_int_eq(system(cmd), 0);
  }
  key_path(path, sizeof path, "server.key");
  ck_assert_int_eq(auth_load_keys(path, server_pub, server_sec, &err), 0);

  char prog[600], ready[600], kf[500], af[500], sk[500];
  snprintf(kf, sizeof kf, "security.key_file=%s/server.key", keys);
  snprintf(af, sizeof af, "security.allow_dir=%s", allow);
  snprintf(prog, sizeof prog, "%s/app/ember-replay", bin);
  snprintf(ready, sizeof ready, "%s/replay.ready", proc_dir);
  char *replay_argv[] = {prog, "--set", "replay.insert_endpoint=tcp://127.0.0.1:*", "--set",
                         "replay.sample_endpoint=tcp://127.0.0.1:*", "--set", "replay.min_size_to_sample=200",
                         "--set", kf, "--set", af, "--set", "metrics.replay_port=0", "--set",
                         "metrics.address=127.0.0.1", "--ready-file", ready, NULL};
  pid_t replay = proc_spawn("replay.log", replay_argv);
  proc_read_ready("replay.ready", replay_insert, replay_sample, replay);

  char lprog[600], lready[600], rep[300];
  snprintf(lprog, sizeof lprog, "%s/app/ember-learner", bin);
  snprintf(lready, sizeof lready, "%s/learner.ready", proc_dir);
  snprintf(rep, sizeof rep, "learner.replay_endpoint=%s", replay_sample);
  snprintf(sk, sizeof sk, "security.server_key_file=%s/server.pub", keys);
  char *learner_argv[] = {lprog, "--task", "pendulum", "--steps", "0", "--set",
                          "learner.params_endpoint=tcp://127.0.0.1:*", "--set",
                          "learner.control_endpoint=tcp://127.0.0.1:*", "--set", rep, "--set", "sac.hidden_size=32",
                          "--set", "learner.batch_size=64", "--set", "learner.publish_every=10", "--set", kf,
                          "--set", sk, "--set", af, "--set", "metrics.learner_port=0", "--set",
                          "metrics.address=127.0.0.1", "--ready-file", lready, NULL};
  pid_t learner = proc_spawn("learner.log", learner_argv);
  proc_read_ready("learner.ready", learner_params, learner_control, learner);
  int replay_port = metrics_port_of("replay.log"), learner_port = metrics_port_of("learner.log");

  /* the listed actor trains */
  pid_t good = start_actor(1, "actor1");
  PROC_WAIT_UNTIL(secured_metric(replay_sample, "replay_inserted_transitions_total") >= 500, 60,
                  "500 transitions stored from the listed actor");
  PROC_WAIT_UNTIL(secured_metric(learner_control, "learner_params_version") >= 2, 60, "published parameters");

  /* the intruder is refused, counted, and stops by itself with a clear error */
  pid_t bad = start_actor(2, "intruder");
  int code = proc_exit_status(bad, 20);
  ck_assert_msg(code != 0 && code != -1, "the refused actor did not stop by itself (status %d)", code);
  char line[4096];
  ck_assert_msg(proc_log_line("actor2.log", "refused this actor's CurveZMQ key", line, sizeof line),
                "the refused actor's log does not say why");
  PROC_WAIT_UNTIL(scrape(learner_port, "auth_refused_total") >= 1, 10, "the learner to count the refusal");
  PROC_WAIT_UNTIL(scrape(replay_port, "auth_refused_total") >= 1, 10, "replay to count the refusal");
  ck_assert_double_ge(scrape(replay_port, "auth_admitted_total"), 2); /* the good actor and the learner */

  /* a plain client gets no answer from a CURVE server */
  Ember__Envelope *env = NULL;
  ck_assert_int_ne(replay_client_stats(zmq, replay_sample, 500, &env, &err), 0);
  ck_assert_ptr_null(env);

  /* `ember status` reaches CURVE servers with keys they admit, and not without */
  char eprog[600], kfile[400], sfile[400];
  snprintf(eprog, sizeof eprog, "%s/app/ember", bin);
  key_path(kfile, sizeof kfile, "server.key");
  key_path(sfile, sizeof sfile, "server.pub");
  char *status_argv[] = {eprog, "status", "--interval", "0", "--key", kfile, "--server-key", sfile, replay_sample,
                         learner_control, NULL};
  ck_assert_int_eq(proc_exit_status(proc_spawn("status.log", status_argv), 30), 0);
  char *plain_argv[] = {eprog, "status", "--interval", "0", "--timeout-ms", "500", replay_sample, NULL};
  ck_assert_int_eq(proc_exit_status(proc_spawn("status-plain.log", plain_argv), 30), 1);

  ck_assert_int_eq(waitpid(good, NULL, WNOHANG), 0); /* still training */
  kill(good, SIGTERM);
  ck_assert_int_eq(proc_exit_status(good, 30), 0);
  kill(learner, SIGTERM);
  ck_assert_int_eq(proc_exit_status(learner, 30), 0);
  kill(replay, SIGTERM);
  ck_assert_int_eq(proc_exit_status(replay, 30), 0);
  zmq_ctx_term(zmq);
  proc_remove_dir();
}
END_TEST

int main(void) { return proc_run_suite("security_curve", only_listed_actors_train); }

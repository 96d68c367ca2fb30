/* The learner loop (learner/learner.c) in one process over inproc://, with a real replay server and
 * a hand-driven "actor" (insert client, SUB and DEALER sockets):
 *   - Params are published every publish_every updates with versions 1, 2, 3, ... in the form of
 *     docs/protocol.md, and max_updates stops the run;
 *   - the control socket answers ParamsRequest only when it has something newer, records episode
 *     reports, answers StatsRequest, refuses a Hello for another task, an unexpected message and
 *     undecodable bytes (counted, and the learner keeps serving);
 *   - the run directory gets curves.csv (header and rows) and the learner state;
 *   - learner_new refuses an unknown algorithm, an unknown task and a bad endpoint by name. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "learner.h"
#include "log.h"
#include "net.h"
#include "replay_client.h"
#include "replay_server.h"

static void *zmq;
static replay_server *replay;
static pthread_t replay_tid;
static char run_dir[64];

static void *replay_main(void *arg) {
  replay_server_run(arg);
  return NULL;
}

static void setup(void) {
  log_set_level(LOG_WARN);
  zmq = zmq_ctx_new();
  replay_config rc;
  config_binding b = {&replay_config_section, &rc, NULL};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(&b, 1, &err), 0);
  snprintf(rc.insert_endpoint, sizeof rc.insert_endpoint, "inproc://t-insert");
  snprintf(rc.sample_endpoint, sizeof rc.sample_endpoint, "inproc://t-sample");
  rc.min_size_to_sample = 64;
  rc.log_interval_s = 0;
  replay = replay_server_new(&rc, zmq, NULL, &err);
  ck_assert_msg(replay != NULL, "%s", err.msg);
  ck_assert_int_eq(pthread_create(&replay_tid, NULL, replay_main, replay), 0);
  snprintf(run_dir, sizeof run_dir, "/tmp/ember-learner-loop.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(run_dir));
}

static void teardown(void) {
  replay_server_stop(replay);
  pthread_join(replay_tid, NULL);
  replay_server_destroy(&replay);
  zmq_ctx_term(zmq);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", run_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", run_dir);
}

static void configs(run_config *run, learner_config *cfg) {
  config_binding b[] = {{&run_config_section, run, NULL}, {&learner_config_section, cfg, NULL}};
  ember_err err = {0};
  ck_assert_int_eq(config_defaults(b, 2, &err), 0);
  run->steps = 0;
  snprintf(run->run_dir, sizeof run->run_dir, "%s/run", run_dir);
  cfg->batch_size = 32;
  cfg->publish_every = 10;
  cfg->max_updates = 40;
  cfg->log_interval_s = 0;
  cfg->csv_interval_s = 0.05;
  snprintf(cfg->params_endpoint, sizeof cfg->params_endpoint, "inproc://t-params");
  snprintf(cfg->control_endpoint, sizeof cfg->control_endpoint, "inproc://t-control");
  snprintf(cfg->replay_endpoint, sizeof cfg->replay_endpoint, "inproc://t-sample");
}

/* 256 pendulum-shaped transitions (obs 3, act 1) into replay. */
static void fill_replay(void) {
  replay_insert_opts o = {.endpoint = "inproc://t-insert", .actor_id = 9,
                          .ack_timeout_ms = 60000}; /* a loaded machine under ASan is slow to ack */
  ember_err err = {0};
  replay_insert_client *c = replay_insert_client_new(zmq, &o, &err);
  ck_assert_ptr_nonnull(c);
  enum { N = 64 };
  float obs[N * 3], act[N], rew[N], nobs[N * 3];
  protobuf_c_boolean term[N], trunc[N];
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < N; i++) {
      for (int j = 0; j < 3; j++) obs[i * 3 + j] = 0.01f * (float)(i + j + round), nobs[i * 3 + j] = obs[i * 3 + j];
      act[i] = 0.5f, rew[i] = -1.0f, term[i] = 0, trunc[i] = i == N - 1;
    }
    Ember__TransitionBatch tb = EMBER__TRANSITION_BATCH__INIT;
    tb.task = "pendulum";
    tb.obs_dim = 3, tb.act_dim = 1, tb.count = N;
    tb.n_obs = tb.n_next_obs = N * 3, tb.obs = obs, tb.next_obs = nobs;
    tb.n_action = tb.n_reward = tb.n_terminated = tb.n_truncated = N;
    tb.action = act, tb.reward = rew, tb.terminated = term, tb.truncated = trunc;
    ck_assert_int_eq(replay_insert_client_send(c, &tb, &err), 0);
  }
  ck_assert_int_eq(replay_insert_client_flush(c, 5000), 0);
  replay_insert_stats st;
  replay_insert_client_stats(c, &st);
  ck_assert_uint_eq(st.transitions_stored, 256);
  replay_insert_client_destroy(&c);
}

typedef struct {
  learner_t *l;
  int rc;
} run_arg;

static void *learner_main(void *arg) {
  run_arg *a = arg;
  ember_err err = {0};
  a->rc = learner_run(a->l, &err);
  return NULL;
}

static Ember__Envelope *recv_within(void *sock, int ms) {
  zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, ms) <= 0) return NULL;
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  ck_assert_int_eq(net_recv(sock, &env, NULL, 0, &err), 0);
  return env;
}

static double learner_metric(void *dealer, const char *name, const char *labels) {
  Ember__StatsRequest req = EMBER__STATS_REQUEST__INIT;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_STATS_REQUEST, &req, NULL, 0, NULL), 0);
  for (;;) {
    Ember__Envelope *env = recv_within(dealer, 2000);
    ck_assert_msg(env != NULL, "no Stats from the learner");
    if (env->body_case != EMBER__ENVELOPE__BODY_STATS) {
      net_envelope_free(env);
      continue;
    }
    ck_assert_str_eq(env->stats->role, "learner");
    double v = replay_stats_get(env->stats, name, labels);
    net_envelope_free(env);
    return v;
  }
}

START_TEST(publishes_versions_in_order_then_stops) {
  run_config run;
  learner_config cfg;
  configs(&run, &cfg);
  ember_err err = {0};
  learner_t *l = learner_new(&run, &cfg, NULL, zmq, NULL, &err);
  ck_assert_msg(l != NULL, "%s", err.msg);
  ck_assert_str_eq(learner_control_endpoint(l), "inproc://t-control");

  net_socket_opts so = {.linger_ms = 0, .subscribe = ""};
  void *sub = net_socket(zmq, ZMQ_SUB, "inproc://t-params", false, &so, &err);
  void *dealer = net_socket(zmq, ZMQ_DEALER, "inproc://t-control", false, &so, &err);
  ck_assert_ptr_nonnull(sub);
  ck_assert_ptr_nonnull(dealer);

  /* before any update there is nothing to hand out */
  Ember__ParamsRequest pr = EMBER__PARAMS_REQUEST__INIT;
  pr.actor_id = 7;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_PARAMS_REQUEST, &pr, NULL, 0, NULL), 0);

  /* the learner's loop is driven by samples: hold it until we start it */
  run_arg ra = {l, -1};
  pthread_t tid;
  ck_assert_int_eq(pthread_create(&tid, NULL, learner_main, &ra), 0);
  Ember__Envelope *none = recv_within(dealer, 300);
  ck_assert_msg(none == NULL, "the learner answered a ParamsRequest before it had Params");
  fill_replay();

  /* versions 1..4 arrive on the PUB socket, in order, in the acting-policy form */
  uint64_t last = 0;
  while (last < 4) {
    Ember__Envelope *env = recv_within(sub, 10000);
    ck_assert_msg(env != NULL, "no Params after version %llu", (unsigned long long)last);
    ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_PARAMS);
    const Ember__Params *p = env->params;
    ck_assert_uint_eq(p->version, last + 1);
    ck_assert_uint_eq(p->learner_updates, 10 * p->version);
    ck_assert_str_eq(p->policy_kind, "tanh_gaussian_mlp");
    ck_assert_str_eq(p->task, "pendulum");
    ck_assert_uint_eq(p->obs_dim, 3);
    ck_assert_uint_eq(p->act_dim, 1);
    ck_assert_uint_ge(p->env_steps, 256);
    last = p->version;
    net_envelope_free(env);
  }
  pthread_join(tid, NULL); /* max_updates = 40 */
  ck_assert_int_eq(ra.rc, 0);
  learner_progress pg;
  learner_get_progress(l, &pg);
  ck_assert(pg.done);
  ck_assert_uint_eq(pg.updates, 40);
  ck_assert_uint_eq(pg.version, 4);

  learner_destroy(&l);
  zmq_close(sub);
  zmq_close(dealer);

  char path[128];
  struct stat st;
  snprintf(path, sizeof path, "%s/run/curves.csv", run_dir);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char line[1024];
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  ck_assert_str_eq(line, "env_steps,wall_s,updates,train_return,eval_return,eval_env_steps,eval_version,eval_std,"
                         "eval_episodes,critic_loss,q_mean,target_mean,actor_loss,alpha,alpha_loss,entropy\n");
  int rows = 0;
  while (fgets(line, sizeof line, f)) rows++;
  fclose(f);
  ck_assert_int_ge(rows, 1);
  snprintf(path, sizeof path, "%s/run/learner_state.bin", run_dir);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_gt(st.st_size, 1000);
}
END_TEST

/* A learner of cfg running on its own thread with replay filled, and a DEALER on its control socket. */
typedef struct {
  learner_t *l;
  void *dealer;
  run_arg ra;
  pthread_t tid;
} running_learner;

static void start_learner(running_learner *r, const run_config *run, const learner_config *cfg) {
  ember_err err = {0};
  r->l = learner_new(run, cfg, NULL, zmq, NULL, &err);
  ck_assert_msg(r->l != NULL, "%s", err.msg);
  net_socket_opts so = {.linger_ms = 0};
  r->dealer = net_socket(zmq, ZMQ_DEALER, "inproc://t-control", false, &so, &err);
  ck_assert_ptr_nonnull(r->dealer);
  r->ra = (run_arg){r->l, -1};
  ck_assert_int_eq(pthread_create(&r->tid, NULL, learner_main, &r->ra), 0);
  fill_replay();
}

START_TEST(control_socket_serves_and_refuses) {
  run_config run;
  learner_config cfg;
  configs(&run, &cfg);
  cfg.max_updates = 0; /* runs until stopped */
  running_learner r;
  start_learner(&r, &run, &cfg);
  learner_t *l = r.l;
  void *dealer = r.dealer;
  /* wait for a first version, then ask for it */
  double v = 0;
  for (int i = 0; i < 200 && !(v >= 1); i++) {
    v = learner_metric(dealer, "learner_params_version", NULL);
    usleep(20000);
  }
  ck_assert(v >= 1);
  Ember__ParamsRequest pr = EMBER__PARAMS_REQUEST__INIT;
  pr.actor_id = 7;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_PARAMS_REQUEST, &pr, NULL, 0, NULL), 0);
  Ember__Envelope *env = recv_within(dealer, 2000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_PARAMS);
  ck_assert_uint_ge(env->params->version, 1);
  net_envelope_free(env);
  pr.have_version = 1u << 30; /* holds something newer than anything published: no answer */
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_PARAMS_REQUEST, &pr, NULL, 0, NULL), 0);
  ck_assert_ptr_null(recv_within(dealer, 200));

  /* episode reports: a training episode counts; an evaluation episode sent alone (an older actor)
   * is counted but never becomes an evaluation figure */
  Ember__EpisodeReport er = EMBER__EPISODE_REPORT__INIT;
  er.actor_id = 7, er.episode_return = -100, er.policy_version = 1, er.length = 200;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EPISODE, &er, NULL, 0, NULL), 0);
  er.evaluation = 1, er.episode_return = -5, er.policy_version = 3;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EPISODE, &er, NULL, 0, NULL), 0);
  ck_assert_double_eq(learner_metric(dealer, "learner_episodes_total", "kind=\"train\""), 1);
  ck_assert_double_eq(learner_metric(dealer, "learner_episodes_total", "kind=\"eval\""), 1);
  ck_assert_double_eq(learner_metric(dealer, "learner_evaluations_total", NULL), 0);

  /* a complete evaluation: mean, sample standard deviation, episodes, version, its env steps */
  double returns[2] = {-50, -70};
  uint32_t lengths[2] = {200, 200};
  protobuf_c_boolean terminated[2] = {0, 0};
  Ember__EvaluationReport ev = EMBER__EVALUATION_REPORT__INIT;
  ev.actor_id = 9, ev.policy_version = 2, ev.env_steps = 1234;
  ev.n_returns = 2, ev.returns = returns, ev.n_lengths = 2, ev.lengths = lengths;
  ev.n_terminated = 2, ev.terminated = terminated;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EVALUATION, &ev, NULL, 0, NULL), 0);
  ck_assert_double_eq_tol(learner_metric(dealer, "learner_eval_return", NULL), -60, 1e-9);
  ck_assert_double_eq_tol(learner_metric(dealer, "learner_eval_return_std", NULL), sqrt(200.0), 1e-9);
  ck_assert_double_eq(learner_metric(dealer, "learner_eval_episodes", NULL), 2);
  ck_assert_double_eq(learner_metric(dealer, "learner_eval_policy_version", NULL), 2);
  ck_assert_double_eq(learner_metric(dealer, "learner_evaluations_total", NULL), 1);
  ck_assert_double_eq(learner_metric(dealer, "learner_episodes_total", "kind=\"eval\""), 3);
  /* an older version's evaluation is recorded (evals.csv) but is not the latest */
  ev.policy_version = 1, returns[0] = returns[1] = -1000;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EVALUATION, &ev, NULL, 0, NULL), 0);
  ck_assert_double_eq(learner_metric(dealer, "learner_evaluations_total", NULL), 2);
  ck_assert_double_eq_tol(learner_metric(dealer, "learner_eval_return", NULL), -60, 1e-9);
  /* malformed evaluations are refused with an ErrorReply naming what was wrong, and change nothing */
  ev.policy_version = 5, ev.n_lengths = 1;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EVALUATION, &ev, NULL, 0, NULL), 0);
  env = recv_within(dealer, 2000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_ERROR);
  ck_assert_msg(strstr(env->error->message, "1 lengths"), "%s", env->error->message);
  net_envelope_free(env);
  ev.n_lengths = 2, returns[1] = NAN;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EVALUATION, &ev, NULL, 0, NULL), 0);
  env = recv_within(dealer, 2000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_ERROR);
  ck_assert_msg(strstr(env->error->message, "episode 1"), "%s", env->error->message);
  net_envelope_free(env);
  ev.n_returns = ev.n_lengths = ev.n_terminated = 0;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EVALUATION, &ev, NULL, 0, NULL), 0);
  env = recv_within(dealer, 2000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_ERROR);
  net_envelope_free(env);
  ck_assert_double_eq(learner_metric(dealer, "learner_evaluations_total", NULL), 2);
  ck_assert_double_eq_tol(learner_metric(dealer, "learner_eval_return", NULL), -60, 1e-9);

  /* heartbeats give each actor's version */
  Ember__Heartbeat hb = EMBER__HEARTBEAT__INIT;
  hb.role = "actor", hb.id = 7, hb.policy_version = 1;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_HEARTBEAT, &hb, NULL, 0, NULL), 0);
  ck_assert_double_eq(learner_metric(dealer, "learner_actor_policy_version", "actor=\"7\""), 1);

  /* refusals: a Hello for another task and an unexpected body get an ErrorReply; garbage is counted */
  double refused0 = learner_metric(dealer, "learner_messages_refused_total", NULL);
  Ember__Hello h = EMBER__HELLO__INIT;
  h.role = "actor", h.id = 8, h.task = "hopper";
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_HELLO, &h, NULL, 0, NULL), 0);
  env = recv_within(dealer, 2000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_ERROR);
  ck_assert_ptr_nonnull(strstr(env->error->message, "hopper"));
  net_envelope_free(env);
  Ember__SampleRequest sr = EMBER__SAMPLE_REQUEST__INIT;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &sr, NULL, 0, NULL), 0);
  env = recv_within(dealer, 2000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_ERROR);
  net_envelope_free(env);
  ck_assert_int_eq(zmq_send(dealer, "not an envelope", 15, 0), 15);
  double refused = learner_metric(dealer, "learner_messages_refused_total", NULL);
  ck_assert_double_eq(refused, refused0 + 3);
  /* and it is still training */
  double u0 = learner_metric(dealer, "learner_updates_total", NULL);
  usleep(200000);
  ck_assert(learner_metric(dealer, "learner_updates_total", NULL) > u0);

  learner_stop(l);
  pthread_join(r.tid, NULL);
  ck_assert_int_eq(r.ra.rc, 0);
  zmq_close(dealer);
  learner_destroy(&l);
}
END_TEST

/* learner.stop_at_return: an evaluation below the threshold changes nothing, the first at or above it
 * ends learner_run (with its final checkpoint), and the progress says why. Before it, with
 * learner.random_steps above the env steps replay holds, the learner updates but publishes nothing
 * (the actors act uniformly at random: the standard SAC warm-up). */
START_TEST(an_evaluation_at_the_threshold_stops_the_run_and_random_steps_hold_params) {
  run_config run;
  learner_config cfg;
  configs(&run, &cfg);
  cfg.max_updates = 0;
  cfg.stop_on_return = true;
  cfg.stop_at_return = -100;
  cfg.random_steps = 1000000; /* more than replay will ever hold here */
  running_learner r;
  start_learner(&r, &run, &cfg);
  learner_t *l = r.l;
  void *dealer = r.dealer;
  double u = 0;
  for (int i = 0; i < 200 && u < 50; i++) {
    u = learner_metric(dealer, "learner_updates_total", NULL);
    usleep(20000);
  }
  ck_assert_msg(u >= 50, "the learner did not update (%g updates)", u);
  ck_assert_double_eq(learner_metric(dealer, "learner_params_version", NULL), 0);

  double returns[3] = {-300, -200, -250};
  uint32_t lengths[3] = {200, 200, 200};
  protobuf_c_boolean terminated[3] = {0, 0, 0};
  Ember__EvaluationReport ev = EMBER__EVALUATION_REPORT__INIT;
  ev.actor_id = 3, ev.policy_version = 1, ev.env_steps = 256;
  ev.n_returns = ev.n_lengths = ev.n_terminated = 3;
  ev.returns = returns, ev.lengths = lengths, ev.terminated = terminated;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EVALUATION, &ev, NULL, 0, NULL), 0);
  ck_assert_double_eq(learner_metric(dealer, "learner_evaluations_total", NULL), 1);
  learner_progress p;
  learner_get_progress(l, &p);
  ck_assert(!p.done);
  returns[0] = -90, returns[1] = -100, returns[2] = -110; /* mean exactly -100: reaches it */
  ev.policy_version = 2;
  ck_assert_int_eq(net_send_body(dealer, EMBER__ENVELOPE__BODY_EVALUATION, &ev, NULL, 0, NULL), 0);
  for (int i = 0; i < 250 && !p.done; i++) {
    usleep(20000);
    learner_get_progress(l, &p);
  }
  ck_assert_msg(p.done, "the learner did not stop at the threshold");
  pthread_join(r.tid, NULL);
  ck_assert_int_eq(r.ra.rc, 0);
  ck_assert(p.stopped_at_return);
  ck_assert_uint_eq(p.eval_version, 2);
  ck_assert_uint_eq(p.eval_n, 3);
  ck_assert_double_eq_tol(p.eval_return, -100, 1e-9);
  ck_assert_double_eq_tol(p.eval_std, 10, 1e-9);
  ck_assert_uint_eq(p.version, 0);
  zmq_close(dealer);
  learner_destroy(&l);

  /* evals.csv: one row per evaluation, in arrival order */
  char path[128], line[1024];
  snprintf(path, sizeof path, "%s/run/evals.csv", run_dir);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  ck_assert_str_eq(line, "version,env_steps,wall_s,updates,episodes,mean,std,min,max,mean_length,terminated,actor_id\n");
  int rows = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned version, steps, episodes;
    double mean;
    ck_assert_int_eq(sscanf(line, "%u,%u,%*[^,],%*[^,],%u,%lf", &version, &steps, &episodes, &mean), 4);
    ck_assert_uint_eq(version, (unsigned)rows + 1);
    ck_assert_uint_eq(steps, 256); /* never published here: the env steps the evaluator read in Params */
    ck_assert_uint_eq(episodes, 3);
    ck_assert_double_eq_tol(mean, rows == 0 ? -250 : -100, 1e-6);
    rows++;
  }
  fclose(f);
  ck_assert_int_eq(rows, 2);
}
END_TEST

START_TEST(bad_setups_are_refused_by_name) {
  run_config run;
  learner_config cfg;
  configs(&run, &cfg);
  ember_err err = {0};
  snprintf(run.algo, sizeof run.algo, "nope");
  ck_assert_ptr_null(learner_new(&run, &cfg, NULL, zmq, NULL, &err));
  ck_assert_int_eq(err.code, EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "nope"));
  ck_assert_ptr_nonnull(strstr(err.msg, "sac")); /* lists the known ones */
  configs(&run, &cfg);
  snprintf(run.task, sizeof run.task, "no_such_task");
  ck_assert_ptr_null(learner_new(&run, &cfg, NULL, zmq, NULL, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "run.task"));
  configs(&run, &cfg);
  snprintf(cfg.params_endpoint, sizeof cfg.params_endpoint, "bogus://x");
  ck_assert_ptr_null(learner_new(&run, &cfg, NULL, zmq, NULL, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "learner.params_endpoint"));
}
END_TEST

int main(void) {
  Suite *s = suite_create("learner_loop");
  TCase *tc = tcase_create("inproc");
  tcase_set_timeout(tc, 120);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, publishes_versions_in_order_then_stops);
  tcase_add_test(tc, control_socket_serves_and_refuses);
  tcase_add_test(tc, an_evaluation_at_the_threshold_stops_the_run_and_random_steps_hold_params);
  tcase_add_test(tc, bad_setups_are_refused_by_name);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* replay server, embedded in this process on real sockets (tcp loopback and inproc): every kind of
 * bad input is refused with its reason and counted while the server keeps serving; the rate limiter
 * parks sample requests and pauses inserts; REQ peers work; stop is prompt; a snapshot taken by the
 * owner comes back in a new server. */
#include <check.h>
#include <glob.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "net.h"
#include "replay_client.h"
#include "replay_server.h"
#include "replay_snapshot.h"
#include "replay_test_util.h"

static void *ctx;

typedef struct {
  replay_server *server;
  pthread_t thread;
  int rc;
} running;

static void *run_thread(void *arg) {
  running *r = arg;
  r->rc = replay_server_run(r->server);
  return NULL;
}

static void base_config(replay_config *c, const char *insert_ep, const char *sample_ep) {
  config_binding b = {&replay_config_section, c, NULL};
  ember_err err = {0};
  ck_assert_msg(config_defaults(&b, 1, &err) == 0, "%s", err.msg);
  snprintf(c->insert_endpoint, sizeof c->insert_endpoint, "%s", insert_ep);
  snprintf(c->sample_endpoint, sizeof c->sample_endpoint, "%s", sample_ep);
  c->capacity = 1000;
  c->min_size_to_sample = 10;
  c->max_message_bytes = 64 * 1024;
  c->poll_interval_ms = 10;
  c->log_interval_s = 0;
}

static void start(running *r, const replay_config *c) {
  ember_err err = {0};
  r->server = replay_server_new(c, ctx, NULL, &err);
  ck_assert_msg(r->server != NULL, "%s", err.msg);
  ck_assert_int_eq(pthread_create(&r->thread, NULL, run_thread, r), 0);
}

static void finish(running *r) {
  replay_server_stop(r->server);
  pthread_join(r->thread, NULL);
  ck_assert_int_eq(r->rc, 0);
  replay_server_destroy(&r->server);
}

static void *dealer_to(const char *ep) {
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
  ck_assert_int_eq(zmq_connect(s, ep), 0);
  return s;
}

/* Next Envelope on sock within timeout_ms, or NULL. Caller frees. */
static Ember__Envelope *recv_within(void *sock, int timeout_ms) {
  zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, timeout_ms) <= 0) return NULL;
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  ck_assert_msg(net_recv(sock, &env, NULL, 0, &err) == 0, "%s", err.msg);
  return env;
}

static void send_raw(void *sock, const void *bytes, size_t n) { ck_assert_int_ge(zmq_send(sock, bytes, n, 0), 0); }

static void send_body(void *sock, Ember__Envelope__BodyCase bc, void *body) {
  ember_err err = {0};
  ck_assert_msg(net_send_body(sock, bc, body, NULL, 0, &err) == 0, "%s", err.msg);
}

/* Expects an ErrorReply with code and a message starting with reason. */
static void expect_error(void *sock, int code, const char *reason) {
  Ember__Envelope *env = recv_within(sock, 3000);
  ck_assert_msg(env != NULL, "no reply (expected ErrorReply %s)", reason);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_ERROR);
  ck_assert_uint_eq(env->error->code, (unsigned)-code);
  ck_assert_msg(strncmp(env->error->message, reason, strlen(reason)) == 0, "got '%s', expected %s",
                env->error->message, reason);
  net_envelope_free(env);
}

static char last_ack_error[640]; /* the error text of the last InsertAck expect_ack read */

/* The last refusal's text names what was wrong (row, field, value). */
static void expect_last_detail(const char *detail) {
  ck_assert_msg(strstr(last_ack_error, detail) != NULL, "'%s' does not say '%s'", last_ack_error, detail);
}

/* Sends a batch and expects an InsertAck; returns accepted, checks the error prefix on refusal. */
static void expect_ack(void *sock, Ember__TransitionBatch *b, uint32_t accepted, const char *reason) {
  send_body(sock, EMBER__ENVELOPE__BODY_TRANSITION_BATCH, b);
  Ember__Envelope *env = recv_within(sock, 3000);
  ck_assert_msg(env != NULL, "no InsertAck");
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_INSERT_ACK);
  ck_assert_uint_eq(env->insert_ack->sequence, b->sequence);
  ck_assert_uint_eq(env->insert_ack->accepted, accepted);
  snprintf(last_ack_error, sizeof last_ack_error, "%s", env->insert_ack->error);
  if (reason) {
    ck_assert_uint_eq(env->insert_ack->rejected, b->count);
    ck_assert_msg(strncmp(env->insert_ack->error, reason, strlen(reason)) == 0, "got '%s', expected %s",
                  env->insert_ack->error, reason);
  }
  net_envelope_free(env);
}

static double stat_of(const char *ep, const char *name, const char *labels) {
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  ck_assert_msg(replay_client_stats(ctx, ep, 3000, &env, &err) == 0, "%s", err.msg);
  double v = replay_stats_get(env->stats, name, labels);
  net_envelope_free(env);
  return v;
}

static double rejected(const char *ep, const char *reason) {
  char labels[64];
  snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
  return stat_of(ep, "replay_rejected_total", labels);
}

/* After the abuse: the server still stores inserts from a client and serves correct samples. */
static void prove_still_serving(const char *iep, const char *sep, uint64_t first_id) {
  ember_err err = {0};
  replay_insert_opts io = {.endpoint = iep, .actor_id = 77};
  replay_insert_client *ic = replay_insert_client_new(ctx, &io, &err);
  ck_assert_msg(ic != NULL, "%s", err.msg);
  for (int i = 0; i < 5; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, 16, first_id + 16 * (uint64_t)i, 0, 0);
    ck_assert_int_eq(replay_insert_client_send(ic, &tb.b, &err), 0);
    test_batch_free(&tb);
  }
  ck_assert_int_eq(replay_insert_client_flush(ic, 5000), 0);
  replay_insert_stats st;
  replay_insert_client_stats(ic, &st);
  ck_assert_uint_eq(st.transitions_stored, 80);
  ck_assert_uint_eq(st.transitions_dropped + st.transitions_rejected + st.transitions_unconfirmed, 0);
  replay_insert_client_destroy(&ic);

  replay_sample_opts so = {.endpoint = sep, .batch_size = 8};
  replay_sample_client *sc = replay_sample_client_new(ctx, &so, &err);
  const Ember__SampleBatch *b = NULL;
  ck_assert_msg(replay_sample_client_next(sc, 5000, &b, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(b->transitions->count, 8);
  ck_assert_uint_eq(b->n_keys, 8);
  ck_assert_uint_eq(b->n_actor_ids, 8);
  for (int i = 0; i < 8; i++) {
    /* keys are insertion indices; the values encode the id they were made with */
    float want = b->transitions->obs[i * 3];
    ck_assert(isfinite(want));
    ck_assert(b->weights[i] == 1.0f);
  }
  replay_sample_client_destroy(&sc);
}

static void bad_input_suite(const char *iep, const char *sep, int tcp) {
  void *ins = dealer_to(iep), *smp = dealer_to(sep);
  /* a good batch first: the table takes its spec (obs 3, act 1, task "t") from it; actions at the
   * bounds of [-1, 1] are in range */
  test_batch good;
  test_batch_fill(&good, "t", 3, 1, 20, 0, 5, 1);
  good.action[0] = -1.0f, good.action[19] = 1.0f;
  expect_ack(ins, &good.b, 20, NULL);

  /* bytes that are not protobuf */
  send_raw(ins, "\xff\xff\xff\xff not protobuf", 17);
  expect_error(ins, EMBER_EDECODE, "not_protobuf");
  /* a schema version from the future */
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  Ember__StatsRequest sr = EMBER__STATS_REQUEST__INIT;
  env.schema_version = 9;
  env.body_case = EMBER__ENVELOPE__BODY_STATS_REQUEST;
  env.stats_request = &sr;
  uint8_t buf[64];
  size_t n = ember__envelope__pack(&env, buf);
  send_raw(ins, buf, n);
  expect_error(ins, EMBER_ESCHEMA, "schema_version");
  /* an Envelope with no body */
  Ember__Envelope empty = EMBER__ENVELOPE__INIT;
  empty.schema_version = 1;
  n = ember__envelope__pack(&empty, buf);
  send_raw(ins, buf, n);
  expect_error(ins, EMBER_EDECODE, "no_body");
  /* two payload frames */
  zmq_send(ins, "a", 1, ZMQ_SNDMORE);
  zmq_send(ins, "b", 1, 0);
  expect_error(ins, EMBER_EDECODE, "bad_framing");
  /* dims that do not match the table */
  test_batch wrong;
  test_batch_fill(&wrong, "t", 4, 1, 10, 0, 5, 2);
  expect_ack(ins, &wrong.b, 0, "dims_mismatch");
  test_batch_free(&wrong);
  /* another task */
  test_batch other;
  test_batch_fill(&other, "other_task", 3, 1, 10, 0, 5, 3);
  expect_ack(ins, &other.b, 0, "task_mismatch");
  test_batch_free(&other);
  /* arrays of inconsistent lengths */
  test_batch bad;
  test_batch_fill(&bad, "t", 3, 1, 10, 0, 5, 4);
  bad.b.n_reward = 9;
  expect_ack(ins, &bad.b, 0, "inconsistent_lengths");
  bad.b.n_reward = 10;
  bad.b.n_next_obs = 29;
  expect_ack(ins, &bad.b, 0, "inconsistent_lengths");
  bad.b.n_next_obs = 30;
  /* NaN and Inf */
  bad.obs[7] = NAN;
  expect_ack(ins, &bad.b, 0, "nonfinite");
  bad.obs[7] = 0;
  bad.reward[3] = INFINITY;
  expect_ack(ins, &bad.b, 0, "nonfinite");
  bad.reward[3] = 0;
  /* an action outside [-1, 1] (act_dim 1: element 6 is transition 6's), the bounds themselves pass */
  bad.action[6] = 1.5f;
  expect_ack(ins, &bad.b, 0, "action_out_of_range");
  expect_last_detail("action[6] (transition 6, action dimension 0) is 1.5");
  bad.action[6] = -1.0001f;
  expect_ack(ins, &bad.b, 0, "action_out_of_range");
  bad.action[6] = 0;
  /* a transition marked both terminated and truncated */
  bad.term[4] = bad.trunc[4] = 1;
  expect_ack(ins, &bad.b, 0, "terminated_and_truncated");
  expect_last_detail("terminated[4] and .truncated[4] are both set (transition 4)");
  bad.term[4] = bad.trunc[4] = 0;
  bad.b.count = 0;
  expect_ack(ins, &bad.b, 0, "empty_batch");
  test_batch_free(&bad);
  /* a Hello announcing other dims is refused early; a matching one is accepted silently */
  Ember__Hello hello = EMBER__HELLO__INIT;
  hello.role = "actor", hello.task = "t", hello.obs_dim = 4, hello.act_dim = 1;
  send_body(ins, EMBER__ENVELOPE__BODY_HELLO, &hello);
  expect_error(ins, EMBER_ESHAPE, "dims_mismatch");
  hello.obs_dim = 3;
  send_body(ins, EMBER__ENVELOPE__BODY_HELLO, &hello);
  ck_assert_ptr_null(recv_within(ins, 100));
  /* a sample or priority message on the insert socket */
  Ember__SampleRequest req = EMBER__SAMPLE_REQUEST__INIT;
  req.batch_size = 4;
  send_body(ins, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req);
  expect_error(ins, EMBER_EINVAL, "unexpected_message");

  /* over the size limit (64 KiB here) */
  size_t big = 100 * 1024;
  char *junk = calloc(1, big);
  if (tcp) {
    /* libzmq drops the sender's connection before the server reads a byte: the sender gets no
     * reply, and its DEALER reconnects by itself */
    void *victim = dealer_to(iep);
    ck_assert_ptr_null(recv_within(victim, 100));
    send_raw(victim, junk, big);
    ck_assert_ptr_null(recv_within(victim, 500));
    zmq_close(victim);
  } else {
    send_raw(ins, junk, big);
    expect_error(ins, EMBER_ETOOBIG, "too_big");
  }
  free(junk);

  /* sample socket: batch 0, more than the table holds, bad priorities, a batch on the wrong socket */
  req.request_id = 41;
  req.batch_size = 0;
  send_body(smp, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req);
  expect_error(smp, EMBER_EINVAL, "bad_batch_size");
  req.batch_size = 1001;
  send_body(smp, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req);
  expect_error(smp, EMBER_ETOOBIG, "batch_too_large");
  uint64_t keys[2] = {1, 2};
  float prios[2] = {1.0f, NAN};
  Ember__PriorityUpdate pu = EMBER__PRIORITY_UPDATE__INIT;
  pu.n_keys = pu.n_priorities = 2, pu.keys = keys, pu.priorities = prios;
  send_body(smp, EMBER__ENVELOPE__BODY_PRIORITY_UPDATE, &pu);
  expect_error(smp, EMBER_EINVAL, "bad_priority");
  prios[1] = -0.5f;
  send_body(smp, EMBER__ENVELOPE__BODY_PRIORITY_UPDATE, &pu);
  expect_error(smp, EMBER_EINVAL, "bad_priority");
  pu.n_priorities = 1;
  send_body(smp, EMBER__ENVELOPE__BODY_PRIORITY_UPDATE, &pu);
  expect_error(smp, EMBER_ESHAPE, "inconsistent_lengths");
  send_body(smp, EMBER__ENVELOPE__BODY_TRANSITION_BATCH, &good.b);
  expect_error(smp, EMBER_EINVAL, "unexpected_message");
  send_raw(smp, "garbage", 7);
  expect_error(smp, EMBER_EDECODE, "not_protobuf");
  /* a valid update (one live key, one never inserted) is applied silently and the stale one counted */
  prios[1] = 2.0f;
  keys[1] = 1u << 30;
  pu.n_priorities = 2;
  send_body(smp, EMBER__ENVELOPE__BODY_PRIORITY_UPDATE, &pu);
  ck_assert_ptr_null(recv_within(smp, 100));

  /* every refusal was counted under its reason */
  const char *reasons[] = {"not_protobuf", "schema_version", "no_body", "bad_framing", "dims_mismatch",
                           "task_mismatch", "nonfinite", "empty_batch", "unexpected_message",
                           "bad_batch_size", "batch_too_large", "bad_priority", "terminated_and_truncated"};
  for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++)
    ck_assert_msg(rejected(sep, reasons[i]) >= 1, "reason %s not counted", reasons[i]);
  ck_assert(rejected(sep, "inconsistent_lengths") >= 3);
  ck_assert(rejected(sep, "nonfinite") >= 2);
  ck_assert(rejected(sep, "action_out_of_range") == 2);
  ck_assert(rejected(sep, "too_big") == (tcp ? 0 : 1));
  ck_assert(stat_of(sep, "replay_priority_updates_stale_total", NULL) == 1);
  ck_assert(stat_of(sep, "replay_size", NULL) == 20);

  prove_still_serving(iep, sep, 1000);
  ck_assert(stat_of(iep, "replay_size", NULL) == 100);
  test_batch_free(&good);
  zmq_close(ins);
  zmq_close(smp);
}

/* Packs env with the given schema version (net_encode would stamp the current one). Caller frees. */
static uint8_t *pack_with_version(Ember__Envelope *env, uint32_t version, size_t *len) {
  env->schema_version = version;
  *len = ember__envelope__get_packed_size(env);
  uint8_t *buf = malloc(*len);
  ck_assert_ptr_nonnull(buf);
  ember__envelope__pack(env, buf);
  return buf;
}

static uint8_t *pack_batch(Ember__TransitionBatch *b, uint32_t version, size_t *len) {
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_TRANSITION_BATCH;
  env.transition_batch = b;
  return pack_with_version(&env, version, len);
}

static uint8_t *pack_request(uint64_t request_id, uint32_t batch_size, uint32_t version, size_t *len) {
  Ember__SampleRequest req = EMBER__SAMPLE_REQUEST__INIT;
  req.request_id = request_id, req.batch_size = batch_size;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_SAMPLE_REQUEST;
  env.sample_request = &req;
  return pack_with_version(&env, version, len);
}

/* Expects the InsertAck refusing one batch: its actor, its sequence, all its transitions rejected,
 * the error starting with reason. */
static void expect_refusal_ack(void *sock, uint64_t actor_id, uint64_t sequence, uint32_t count, const char *reason) {
  Ember__Envelope *env = recv_within(sock, 3000);
  ck_assert_msg(env != NULL, "no reply (expected an InsertAck refusing %s)", reason);
  ck_assert_msg(env->body_case == EMBER__ENVELOPE__BODY_INSERT_ACK, "got %s, expected an InsertAck (%s)",
                net_body_name(env->body_case), env->body_case == EMBER__ENVELOPE__BODY_ERROR ? env->error->message : "");
  const Ember__InsertAck *a = env->insert_ack;
  ck_assert_uint_eq(a->actor_id, actor_id);
  ck_assert_uint_eq(a->sequence, sequence);
  ck_assert_uint_eq(a->first_sequence, 0);
  ck_assert_uint_eq(a->accepted, 0);
  ck_assert_uint_eq(a->rejected, count);
  ck_assert_msg(strncmp(a->error, reason, strlen(reason)) == 0, "got '%s', expected %s", a->error, reason);
  net_envelope_free(env);
}

/* Expects an ErrorReply with code, a message starting with reason, and request_id. */
static void expect_error_for(void *sock, int code, const char *reason, uint64_t request_id) {
  Ember__Envelope *env = recv_within(sock, 3000);
  ck_assert_msg(env != NULL, "no reply (expected ErrorReply %s)", reason);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_ERROR);
  ck_assert_uint_eq(env->error->code, (unsigned)-code);
  ck_assert_msg(strncmp(env->error->message, reason, strlen(reason)) == 0, "got '%s', expected %s",
                env->error->message, reason);
  ck_assert_uint_eq(env->error->request_id, request_id);
  net_envelope_free(env);
}

/* A message refused for its envelope is answered as the batch or request it is, whenever that can be
 * read from it: another schema version, extra frames, over the size limit (inproc). Bytes that do
 * not decode name nothing and get an ErrorReply with request id 0. Nothing refused is stored. */
START_TEST(envelope_refusals_name_the_batch_or_request) {
  replay_config c;
  base_config(&c, "inproc://env-insert", "inproc://env-sample");
  running r;
  start(&r, &c);
  void *ins = dealer_to("inproc://env-insert"), *smp = dealer_to("inproc://env-sample");
  test_batch good;
  test_batch_fill(&good, "t", 3, 1, 20, 0, 6, 1);
  expect_ack(ins, &good.b, 20, NULL);

  /* a batch from a newer schema version, and one with none */
  test_batch tb;
  test_batch_fill(&tb, "t", 3, 1, 12, 100, 6, 2);
  size_t n;
  uint8_t *buf = pack_batch(&tb.b, 9, &n);
  send_raw(ins, buf, n);
  expect_refusal_ack(ins, 6, 2, 12, "schema_version");
  free(buf);
  tb.b.sequence = 3;
  buf = pack_batch(&tb.b, 0, &n);
  send_raw(ins, buf, n);
  expect_refusal_ack(ins, 6, 3, 12, "schema_version");
  free(buf);

  /* extra frames: the batch is in the first frame, or after a junk frame; two junk frames name nothing */
  tb.b.sequence = 4;
  buf = pack_batch(&tb.b, 1, &n);
  zmq_send(ins, buf, n, ZMQ_SNDMORE);
  zmq_send(ins, "junk", 4, 0);
  expect_refusal_ack(ins, 6, 4, 12, "bad_framing");
  free(buf);
  tb.b.sequence = 5;
  buf = pack_batch(&tb.b, 1, &n);
  zmq_send(ins, "\xff\xff", 2, ZMQ_SNDMORE);
  zmq_send(ins, buf, n, ZMQ_SNDMORE);
  zmq_send(ins, "", 0, 0);
  expect_refusal_ack(ins, 6, 5, 12, "bad_framing");
  free(buf);
  zmq_send(ins, "a", 1, ZMQ_SNDMORE);
  zmq_send(ins, "b", 1, 0);
  expect_error_for(ins, EMBER_EDECODE, "bad_framing", 0);

  /* over the size limit (64 KiB here) on inproc: not decoded, but its identity is read */
  test_batch big;
  test_batch_fill(&big, "t", 3, 1, 4000, 200, 6, 6);
  buf = pack_batch(&big.b, 1, &n);
  ck_assert_uint_gt(n, 64 * 1024);
  send_raw(ins, buf, n);
  expect_refusal_ack(ins, 6, 6, 4000, "too_big");
  /* the same bytes cut short are not well-formed: nothing is named */
  send_raw(ins, buf, n - 7);
  expect_error_for(ins, EMBER_ETOOBIG, "too_big", 0);
  free(buf);
  test_batch_free(&big);

  /* bytes that do not decode: ErrorReply, request id 0 */
  send_raw(ins, "\xff\xff\xff\xff not protobuf", 17);
  expect_error_for(ins, EMBER_EDECODE, "not_protobuf", 0);

  /* sample requests: another version, extra frames, the wrong socket: the request id comes back */
  buf = pack_request(51, 4, 7, &n);
  send_raw(smp, buf, n);
  expect_error_for(smp, EMBER_ESCHEMA, "schema_version", 51);
  free(buf);
  buf = pack_request(52, 4, 1, &n);
  zmq_send(smp, buf, n, ZMQ_SNDMORE);
  zmq_send(smp, "x", 1, 0);
  expect_error_for(smp, EMBER_EDECODE, "bad_framing", 52);
  send_raw(ins, buf, n);
  expect_error_for(ins, EMBER_EINVAL, "unexpected_message", 52);
  free(buf);

  /* the server still acks in order and stored only the good batch */
  tb.b.sequence = 7;
  expect_ack(ins, &tb.b, 12, NULL);
  ck_assert(stat_of("inproc://env-sample", "replay_size", NULL) == 32);
  ck_assert(rejected("inproc://env-sample", "schema_version") == 3);
  ck_assert(rejected("inproc://env-sample", "bad_framing") == 4);
  ck_assert(rejected("inproc://env-sample", "too_big") == 2);
  test_batch_free(&tb);
  test_batch_free(&good);
  zmq_close(ins);
  zmq_close(smp);
  finish(&r);
}
END_TEST

/* What docs/protocol.md promises an actor whose batch's bytes did not decode: an ErrorReply with
 * request id 0 and no InsertAck; the batch stays in flight until the ack of a later batch arrives,
 * and is then written off as unconfirmed (not rejected), so made = stored + rejected + dropped +
 * unconfirmed + in flight + queued still holds. A scripted ROUTER plays the server. */
START_TEST(undecodable_batch_ends_unconfirmed_at_the_client) {
  void *fake = zmq_socket(ctx, ZMQ_ROUTER);
  int zero = 0;
  zmq_setsockopt(fake, ZMQ_LINGER, &zero, sizeof zero);
  ck_assert_int_eq(zmq_bind(fake, "inproc://fake-replay"), 0);
  ember_err err = {0};
  replay_insert_opts io = {.endpoint = "inproc://fake-replay", .actor_id = 4, .ack_timeout_ms = 60000};
  replay_insert_client *ic = replay_insert_client_new(ctx, &io, &err);
  ck_assert_msg(ic != NULL, "%s", err.msg);
  for (int i = 0; i < 2; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, i == 0 ? 7 : 5, 0, 0, 0);
    ck_assert_int_eq(replay_insert_client_send(ic, &tb.b, &err), 0);
    test_batch_free(&tb);
  }
  net_route route[2];
  for (int i = 0; i < 2; i++) {
    Ember__Envelope *env = NULL;
    zmq_pollitem_t it = {fake, 0, ZMQ_POLLIN, 0};
    ck_assert_int_eq(zmq_poll(&it, 1, 3000), 1);
    ck_assert_int_eq(net_recv(fake, &env, &route[i], 0, &err), 0);
    ck_assert_uint_eq(env->transition_batch->sequence, (uint64_t)i + 1);
    net_envelope_free(env);
  }
  Ember__ErrorReply e = EMBER__ERROR_REPLY__INIT;
  e.code = 5, e.message = "not_protobuf: 12 bytes are not a valid ember Envelope";
  ck_assert_int_eq(net_send_body(fake, EMBER__ENVELOPE__BODY_ERROR, &e, &route[0], 0, &err), 0);
  for (int i = 0; i < 50; i++) replay_insert_client_poll(ic, 10);
  replay_insert_stats st;
  replay_insert_client_stats(ic, &st);
  ck_assert_uint_eq(st.error_replies, 1);
  ck_assert_ptr_nonnull(strstr(st.last_error, "not_protobuf"));
  ck_assert_uint_eq(st.transitions_in_flight, 12); /* no ack names it: still in flight */
  Ember__InsertAck a = EMBER__INSERT_ACK__INIT;
  a.actor_id = 4, a.sequence = 2, a.accepted = 5, a.error = "";
  ck_assert_int_eq(net_send_body(fake, EMBER__ENVELOPE__BODY_INSERT_ACK, &a, &route[1], 0, &err), 0);
  ck_assert_int_eq(replay_insert_client_flush(ic, 3000), 0);
  replay_insert_client_stats(ic, &st);
  ck_assert_uint_eq(st.transitions_stored, 5);
  ck_assert_uint_eq(st.transitions_unconfirmed, 7);
  ck_assert_uint_eq(st.transitions_rejected, 0);
  ck_assert_uint_eq(st.transitions_stored + st.transitions_rejected + st.transitions_dropped +
                        st.transitions_unconfirmed + st.transitions_in_flight + st.transitions_queued,
                    12);
  replay_insert_client_destroy(&ic);
  zmq_close(fake);
}
END_TEST

/* An InsertAck that cannot be this client's (another actor, a sequence never sent, more rows than the
 * named batches held) is refused and counted, and the accounting stays whole: before, one such ack
 * popped everything in flight and the transitions left every term of it. */
START_TEST(implausible_acks_are_refused_by_the_client) {
  void *fake = zmq_socket(ctx, ZMQ_ROUTER);
  int zero = 0;
  zmq_setsockopt(fake, ZMQ_LINGER, &zero, sizeof zero);
  ck_assert_int_eq(zmq_bind(fake, "inproc://fake-replay-acks"), 0);
  ember_err err = {0};
  replay_insert_opts io = {.endpoint = "inproc://fake-replay-acks", .actor_id = 4, .ack_timeout_ms = 60000};
  replay_insert_client *ic = replay_insert_client_new(ctx, &io, &err);
  ck_assert_msg(ic != NULL, "%s", err.msg);
  for (int i = 0; i < 2; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, i == 0 ? 7 : 5, 0, 0, 0);
    ck_assert_int_eq(replay_insert_client_send(ic, &tb.b, &err), 0);
    test_batch_free(&tb);
  }
  net_route route;
  for (int i = 0; i < 2; i++) {
    Ember__Envelope *env = NULL;
    zmq_pollitem_t it = {fake, 0, ZMQ_POLLIN, 0};
    ck_assert_int_eq(zmq_poll(&it, 1, 3000), 1);
    ck_assert_int_eq(net_recv(fake, &env, &route, 0, &err), 0);
    net_envelope_free(env);
  }
  const struct {
    uint64_t actor, first, last;
    uint32_t accepted;
  } bad[] = {{9, 1, 2, 12}, {4, 0, 99, 1}, {4, 1, 1, 1000}, {4, 2, 1, 1}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    Ember__InsertAck a = EMBER__INSERT_ACK__INIT;
    a.actor_id = bad[i].actor, a.first_sequence = bad[i].first, a.sequence = bad[i].last;
    a.accepted = bad[i].accepted, a.error = "";
    ck_assert_int_eq(net_send_body(fake, EMBER__ENVELOPE__BODY_INSERT_ACK, &a, &route, 0, &err), 0);
  }
  replay_insert_stats st;
  for (int i = 0; i < 100; i++) {
    replay_insert_client_poll(ic, 10);
    replay_insert_client_stats(ic, &st);
    if (st.acks_refused == 4) break;
  }
  ck_assert_uint_eq(st.acks_refused, 4);
  ck_assert_uint_eq(st.transitions_in_flight, 12);
  ck_assert_uint_eq(st.transitions_stored, 0);
  ck_assert_ptr_nonnull(strstr(st.last_error, "not this client's"));
  Ember__InsertAck a = EMBER__INSERT_ACK__INIT; /* the real ack of both */
  a.actor_id = 4, a.first_sequence = 1, a.sequence = 2, a.accepted = 12, a.error = "";
  ck_assert_int_eq(net_send_body(fake, EMBER__ENVELOPE__BODY_INSERT_ACK, &a, &route, 0, &err), 0);
  ck_assert_int_eq(replay_insert_client_flush(ic, 3000), 0);
  replay_insert_client_stats(ic, &st);
  ck_assert_uint_eq(st.transitions_stored, 12);
  ck_assert_uint_eq(st.transitions_stored + st.transitions_rejected + st.transitions_dropped +
                        st.transitions_unconfirmed + st.transitions_in_flight + st.transitions_queued,
                    12);
  replay_insert_client_destroy(&ic);
  zmq_close(fake);
}
END_TEST

/* behaviour_log_prob may be left out only by a batch of uniform random actions (policy_version 0),
 * and is then stored as their density; a batch a policy played must carry it. */
START_TEST(empty_log_prob_only_for_random_actions) {
  replay_config c;
  base_config(&c, "inproc://lp-insert", "inproc://lp-sample");
  c.min_size_to_sample = 1;
  running r;
  start(&r, &c);
  void *ins = dealer_to("inproc://lp-insert");
  test_batch tb;
  test_batch_fill(&tb, "t", 3, 2, 10, 0, 1, 1);
  tb.b.n_behaviour_log_prob = 0;
  tb.b.policy_version = 5;
  expect_ack(ins, &tb.b, 0, "missing_log_prob");
  tb.b.sequence = 2;
  tb.b.policy_version = 0;
  expect_ack(ins, &tb.b, 10, NULL);
  test_batch_free(&tb);
  ck_assert(rejected("inproc://lp-sample", "missing_log_prob") == 1);
  ember_err err = {0};
  replay_sample_opts so = {.endpoint = "inproc://lp-sample", .batch_size = 16};
  replay_sample_client *sc = replay_sample_client_new(ctx, &so, &err);
  const Ember__SampleBatch *b = NULL;
  ck_assert_msg(replay_sample_client_next(sc, 3000, &b, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(b->transitions->n_behaviour_log_prob, 16);
  for (size_t i = 0; i < 16; i++)
    ck_assert_float_eq_tol(b->transitions->behaviour_log_prob[i], -2.0f * 0.69314718f, 1e-6f);
  replay_sample_client_destroy(&sc);
  zmq_close(ins);
  finish(&r);
}
END_TEST

/* A burst of batches without waiting: the acks (some coalesced under load) cover every sequence
 * exactly once, in order, with the right totals. */
START_TEST(acks_cover_every_batch_in_order) {
  replay_config c;
  base_config(&c, "inproc://ack-insert", "inproc://ack-sample");
  running r;
  start(&r, &c);
  void *ins = dealer_to("inproc://ack-insert");
  const int n = 200;
  for (int i = 0; i < n; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, 5, 5 * (uint64_t)i, 8, (uint64_t)i + 1);
    send_body(ins, EMBER__ENVELOPE__BODY_TRANSITION_BATCH, &tb.b);
    test_batch_free(&tb);
  }
  uint64_t next = 1, stored = 0;
  int acks = 0;
  while (next <= (uint64_t)n) {
    Ember__Envelope *env = recv_within(ins, 3000);
    ck_assert_ptr_nonnull(env);
    ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_INSERT_ACK);
    const Ember__InsertAck *a = env->insert_ack;
    uint64_t first = a->first_sequence ? a->first_sequence : a->sequence;
    ck_assert_uint_eq(first, next);
    ck_assert_uint_ge(a->sequence, first);
    ck_assert_uint_eq(a->accepted, 5 * (a->sequence - first + 1));
    ck_assert_uint_eq(a->actor_id, 8);
    stored += a->accepted;
    next = a->sequence + 1;
    acks++;
    net_envelope_free(env);
  }
  ck_assert_uint_eq(stored, 5 * (uint64_t)n);
  ck_assert_int_le(acks, n);
  ck_assert_ptr_null(recv_within(ins, 100));
  ck_assert(stat_of("inproc://ack-sample", "replay_actor_sequence_gaps_total", NULL) == 0);

  /* another actor: batches 1 and 4 arrive (2 and 3 lost on the way), reporting 30 dropped; then it
   * restarts at sequence 1 with its own count starting over */
  uint64_t seqs[] = {1, 4, 1, 2}, dropped[] = {0, 30, 0, 5};
  for (int i = 0; i < 4; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, 5, 0, 11, seqs[i]);
    tb.b.dropped_before = dropped[i];
    expect_ack(ins, &tb.b, 5, NULL);
    test_batch_free(&tb);
  }
  ck_assert(stat_of("inproc://ack-sample", "replay_actor_sequence_gaps_total", NULL) == 2);
  ck_assert(stat_of("inproc://ack-sample", "replay_actor_reported_dropped_transitions", NULL) == 35);
  zmq_close(ins);
  finish(&r);
}
END_TEST

/* No server: the insert client never blocks, keeps its bounded queue, drops the oldest batches and
 * counts them, and stamps the running drop count into the next batch. */
START_TEST(insert_client_without_server_drops_and_counts) {
  ember_err err = {0};
  replay_insert_opts io = {.endpoint = "tcp://127.0.0.1:1", .actor_id = 5, .queue_batches = 8};
  replay_insert_client *ic = replay_insert_client_new(ctx, &io, &err);
  ck_assert_msg(ic != NULL, "%s", err.msg);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t last_dropped_before = 0;
  for (int i = 0; i < 100; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, 10, 10 * (uint64_t)i, 0, 0);
    ck_assert_int_eq(replay_insert_client_send(ic, &tb.b, &err), 0);
    ck_assert_uint_eq(tb.b.actor_id, 5);
    ck_assert_uint_eq(tb.b.sequence, (uint64_t)i + 1);
    ck_assert_uint_ge(tb.b.dropped_before, last_dropped_before);
    last_dropped_before = tb.b.dropped_before;
    test_batch_free(&tb);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ck_assert((t1.tv_sec - t0.tv_sec) < 2); /* never blocked */
  replay_insert_stats st;
  replay_insert_client_stats(ic, &st);
  ck_assert_uint_eq(st.queued, 8);
  ck_assert_uint_eq(st.in_flight, 0);
  ck_assert_uint_eq(st.transitions_dropped, 920);
  ck_assert_uint_eq(last_dropped_before, 910);
  ck_assert_uint_eq(st.transitions_stored + st.transitions_rejected + st.transitions_dropped +
                        st.transitions_unconfirmed + st.transitions_in_flight + st.transitions_queued,
                    1000);
  ck_assert_int_eq(replay_insert_client_flush(ic, 100), EMBER_ETIMEOUT);
  replay_insert_client_destroy(&ic);
}
END_TEST

/* What an actor sees when its batch is over the server's ZMQ_MAXMSGSIZE on tcp: the connection is
 * dropped, no ack comes, the batch is written off as unconfirmed, and the next batches are stored
 * after the DEALER reconnected by itself. A sample client gets the server's refusals as codes. */
START_TEST(oversize_batch_seen_from_the_client) {
  replay_config c;
  base_config(&c, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
  running r;
  start(&r, &c);
  char iep[256], sep[256];
  snprintf(iep, sizeof iep, "%s", replay_server_insert_endpoint(r.server));
  snprintf(sep, sizeof sep, "%s", replay_server_sample_endpoint(r.server));
  ember_err err = {0};
  replay_insert_opts io = {.endpoint = iep, .actor_id = 9, .ack_timeout_ms = 300, .max_message_bytes = 1 << 20};
  replay_insert_client *ic = replay_insert_client_new(ctx, &io, &err);
  test_batch small, big;
  test_batch_fill(&small, "t", 3, 1, 10, 0, 0, 0);
  test_batch_fill(&big, "t", 3, 1, 4000, 100, 0, 0); /* ~120 KB, over the server's 64 KiB */
  ck_assert_int_eq(replay_insert_client_send(ic, &small.b, &err), 0);
  ck_assert_int_eq(replay_insert_client_flush(ic, 3000), 0);
  ck_assert_int_eq(replay_insert_client_send(ic, &big.b, &err), 0);
  ck_assert_int_eq(replay_insert_client_flush(ic, 3000), 0); /* written off after 300 ms */
  replay_insert_stats st;
  replay_insert_client_stats(ic, &st);
  ck_assert_uint_eq(st.transitions_stored, 10);
  ck_assert_uint_eq(st.transitions_unconfirmed, 4000);
  for (int i = 0; i < 20 && st.transitions_stored < 20; i++) { /* reconnects by itself */
    test_batch again;
    test_batch_fill(&again, "t", 3, 1, 10, 5000 + 10 * (uint64_t)i, 0, 0);
    replay_insert_client_send(ic, &again.b, &err);
    test_batch_free(&again);
    replay_insert_client_flush(ic, 1000);
    replay_insert_client_stats(ic, &st);
  }
  ck_assert_uint_ge(st.transitions_stored, 20);
  replay_insert_client_destroy(&ic);
  test_batch_free(&small);
  test_batch_free(&big);

  replay_sample_opts so = {.endpoint = sep, .batch_size = 5000};
  replay_sample_client *sc = replay_sample_client_new(ctx, &so, &err);
  const Ember__SampleBatch *b = NULL;
  ck_assert_int_eq(replay_sample_client_next(sc, 3000, &b, &err), EMBER_ETOOBIG);
  ck_assert_ptr_nonnull(strstr(err.msg, "batch_too_large"));
  replay_sample_client_destroy(&sc);
  finish(&r);
}
END_TEST

START_TEST(bad_input_tcp) {
  replay_config c;
  base_config(&c, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
  running r;
  start(&r, &c);
  char iep[256], sep[256];
  snprintf(iep, sizeof iep, "%s", replay_server_insert_endpoint(r.server));
  snprintf(sep, sizeof sep, "%s", replay_server_sample_endpoint(r.server));
  ck_assert_ptr_null(strstr(iep, "*"));
  bad_input_suite(iep, sep, 1);
  finish(&r);
}
END_TEST

START_TEST(bad_input_inproc) {
  replay_config c;
  base_config(&c, "inproc://test-replay-insert", "inproc://test-replay-sample");
  running r;
  start(&r, &c);
  bad_input_suite("inproc://test-replay-insert", "inproc://test-replay-sample", 0);
  finish(&r);
}
END_TEST

START_TEST(rate_limiter_parks_samples_and_pauses_inserts) {
  replay_config c;
  base_config(&c, "inproc://rl-insert", "inproc://rl-sample");
  c.min_size_to_sample = 100;
  c.samples_per_insert = 1;
  c.error_buffer = 64; /* diff = inserts - samples must stay in [36, 164] */
  running r;
  start(&r, &c);
  void *smp = dealer_to("inproc://rl-sample");
  Ember__SampleRequest req = EMBER__SAMPLE_REQUEST__INIT;
  /* a request that can never be allowed is refused, not parked */
  req.request_id = 1, req.batch_size = 129;
  send_body(smp, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req);
  expect_error(smp, EMBER_EINVAL, "batch_exceeds_rate_limiter");
  /* the table is empty: the request is parked, not answered, not dropped */
  req.request_id = 2, req.batch_size = 50;
  send_body(smp, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req);
  ck_assert_ptr_null(recv_within(smp, 200));
  ck_assert(stat_of("inproc://rl-sample", "replay_pending_sample_requests", NULL) == 1);

  ember_err err = {0};
  replay_insert_opts io = {.endpoint = "inproc://rl-insert", .actor_id = 1, .max_in_flight = 4};
  replay_insert_client *ic = replay_insert_client_new(ctx, &io, &err);
  for (int i = 0; i < 5; i++) { /* 100 transitions: min size reached, diff 100 */
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, 20, 20 * (uint64_t)i, 0, 0);
    replay_insert_client_send(ic, &tb.b, &err);
    test_batch_free(&tb);
  }
  ck_assert_int_eq(replay_insert_client_flush(ic, 3000), 0);
  Ember__Envelope *env = recv_within(smp, 3000); /* now the parked request is answered: diff 50 */
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_SAMPLE_BATCH);
  ck_assert_uint_eq(env->sample_batch->request_id, 2);
  ck_assert_uint_eq(env->sample_batch->transitions->count, 50);
  net_envelope_free(env);
  /* 20 more would leave diff 50 - 20 = 30 < 36: parked */
  req.request_id = 3, req.batch_size = 20;
  send_body(smp, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req);
  ck_assert_ptr_null(recv_within(smp, 200));
  /* inserts go on until diff > 164: 50 + 20k; the 6th batch is the last admitted (diff 170) and the
   * parked request is served on the way (diff - 20) */
  for (int i = 0; i < 12; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, 20, 100 + 20 * (uint64_t)i, 0, 0);
    replay_insert_client_send(ic, &tb.b, &err);
    test_batch_free(&tb);
    replay_insert_client_poll(ic, 20);
  }
  env = recv_within(smp, 3000);
  ck_assert_ptr_nonnull(env);
  ck_assert_uint_eq(env->sample_batch->request_id, 3);
  net_envelope_free(env);
  replay_insert_client_poll(ic, 300);
  replay_insert_stats st;
  replay_insert_client_stats(ic, &st);
  /* diff after the sample of 20: 30 + 20k > 164 first at k = 7: 240 stored, the rest waits */
  ck_assert_uint_eq(st.transitions_stored, 240);
  ck_assert_uint_eq(st.transitions_in_flight + st.transitions_queued, 100);
  ck_assert(stat_of("inproc://rl-sample", "replay_rate_limiter_insert_waits_total", NULL) >= 1);
  /* the learner samples: inserts resume */
  req.request_id = 4, req.batch_size = 128;
  send_body(smp, EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &req);
  env = recv_within(smp, 3000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_SAMPLE_BATCH);
  net_envelope_free(env);
  ck_assert_int_eq(replay_insert_client_flush(ic, 3000), 0);
  replay_insert_client_stats(ic, &st);
  ck_assert_uint_eq(st.transitions_stored, 340);
  replay_insert_client_destroy(&ic);
  zmq_close(smp);
  finish(&r);
}
END_TEST

START_TEST(req_peers_and_prompt_stop) {
  replay_config c;
  base_config(&c, "inproc://req-insert", "inproc://req-sample");
  c.poll_interval_ms = 50;
  running r;
  start(&r, &c);
  void *req = zmq_socket(ctx, ZMQ_REQ);
  int zero = 0;
  zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof zero);
  ck_assert_int_eq(zmq_connect(req, "inproc://req-sample"), 0);
  Ember__StatsRequest sr = EMBER__STATS_REQUEST__INIT;
  send_body(req, EMBER__ENVELOPE__BODY_STATS_REQUEST, &sr);
  Ember__Envelope *env = recv_within(req, 3000);
  ck_assert_ptr_nonnull(env);
  ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_STATS);
  ck_assert_str_eq(env->stats->role, "replay");
  ck_assert(replay_stats_get(env->stats, "replay_capacity", NULL) == 1000);
  net_envelope_free(env);
  zmq_close(req);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  finish(&r);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  ck_assert_msg(dt < 2.0, "stop took %.2f s", dt);
}
END_TEST

/* Polls a Stats value until it reaches want (up to 10 s); returns the last value seen. */
static double wait_stat(const char *ep, const char *name, double want) {
  double v = 0;
  for (int i = 0; i < 1000 && (v = stat_of(ep, name, NULL)) < want; i++) usleep(10000);
  return v;
}

/* Periodic snapshots are written by a child process while both threads go on serving; a failed one
 * (the directory gone) is logged and counted, the server keeps serving, and the next one succeeds. */
START_TEST(periodic_snapshots_are_written_beside_the_server) {
  char dir[128], moved[160];
  snprintf(dir, sizeof dir, "/tmp/ember-test-replay-per-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(moved, sizeof moved, "%s.away", dir);
  replay_config c;
  const char *iep = "inproc://per-insert", *sep = "inproc://per-sample";
  base_config(&c, iep, sep);
  snprintf(c.snapshot_dir, sizeof c.snapshot_dir, "%s", dir);
  c.snapshot_interval_s = 0.05;
  running r;
  start(&r, &c);
  prove_still_serving(iep, sep, 0);
  ck_assert(wait_stat(iep, "replay_last_snapshot_inserted_transitions", 80) == 80);
  ck_assert(stat_of(iep, "replay_snapshots_written_total", NULL) >= 1);
  ck_assert(stat_of(iep, "replay_snapshot_failures_total", NULL) == 0);
  char path[300];
  ember_err err = {0};
  replay_snapshot_info info;
  char pattern[300];
  snprintf(pattern, sizeof pattern, "%s/replay-*.snap", dir);
  glob_t g;
  ck_assert_int_eq(glob(pattern, 0, NULL, &g), 0); /* sorted: the last is the newest */
  snprintf(path, sizeof path, "%s", g.gl_pathv[g.gl_pathc - 1]);
  globfree(&g);
  ck_assert_msg(replay_snapshot_verify(path, &info, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(info.size, 80);

  /* a file where the directory was: the writer fails, the server says so and keeps serving */
  ck_assert_int_eq(rename(dir, moved), 0);
  FILE *blocker = fopen(dir, "w");
  ck_assert_ptr_nonnull(blocker);
  fclose(blocker);
  prove_still_serving(iep, sep, 1000);
  ck_assert(wait_stat(iep, "replay_snapshot_failures_total", 1) >= 1);
  prove_still_serving(iep, sep, 2000);
  ck_assert(stat_of(iep, "replay_size", NULL) == 240);
  /* it comes back: the next snapshot holds everything */
  ck_assert_int_eq(unlink(dir), 0);
  ck_assert_int_eq(rename(moved, dir), 0);
  ck_assert(wait_stat(iep, "replay_last_snapshot_inserted_transitions", 240) == 240);
  finish(&r);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", dir, moved);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(owner_snapshot_restores_in_a_new_server) {
  char dir[128];
  snprintf(dir, sizeof dir, "/tmp/ember-test-replay-srv-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
  replay_config c;
  base_config(&c, "inproc://snap-insert", "inproc://snap-sample");
  snprintf(c.snapshot_dir, sizeof c.snapshot_dir, "%s", dir);
  c.snapshot_interval_s = 0;
  strcpy(c.sampler, "prioritized");
  running r;
  start(&r, &c);
  replay_server_counters k;
  replay_server_get_counters(r.server, &k);
  ck_assert_uint_eq(k.restored, 0); /* an empty directory: starts empty */
  prove_still_serving("inproc://snap-insert", "inproc://snap-sample", 0);
  replay_server_stop(r.server);
  pthread_join(r.thread, NULL);
  replay_server_counters before;
  replay_server_get_counters(r.server, &before);
  ck_assert_uint_eq(before.size, 80);
  ck_assert_uint_ge(before.sample_batches, 1); /* prefetch may have served more */
  ember_err err = {0};
  ck_assert_int_eq(replay_server_snapshot(r.server, &err), 0); /* run returned: the owner snapshots */
  replay_server_destroy(&r.server);

  /* a new server (inproc names are released asynchronously, so new ones) restores it */
  snprintf(c.insert_endpoint, sizeof c.insert_endpoint, "inproc://snap-insert2");
  snprintf(c.sample_endpoint, sizeof c.sample_endpoint, "inproc://snap-sample2");
  replay_server *s = replay_server_new(&c, ctx, NULL, &err);
  ck_assert_msg(s != NULL, "%s", err.msg);
  replay_server_get_counters(s, &k);
  ck_assert_uint_eq(k.restored, 80);
  ck_assert_uint_eq(k.size, before.size);
  ck_assert_uint_eq(k.inserts, before.inserts);
  ck_assert_uint_eq(k.samples, before.samples);
  ck_assert_uint_eq(k.sample_batches, before.sample_batches);
  ck_assert_uint_eq(k.insert_batches, before.insert_batches);
  replay_server_destroy(&s);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static const char *snap_path(const char *dir, uint64_t seq, const char *suffix) {
  static char buf[4][300];
  static int k;
  char *b = buf[k++ % 4];
  snprintf(b, sizeof buf[0], "%s/replay-%020llu.snap%s", dir, (unsigned long long)seq, suffix);
  return b;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void remove_dir(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* Runs a server on fresh inproc names until `stored` more transitions are in, then stops it and has
 * the owner write a snapshot. */
static void serve_and_snapshot(replay_config *c, int round, uint64_t first_id, int snapshots) {
  snprintf(c->insert_endpoint, sizeof c->insert_endpoint, "inproc://keep-insert-%d", round);
  snprintf(c->sample_endpoint, sizeof c->sample_endpoint, "inproc://keep-sample-%d", round);
  running r;
  start(&r, c);
  prove_still_serving(c->insert_endpoint, c->sample_endpoint, first_id);
  replay_server_stop(r.server);
  pthread_join(r.thread, NULL);
  ember_err err = {0};
  for (int i = 0; i < snapshots; i++) ck_assert_msg(replay_server_snapshot(r.server, &err) == 0, "%s", err.msg);
  replay_server_destroy(&r.server);
}

/* After a restart past a corrupt newest snapshot, the next snapshot's pruning keeps the valid older
 * one (the corrupt file was moved aside at restore, not counted in its place). */
START_TEST(restart_past_a_corrupt_snapshot_keeps_the_valid_one) {
  char dir[128];
  snprintf(dir, sizeof dir, "/tmp/ember-test-replay-keep-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
  replay_config c;
  base_config(&c, "inproc://x", "inproc://y");
  snprintf(c.snapshot_dir, sizeof c.snapshot_dir, "%s", dir);
  c.snapshot_interval_s = 0;
  c.snapshot_keep = 2;
  serve_and_snapshot(&c, 1, 0, 2); /* snapshots 1 and 2, 80 transitions each */
  ck_assert(exists(snap_path(dir, 1, "")) && exists(snap_path(dir, 2, "")));
  FILE *f = fopen(snap_path(dir, 2, ""), "r+b"); /* a payload byte: only full verification sees it */
  ck_assert_ptr_nonnull(f);
  fseek(f, 300, SEEK_SET);
  int ch = fgetc(f);
  fseek(f, 300, SEEK_SET);
  fputc(ch ^ 0x5a, f);
  fclose(f);

  ember_err err = {0};
  snprintf(c.insert_endpoint, sizeof c.insert_endpoint, "inproc://keep-insert-2");
  snprintf(c.sample_endpoint, sizeof c.sample_endpoint, "inproc://keep-sample-2");
  replay_server *s = replay_server_new(&c, ctx, NULL, &err); /* restores 1, moves 2 aside */
  ck_assert_msg(s != NULL, "%s", err.msg);
  replay_server_counters k;
  replay_server_get_counters(s, &k);
  ck_assert_uint_eq(k.restored, 80);
  replay_server_destroy(&s);

  serve_and_snapshot(&c, 3, 1000, 1); /* restores 1 again, writes 3, prunes to 2 files */
  ck_assert(exists(snap_path(dir, 3, "")));
  ck_assert_msg(exists(snap_path(dir, 1, "")), "the older valid snapshot was pruned");
  ck_assert(!exists(snap_path(dir, 2, "")) && exists(snap_path(dir, 2, ".corrupt"))); /* moved aside */
  replay_snapshot_info info;
  ck_assert_msg(replay_snapshot_verify(snap_path(dir, 3, ""), &info, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(info.size, 160);
  remove_dir(dir);
}
END_TEST

/* What docs/replay.md ("Durability") promises: an InsertAck means in memory; what was acknowledged
 * after the newest snapshot is exactly what the metrics call not durable, and exactly what a server
 * that dies without a final snapshot (a SIGKILL, as far as the table is concerned) loses. */
START_TEST(acknowledged_after_the_last_snapshot_is_not_durable) {
  char dir[128];
  snprintf(dir, sizeof dir, "/tmp/ember-test-replay-dur-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
  replay_config c;
  base_config(&c, "inproc://dur-insert", "inproc://dur-sample");
  snprintf(c.snapshot_dir, sizeof c.snapshot_dir, "%s", dir);
  c.snapshot_interval_s = 0;
  running r;
  start(&r, &c);
  prove_still_serving("inproc://dur-insert", "inproc://dur-sample", 0); /* 80 acknowledged */
  ember_err err = {0};
  ck_assert_msg(replay_server_snapshot(r.server, &err) == 0, "%s", err.msg); /* safe while running */
  prove_still_serving("inproc://dur-insert", "inproc://dur-sample", 1000);  /* 80 more acknowledged */
  double acked = stat_of("inproc://dur-sample", "replay_table_inserted_transitions", NULL);
  double durable = stat_of("inproc://dur-sample", "replay_last_snapshot_inserted_transitions", NULL);
  ck_assert(acked == 160 && durable == 80);
  /* dies without a final snapshot */
  replay_server_stop(r.server);
  pthread_join(r.thread, NULL);
  replay_server_destroy(&r.server);

  snprintf(c.insert_endpoint, sizeof c.insert_endpoint, "inproc://dur-insert2");
  snprintf(c.sample_endpoint, sizeof c.sample_endpoint, "inproc://dur-sample2");
  replay_server *s = replay_server_new(&c, ctx, NULL, &err);
  ck_assert_msg(s != NULL, "%s", err.msg);
  replay_server_counters k;
  replay_server_get_counters(s, &k);
  ck_assert_uint_eq(k.restored, (uint64_t)durable); /* the 80 acknowledged after it are gone */
  ck_assert_uint_eq(k.inserts, (uint64_t)durable); /* and their keys will be handed out again */
  replay_server_destroy(&s);
  remove_dir(dir);
}
END_TEST

/* A snapshot directory holding snapshots 5 and 6 (empty tables) and a temporary for 7 that a killed
 * writer left. */
static void old_snapshot_dir(char *dir, size_t cap, char *tmp, size_t tmp_cap) {
  snprintf(dir, cap, "/tmp/ember-test-replay-old-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
  replay_spec spec = {.task = "t", .obs_dim = 3, .act_dim = 1};
  replay_table_opts o = {.capacity = 100, .spec = &spec};
  replay_table *t = replay_table_new(&o, NULL);
  ember_err err = {0};
  for (uint64_t seq = 5; seq <= 6; seq++) {
    replay_snapshot_meta meta = {.sequence = seq};
    ck_assert_msg(replay_snapshot_write(dir, t, &meta, 1, NULL, 0, &err) == 0, "%s", err.msg);
  }
  replay_table_destroy(&t);
  snprintf(tmp, tmp_cap, "%s/.replay-00000000000000000007.snap.tmp", dir);
  FILE *f = fopen(tmp, "wb");
  ck_assert_ptr_nonnull(f);
  fputs("the start of a snapshot whose writer was killed", f);
  fclose(f);
}

/* At start (before any snapshot) the server removes the temporary a killed writer left: it could
 * be a table's size, and would otherwise stay until a later snapshot of the same number. */
START_TEST(start_removes_stale_temporaries) {
  char dir[128], tmp[300];
  old_snapshot_dir(dir, sizeof dir, tmp, sizeof tmp);
  replay_config c;
  base_config(&c, "inproc://tmp-insert", "inproc://tmp-sample");
  snprintf(c.snapshot_dir, sizeof c.snapshot_dir, "%s", dir);
  c.snapshot_interval_s = 0;
  ember_err err = {0};
  replay_server *s = replay_server_new(&c, ctx, NULL, &err);
  ck_assert_msg(s != NULL, "%s", err.msg);
  ck_assert_msg(!exists(tmp), "the stale temporary is still there after start");
  ck_assert(exists(snap_path(dir, 5, "")) && exists(snap_path(dir, 6, "")));
  replay_server_destroy(&s);
  remove_dir(dir);
}
END_TEST

/* With restore = false the server still numbers its snapshots after the files present: a file
 * numbered below them would be the first one pruning deletes (and could overwrite an old one). */
START_TEST(restore_off_still_numbers_after_old_files) {
  char dir[128], tmp[300];
  old_snapshot_dir(dir, sizeof dir, tmp, sizeof tmp);
  replay_config c;
  base_config(&c, "inproc://num-insert", "inproc://num-sample");
  snprintf(c.snapshot_dir, sizeof c.snapshot_dir, "%s", dir);
  c.snapshot_interval_s = 0;
  c.snapshot_keep = 2;
  c.restore = false;
  running r;
  start(&r, &c);
  prove_still_serving("inproc://num-insert", "inproc://num-sample", 0);
  replay_server_stop(r.server);
  pthread_join(r.thread, NULL);
  ember_err err = {0};
  ck_assert_msg(replay_server_snapshot(r.server, &err) == 0, "%s", err.msg);
  replay_server_destroy(&r.server);
  ck_assert_msg(exists(snap_path(dir, 7, "")), "the new snapshot is not numbered after the old ones");
  ck_assert(exists(snap_path(dir, 6, "")) && !exists(snap_path(dir, 5, "")));
  replay_snapshot_info info;
  ck_assert_msg(replay_snapshot_verify(snap_path(dir, 7, ""), &info, &err) == 0, "%s", err.msg);
  ck_assert_uint_eq(info.size, 80);
  remove_dir(dir);
}
END_TEST

/* Prioritized sampling through the server: the learner zeroes every priority but one, and from
 * then on every sample is that key, with weight 1. */
START_TEST(prioritized_updates_steer_sampling) {
  replay_config c;
  base_config(&c, "inproc://prio-insert", "inproc://prio-sample");
  strcpy(c.sampler, "prioritized");
  running r;
  start(&r, &c);
  ember_err err = {0};
  replay_insert_opts io = {.endpoint = "inproc://prio-insert", .actor_id = 3};
  replay_insert_client *ic = replay_insert_client_new(ctx, &io, &err);
  for (int i = 0; i < 4; i++) {
    test_batch tb;
    test_batch_fill(&tb, "t", 3, 1, 25, 25 * (uint64_t)i, 0, 0);
    replay_insert_client_send(ic, &tb.b, &err);
    test_batch_free(&tb);
  }
  ck_assert_int_eq(replay_insert_client_flush(ic, 3000), 0);
  replay_insert_client_destroy(&ic);
  replay_sample_opts so = {.endpoint = "inproc://prio-sample", .batch_size = 64, .prefetch = 1};
  replay_sample_client *sc = replay_sample_client_new(ctx, &so, &err);
  const Ember__SampleBatch *b = NULL;
  ck_assert_int_eq(replay_sample_client_next(sc, 3000, &b, &err), 0);
  for (size_t i = 0; i < b->n_weights; i++) ck_assert(b->weights[i] == 1.0f); /* all at max priority */
  uint64_t keys[100];
  float prios[100];
  for (int i = 0; i < 100; i++) keys[i] = (uint64_t)i, prios[i] = i == 42 ? 3.0f : 0.0f;
  ck_assert_int_eq(replay_sample_client_update_priorities(sc, keys, prios, 100, &err), 0);
  /* the batch requested by prefetch before the update may still come; after it, only key 42 */
  int only_42 = 0;
  for (int round = 0; round < 5; round++) {
    ck_assert_int_eq(replay_sample_client_next(sc, 3000, &b, &err), 0);
    int all = 1;
    for (size_t i = 0; i < b->n_keys; i++) all &= b->keys[i] == 42 && b->weights[i] == 1.0f;
    if (all) {
      only_42++;
      ck_assert(b->transitions->obs[0] == test_value(42, 0, 0));
    }
  }
  ck_assert_int_ge(only_42, 3);
  ck_assert(stat_of("inproc://prio-sample", "replay_priority_updates_total", NULL) == 100);
  replay_sample_client_destroy(&sc);
  finish(&r);
}
END_TEST

START_TEST(config_validation) {
  replay_config c;
  base_config(&c, "inproc://a", "inproc://b");
  ember_err err = {0};
  strcpy(c.sampler, "random");
  ck_assert_int_eq(replay_config_validate(&c, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "sampler"));
  strcpy(c.sampler, "uniform");
  c.min_size_to_sample = 5000;
  ck_assert_int_eq(replay_config_validate(&c, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "min_size_to_sample"));
  c.min_size_to_sample = 10;
  c.samples_per_insert = 4;
  c.error_buffer = 2;
  ck_assert_int_eq(replay_config_validate(&c, &err), EMBER_EINVAL);
  c.error_buffer = 100;
  c.obs_dim = 3;
  ck_assert_int_eq(replay_config_validate(&c, &err), EMBER_EINVAL);
  c.act_dim = 1;
  ck_assert_int_eq(replay_config_validate(&c, &err), 0);
  strcpy(c.insert_endpoint, "nonsense://x");
  ck_assert_ptr_null(replay_server_new(&c, ctx, NULL, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
}
END_TEST

static void setup(void) { ctx = zmq_ctx_new(); }
static void teardown(void) { zmq_ctx_term(ctx); }

int main(void) {
  log_set_level(LOG_ERROR); /* the refusals log warnings by design */
  Suite *s = suite_create("replay_server");
  TCase *tc = tcase_create("server");
  tcase_set_timeout(tc, 60);
  /* each test in its own process with its own context: a failing check cannot leave a server
   * thread holding sockets that would hang zmq_ctx_term */
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, acks_cover_every_batch_in_order);
  tcase_add_test(tc, insert_client_without_server_drops_and_counts);
  tcase_add_test(tc, oversize_batch_seen_from_the_client);
  tcase_add_test(tc, bad_input_tcp);
  tcase_add_test(tc, bad_input_inproc);
  tcase_add_test(tc, envelope_refusals_name_the_batch_or_request);
  tcase_add_test(tc, undecodable_batch_ends_unconfirmed_at_the_client);
  tcase_add_test(tc, implausible_acks_are_refused_by_the_client);
  tcase_add_test(tc, empty_log_prob_only_for_random_actions);
  tcase_add_test(tc, rate_limiter_parks_samples_and_pauses_inserts);
  tcase_add_test(tc, req_peers_and_prompt_stop);
  tcase_add_test(tc, owner_snapshot_restores_in_a_new_server);
  tcase_add_test(tc, periodic_snapshots_are_written_beside_the_server);
  tcase_add_test(tc, restart_past_a_corrupt_snapshot_keeps_the_valid_one);
  tcase_add_test(tc, start_removes_stale_temporaries);
  tcase_add_test(tc, acknowledged_after_the_last_snapshot_is_not_durable);
  tcase_add_test(tc, restore_off_still_numbers_after_old_files);
  tcase_add_test(tc, prioritized_updates_steer_sampling);
  tcase_add_test(tc, config_validation);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

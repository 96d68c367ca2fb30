/* net: Envelope encode/decode, and every kind of bad message refused with a typed error while the
 * socket keeps working. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "net.h"

static void *ctx;
static void setup(void) { ctx = zmq_ctx_new(); }
static void teardown(void) { zmq_ctx_term(ctx); }

static Ember__TransitionBatch *make_batch(uint32_t count, uint32_t od, uint32_t ad) {
  Ember__TransitionBatch *b = calloc(1, sizeof *b);
  ember__transition_batch__init(b);
  b->count = count, b->obs_dim = od, b->act_dim = ad, b->task = "demo", b->actor_id = 3, b->sequence = 1;
  b->n_obs = b->n_next_obs = (size_t)count * od;
  b->n_action = (size_t)count * ad;
  b->n_reward = b->n_terminated = b->n_truncated = b->n_behaviour_log_prob = count;
  b->obs = calloc(b->n_obs, sizeof(float));
  b->next_obs = calloc(b->n_obs, sizeof(float));
  b->action = calloc(b->n_action, sizeof(float));
  b->reward = calloc(count, sizeof(float));
  b->behaviour_log_prob = calloc(count, sizeof(float));
  b->terminated = calloc(count, sizeof(protobuf_c_boolean));
  b->truncated = calloc(count, sizeof(protobuf_c_boolean));
  for (size_t i = 0; i < b->n_obs; i++) b->obs[i] = (float)i, b->next_obs[i] = (float)i + 0.5f;
  return b;
}

static void free_batch(Ember__TransitionBatch *b) {
  free(b->obs), free(b->next_obs), free(b->action), free(b->reward), free(b->behaviour_log_prob);
  free(b->terminated), free(b->truncated), free(b);
}

START_TEST(encode_decode_round_trip) {
  Ember__TransitionBatch *b = make_batch(4, 3, 2);
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_TRANSITION_BATCH;
  env.transition_batch = b;
  uint8_t *buf;
  size_t len;
  ember_err err = {0};
  ck_assert_int_eq(net_encode(&env, &buf, &len, &err), 0);
  Ember__Envelope *out;
  ck_assert_int_eq(net_decode(buf, len, 0, &out, &err), 0);
  ck_assert_uint_eq(out->schema_version, EMBER_SCHEMA_VERSION);
  ck_assert_int_eq(out->body_case, EMBER__ENVELOPE__BODY_TRANSITION_BATCH);
  ck_assert_uint_eq(out->transition_batch->n_obs, 12);
  ck_assert_float_eq(out->transition_batch->next_obs[11], 11.5f);
  ck_assert_int_eq(net_check_transitions(out->transition_batch, 3, 2, &err), 0);
  net_envelope_free(out);
  free(buf);
  free_batch(b);
}
END_TEST

START_TEST(garbage_and_schema_and_size) {
  ember_err err = {0};
  Ember__Envelope *out = NULL;
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99};
  ck_assert_int_eq(net_decode(garbage, sizeof garbage, 0, &out, &err), EMBER_EDECODE);
  ck_assert_ptr_null(out);

  /* an Envelope from a newer schema: encode with version 2 by hand */
  Ember__StatsRequest req = EMBER__STATS_REQUEST__INIT;
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = EMBER__ENVELOPE__BODY_STATS_REQUEST;
  env.stats_request = &req;
  env.schema_version = 2;
  uint8_t buf[64];
  size_t n = ember__envelope__pack(&env, buf);
  ck_assert_int_eq(net_decode(buf, n, 0, &out, &err), EMBER_ESCHEMA);
  ck_assert_msg(strstr(err.msg, "schema version 2") != NULL, "message: %s", err.msg);
  ck_assert_ptr_null(out); /* net_decode frees what it refuses */
  /* net_decode_with hands it over, so a server can name the batch or request it refuses */
  ck_assert_int_eq(net_decode_with(buf, n, 0, NULL, &out, &err), EMBER_ESCHEMA);
  ck_assert_ptr_nonnull(out);
  ck_assert_int_eq(out->body_case, EMBER__ENVELOPE__BODY_STATS_REQUEST);
  net_envelope_free(out);
  out = NULL;
  env.schema_version = 0;
  n = ember__envelope__pack(&env, buf);
  ck_assert_int_eq(net_decode(buf, n, 0, &out, &err), EMBER_ESCHEMA);

  /* no body */
  Ember__Envelope empty = EMBER__ENVELOPE__INIT;
  empty.schema_version = 1;
  n = ember__envelope__pack(&empty, buf);
  ck_assert_int_eq(net_decode(buf, n, 0, &out, &err), EMBER_EDECODE);

  /* over the size limit */
  env.schema_version = 1;
  n = ember__envelope__pack(&env, buf);
  ck_assert_int_eq(net_decode(buf, n, 1, &out, &err), EMBER_ETOOBIG);
}
END_TEST

START_TEST(bad_endpoints_are_named) {
  ember_err err = {0};
  ck_assert_ptr_null(net_socket(ctx, ZMQ_PULL, "tcp://nonsense:port", true, NULL, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
  ck_assert_msg(strstr(err.msg, "tcp://nonsense:port") != NULL, "message: %s", err.msg);
  ck_assert_ptr_null(net_socket(ctx, ZMQ_PUSH, "carrier-pigeon://x", false, NULL, &err));
  ck_assert_msg(strstr(err.msg, "carrier-pigeon://x") != NULL, "message: %s", err.msg);
  ck_assert_ptr_null(net_socket(ctx, ZMQ_PUSH, "", false, NULL, &err));
}
END_TEST

START_TEST(socket_survives_bad_messages) {
  ember_err err = {0};
  void *server = net_socket(ctx, ZMQ_ROUTER, "inproc://net-test", true, NULL, &err);
  ck_assert_ptr_nonnull(server);
  void *raw = zmq_socket(ctx, ZMQ_DEALER);
  ck_assert_int_eq(zmq_connect(raw, "inproc://net-test"), 0);
  void *client = net_socket(ctx, ZMQ_DEALER, "inproc://net-test", false, NULL, &err);
  ck_assert_ptr_nonnull(client);

  ck_assert_int_eq(zmq_send(raw, "not protobuf at all", 19, 0), 19);
  ck_assert_int_eq(zmq_send(raw, "two", 3, ZMQ_SNDMORE), 3);
  ck_assert_int_eq(zmq_send(raw, "frames", 6, 0), 6);
  Ember__StatsRequest req = EMBER__STATS_REQUEST__INIT;
  ck_assert_int_eq(net_send_body(client, EMBER__ENVELOPE__BODY_STATS_REQUEST, &req, NULL, 0, &err), 0);

  /* ROUTER fair-queues between peers, so the three arrive in either order: two refused, one good */
  net_route route, good_route = {{0}, 0};
  Ember__Envelope *msg;
  int refused = 0, good = 0;
  for (int i = 0; i < 3; i++) {
    int rc = net_recv(server, &msg, &route, 0, &err);
    if (rc == EMBER_EDECODE) {
      refused++;
      continue;
    }
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(msg->body_case, EMBER__ENVELOPE__BODY_STATS_REQUEST);
    good_route = route;
    good++;
    net_envelope_free(msg);
  }
  ck_assert_int_eq(refused, 2);
  ck_assert_int_eq(good, 1);
  route = good_route;

  /* reply through the route, and the client receives it */
  Ember__Stats stats = EMBER__STATS__INIT;
  stats.role = "replay";
  ck_assert_int_eq(net_send_body(server, EMBER__ENVELOPE__BODY_STATS, &stats, &route, 0, &err), 0);
  ck_assert_int_eq(net_recv(client, &msg, NULL, 0, &err), 0);
  ck_assert_str_eq(msg->stats->role, "replay");
  net_envelope_free(msg);

  ck_assert_int_eq(net_recv(server, &msg, &route, ZMQ_DONTWAIT, &err), EMBER_EAGAIN);
  zmq_close(raw), zmq_close(client), zmq_close(server);
}
END_TEST

START_TEST(oversize_tcp_message_is_refused_and_others_still_flow) {
  ember_err err = {0};
  net_socket_opts small = {.max_message_bytes = 1024};
  void *server = net_socket(ctx, ZMQ_PULL, "tcp://127.0.0.1:*", true, &small, &err);
  ck_assert_ptr_nonnull(server);
  char endpoint[128];
  size_t sz = sizeof endpoint;
  zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, endpoint, &sz);
  void *big = net_socket(ctx, ZMQ_PUSH, endpoint, false, NULL, &err);
  void *good = net_socket(ctx, ZMQ_PUSH, endpoint, false, NULL, &err);
  Ember__TransitionBatch *b = make_batch(64, 17, 6);
  ck_assert_int_eq(net_send_body(big, EMBER__ENVELOPE__BODY_TRANSITION_BATCH, b, NULL, 0, &err), 0);
  free_batch(b);
  Ember__Heartbeat hb = EMBER__HEARTBEAT__INIT;
  hb.role = "actor";
  ck_assert_int_eq(net_send_body(good, EMBER__ENVELOPE__BODY_HEARTBEAT, &hb, NULL, 0, &err), 0);
  int timeout = 2000;
  zmq_setsockopt(server, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
  Ember__Envelope *msg;
  ck_assert_int_eq(net_recv(server, &msg, NULL, 0, &err), 0);
  ck_assert_int_eq(msg->body_case, EMBER__ENVELOPE__BODY_HEARTBEAT); /* the oversize one never arrives */
  net_envelope_free(msg);
  ck_assert_int_eq(net_recv(server, &msg, NULL, ZMQ_DONTWAIT, &err), EMBER_EAGAIN);
  zmq_close(big), zmq_close(good), zmq_close(server);
}
END_TEST

START_TEST(transition_checks_name_the_problem) {
  ember_err err = {0};
  Ember__TransitionBatch *b = make_batch(4, 3, 2);
  ck_assert_int_eq(net_check_transitions(b, 5, 2, &err), EMBER_ESHAPE);
  ck_assert_msg(strstr(err.msg, "obs_dim 3") && strstr(err.msg, "5"), "message: %s", err.msg);
  b->n_reward = 3;
  ck_assert_int_eq(net_check_transitions(b, 0, 0, &err), EMBER_ESHAPE);
  ck_assert_msg(strstr(err.msg, "reward") && strstr(err.msg, "3") && strstr(err.msg, "4"), "message: %s", err.msg);
  b->n_reward = 4;
  b->next_obs[7] = NAN;
  ck_assert_int_eq(net_check_transitions(b, 0, 0, &err), EMBER_ENONFINITE);
  ck_assert_msg(strstr(err.msg, "next_obs[7]") && strstr(err.msg, "transition 2"), "message: %s", err.msg);
  b->next_obs[7] = 0;
  b->action[0] = INFINITY;
  ck_assert_int_eq(net_check_transitions(b, 0, 0, &err), EMBER_ENONFINITE);
  b->action[0] = 0;
  b->count = 0;
  ck_assert_int_eq(net_check_transitions(b, 0, 0, &err), EMBER_ESHAPE);
  b->count = 4;
  ck_assert_int_eq(net_check_transitions(b, 3, 2, &err), 0);
  free_batch(b);
}
END_TEST

int main(void) {
  Suite *s = suite_create("net");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, encode_decode_round_trip);
  tcase_add_test(tc, garbage_and_schema_and_size);
  tcase_add_test(tc, bad_endpoints_are_named);
  tcase_add_test(tc, socket_survives_bad_messages);
  tcase_add_test(tc, oversize_tcp_message_is_refused_and_others_still_flow);
  tcase_add_test(tc, transition_checks_name_the_problem);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

/* auth: CurveZMQ key files, a server that admits only listed client keys, and a client with the
 * wrong key refused, counted, and told so (not left hanging). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "auth.h"
#include "net.h"

static char dir[64];

static void setup(void) {
  strcpy(dir, "/tmp/ember_auth_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void path(char *out, const char *name) { sprintf(out, "%s/%s", dir, name); }

START_TEST(keygen_and_load) {
  ember_err err = {0};
  ck_assert_int_eq(auth_keygen(dir, "actor1", &err), 0);
  char p[128], pub[AUTH_KEY_LEN + 1], sec[AUTH_KEY_LEN + 1], pub2[AUTH_KEY_LEN + 1];
  path(p, "actor1.key");
  struct stat st;
  ck_assert_int_eq(stat(p, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0600);
  ck_assert_int_eq(auth_load_keys(p, pub, sec, &err), 0);
  path(p, "actor1.pub");
  ck_assert_int_eq(auth_load_keys(p, pub2, NULL, &err), 0);
  ck_assert_str_eq(pub, pub2);
  ck_assert_int_eq(auth_load_keys(p, pub2, sec, &err), EMBER_EINVAL); /* a .pub has no secret */
  ck_assert_ptr_nonnull(strstr(err.msg, "secret-key"));
  ck_assert_int_eq(auth_keygen(dir, "actor1", &err), EMBER_EIO); /* never overwrites */
  path(p, "missing.key");
  ck_assert_int_eq(auth_load_keys(p, pub, sec, &err), EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "missing.key"));
  path(p, "bad.pub");
  FILE *f = fopen(p, "w");
  fputs("public-key = \"tooshort\"\n", f);
  fclose(f);
  ck_assert_int_eq(auth_load_keys(p, pub, NULL, &err), EMBER_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "bad.pub"));
}
END_TEST

START_TEST(only_listed_clients_are_admitted) {
  ember_err err = {0};
  char allow[128], p[256];
  path(allow, "allowed");
  mkdir(allow, 0700);
  ck_assert_int_eq(auth_keygen(dir, "server", &err), 0);
  ck_assert_int_eq(auth_keygen(allow, "good", &err), 0);
  ck_assert_int_eq(auth_keygen(dir, "intruder", &err), 0);
  char spub[41], ssec[41], gpub[41], gsec[41], ipub[41], isec[41];
  path(p, "server.key");
  auth_load_keys(p, spub, ssec, &err);
  snprintf(p, sizeof p, "%s/good.key", allow);
  auth_load_keys(p, gpub, gsec, &err);
  path(p, "intruder.key");
  auth_load_keys(p, ipub, isec, &err);
  snprintf(p, sizeof p, "%s/good.key", allow);
  unlink(p); /* the allow list holds only public keys */

  void *ctx = zmq_ctx_new();
  metrics_registry *reg = metrics_new();
  auth_zap *zap = auth_zap_start(ctx, allow, reg, &err);
  ck_assert_msg(zap != NULL, "%s", err.msg);
  ck_assert_int_eq(auth_zap_allowed_count(zap), 1);

  net_socket_opts so = {.curve_server = true, .curve_public_key = spub, .curve_secret_key = ssec, .recv_timeout_ms = 3000};
  void *server = net_socket(ctx, ZMQ_PULL, "tcp://127.0.0.1:*", true, &so, &err);
  ck_assert_msg(server != NULL, "%s", err.msg);
  char endpoint[128];
  size_t sz = sizeof endpoint;
  zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, endpoint, &sz);

  net_socket_opts bad = {.curve_public_key = ipub, .curve_secret_key = isec, .curve_server_key = spub};
  void *intruder = zmq_socket(ctx, ZMQ_PUSH);
  auth_watch *watch = auth_watch_new(ctx, intruder, &err);
  ck_assert_ptr_nonnull(watch);
  zmq_close(intruder);
  auth_watch_destroy(&watch);
  /* the real intruder: watch before connecting so the first refusal is seen */
  intruder = net_socket(ctx, ZMQ_PUSH, endpoint, false, &bad, &err);
  ck_assert_ptr_nonnull(intruder);
  watch = auth_watch_new(ctx, intruder, &err);
  ck_assert_ptr_nonnull(watch);
  Ember__Heartbeat hb = EMBER__HEARTBEAT__INIT;
  hb.role = "intruder";
  net_send_body(intruder, EMBER__ENVELOPE__BODY_HEARTBEAT, &hb, NULL, ZMQ_DONTWAIT, &err);

  int refused = 0;
  for (int i = 0; i < 100 && !refused; i++) {
    refused = auth_watch_refusals(watch);
    if (!refused) usleep(50 * 1000);
  }
  ck_assert_int_ge(refused, 1);
  metric *m = metrics_counter(reg, "auth_refused_total", NULL, NULL);
  ck_assert_double_ge(metric_value(m), 1);

  net_socket_opts good = {.curve_public_key = gpub, .curve_secret_key = gsec, .curve_server_key = spub};
  void *client = net_socket(ctx, ZMQ_PUSH, endpoint, false, &good, &err);
  ck_assert_ptr_nonnull(client);
  hb.role = "actor";
  ck_assert_int_eq(net_send_body(client, EMBER__ENVELOPE__BODY_HEARTBEAT, &hb, NULL, 0, &err), 0);
  Ember__Envelope *msg;
  ck_assert_int_eq(net_recv(server, &msg, NULL, 0, &err), 0);
  ck_assert_str_eq(msg->heartbeat->role, "actor"); /* the intruder's message never arrived */
  net_envelope_free(msg);

  auth_watch_destroy(&watch);
  zmq_close(intruder), zmq_close(client), zmq_close(server);
  auth_zap_stop(&zap);
  zmq_ctx_term(ctx);
  metrics_destroy(&reg);
}
END_TEST

START_TEST(allow_list_errors) {
  ember_err err = {0};
  void *ctx = zmq_ctx_new();
  metrics_registry *reg = metrics_new();
  char p[128];
  path(p, "nothing-here");
  ck_assert_ptr_null(auth_zap_start(ctx, p, reg, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "nothing-here"));
  path(p, "empty");
  mkdir(p, 0700);
  ck_assert_ptr_null(auth_zap_start(ctx, p, reg, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "no public keys"));
  zmq_ctx_term(ctx);
  metrics_destroy(&reg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("auth");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, keygen_and_load);
  tcase_add_test(tc, only_listed_clients_are_admitted);
  tcase_add_test(tc, allow_list_errors);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

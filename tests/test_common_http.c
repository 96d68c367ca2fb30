/* http: the metrics endpoint serves Prometheus text that a scraper parses back to the values. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"

/* A plain HTTP/1.0 GET on loopback; returns the malloc'd response (headers + body). */
static char *http_get(int port, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  char req[256];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
  ck_assert_int_eq(write(fd, req, (size_t)n), n);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  ssize_t r;
  while ((r = read(fd, buf + len, cap - 1 - len)) > 0) len += (size_t)r;
  buf[len] = 0;
  close(fd);
  return buf;
}

/* Parses exposition text: finds the sample line `series value` and returns the value. */
static int scrape_value(const char *text, const char *series, double *out) {
  const char *body = strstr(text, "\r\n\r\n");
  const char *line = body ? body + 4 : text;
  while (line && *line) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if (line[0] != '#') {
      const char *space = memchr(line, ' ', len);
      if (space && (size_t)(space - line) == strlen(series) && strncmp(line, series, strlen(series)) == 0) {
        char num[64];
        size_t nl = len - (size_t)(space + 1 - line);
        if (nl >= sizeof num) return -1;
        memcpy(num, space + 1, nl);
        num[nl] = 0;
        char *e;
        *out = strtod(num, &e);
        return *e == 0 ? 0 : -1;
      }
    }
    line = end ? end + 1 : NULL;
  }
  return -1;
}

START_TEST(serves_parsable_metrics) {
  metrics_registry *reg = metrics_new();
  metric_add(metrics_counter(reg, "replay_inserts_total", NULL, "inserted"), 640);
  metric_inc(metrics_counter(reg, "replay_rejected_total", "reason=\"nan\"", "rejected"));
  metric_set(metrics_gauge(reg, "learner_param_version", NULL, NULL), 17);
  ember_err err = {0};
  http_server *srv = http_server_start(reg, "127.0.0.1", 0, &err);
  ck_assert_msg(srv != NULL, "%s", err.msg);
  int port = http_server_port(srv);
  ck_assert_int_gt(port, 0);

  char *resp = http_get(port, "/metrics");
  ck_assert_msg(strncmp(resp, "HTTP/1.0 200", 12) == 0 || strncmp(resp, "HTTP/1.1 200", 12) == 0, "%s", resp);
  ck_assert_ptr_nonnull(strstr(resp, "text/plain; version=0.0.4"));
  double v;
  ck_assert_int_eq(scrape_value(resp, "replay_inserts_total", &v), 0);
  ck_assert_double_eq(v, 640);
  ck_assert_int_eq(scrape_value(resp, "replay_rejected_total{reason=\"nan\"}", &v), 0);
  ck_assert_double_eq(v, 1);
  ck_assert_int_eq(scrape_value(resp, "learner_param_version", &v), 0);
  ck_assert_double_eq(v, 17);
  free(resp);

  metric_add(metrics_counter(reg, "replay_inserts_total", NULL, NULL), 64); /* live values */
  resp = http_get(port, "/metrics");
  ck_assert_int_eq(scrape_value(resp, "replay_inserts_total", &v), 0);
  ck_assert_double_eq(v, 704);
  free(resp);

  resp = http_get(port, "/nothing");
  ck_assert_ptr_nonnull(strstr(resp, " 404 "));
  free(resp);
  resp = http_get(port, "/healthz");
  ck_assert_ptr_nonnull(strstr(resp, " 200 "));
  free(resp);
  http_server_stop(&srv);
  ck_assert_ptr_null(srv);
  metrics_destroy(&reg);
}
END_TEST

START_TEST(bad_addresses_are_named) {
  metrics_registry *reg = metrics_new();
  ember_err err = {0};
  ck_assert_ptr_null(http_server_start(reg, "not-an-address", 0, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "not-an-address"));
  ck_assert_ptr_null(http_server_start(reg, "127.0.0.1", 70000, &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "70000"));
  http_server *a = http_server_start(reg, "127.0.0.1", 0, &err);
  ck_assert_ptr_nonnull(a);
  ck_assert_ptr_null(http_server_start(reg, "127.0.0.1", http_server_port(a), &err)); /* in use */
  ck_assert_int_eq(err.code, EMBER_EIO);
  http_server_stop(&a);
  metrics_destroy(&reg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, serves_parsable_metrics);
  tcase_add_test(tc, bad_addresses_are_named);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

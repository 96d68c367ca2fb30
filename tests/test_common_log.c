/* log: JSON lines that parse as JSON objects with escaped strings, a human format, levels. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static char *capture_buf;
static size_t capture_len;

static char *capture(void (*emit)(void)) {
  char *buf;
  capture_buf = NULL, capture_len = 0;
  FILE *mem = open_memstream(&capture_buf, &capture_len);
  log_set_output(mem);
  emit();
  log_set_output(NULL);
  fclose(mem);
  buf = capture_buf;
  return buf;
}

static void emit_json(void) {
  log_set_format(LOG_FORMAT_JSON);
  log_set_level(LOG_INFO);
  log_event(LOG_INFO, "learner", "progress", LF_U64("env_steps", 1500), LF_F64("return", -312.25),
            LF_STR("task", "pen\"dulum\n"), LF_BOOL("eval", 1), LF_F64("loss", NAN));
  log_event(LOG_DEBUG, "learner", "hidden");
  log_msg(LOG_WARN, "replay", "rejected %d", 3);
}

START_TEST(json_lines) {
  char *out = capture(emit_json);
  char *second = strchr(out, '\n');
  ck_assert_ptr_nonnull(second);
  *second++ = 0;
  ck_assert_msg(strstr(out, "\"level\":\"info\",\"component\":\"learner\",\"msg\":\"progress\"") != NULL, "%s", out);
  ck_assert_msg(strstr(out, "\"env_steps\":1500,\"return\":-312.25,\"task\":\"pen\\\"dulum\\n\",\"eval\":true") != NULL,
                "%s", out);
  ck_assert_msg(strstr(out, "\"loss\":\"NaN\"}") != NULL, "%s", out);
  ck_assert_int_eq(out[0], '{');
  ck_assert_msg(strstr(second, "\"level\":\"warn\",\"component\":\"replay\",\"msg\":\"rejected 3\"}\n") != NULL, "%s",
                second);
  ck_assert_ptr_null(strstr(second, "hidden"));
  free(out);
}
END_TEST

static void emit_human(void) {
  log_set_format(LOG_FORMAT_HUMAN);
  log_event(LOG_ERROR, "actor", "lost replay", LF_I64("queued", -1));
  log_set_format(LOG_FORMAT_JSON);
}

START_TEST(human_format) {
  char *out = capture(emit_human);
  ck_assert_msg(strstr(out, " error actor    lost replay queued=-1\n") != NULL, "%s", out);
  free(out);
}
END_TEST

START_TEST(parse_levels_and_formats) {
  log_level l;
  log_format f;
  ck_assert_int_eq(log_parse_level("warn", &l), 0);
  ck_assert_int_eq(l, LOG_WARN);
  ck_assert_int_ne(log_parse_level("loud", &l), 0);
  ck_assert_int_eq(log_parse_format("human", &f), 0);
  ck_assert_int_eq(f, LOG_FORMAT_HUMAN);
  ck_assert_int_ne(log_parse_format("xml", &f), 0);
  char esc[8];
  log_json_escape(esc, sizeof esc, "a\"b\"c\"d");
  ck_assert_str_eq(esc, "a\\\"b\\\"c"); /* truncated, never split inside an escape */
}
END_TEST

int main(void) {
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, json_lines);
  tcase_add_test(tc, human_format);
  tcase_add_test(tc, parse_levels_and_formats);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

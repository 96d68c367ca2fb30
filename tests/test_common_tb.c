/* tb: TensorBoard event files whose framing and CRCs check and whose events decode back. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tb.h"
#include "tensorboard.pb-c.h"

START_TEST(crc32c_known_vectors) {
  ck_assert_uint_eq(tb_crc32c("123456789", 9), 0xE3069283u); /* the standard CRC-32C check value */
  ck_assert_uint_eq(tb_crc32c("", 0), 0);
}
END_TEST

START_TEST(scalars_round_trip) {
  char dir[] = "/tmp/ember_tb_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ember_err err = {0};
  tb_writer *w = tb_writer_open(dir, &err);
  ck_assert_msg(w != NULL, "%s", err.msg);
  for (int i = 0; i < 10; i++) ck_assert_int_eq(tb_scalar(w, "eval/return", i * 1000, -1000.0 + i * 50, &err), 0);
  ck_assert_int_eq(tb_scalar(w, "loss/q", 9000, 0.25, &err), 0);
  char path[4096];
  snprintf(path, sizeof path, "%s", tb_writer_path(w));
  tb_writer_close(&w);

  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  int events = 0, scalars = 0;
  float last = 0;
  for (;;) {
    uint64_t len;
    uint32_t len_crc, data_crc;
    if (fread(&len, sizeof len, 1, f) != 1) break;
    ck_assert_int_eq(fread(&len_crc, sizeof len_crc, 1, f), 1);
    ck_assert_uint_eq(len_crc, tb_masked_crc(&len, sizeof len));
    uint8_t *buf = malloc(len);
    ck_assert_uint_eq(fread(buf, 1, len, f), len);
    ck_assert_int_eq(fread(&data_crc, sizeof data_crc, 1, f), 1);
    ck_assert_uint_eq(data_crc, tb_masked_crc(buf, len));
    Tensorboard__Event *ev = tensorboard__event__unpack(NULL, len, buf);
    ck_assert_ptr_nonnull(ev);
    if (events == 0) {
      ck_assert_int_eq(ev->what_case, TENSORBOARD__EVENT__WHAT_FILE_VERSION);
      ck_assert_str_eq(ev->file_version, "brain.Event:2");
    } else {
      ck_assert_int_eq(ev->what_case, TENSORBOARD__EVENT__WHAT_SUMMARY);
      ck_assert_uint_eq(ev->summary->n_value, 1);
      if (strcmp(ev->summary->value[0]->tag, "eval/return") == 0) {
        ck_assert_int_eq(ev->step, scalars * 1000);
        last = ev->summary->value[0]->simple_value;
        scalars++;
      }
    }
    tensorboard__event__free_unpacked(ev, NULL);
    free(buf);
    events++;
  }
  fclose(f);
  ck_assert_int_eq(events, 12);
  ck_assert_int_eq(scalars, 10);
  ck_assert_float_eq(last, -550.0f);
  remove(path);
  remove(dir);
}
END_TEST

START_TEST(unwritable_dir_is_named) {
  ember_err err = {0};
  ck_assert_ptr_null(tb_writer_open("/proc/ember-cannot-be-here", &err));
  ck_assert_ptr_nonnull(strstr(err.msg, "/proc/ember-cannot-be-here"));
}
END_TEST

int main(void) {
  Suite *s = suite_create("tb");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, crc32c_known_vectors);
  tcase_add_test(tc, scalars_round_trip);
  tcase_add_test(tc, unwritable_dir_is_named);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

/* learner_checkpoint_params (`ember eval`'s reader): the Params of a real learner checkpoint, and the
 * refusals of damaged ones: a record that claims more bytes than the checkpoint holds (found by
 * tests/fuzz/fuzz_checkpoint: the reader allocated whatever the record claimed, 4 GB from a 3 KB
 * payload), and a file that is not a learner checkpoint. The checkpoint is the seed corpus's
 * (tests/fuzz/corpus/checkpoint/, written by tests/fuzz/make_corpus.c from a two-update SAC run). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "learner.h"

#define SEED "tests/fuzz/corpus/checkpoint/sac_pendulum_2_updates.ckpt"

static char dir[64];
static void setup(void) {
  strcpy(dir, "/tmp/ember_lckpt_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}
static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static char *read_seed(const char *suffix, size_t *len) {
  const char *src = getenv("EMBER_SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/%s%s", src ? src : ".", SEED, suffix);
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  static char buf[1 << 16];
  *len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return buf;
}

typedef struct {
  const char *bytes;
  size_t len;
} raw_payload;
static int write_raw(void *ctx, FILE *out, ember_err *err) {
  raw_payload *p = ctx;
  (void)err;
  return fwrite(p->bytes, 1, p->len, out) == p->len ? 0 : EMBER_EIO;
}

/* Sets the u64 value of record `name` (records: u16 name length, name, u64 byte count, bytes). */
static void set_u64_record(char *payload, size_t len, const char *name, uint64_t value) {
  for (size_t at = 0; at + 10 < len;) {
    uint16_t nl;
    uint64_t bytes;
    memcpy(&nl, payload + at, 2);
    memcpy(&bytes, payload + at + 2 + nl, 8);
    if (nl == strlen(name) && memcmp(payload + at + 2, name, nl) == 0) {
      ck_assert_uint_eq(bytes, 8);
      memcpy(payload + at + 2 + nl + 8, &value, 8);
      return;
    }
    at += 2 + nl + 8 + bytes;
  }
  ck_abort_msg("no record %s", name);
}

START_TEST(reads_the_params_of_a_learner_checkpoint) {
  const char *src = getenv("EMBER_SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", src ? src : ".", SEED);
  Ember__Params *p = NULL;
  learner_ckpt_info info;
  ember_err err = {0};
  ck_assert_msg(learner_checkpoint_params(path, &p, &info, &err) == 0, "%s", err.msg);
  ck_assert_str_eq(info.algo, "sac");
  ck_assert_str_eq(info.task, "pendulum");
  ck_assert_uint_eq(info.updates, 2);
  ck_assert_uint_eq(p->version, 2);
  ck_assert_uint_eq(p->obs_dim, 3);
  ck_assert_uint_eq(p->act_dim, 1);
  ck_assert_str_eq(p->policy_kind, "tanh_gaussian_mlp");
  ember__params__free_unpacked(p, NULL);
}
END_TEST

START_TEST(a_record_longer_than_the_checkpoint_is_corrupt) {
  size_t len;
  char *payload = read_seed(".format1.payload", &len);
  set_u64_record(payload, len, "algo_bytes", (uint64_t)4 << 30);
  raw_payload raw = {payload, len};
  ember_err err = {0};
  ck_assert_int_eq(checkpoint_save(dir, "learner", 9, 0, write_raw, &raw, &err), 0);
  char path[256];
  snprintf(path, sizeof path, "%s/learner-%020d.ckpt", dir, 9);
  Ember__Params *p = NULL;
  ck_assert_int_eq(learner_checkpoint_params(path, &p, NULL, &err), EMBER_ECORRUPT);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err.msg, "'algo' claims 4294967296 bytes"), "%s", err.msg);
  /* the directory form skips nothing here: the file verifies, its content is what is refused */
  ck_assert_int_eq(learner_checkpoint_params(dir, &p, NULL, &err), EMBER_ECORRUPT);
}
END_TEST

START_TEST(another_file_is_not_a_learner_checkpoint) {
  size_t len;
  char *payload = read_seed(".format1.payload", &len);
  memcpy(payload + 2 + 8 + 8, "EMBRXXXX", 8); /* the identity record's magic */
  raw_payload raw = {payload, len};
  ember_err err = {0};
  ck_assert_int_eq(checkpoint_save(dir, "learner", 3, 0, write_raw, &raw, &err), 0);
  char path[256];
  snprintf(path, sizeof path, "%s/learner-%020d.ckpt", dir, 3);
  Ember__Params *p = NULL;
  ck_assert_int_eq(learner_checkpoint_params(path, &p, NULL, &err), EMBER_ESCHEMA);
  ck_assert_ptr_null(p);
}
END_TEST

int main(void) {
  Suite *s = suite_create("learner_checkpoint");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, reads_the_params_of_a_learner_checkpoint);
  tcase_add_test(tc, a_record_longer_than_the_checkpoint_is_corrupt);
  tcase_add_test(tc, another_file_is_not_a_learner_checkpoint);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

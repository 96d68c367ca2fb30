/* checkpoint: round trip, newest-valid selection, corrupt and truncated files skipped, a header's
 * payload size checked before it is allocated, records that name what is missing or mis-sized,
 * pruning. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"

static char dir[64];
static void setup(void) {
  strcpy(dir, "/tmp/ember_ckpt_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}
static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

typedef struct {
  float weights[1000];
  unsigned long long counter;
} state;

static int write_state(void *ctx, FILE *out, ember_err *err) {
  state *s = ctx;
  int rc = checkpoint_put(out, "weights", s->weights, sizeof s->weights, err);
  return rc ? rc : checkpoint_put(out, "counter", &s->counter, sizeof s->counter, err);
}
static int read_state(void *ctx, FILE *in, ember_err *err) {
  state *s = ctx;
  int rc = checkpoint_get(in, "weights", s->weights, sizeof s->weights, err);
  return rc ? rc : checkpoint_get(in, "counter", &s->counter, sizeof s->counter, err);
}
static int read_wrong(void *ctx, FILE *in, ember_err *err) {
  state *s = ctx;
  return checkpoint_get(in, "weights", s->weights, sizeof s->weights / 2, err);
}

static void fill(state *s, unsigned long long c) {
  for (int i = 0; i < 1000; i++) s->weights[i] = (float)i * 0.5f + (float)c;
  s->counter = c;
}

START_TEST(round_trip_newest) {
  state a, b;
  ember_err err = {0};
  for (unsigned long long step = 1; step <= 3; step++) {
    fill(&a, step * 100);
    ck_assert_int_eq(checkpoint_save(dir, "learner", step * 100, 0, write_state, &a, &err), 0);
  }
  int found;
  uint64_t step;
  ck_assert_int_eq(checkpoint_load_newest(dir, "learner", read_state, &b, &found, &step, &err), 0);
  ck_assert_int_eq(found, 1);
  ck_assert_uint_eq(step, 300);
  ck_assert_int_eq(memcmp(&a, &b, sizeof a), 0);
}
END_TEST

START_TEST(corrupt_and_truncated_are_skipped) {
  state a, b;
  ember_err err = {0};
  fill(&a, 1);
  ck_assert_int_eq(checkpoint_save(dir, "learner", 1, 0, write_state, &a, &err), 0);
  fill(&a, 2);
  ck_assert_int_eq(checkpoint_save(dir, "learner", 2, 0, write_state, &a, &err), 0);
  fill(&a, 3);
  ck_assert_int_eq(checkpoint_save(dir, "learner", 3, 0, write_state, &a, &err), 0);
  char p[256];
  /* 3: flip a byte in the compressed payload; 2: cut the file short */
  snprintf(p, sizeof p, "%s/learner-%020d.ckpt", dir, 3);
  FILE *f = fopen(p, "r+b");
  fseek(f, 80, SEEK_SET);
  int c = fgetc(f);
  fseek(f, 80, SEEK_SET);
  fputc(c ^ 0x5a, f);
  fclose(f);
  ck_assert_int_eq(checkpoint_verify(p, NULL, &err), EMBER_ECORRUPT);
  snprintf(p, sizeof p, "%s/learner-%020d.ckpt", dir, 2);
  struct stat st;
  stat(p, &st);
  ck_assert_int_eq(truncate(p, st.st_size - 7), 0);
  ck_assert_int_eq(checkpoint_verify(p, NULL, &err), EMBER_ECORRUPT);
  ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));

  int found;
  uint64_t step;
  ck_assert_int_eq(checkpoint_load_newest(dir, "learner", read_state, &b, &found, &step, &err), 0);
  ck_assert_int_eq(found, 1);
  ck_assert_uint_eq(step, 1);
  fill(&a, 1);
  ck_assert_int_eq(memcmp(&a, &b, sizeof a), 0);
}
END_TEST

START_TEST(empty_dir_and_reader_errors) {
  state b;
  ember_err err = {0};
  int found = 1;
  uint64_t step;
  ck_assert_int_eq(checkpoint_load_newest("/tmp/ember-no-such-dir", "learner", read_state, &b, &found, &step, &err), 0);
  ck_assert_int_eq(found, 0);
  fill(&b, 5);
  ck_assert_int_eq(checkpoint_save(dir, "learner", 5, 0, write_state, &b, &err), 0);
  ck_assert_int_eq(checkpoint_load_newest(dir, "learner", read_wrong, &b, &found, &step, &err), EMBER_ESHAPE);
  ck_assert_msg(strstr(err.msg, "'weights'") && strstr(err.msg, "4000") && strstr(err.msg, "2000"), "%s", err.msg);
}
END_TEST

/* The header's checksum (FNV-1a 64 over its first 56 bytes), to forge a header that passes it. */
static uint64_t header_checksum(const unsigned char *h) {
  uint64_t x = 0xcbf29ce484222325ULL;
  for (int i = 0; i < 56; i++) x = (x ^ h[i]) * 0x100000001b3ULL;
  return x;
}

/* Rewrites the payload size in the header of p (checksum recomputed, so only the size is wrong). */
static void forge_payload_bytes(const char *p, uint64_t payload_bytes) {
  unsigned char h[64];
  FILE *f = fopen(p, "r+b");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fread(h, 1, 64, f), 64);
  memcpy(h + 24, &payload_bytes, 8);
  uint64_t sum = header_checksum(h);
  memcpy(h + 56, &sum, 8);
  fseek(f, 0, SEEK_SET);
  ck_assert_int_eq(fwrite(h, 1, 64, f), 64);
  fclose(f);
}

/* A header whose payload size is wrong, with a checksum that matches (a crafted or miscomputed file):
 * refused as corrupt before anything of that size is allocated. Found by tests/fuzz/fuzz_checkpoint:
 * the reader allocated whatever the header said (here 2^50 bytes: under ASan an abort, elsewhere an
 * out-of-memory error or, under overcommit, memory it never needed). */
START_TEST(header_payload_size_is_checked_before_allocating) {
  state a, b;
  ember_err err = {0};
  fill(&a, 7);
  ck_assert_int_eq(checkpoint_save(dir, "learner", 7, 0, write_state, &a, &err), 0);
  char p[256];
  snprintf(p, sizeof p, "%s/learner-%020d.ckpt", dir, 7);
  forge_payload_bytes(p, (uint64_t)1 << 50);
  ck_assert_int_eq(checkpoint_verify(p, NULL, &err), EMBER_ECORRUPT);
  ck_assert_msg(strstr(err.msg, "1125899906842624 payload bytes"), "%s", err.msg);
  ck_assert_int_eq(checkpoint_load_file(p, read_state, &b, NULL, &err), EMBER_ECORRUPT);
  forge_payload_bytes(p, sizeof a.weights + sizeof a.counter + 40); /* off by a few bytes */
  ck_assert_int_eq(checkpoint_verify(p, NULL, &err), EMBER_ECORRUPT);
  ck_assert_msg(strstr(err.msg, "says otherwise"), "%s", err.msg);
}
END_TEST

START_TEST(keep_prunes_old) {
  state a;
  ember_err err = {0};
  for (int step = 1; step <= 5; step++) {
    fill(&a, (unsigned long long)step);
    ck_assert_int_eq(checkpoint_save(dir, "learner", (uint64_t)step, 2, write_state, &a, &err), 0);
  }
  char p[256];
  for (int step = 1; step <= 5; step++) {
    snprintf(p, sizeof p, "%s/learner-%020d.ckpt", dir, step);
    ck_assert_int_eq(access(p, F_OK) == 0, step >= 4);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("checkpoint");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, round_trip_newest);
  tcase_add_test(tc, corrupt_and_truncated_are_skipped);
  tcase_add_test(tc, empty_dir_and_reader_errors);
  tcase_add_test(tc, header_payload_size_is_checked_before_allocating);
  tcase_add_test(tc, keep_prunes_old);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

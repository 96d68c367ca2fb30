/* replay snapshots: a round trip restores items, keys, priorities and counters; a truncated or
 * corrupt file is refused (never half-loaded) and the restore falls back to the previous file;
 * pruning keeps the newest files. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replay_snapshot.h"
#include "replay_test_util.h"

static char dir[256];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/ember-test-snap-%d-XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static replay_table *make(size_t cap, replay_sampler sampler, double alpha, int with_spec) {
  replay_spec spec = {.task = "snap_task", .obs_dim = 4, .act_dim = 2};
  replay_table_opts o = {.capacity = cap, .sampler = sampler, .alpha = alpha, .beta = 0.4,
                         .spec = with_spec ? &spec : NULL};
  replay_table *t = replay_table_new(&o, NULL);
  ck_assert_ptr_nonnull(t);
  return t;
}

static void fill(replay_table *t, uint64_t n) {
  for (uint64_t id = 0; id < n; id += 10) {
    test_batch tb;
    test_batch_fill(&tb, "snap_task", 4, 2, 10, id, 9, id / 10 + 1);
    replay_table_insert(t, &tb.b, NULL);
    test_batch_free(&tb);
  }
}

static void assert_same(const replay_table *a, const replay_table *b) {
  ck_assert_uint_eq(replay_table_size(a), replay_table_size(b));
  ck_assert_uint_eq(replay_table_inserts(a), replay_table_inserts(b));
  size_t n = replay_table_size(a);
  uint64_t first = replay_table_inserts(a) - n;
  float oa[4], ob[4], aa[2], ab[2], ra, rb;
  uint64_t pa, pb;
  for (uint64_t k = first; k < first + n; k++) {
    replay_rows rows_a = {.obs = oa, .action = aa, .reward = &ra, .policy_version = &pa};
    replay_rows rows_b = {.obs = ob, .action = ab, .reward = &rb, .policy_version = &pb};
    replay_table_gather(a, &k, 1, &rows_a);
    replay_table_gather(b, &k, 1, &rows_b);
    ck_assert(memcmp(oa, ob, sizeof oa) == 0 && memcmp(aa, ab, sizeof aa) == 0 && ra == rb && pa == pb);
    ck_assert(oa[0] == test_value(k, 0, 0));
    ck_assert_float_eq_tol(replay_table_priority_leaf(a, k), replay_table_priority_leaf(b, k), 1e-6f);
  }
}

START_TEST(round_trip_restores_everything) {
  replay_table *t = make(100, REPLAY_SAMPLER_PRIORITIZED, 0.6, 1);
  fill(t, 250); /* wrapped: keys 150..249 */
  for (uint64_t k = 150; k < 250; k++) replay_table_update_priority(t, k, (float)(k % 17) * 0.5f);
  replay_snapshot_meta meta = {.sequence = 7, .created_unix_ms = 1234, .samples = 5000, .sample_batches = 20,
                               .insert_batches = 25};
  char path[4096];
  ember_err err = {0};
  ck_assert_int_eq(replay_snapshot_write(dir, t, &meta, 3, path, sizeof path, &err), 0);
  ck_assert_ptr_nonnull(strstr(path, "replay-00000000000000000007.snap"));
  replay_snapshot_info info;
  ck_assert_int_eq(replay_snapshot_verify(path, &info, &err), 0);
  ck_assert_uint_eq(info.size, 100);
  ck_assert_uint_eq(info.meta.samples, 5000);

  replay_table *u = make(100, REPLAY_SAMPLER_PRIORITIZED, 0.6, 0); /* spec comes from the file */
  ck_assert_int_eq(replay_snapshot_load(path, u, &info, &err), 0);
  ck_assert_str_eq(replay_table_spec(u)->task, "snap_task");
  assert_same(t, u);
  ck_assert_uint_eq(replay_table_evicted(u), 150);
  ck_assert_double_eq_tol(replay_table_max_priority(u), replay_table_max_priority(t), 1e-9);
  /* loading twice is refused: the table is no longer empty */
  ck_assert_int_eq(replay_snapshot_load(path, u, NULL, &err), EMBER_ESTATE);

  /* a smaller table keeps the newest items, with their keys */
  replay_table *small = make(30, REPLAY_SAMPLER_UNIFORM, 0, 0);
  ck_assert_int_eq(replay_snapshot_load(path, small, NULL, &err), 0);
  ck_assert_uint_eq(replay_table_size(small), 30);
  ck_assert_uint_eq(replay_table_inserts(small), 250);
  ck_assert(replay_table_contains(small, 220) && !replay_table_contains(small, 219));
  uint64_t k = 249;
  float o[4];
  replay_rows rows = {.obs = o};
  replay_table_gather(small, &k, 1, &rows);
  ck_assert(o[3] == test_value(249, 0, 3));

  /* a table with another spec refuses the file */
  replay_spec other = {.task = "snap_task", .obs_dim = 5, .act_dim = 2};
  replay_table_opts oo = {.capacity = 100, .spec = &other};
  replay_table *mismatch = replay_table_new(&oo, NULL);
  ck_assert_int_eq(replay_snapshot_load(path, mismatch, NULL, &err), EMBER_ESHAPE);
  ck_assert_uint_eq(replay_table_size(mismatch), 0);

  replay_table_destroy(&t), replay_table_destroy(&u), replay_table_destroy(&small), replay_table_destroy(&mismatch);
}
END_TEST

static void corrupt_at(const char *path, long offset) {
  FILE *f = fopen(path, "r+b");
  ck_assert_ptr_nonnull(f);
  fseek(f, offset, SEEK_SET);
  int c = fgetc(f);
  fseek(f, offset, SEEK_SET);
  fputc(c ^ 0x5a, f);
  fclose(f);
}

static long file_size(const char *path) {
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  return (long)st.st_size;
}

START_TEST(corrupt_and_truncated_files_are_refused) {
  replay_table *t = make(200, REPLAY_SAMPLER_UNIFORM, 0, 1);
  fill(t, 200);
  char p1[4096], p2[4096], p3[4096];
  ember_err err = {0};
  replay_snapshot_meta meta = {.sequence = 1};
  ck_assert_int_eq(replay_snapshot_write(dir, t, &meta, 1, p1, sizeof p1, &err), 0);
  meta.sequence = 2;
  ck_assert_int_eq(replay_snapshot_write(dir, t, &meta, 1, p2, sizeof p2, &err), 0);
  meta.sequence = 3;
  ck_assert_int_eq(replay_snapshot_write(dir, t, &meta, 1, p3, sizeof p3, &err), 0);

  corrupt_at(p3, file_size(p3) / 2 + 128); /* payload byte: the zstd checksum catches it */
  ck_assert_int_eq(replay_snapshot_verify(p3, NULL, &err), EMBER_ECORRUPT);
  ck_assert_int_eq(truncate(p2, file_size(p2) - 100), 0); /* truncated */
  ck_assert_int_eq(replay_snapshot_verify(p2, NULL, &err), EMBER_ECORRUPT);
  ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));

  /* the restore skips 3 and 2 and loads 1; the next sequence never reuses a name */
  replay_table *u = make(200, REPLAY_SAMPLER_UNIFORM, 0, 0);
  replay_snapshot_info info;
  int restored = 0;
  uint64_t next = 0;
  ck_assert_int_eq(replay_snapshot_restore_newest(dir, u, &info, &restored, &next, &err), 0);
  ck_assert_int_eq(restored, 1);
  ck_assert_uint_eq(info.meta.sequence, 1);
  ck_assert_uint_eq(next, 4);
  assert_same(t, u);

  /* a header byte */
  corrupt_at(p1, 100);
  ck_assert_int_eq(replay_snapshot_verify(p1, NULL, &err), EMBER_ECORRUPT);
  ck_assert_ptr_nonnull(strstr(err.msg, "header checksum"));
  /* nothing valid left: starts empty, not an error */
  replay_table *v = make(200, REPLAY_SAMPLER_UNIFORM, 0, 0);
  ck_assert_int_eq(replay_snapshot_restore_newest(dir, v, &info, &restored, &next, &err), 0);
  ck_assert_int_eq(restored, 0);
  ck_assert_uint_eq(replay_table_size(v), 0);

  /* garbage with the right name */
  char junk[4096];
  snprintf(junk, sizeof junk, "%s/replay-00000000000000000009.snap", dir);
  FILE *f = fopen(junk, "wb");
  fputs("not a snapshot", f);
  fclose(f);
  ck_assert_int_eq(replay_snapshot_verify(junk, NULL, &err), EMBER_ECORRUPT);

  /* prune keeps the two newest (9 and 3) */
  ck_assert_int_eq(replay_snapshot_prune(dir, 2, &err), 0);
  ck_assert_int_eq(access(junk, F_OK), 0);
  ck_assert_int_eq(access(p3, F_OK), 0);
  ck_assert_int_ne(access(p2, F_OK), 0);
  ck_assert_int_ne(access(p1, F_OK), 0);
  replay_table_destroy(&t), replay_table_destroy(&u), replay_table_destroy(&v);
}
END_TEST

START_TEST(empty_table_and_alpha_change) {
  ember_err err = {0};
  replay_table *empty = make(10, REPLAY_SAMPLER_UNIFORM, 0, 0);
  replay_snapshot_meta meta = {.sequence = 1};
  char path[4096];
  ck_assert_int_eq(replay_snapshot_write(dir, empty, &meta, 1, path, sizeof path, &err), 0);
  replay_table *u = make(10, REPLAY_SAMPLER_UNIFORM, 0, 0);
  ck_assert_int_eq(replay_snapshot_load(path, u, NULL, &err), 0);
  ck_assert_uint_eq(replay_table_size(u), 0);

  replay_table *t = make(50, REPLAY_SAMPLER_PRIORITIZED, 0.5, 1);
  fill(t, 50);
  replay_table_update_priority(t, 10, 4.0f);
  meta.sequence = 2;
  ck_assert_int_eq(replay_snapshot_write(dir, t, &meta, 1, path, sizeof path, &err), 0);
  replay_table *w = make(50, REPLAY_SAMPLER_PRIORITIZED, 1.0, 0);
  ck_assert_int_eq(replay_snapshot_load(path, w, NULL, &err), 0);
  ck_assert_float_eq_tol(replay_table_priority_leaf(w, 10), 4.0f, 1e-4f); /* 4^0.5 re-exponentiated to 4^1 */
  ck_assert_float_eq_tol(replay_table_priority_leaf(t, 10), 2.0f, 1e-4f);
  replay_table_destroy(&empty), replay_table_destroy(&u), replay_table_destroy(&t), replay_table_destroy(&w);
}
END_TEST

int main(void) {
  Suite *s = suite_create("replay_snapshot");
  TCase *tc = tcase_create("snapshot");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, round_trip_restores_everything);
  tcase_add_test(tc, corrupt_and_truncated_files_are_refused);
  tcase_add_test(tc, empty_table_and_alpha_change);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

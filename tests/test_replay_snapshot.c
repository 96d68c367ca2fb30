/* replay snapshots: a round trip restores items, keys, priorities and counters; a truncated or
 * corrupt file is refused (never half-loaded), moved aside, and the restore falls back to the
 * previous file; a header whose sizes overflow is corrupt; pruning keeps the newest valid files;
 * stale temporaries are removed. */
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

static const char *corrupt_name(const char *path) {
  static char buf[4200];
  snprintf(buf, sizeof buf, "%s.corrupt", path);
  return buf;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
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

  /* the restore skips 3 and 2, moving them aside, and loads 1; the next sequence never reuses a name */
  replay_table *u = make(200, REPLAY_SAMPLER_UNIFORM, 0, 0);
  replay_snapshot_info info;
  int restored = 0;
  uint64_t next = 0;
  ck_assert_int_eq(replay_snapshot_restore_newest(dir, u, &info, &restored, &next, &err), 0);
  ck_assert_int_eq(restored, 1);
  ck_assert_uint_eq(info.meta.sequence, 1);
  ck_assert_uint_eq(next, 4);
  assert_same(t, u);
  ck_assert_int_ne(access(p3, F_OK), 0);
  ck_assert_int_ne(access(p2, F_OK), 0);
  ck_assert_int_eq(access(corrupt_name(p3), F_OK), 0);
  ck_assert_int_eq(access(corrupt_name(p2), F_OK), 0);

  /* a header byte */
  corrupt_at(p1, 100);
  ck_assert_int_eq(replay_snapshot_verify(p1, NULL, &err), EMBER_ECORRUPT);
  ck_assert_ptr_nonnull(strstr(err.msg, "header checksum"));
  /* nothing valid left: starts empty, not an error; the files moved aside still hold their names */
  replay_table *v = make(200, REPLAY_SAMPLER_UNIFORM, 0, 0);
  ck_assert_int_eq(replay_snapshot_restore_newest(dir, v, &info, &restored, &next, &err), 0);
  ck_assert_int_eq(restored, 0);
  ck_assert_uint_eq(replay_table_size(v), 0);
  ck_assert_uint_eq(next, 4);
  ck_assert_int_eq(access(corrupt_name(p1), F_OK), 0);

  /* garbage with the right name */
  char junk[4096];
  snprintf(junk, sizeof junk, "%s/replay-00000000000000000009.snap", dir);
  FILE *f = fopen(junk, "wb");
  fputs("not a snapshot", f);
  fclose(f);
  ck_assert_int_eq(replay_snapshot_verify(junk, NULL, &err), EMBER_ECORRUPT);

  /* pruning moves it aside too: it is no snapshot to keep */
  ck_assert_int_eq(replay_snapshot_prune(dir, 2, &err), 0);
  ck_assert_int_ne(access(junk, F_OK), 0);
  ck_assert_int_eq(access(corrupt_name(junk), F_OK), 0);
  ck_assert_int_eq(replay_snapshot_next_sequence(dir, &next, &err), 0);
  ck_assert_uint_eq(next, 10);
  replay_table_destroy(&t), replay_table_destroy(&u), replay_table_destroy(&v);
}
END_TEST

/* The FNV-1a 64 of the snapshot header (replay_snapshot.h), to forge a valid header of another format. */
static uint64_t fnv1a64(const unsigned char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* Pruning counts valid files only: with keep = 2 it keeps the two newest that check out, never a
 * corrupt newer one in their place; corrupt ones are moved aside, not deleted; a file of another
 * format version is left alone; stale temporaries go. */
START_TEST(prune_keeps_the_newest_valid_files) {
  replay_table *t = make(50, REPLAY_SAMPLER_UNIFORM, 0, 1);
  fill(t, 50);
  char p[7][4096];
  ember_err err = {0};
  for (uint64_t seq = 1; seq <= 6; seq++) {
    replay_snapshot_meta meta = {.sequence = seq};
    ck_assert_int_eq(replay_snapshot_write(dir, t, &meta, 1, p[seq], sizeof p[seq], &err), 0);
  }
  corrupt_at(p[6], 100);                                     /* header checksum */
  ck_assert_int_eq(truncate(p[5], file_size(p[5]) - 1), 0);  /* truncated */
  /* 4: intact, but format version 2 (a newer build's): its header re-checksummed */
  FILE *f = fopen(p[4], "r+b");
  unsigned char h[REPLAY_SNAPSHOT_HEADER_BYTES];
  ck_assert_uint_eq(fread(h, 1, sizeof h, f), sizeof h);
  uint32_t version = 2;
  memcpy(h + 8, &version, 4);
  uint64_t sum = fnv1a64(h, 248);
  memcpy(h + 248, &sum, 8);
  fseek(f, 0, SEEK_SET);
  ck_assert_uint_eq(fwrite(h, 1, sizeof h, f), sizeof h);
  fclose(f);
  ck_assert_int_eq(replay_snapshot_verify(p[4], NULL, &err), EMBER_ESCHEMA);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s/.replay-00000000000000000007.snap.tmp", dir);
  write_file(tmp, "half a snapshot");

  ck_assert_int_eq(replay_snapshot_prune(dir, 2, &err), 0);
  ck_assert_int_eq(access(p[3], F_OK), 0); /* the two newest valid ones */
  ck_assert_int_eq(access(p[2], F_OK), 0);
  ck_assert_int_ne(access(p[1], F_OK), 0); /* an older valid one beyond keep */
  ck_assert_int_eq(access(p[4], F_OK), 0); /* another format: left alone */
  ck_assert_int_ne(access(p[5], F_OK), 0);
  ck_assert_int_ne(access(p[6], F_OK), 0);
  ck_assert_int_eq(access(corrupt_name(p[5]), F_OK), 0);
  ck_assert_int_eq(access(corrupt_name(p[6]), F_OK), 0);
  ck_assert_int_ne(access(tmp, F_OK), 0);
  uint64_t next = 0;
  ck_assert_int_eq(replay_snapshot_next_sequence(dir, &next, &err), 0);
  ck_assert_uint_eq(next, 7);

  /* a restore skips the newer format without moving it, and loads 3 */
  replay_table *u = make(50, REPLAY_SAMPLER_UNIFORM, 0, 0);
  replay_snapshot_info info;
  int restored = 0;
  ck_assert_int_eq(replay_snapshot_restore_newest(dir, u, &info, &restored, &next, &err), 0);
  ck_assert_int_eq(restored, 1);
  ck_assert_uint_eq(info.meta.sequence, 3);
  ck_assert_int_eq(access(p[4], F_OK), 0);
  replay_table_destroy(&t), replay_table_destroy(&u);
}
END_TEST

/* A header whose item count times the record size wraps around 2^64 (here 2^61 items of 56 bytes
 * make 0 payload bytes, with a matching checksum) is corrupt: it used to verify with an empty payload,
 * and its load left a table claiming items it never read (zeros, under keys up to 2^61). Found while
 * writing tests/fuzz/fuzz_snapshot (its header property; the crafted input is in
 * tests/fuzz/regressions/snapshot/), not yet by the fuzzer itself. */
START_TEST(item_count_that_overflows_is_corrupt) {
  replay_spec spec = {.task = "snap_task", .obs_dim = 3, .act_dim = 1};
  replay_table_opts o = {.capacity = 8, .sampler = REPLAY_SAMPLER_UNIFORM, .spec = &spec};
  replay_table *t = replay_table_new(&o, NULL), *u = make(8, REPLAY_SAMPLER_UNIFORM, 0, 0);
  replay_snapshot_meta meta = {.sequence = 1};
  char path[4096];
  ember_err err = {0};
  ck_assert_int_eq(replay_snapshot_write(dir, t, &meta, 1, path, sizeof path, &err), 0); /* empty */
  FILE *f = fopen(path, "r+b");
  unsigned char h[REPLAY_SNAPSHOT_HEADER_BYTES];
  ck_assert_uint_eq(fread(h, 1, sizeof h, f), sizeof h);
  uint64_t n = (uint64_t)1 << 61;
  memcpy(h + 88, &n, 8), memcpy(h + 96, &n, 8), memcpy(h + 104, &n, 8); /* capacity, size, inserts */
  uint64_t sum = fnv1a64(h, 248);
  memcpy(h + 248, &sum, 8);
  fseek(f, 0, SEEK_SET);
  ck_assert_uint_eq(fwrite(h, 1, sizeof h, f), sizeof h);
  fclose(f);
  ck_assert_int_eq(replay_snapshot_verify(path, NULL, &err), EMBER_ECORRUPT);
  ck_assert_msg(strstr(err.msg, "2305843009213693952 items"), "%s", err.msg);
  ck_assert_int_eq(replay_snapshot_load(path, u, NULL, &err), EMBER_ECORRUPT);
  ck_assert_uint_eq(replay_table_size(u), 0);
  replay_table_destroy(&t), replay_table_destroy(&u);
}
END_TEST

/* Temporaries left by a killed writer are removed and counted; a missing directory is not an error. */
START_TEST(stale_temporaries_are_removed) {
  char tmp1[4200], tmp2[4200], other[4200];
  snprintf(tmp1, sizeof tmp1, "%s/.replay-00000000000000000003.snap.tmp", dir);
  snprintf(tmp2, sizeof tmp2, "%s/.replay-00000000000000000004.snap.tmp", dir);
  snprintf(other, sizeof other, "%s/.someone-else.tmp", dir);
  write_file(tmp1, "x");
  write_file(tmp2, "y");
  write_file(other, "z");
  int removed = -1;
  ember_err err = {0};
  ck_assert_int_eq(replay_snapshot_remove_stale_tmp(dir, &removed, &err), 0);
  ck_assert_int_eq(removed, 2);
  ck_assert_int_ne(access(tmp1, F_OK), 0);
  ck_assert_int_ne(access(tmp2, F_OK), 0);
  ck_assert_int_eq(access(other, F_OK), 0); /* not ours */
  char missing[4200];
  snprintf(missing, sizeof missing, "%s/nowhere", dir);
  ck_assert_int_eq(replay_snapshot_remove_stale_tmp(missing, &removed, &err), 0);
  ck_assert_int_eq(removed, 0);
  uint64_t next = 0;
  ck_assert_int_eq(replay_snapshot_next_sequence(missing, &next, &err), 0);
  ck_assert_uint_eq(next, 1);
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
  tcase_add_test(tc, prune_keeps_the_newest_valid_files);
  tcase_add_test(tc, stale_temporaries_are_removed);
  tcase_add_test(tc, item_count_that_overflows_is_corrupt);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

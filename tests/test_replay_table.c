/* replay table: the ring stores and evicts in FIFO order with monotonic keys, gathers the right
 * rows, detects updates for evicted keys, samples in proportion to p^alpha with the right importance
 * weights (finite even for priorities whose p^alpha overflows a float), and stays within 10% of the
 * raw bytes stored. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "replay_table.h"
#include "replay_test_util.h"

static replay_table *make(size_t cap, replay_sampler sampler, double alpha, double beta, uint32_t od, uint32_t ad) {
  replay_spec spec = {.obs_dim = od, .act_dim = ad};
  strcpy(spec.task, "test_task");
  replay_table_opts o = {.capacity = cap, .sampler = sampler, .alpha = alpha, .beta = beta, .spec = &spec};
  ember_err err = {0};
  replay_table *t = replay_table_new(&o, &err);
  ck_assert_msg(t != NULL, "%s", err.msg);
  return t;
}

static void insert_ids(replay_table *t, uint64_t first_id, uint32_t count, uint64_t *evicted) {
  test_batch tb;
  const replay_spec *s = replay_table_spec(t);
  test_batch_fill(&tb, "test_task", s->obs_dim, s->act_dim, count, first_id, 3, 1);
  uint64_t first_key = replay_table_insert(t, &tb.b, evicted);
  ck_assert_uint_eq(first_key, first_id); /* the test inserts ids in key order */
  test_batch_free(&tb);
}

/* Gathers the rows of keys and checks every column against the values the key was inserted with. */
static void check_rows(const replay_table *t, const uint64_t *keys, size_t n) {
  uint32_t od = replay_table_spec(t)->obs_dim, ad = replay_table_spec(t)->act_dim;
  float *obs = malloc(sizeof(float) * n * od), *nobs = malloc(sizeof(float) * n * od);
  float *act = malloc(sizeof(float) * n * ad), *rew = malloc(sizeof(float) * n), *lp = malloc(sizeof(float) * n);
  protobuf_c_boolean *term = malloc(sizeof *term * n), *trunc = malloc(sizeof *trunc * n);
  uint64_t *pv = malloc(8 * n), *aid = malloc(8 * n);
  replay_rows rows = {obs, act, rew, nobs, lp, term, trunc, pv, aid};
  replay_table_gather(t, keys, n, &rows);
  for (size_t i = 0; i < n; i++) {
    uint64_t id = keys[i];
    for (uint32_t j = 0; j < od; j++) {
      ck_assert(obs[i * od + j] == test_value(id, 0, j));
      ck_assert(nobs[i * od + j] == test_value(id, 1, j));
    }
    for (uint32_t j = 0; j < ad; j++) ck_assert(act[i * ad + j] == test_action(id, j));
    ck_assert(rew[i] == test_value(id, 3, 0));
    ck_assert(lp[i] == test_value(id, 4, 0));
    ck_assert_int_eq(term[i], test_terminated(id));
    ck_assert_int_eq(trunc[i], test_truncated(id));
    ck_assert_uint_eq(aid[i], 3);
  }
  free(obs), free(nobs), free(act), free(rew), free(lp), free(term), free(trunc), free(pv), free(aid);
}

START_TEST(ring_fifo_eviction_and_keys) {
  replay_table *t = make(100, REPLAY_SAMPLER_UNIFORM, 0, 0, 5, 2);
  uint64_t ev = 99;
  insert_ids(t, 0, 64, &ev);
  ck_assert_uint_eq(ev, 0);
  ck_assert_uint_eq(replay_table_size(t), 64);
  insert_ids(t, 64, 64, &ev); /* wraps: 28 evicted */
  ck_assert_uint_eq(ev, 28);
  ck_assert_uint_eq(replay_table_size(t), 100);
  ck_assert_uint_eq(replay_table_inserts(t), 128);
  ck_assert_uint_eq(replay_table_evicted(t), 28);
  ck_assert(!replay_table_contains(t, 27));
  ck_assert(replay_table_contains(t, 28));
  ck_assert(replay_table_contains(t, 127));
  ck_assert(!replay_table_contains(t, 128));
  uint64_t keys[100];
  for (int i = 0; i < 100; i++) keys[i] = 28 + (uint64_t)i;
  check_rows(t, keys, 100);
  /* a batch bigger than the whole table keeps its newest rows */
  insert_ids(t, 128, 250, &ev);
  ck_assert_uint_eq(ev, 250);
  ck_assert_uint_eq(replay_table_inserts(t), 378);
  for (int i = 0; i < 100; i++) keys[i] = 278 + (uint64_t)i;
  check_rows(t, keys, 100);
  ck_assert_int_eq(replay_table_update_priority(t, 100, 1.0f), EMBER_ENOENT);
  ck_assert_int_eq(replay_table_update_priority(t, 5000, 1.0f), EMBER_ENOENT);
  ck_assert_int_eq(replay_table_update_priority(t, 300, 1.0f), 0); /* uniform: accepted, no effect */
  replay_table_destroy(&t);
  ck_assert_ptr_null(t);
}
END_TEST

START_TEST(uniform_sampling_covers_the_table) {
  replay_table *t = make(50, REPLAY_SAMPLER_UNIFORM, 0, 0, 3, 1);
  insert_ids(t, 0, 80, NULL); /* holds keys 30..79 */
  rng_t r;
  rng_seed(&r, 1, RNG_STREAM_TEST);
  uint64_t keys[5000];
  float w[5000];
  ck_assert_int_eq(replay_table_sample(t, &r, 5000, keys, w, NULL), 0);
  int seen[50] = {0};
  for (int i = 0; i < 5000; i++) {
    ck_assert(keys[i] >= 30 && keys[i] < 80);
    ck_assert(w[i] == 1.0f);
    seen[keys[i] - 30]++;
  }
  for (int i = 0; i < 50; i++) ck_assert(seen[i] > 50 && seen[i] < 160);
  check_rows(t, keys, 5000);
  replay_table_destroy(&t);
}
END_TEST

START_TEST(empty_table_refuses_to_sample) {
  replay_table *t = make(10, REPLAY_SAMPLER_PRIORITIZED, 0.6, 0.4, 3, 1);
  rng_t r;
  rng_seed(&r, 1, RNG_STREAM_TEST);
  uint64_t k;
  float w;
  ember_err err = {0};
  ck_assert_int_eq(replay_table_sample(t, &r, 1, &k, &w, &err), EMBER_ESTATE);
  replay_table_destroy(&t);
}
END_TEST

/* 64 items (wrapped in the ring), priorities set by key; draws follow p^alpha (chi-square, 63
 * dof, 0.999 quantile 103.4) and weights are (min p^alpha / p_i^alpha)^beta. */
START_TEST(prioritized_sampling_follows_priorities) {
  const double alpha = 0.7, beta = 0.5;
  replay_table *t = make(64, REPLAY_SAMPLER_PRIORITIZED, alpha, beta, 2, 1);
  insert_ids(t, 0, 100, NULL); /* keys 36..99 */
  double pa[64], total = 0, minpa = INFINITY;
  for (int i = 0; i < 64; i++) {
    float p = 0.2f + (float)((i * 37) % 64) / 8.0f;
    ck_assert_int_eq(replay_table_update_priority(t, 36 + (uint64_t)i, p), 0);
    pa[i] = pow(p, alpha);
    total += pa[i];
    if (pa[i] < minpa) minpa = pa[i];
  }
  ck_assert_int_eq(replay_table_update_priority(t, 35, 1.0f), EMBER_ENOENT);
  rng_t r;
  rng_seed(&r, 99, RNG_STREAM_TEST);
  enum { N = 100000 };
  static uint64_t keys[N];
  static float w[N];
  ck_assert_int_eq(replay_table_sample(t, &r, N, keys, w, NULL), 0);
  long counts[64] = {0};
  for (int i = 0; i < N; i++) {
    ck_assert(keys[i] >= 36 && keys[i] < 100);
    int c = (int)(keys[i] - 36);
    counts[c]++;
    ck_assert_float_eq_tol(w[i], (float)pow(minpa / pa[c], beta), 1e-5f);
    ck_assert(w[i] <= 1.0f);
  }
  double chi2 = 0;
  for (int i = 0; i < 64; i++) {
    double e = N * pa[i] / total;
    chi2 += (counts[i] - e) * (counts[i] - e) / e;
  }
  ck_assert_msg(chi2 < 103.4, "chi-square %.1f over 63 dof", chi2);
  check_rows(t, keys, 1000);
  /* new items get the max priority seen: 0.2 + 63/8 */
  insert_ids(t, 100, 1, NULL);
  ck_assert_float_eq_tol(replay_table_priority_leaf(t, 100), (float)pow(0.2 + 63.0 / 8.0, alpha), 1e-4f);
  ck_assert_double_eq_tol(replay_table_max_priority(t), 0.2 + 63.0 / 8.0, 1e-5);
  /* zero priorities are never drawn: only key 37 keeps a positive one (36 was evicted by key 100) */
  for (uint64_t k = 38; k <= 100; k++) replay_table_update_priority(t, k, 0.0f);
  ck_assert(!replay_table_contains(t, 36));
  ck_assert_int_eq(replay_table_sample(t, &r, 1000, keys, w, NULL), 0);
  for (int i = 0; i < 1000; i++) {
    ck_assert_uint_eq(keys[i], 37);
    ck_assert(w[i] == 1.0f);
  }
  replay_table_destroy(&t);
}
END_TEST

START_TEST(memory_within_ten_percent_of_raw) {
  /* HalfCheetah: obs 17, act 6; both samplers */
  for (int s = 0; s < 2; s++) {
    replay_table *t = make(200000, s ? REPLAY_SAMPLER_PRIORITIZED : REPLAY_SAMPLER_UNIFORM, 0.6, 0.4, 17, 6);
    double raw = 200000.0 * (double)replay_table_raw_bytes_per_item(t);
    double held = (double)replay_table_memory_bytes(t);
    ck_assert_uint_eq(replay_table_raw_bytes_per_item(t), (17 * 2 + 6 + 2) * 4 + 2 + 16);
    ck_assert_msg(held <= 1.10 * raw, "held %.0f raw %.0f", held, raw);
    replay_table_destroy(&t);
  }
}
END_TEST

START_TEST(spec_errors) {
  replay_table_opts o = {.capacity = 0};
  ember_err err = {0};
  ck_assert_ptr_null(replay_table_new(&o, &err));
  ck_assert_int_eq(err.code, EMBER_EINVAL);
  o = (replay_table_opts){.capacity = 10, .sampler = REPLAY_SAMPLER_PRIORITIZED, .alpha = 0.5, .beta = 2};
  ck_assert_ptr_null(replay_table_new(&o, &err));
  o.beta = 0.5;
  replay_table *t = replay_table_new(&o, &err);
  ck_assert(!replay_table_has_spec(t));
  replay_spec bad = {.obs_dim = 0, .act_dim = 1};
  ck_assert_int_eq(replay_table_set_spec(t, &bad, &err), EMBER_EINVAL);
  replay_spec good = {.task = "x", .obs_dim = 3, .act_dim = 1};
  ck_assert_int_eq(replay_table_set_spec(t, &good, &err), 0);
  ck_assert_int_eq(replay_table_set_spec(t, &good, &err), EMBER_ESTATE);
  replay_table_destroy(&t);
}
END_TEST

/* An empty behaviour_log_prob means uniform random actions in [-1, 1]^act_dim: each row is stored
 * with that density's log, -act_dim * log 2, not 0 (which would read as a probability of 1). */
START_TEST(empty_log_prob_is_stored_as_the_uniform_density) {
  for (uint32_t ad = 1; ad <= 6; ad += 5) {
    replay_table *t = make(50, REPLAY_SAMPLER_UNIFORM, 0, 0, 3, ad);
    test_batch tb;
    test_batch_fill(&tb, "test_task", 3, ad, 10, 0, 3, 1);
    tb.b.n_behaviour_log_prob = 0;
    tb.b.behaviour_log_prob = NULL;
    replay_table_insert(t, &tb.b, NULL);
    test_batch_free(&tb);
    float lp[10];
    uint64_t keys[10];
    for (int i = 0; i < 10; i++) keys[i] = (uint64_t)i;
    replay_rows rows = {.behaviour_log_prob = lp};
    replay_table_gather(t, keys, 10, &rows);
    for (int i = 0; i < 10; i++) ck_assert_float_eq_tol(lp[i], -(float)ad * 0.69314718f, 1e-6f);
    replay_table_destroy(&t);
  }
}
END_TEST

/* With alpha above 1 (allowed up to 10), a large but finite priority -- as a PriorityUpdate may carry
 * (any finite value >= 0 is valid) -- makes p^alpha overflow a float. Its leaf is held at FLT_MAX,
 * so the sum-tree stays finite and the importance weights are numbers: an infinite leaf made every
 * weight NaN once all leaves were infinite (inf / inf), which the learner would train on. Found by
 * tests/fuzz/fuzz_snapshot (a snapshot's max priority, the same leaf for new items). */
START_TEST(huge_priorities_keep_leaves_and_weights_finite) {
  replay_table *t = make(8, REPLAY_SAMPLER_PRIORITIZED, 3.0, 0.4, 2, 1);
  insert_ids(t, 0, 8, NULL);
  for (uint64_t k = 0; k < 8; k++) ck_assert_int_eq(replay_table_update_priority(t, k, 1e30f), 0);
  for (uint64_t k = 0; k < 8; k++) ck_assert(replay_table_priority_leaf(t, k) == FLT_MAX);
  insert_ids(t, 8, 2, NULL); /* new items get the largest priority seen: 1e30, held too */
  ck_assert(replay_table_priority_leaf(t, 9) == FLT_MAX);
  ck_assert_int_eq(replay_table_update_priority(t, 9, 2.0f), 0);
  ck_assert_float_eq_tol(replay_table_priority_leaf(t, 9), 8.0f, 1e-5f);
  uint64_t keys[64];
  float weights[64];
  rng_t rng;
  rng_seed(&rng, 5, RNG_STREAM_TEST);
  ember_err err = {0};
  ck_assert_int_eq(replay_table_sample(t, &rng, 64, keys, weights, &err), 0);
  for (int i = 0; i < 64; i++) {
    ck_assert(replay_table_contains(t, keys[i]));
    ck_assert_msg(isfinite(weights[i]) && weights[i] > 0 && weights[i] <= 1, "weight %g", (double)weights[i]);
  }
  replay_table_destroy(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("replay_table");
  TCase *tc = tcase_create("table");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, ring_fifo_eviction_and_keys);
  tcase_add_test(tc, uniform_sampling_covers_the_table);
  tcase_add_test(tc, empty_table_refuses_to_sample);
  tcase_add_test(tc, prioritized_sampling_follows_priorities);
  tcase_add_test(tc, memory_within_ten_percent_of_raw);
  tcase_add_test(tc, spec_errors);
  tcase_add_test(tc, empty_log_prob_is_stored_as_the_uniform_density);
  tcase_add_test(tc, huge_priorities_keep_leaves_and_weights_finite);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

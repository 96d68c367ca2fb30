/* fuzz_priority_update: an Envelope as it reaches the replay server's sample socket with new priorities.
 *
 * The path (replay/replay_server_sample.c): net_decode_with through an arena, then for a
 * PriorityUpdate the server's checks (srv_check_priority_update); an update they accept is applied
 * key by key to a small prioritized table (keys not in it are stale, as after an eviction), which is
 * then sampled.
 *
 * Properties: an accepted update has as many priorities as keys, all finite and >= 0; a key is
 * updated exactly when the table holds it, and its leaf becomes priority^alpha (held at FLT_MAX where
 * that overflows a float: the sum-tree takes finite values only); the table's max
 * priority stays finite; sampling afterwards gives keys in the table with finite weights > 0. The
 * table is rebuilt for every input, so no update carries over to the next. */
#include <float.h>
#include <math.h>

#include "arena.h"
#include "fuzz.h"
#include "net.h"
#include "replay_server_impl.h"
#include "replay_table.h"
#include "rng.h"

#define TABLE_CAPACITY 16
#define ALPHA 3.0 /* above 1, as replay.alpha allows (up to 10): p^alpha can overflow a float */

/* A prioritized table that has seen 24 inserts into 16 slots: keys 8..23 are held, 0..7 evicted. */
static replay_table *fresh_table(void) {
  replay_spec spec = {.task = "pendulum", .obs_dim = 3, .act_dim = 1};
  replay_table_opts opts = {.capacity = TABLE_CAPACITY, .sampler = REPLAY_SAMPLER_PRIORITIZED, .alpha = ALPHA,
                            .beta = 0.4, .spec = &spec};
  ember_err err = {0};
  replay_table *t = replay_table_new(&opts, &err);
  FUZZ_ASSERT(t != NULL, "%s", err.msg);
  enum { N = 24 };
  static float obs[N * 3], next_obs[N * 3], action[N], reward[N];
  static protobuf_c_boolean flags[N];
  Ember__TransitionBatch b = EMBER__TRANSITION_BATCH__INIT;
  b.obs_dim = 3, b.act_dim = 1, b.count = N;
  b.n_obs = b.n_next_obs = N * 3, b.obs = obs, b.next_obs = next_obs;
  b.n_action = b.n_reward = b.n_terminated = b.n_truncated = N;
  b.action = action, b.reward = reward, b.terminated = b.truncated = flags;
  replay_table_insert(t, &b, NULL);
  return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static arena ar;
  static int ready;
  fuzz_quiet();
  if (!ready) arena_init(&ar, 1 << 12), ready = 1;
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  int rc = net_decode_with(data, size, 64u << 20, arena_allocator(&ar), &env, &err);
  if (rc == 0 && env->body_case == EMBER__ENVELOPE__BODY_PRIORITY_UPDATE) {
    const Ember__PriorityUpdate *u = env->priority_update;
    char why[256];
    reject_reason reason = R_COUNT;
    if (srv_check_priority_update(u, &reason, why, sizeof why) != 0) {
      FUZZ_ASSERT(reason < R_COUNT && why[0], "a refusal without a reason");
    } else {
      FUZZ_ASSERT(u->n_keys == u->n_priorities, "%zu keys, %zu priorities", u->n_keys, u->n_priorities);
      replay_table *t = fresh_table();
      for (size_t i = 0; i < u->n_keys; i++) {
        float p = u->priorities[i];
        FUZZ_ASSERT(isfinite(p) && p >= 0, "accepted priority %g", (double)p);
        bool held = replay_table_contains(t, u->keys[i]);
        int urc = replay_table_update_priority(t, u->keys[i], p);
        FUZZ_ASSERT(urc == (held ? 0 : EMBER_ENOENT), "key %llu: rc %d", (unsigned long long)u->keys[i], urc);
        double leaf = pow(p, ALPHA);
        if (held)
          FUZZ_ASSERT(replay_table_priority_leaf(t, u->keys[i]) == (leaf > FLT_MAX ? FLT_MAX : (float)leaf),
                      "leaf of key %llu", (unsigned long long)u->keys[i]);
      }
      FUZZ_ASSERT(isfinite(replay_table_max_priority(t)), "max priority %g", replay_table_max_priority(t));
      uint64_t keys[8];
      float weights[8];
      rng_t rng;
      rng_seed(&rng, 7, RNG_STREAM_TEST);
      FUZZ_ASSERT(replay_table_sample(t, &rng, 8, keys, weights, &err) == 0, "%s", err.msg);
      for (int i = 0; i < 8; i++)
        FUZZ_ASSERT(replay_table_contains(t, keys[i]) && isfinite(weights[i]) && weights[i] > 0,
                    "sampled key %llu weight %g", (unsigned long long)keys[i], (double)weights[i]);
      replay_table_destroy(&t);
    }
  }
  arena_reset(&ar);
  return 0;
}

/* fuzz_sample_request: an Envelope as it reaches the replay server's sample socket asking for a batch.
 *
 * The path (replay/replay_server_receive.c, replay_server_sample.c): the identity scanner over the raw
 * bytes (a refused request is answered with its request_id, scanned when too big to decode),
 * net_decode_with through an arena, then for a SampleRequest the server's checks
 * (srv_check_sample_request) against a table of a fixed capacity and a rate limiter. A request they
 * accept is served from a small filled table.
 *
 * Properties: a refusal names its reason; an accepted batch size is 1..capacity and feasible for
 * the rate limiter; every key sampled for it is in the table. */
#include <string.h>

#include "arena.h"
#include "fuzz.h"
#include "net.h"
#include "rate_limiter.h"
#include "replay_server_impl.h"
#include "replay_table.h"
#include "rng.h"

#define TABLE_CAPACITY 64

/* A table of TABLE_CAPACITY pendulum transitions, built once: sampling only reads it (priorities
 * are not touched), so no input changes what the next one sees. */
static replay_table *filled_table(void) {
  static replay_table *t;
  if (t) return t;
  replay_spec spec = {.task = "pendulum", .obs_dim = 3, .act_dim = 1};
  replay_table_opts opts = {.capacity = TABLE_CAPACITY, .sampler = REPLAY_SAMPLER_PRIORITIZED, .alpha = 0.6,
                            .beta = 0.4, .spec = &spec};
  ember_err err = {0};
  t = replay_table_new(&opts, &err);
  FUZZ_ASSERT(t != NULL, "%s", err.msg);
  enum { N = TABLE_CAPACITY };
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
  static rate_limiter rl;
  static int ready;
  fuzz_quiet();
  if (!ready) {
    arena_init(&ar, 1 << 12);
    ember_err err = {0};
    FUZZ_ASSERT(rate_limiter_init(&rl, 4.0, 1, 100.0, &err) == 0, "%s", err.msg); /* 2 x error_buffer < capacity */
    ready = 1;
  }
  replay_table *t = filled_table();
  srv_identity scanned = srv_scan_identity(data, size); /* as for a frame too big to decode */
  FUZZ_ASSERT(scanned.body != EMBER__ENVELOPE__BODY_SAMPLE_REQUEST || scanned.count == 0, "a request with a count");
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  int rc = net_decode_with(data, size, 64u << 20, arena_allocator(&ar), &env, &err);
  if (rc == 0 && env->body_case == EMBER__ENVELOPE__BODY_SAMPLE_REQUEST) {
    const Ember__SampleRequest *r = env->sample_request;
    char why[256];
    reject_reason reason = R_COUNT;
    if (srv_check_sample_request(r, replay_table_capacity(t), &rl, &reason, why, sizeof why) == 0) {
      FUZZ_ASSERT(r->batch_size >= 1 && r->batch_size <= TABLE_CAPACITY && rate_limiter_sample_feasible(&rl, r->batch_size),
                  "accepted batch_size %u", r->batch_size);
      uint64_t keys[TABLE_CAPACITY];
      float weights[TABLE_CAPACITY];
      rng_t rng;
      rng_seed(&rng, r->request_id, RNG_STREAM_TEST);
      FUZZ_ASSERT(replay_table_sample(t, &rng, r->batch_size, keys, weights, &err) == 0, "%s", err.msg);
      for (uint32_t i = 0; i < r->batch_size; i++)
        FUZZ_ASSERT(replay_table_contains(t, keys[i]), "sampled key %llu", (unsigned long long)keys[i]);
    } else {
      FUZZ_ASSERT(reason < R_COUNT && why[0], "a refusal without a reason");
    }
  }
  arena_reset(&ar);
  return 0;
}

/* fuzz_transition_batch: an Envelope as it reaches the replay server's insert socket.
 *
 * The path (replay/replay_server_receive.c, replay_server_insert.c): the identity scanner over the
 * raw bytes (what the server reads from a frame too big to decode), net_decode_with through an arena
 * as the server decodes, the identity of the decoded Envelope, then for a TransitionBatch
 * net_check_transitions and the server's own checks (srv_check_batch), without a spec and against a
 * fixed one. A batch the server would accept is stored in a small table and read back.
 *
 * Properties: a batch srv_check_batch accepts also passes net_check_transitions; once stored, the
 * table holds min(count, capacity) items, evicted the rest, and every stored row reads back
 * bit-exact (behaviour_log_prob: the uniform density when the batch left it empty); sampled keys are
 * in the table with finite, positive weights. */
#include <math.h>
#include <string.h>

#include "arena.h"
#include "fuzz.h"
#include "net.h"
#include "replay_server_impl.h"
#include "replay_table.h"
#include "rng.h"

#define TABLE_CAPACITY 5 /* smaller than most batches the fuzzer makes: eviction and wrap-around */

static void check_row(const Ember__TransitionBatch *b, size_t k, const replay_rows *r, size_t i) {
  size_t od = b->obs_dim, ad = b->act_dim;
  FUZZ_ASSERT(memcmp(r->obs + i * od, b->obs + k * od, od * sizeof(float)) == 0, "obs of row %zu", k);
  FUZZ_ASSERT(memcmp(r->next_obs + i * od, b->next_obs + k * od, od * sizeof(float)) == 0, "next_obs of row %zu", k);
  FUZZ_ASSERT(memcmp(r->action + i * ad, b->action + k * ad, ad * sizeof(float)) == 0, "action of row %zu", k);
  FUZZ_ASSERT(memcmp(r->reward + i, b->reward + k, sizeof(float)) == 0, "reward of row %zu", k);
  float logp = b->n_behaviour_log_prob ? b->behaviour_log_prob[k] : replay_uniform_log_prob(b->act_dim);
  FUZZ_ASSERT(memcmp(r->behaviour_log_prob + i, &logp, sizeof(float)) == 0, "behaviour_log_prob of row %zu", k);
  FUZZ_ASSERT(!r->terminated[i] == !b->terminated[k] && !r->truncated[i] == !b->truncated[k], "flags of row %zu", k);
  FUZZ_ASSERT(r->policy_version[i] == b->policy_version && r->actor_id[i] == b->actor_id, "ids of row %zu", k);
}

/* Stores an accepted batch in a fresh table and reads every stored row back. */
static void store_and_read_back(const Ember__TransitionBatch *b) {
  replay_spec spec = {.obs_dim = b->obs_dim, .act_dim = b->act_dim};
  snprintf(spec.task, sizeof spec.task, "%s", b->task ? b->task : "");
  replay_table_opts opts = {.capacity = TABLE_CAPACITY, .sampler = REPLAY_SAMPLER_PRIORITIZED, .alpha = 0.6,
                            .beta = 0.4, .spec = &spec};
  ember_err err = {0};
  replay_table *t = replay_table_new(&opts, &err);
  if (!t) {
    /* dims the protocol allows but the table refuses to allocate (the server refuses the batch the same way) */
    FUZZ_ASSERT(err.code == EMBER_EINVAL || err.code == EMBER_ENOMEM, "replay_table_new: %s", err.msg);
    return;
  }
  uint64_t evicted = 0;
  uint64_t first = replay_table_insert(t, b, &evicted);
  size_t kept = b->count < TABLE_CAPACITY ? b->count : TABLE_CAPACITY;
  FUZZ_ASSERT(first == 0, "first key %llu", (unsigned long long)first);
  FUZZ_ASSERT(replay_table_size(t) == kept && evicted == b->count - kept, "size %zu evicted %llu of %u",
              replay_table_size(t), (unsigned long long)evicted, b->count);

  size_t od = b->obs_dim, ad = b->act_dim;
  float *obs = calloc(kept * od, sizeof *obs), *next_obs = calloc(kept * od, sizeof *next_obs);
  float *action = calloc(kept * ad, sizeof *action), *reward = calloc(kept, sizeof *reward);
  float *logp = calloc(kept, sizeof *logp), *weights = calloc(kept, sizeof *weights);
  protobuf_c_boolean *term = calloc(kept, sizeof *term), *trunc = calloc(kept, sizeof *trunc);
  uint64_t *keys = calloc(kept, sizeof *keys), *pv = calloc(kept, sizeof *pv), *aid = calloc(kept, sizeof *aid);
  FUZZ_ASSERT(obs && next_obs && action && reward && logp && weights && term && trunc && keys && pv && aid,
              "out of memory for %zu rows", kept);
  replay_rows rows = {obs, action, reward, next_obs, logp, term, trunc, pv, aid};
  for (size_t i = 0; i < kept; i++) keys[i] = b->count - kept + i; /* the newest `kept` rows survive */
  replay_table_gather(t, keys, kept, &rows);
  for (size_t i = 0; i < kept; i++) check_row(b, (size_t)keys[i], &rows, i);

  rng_t rng;
  rng_seed(&rng, 1, RNG_STREAM_TEST);
  FUZZ_ASSERT(replay_table_sample(t, &rng, kept, keys, weights, &err) == 0, "sample: %s", err.msg);
  for (size_t i = 0; i < kept; i++)
    FUZZ_ASSERT(replay_table_contains(t, keys[i]) && isfinite(weights[i]) && weights[i] > 0,
                "sampled key %llu weight %g", (unsigned long long)keys[i], (double)weights[i]);
  free(obs), free(next_obs), free(action), free(reward), free(logp), free(weights);
  free(term), free(trunc), free(keys), free(pv), free(aid);
  replay_table_destroy(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static arena ar;
  static int ready;
  fuzz_quiet();
  if (!ready) arena_init(&ar, 1 << 16), ready = 1;

  srv_identity scanned = srv_scan_identity(data, size);
  FUZZ_ASSERT(scanned.body == EMBER__ENVELOPE__BODY__NOT_SET || scanned.body == EMBER__ENVELOPE__BODY_TRANSITION_BATCH ||
                  scanned.body == EMBER__ENVELOPE__BODY_SAMPLE_REQUEST,
              "scanned body %d", (int)scanned.body);

  Ember__Envelope *env = NULL;
  ember_err err = {0};
  int rc = net_decode_with(data, size, 64u << 20, arena_allocator(&ar), &env, &err);
  FUZZ_ASSERT(rc == 0 || err.msg[0], "refusal without a message (code %d)", rc);
  srv_identity id = srv_identity_of(env); /* what a refusal would name */
  (void)id;
  if (rc == 0 && env->body_case == EMBER__ENVELOPE__BODY_TRANSITION_BATCH) {
    const Ember__TransitionBatch *b = env->transition_batch;
    char why[512];
    reject_reason reason = R_COUNT;
    int plain = net_check_transitions(b, 0, 0, &err);
    int first = srv_check_batch(b, NULL, &reason, why, sizeof why);
    static const replay_spec pendulum = {.task = "pendulum", .obs_dim = 3, .act_dim = 1};
    int later = srv_check_batch(b, &pendulum, &reason, why, sizeof why);
    FUZZ_ASSERT(first != 0 || plain == 0, "srv_check_batch accepted what net_check_transitions refused: %s", err.msg);
    FUZZ_ASSERT(later != 0 || (b->obs_dim == 3 && b->act_dim == 1), "accepted dims %u, %u against the spec",
                b->obs_dim, b->act_dim);
    if (first == 0) store_and_read_back(b);
  }
  arena_reset(&ar);
  return 0;
}

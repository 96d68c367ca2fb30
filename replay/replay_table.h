/* replay_table.h: the replay table: a preallocated ring of transitions with FIFO eviction, uniform
 * or prioritized sampling, and priority updates by item key.
 *
 * Keys: the i-th transition ever inserted has key i (0, 1, 2, ...), and lives in slot key % capacity.
 * The table holds keys [inserts - size, inserts); any other key was evicted (or never existed), so an
 * update for it is detected without storing a key per item.
 *
 * Spec: task name and obs/act dims. Given at creation or set once (replay_table_set_spec), which is
 * when the storage is allocated and touched: capacity records of (2*obs_dim + act_dim + 2 floats,
 * 2 bytes, 2 uint64) rounded up to 8 bytes (one record per transition, row-major: a sample reads a
 * few adjacent cache lines per transition instead of one per field), plus about 4.8 bytes per slot
 * for the sum-tree when prioritized. Batches arrive columnar and are copied into records; samples
 * are gathered back into columns. Nothing is allocated after that.
 *
 * Prioritized sampling (Schaul et al. 2016): item i is drawn with probability p_i^alpha / sum_j
 * p_j^alpha; its importance weight is (N P(i))^-beta normalised by the largest weight in the table,
 * which reduces to (min_j p_j^alpha / p_i^alpha)^beta (over items with positive priority). New items
 * get the largest priority seen so far (1.0 at first). When every priority is 0 sampling falls back
 * to uniform with weight 1. Uniform sampling draws keys uniformly, with replacement, weight 1.
 *
 * Owns: every column and the sum-tree; batches passed in are only read. Not thread-safe: the server
 * loop is its only user. Errors: EMBER_EINVAL, EMBER_ENOMEM, EMBER_ESTATE (spec set twice, sampling
 * an empty table), EMBER_ENOENT (key not in the table).
 */
#ifndef EMBER_REPLAY_TABLE_H
#define EMBER_REPLAY_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ember.pb-c.h"
#include "err.h"
#include "rng.h"

#define REPLAY_TASK_MAX 64

typedef enum { REPLAY_SAMPLER_UNIFORM = 0, REPLAY_SAMPLER_PRIORITIZED = 1 } replay_sampler;

typedef struct {
  char task[REPLAY_TASK_MAX]; /* "" = any */
  uint32_t obs_dim, act_dim;  /* both > 0 once set */
} replay_spec;

typedef struct {
  size_t capacity;
  replay_sampler sampler;
  double alpha, beta;         /* prioritized only; alpha >= 0, beta in [0, 1] */
  const replay_spec *spec;    /* NULL or dims 0: set later (first accepted insert) */
} replay_table_opts;

/* Columns to gather sampled rows into; each array holds at least n rows. Any pointer may be NULL
 * to skip that column. */
typedef struct {
  float *obs, *action, *reward, *next_obs, *behaviour_log_prob;
  protobuf_c_boolean *terminated, *truncated;
  uint64_t *policy_version, *actor_id;
} replay_rows;

typedef struct replay_table replay_table;

replay_table *replay_table_new(const replay_table_opts *opts, ember_err *err);
void replay_table_destroy(replay_table **self_p);

/* Sets the spec and allocates the columns. EMBER_ESTATE when already set. */
int replay_table_set_spec(replay_table *t, const replay_spec *spec, ember_err *err);
bool replay_table_has_spec(const replay_table *t);
const replay_spec *replay_table_spec(const replay_table *t);

size_t replay_table_capacity(const replay_table *t);
size_t replay_table_size(const replay_table *t);
uint64_t replay_table_inserts(const replay_table *t);  /* = the next key */
uint64_t replay_table_evicted(const replay_table *t);
replay_sampler replay_table_sampler(const replay_table *t);
double replay_table_max_priority(const replay_table *t);
/* Bytes of storage allocated, and the raw bytes one transition occupies (both for the memory
 * budget: allocated / (capacity * raw) should stay under 1.10). */
size_t replay_table_memory_bytes(const replay_table *t);
size_t replay_table_raw_bytes_per_item(const replay_table *t);

/* Stores a batch the caller has validated (spec set and matching, lengths consistent, finite; see
 * net_check_transitions). Returns the first key assigned; the batch gets keys
 * [first, first + count). *evicted (may be NULL) receives how many old items were pushed out.
 * An empty behaviour_log_prob means uniform random actions in [-1, 1]^act_dim (docs/protocol.md):
 * each row is stored with that density's log, replay_uniform_log_prob(act_dim). */
uint64_t replay_table_insert(replay_table *t, const Ember__TransitionBatch *b, uint64_t *evicted);
/* log of the uniform density on [-1, 1]^act_dim: -act_dim * log 2. */
float replay_uniform_log_prob(uint32_t act_dim);

/* Draws n keys (with replacement) and their importance weights. EMBER_ESTATE when empty. */
int replay_table_sample(replay_table *t, rng_t *rng, size_t n, uint64_t *keys, float *weights, ember_err *err);
/* Copies the rows of n keys (which must be in the table) into out. */
void replay_table_gather(const replay_table *t, const uint64_t *keys, size_t n, const replay_rows *out);

bool replay_table_contains(const replay_table *t, uint64_t key);
/* Sets one item's priority (finite, >= 0; the caller rejects others). EMBER_ENOENT when the key was
 * evicted or never existed; ignored (returns 0) under uniform sampling. */
int replay_table_update_priority(replay_table *t, uint64_t key, float priority);
/* The stored p^alpha of an item in the table (1 under uniform sampling). */
float replay_table_priority_leaf(const replay_table *t, uint64_t key);

#endif

#include "replay_table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "replay_table_impl.h"

replay_table *replay_table_new(const replay_table_opts *opts, ember_err *err) {
  if (!opts || opts->capacity == 0) {
    ember_fail(err, EMBER_EINVAL, "replay table: capacity must be > 0");
    return NULL;
  }
  if (opts->sampler == REPLAY_SAMPLER_PRIORITIZED &&
      (!isfinite(opts->alpha) || opts->alpha < 0 || !isfinite(opts->beta) || opts->beta < 0 || opts->beta > 1)) {
    ember_fail(err, EMBER_EINVAL, "replay table: alpha %g must be >= 0 and beta %g in [0, 1]", opts->alpha,
               opts->beta);
    return NULL;
  }
  replay_table *t = calloc(1, sizeof *t);
  if (!t) {
    ember_fail(err, EMBER_ENOMEM, "replay table: out of memory");
    return NULL;
  }
  t->capacity = opts->capacity;
  t->sampler = opts->sampler;
  t->alpha = opts->alpha;
  t->beta = opts->beta;
  t->max_priority = 1.0;
  if (t->sampler == REPLAY_SAMPLER_PRIORITIZED && !(t->tree = sumtree_new(t->capacity, err))) {
    free(t);
    return NULL;
  }
  if (opts->spec && opts->spec->obs_dim > 0 && opts->spec->act_dim > 0 &&
      replay_table_set_spec(t, opts->spec, err) != 0) {
    replay_table_destroy(&t);
    return NULL;
  }
  return t;
}

void replay_table_destroy(replay_table **self_p) {
  if (!self_p || !*self_p) return;
  replay_table *t = *self_p;
  free(t->obs);
  free(t->action);
  free(t->reward);
  free(t->next_obs);
  free(t->behaviour_log_prob);
  free(t->terminated);
  free(t->truncated);
  free(t->policy_version);
  free(t->actor_id);
  sumtree_destroy(&t->tree);
  free(t);
  *self_p = NULL;
}

int replay_table_set_spec(replay_table *t, const replay_spec *spec, ember_err *err) {
  if (t->has_spec) return ember_fail(err, EMBER_ESTATE, "replay table: spec already set");
  if (spec->obs_dim == 0 || spec->act_dim == 0)
    return ember_fail(err, EMBER_EINVAL, "replay table: obs_dim %u and act_dim %u must be > 0", spec->obs_dim,
                      spec->act_dim);
  if (memchr(spec->task, 0, sizeof spec->task) == NULL)
    return ember_fail(err, EMBER_EINVAL, "replay table: task name longer than %d bytes", REPLAY_TASK_MAX - 1);
  size_t c = t->capacity, od = spec->obs_dim, ad = spec->act_dim;
  if (od > (1u << 20) || ad > (1u << 20) || c > ((size_t)1 << 40) / (2 * od + ad + 8))
    return ember_fail(err, EMBER_EINVAL, "replay table: capacity %zu x dims (%zu, %zu) is too large", c, od, ad);
  t->obs = malloc(c * od * sizeof(float));
  t->next_obs = malloc(c * od * sizeof(float));
  t->action = malloc(c * ad * sizeof(float));
  t->reward = malloc(c * sizeof(float));
  t->behaviour_log_prob = malloc(c * sizeof(float));
  t->terminated = malloc(c);
  t->truncated = malloc(c);
  t->policy_version = malloc(c * sizeof(uint64_t));
  t->actor_id = malloc(c * sizeof(uint64_t));
  if (!t->obs || !t->next_obs || !t->action || !t->reward || !t->behaviour_log_prob || !t->terminated ||
      !t->truncated || !t->policy_version || !t->actor_id) {
    free(t->obs), free(t->next_obs), free(t->action), free(t->reward), free(t->behaviour_log_prob);
    free(t->terminated), free(t->truncated), free(t->policy_version), free(t->actor_id);
    t->obs = t->next_obs = t->action = t->reward = t->behaviour_log_prob = NULL;
    t->terminated = t->truncated = NULL;
    t->policy_version = t->actor_id = NULL;
    return ember_fail(err, EMBER_ENOMEM, "replay table: cannot allocate %zu transitions of obs %zu act %zu", c, od,
                      ad);
  }
  t->spec = *spec;
  t->has_spec = true;
  return 0;
}

bool replay_table_has_spec(const replay_table *t) { return t->has_spec; }
const replay_spec *replay_table_spec(const replay_table *t) { return &t->spec; }
size_t replay_table_capacity(const replay_table *t) { return t->capacity; }
size_t replay_table_size(const replay_table *t) { return t->size; }
uint64_t replay_table_inserts(const replay_table *t) { return t->inserts; }
uint64_t replay_table_evicted(const replay_table *t) { return t->evicted; }
replay_sampler replay_table_sampler(const replay_table *t) { return t->sampler; }
double replay_table_max_priority(const replay_table *t) { return t->max_priority; }

size_t replay_table_raw_bytes_per_item(const replay_table *t) {
  size_t od = t->spec.obs_dim, ad = t->spec.act_dim;
  return (2 * od + ad + 2) * sizeof(float) + 2 + 2 * sizeof(uint64_t);
}

size_t replay_table_memory_bytes(const replay_table *t) {
  size_t bytes = sizeof *t;
  if (t->has_spec) bytes += t->capacity * replay_table_raw_bytes_per_item(t);
  if (t->tree) bytes += sumtree_memory_bytes(t->tree);
  return bytes;
}

static float priority_leaf(const replay_table *t, double p) { return (float)pow(p, t->alpha); }

/* Copies rows [row, row + n) of b into slots [slot, slot + n). */
static void copy_rows(replay_table *t, const Ember__TransitionBatch *b, size_t row, size_t slot, size_t n) {
  size_t od = t->spec.obs_dim, ad = t->spec.act_dim;
  memcpy(t->obs + slot * od, b->obs + row * od, n * od * sizeof(float));
  memcpy(t->next_obs + slot * od, b->next_obs + row * od, n * od * sizeof(float));
  memcpy(t->action + slot * ad, b->action + row * ad, n * ad * sizeof(float));
  memcpy(t->reward + slot, b->reward + row, n * sizeof(float));
  if (b->n_behaviour_log_prob) /* empty: random actions, no acting policy */
    memcpy(t->behaviour_log_prob + slot, b->behaviour_log_prob + row, n * sizeof(float));
  else
    memset(t->behaviour_log_prob + slot, 0, n * sizeof(float));
  for (size_t i = 0; i < n; i++) {
    t->terminated[slot + i] = b->terminated[row + i] ? 1 : 0;
    t->truncated[slot + i] = b->truncated[row + i] ? 1 : 0;
    t->policy_version[slot + i] = b->policy_version;
    t->actor_id[slot + i] = b->actor_id;
  }
  if (t->tree) sumtree_set_range(t->tree, slot, n, priority_leaf(t, t->max_priority));
}

uint64_t replay_table_insert(replay_table *t, const Ember__TransitionBatch *b, uint64_t *evicted) {
  uint64_t first = t->inserts;
  size_t count = b->count, row = 0;
  if (count > t->capacity) row = count - t->capacity; /* these would be evicted at once */
  uint64_t key = first + row;
  while (row < count) {
    size_t slot = (size_t)(key % t->capacity);
    size_t n = count - row;
    if (n > t->capacity - slot) n = t->capacity - slot;
    copy_rows(t, b, row, slot, n);
    row += n;
    key += n;
  }
  t->inserts = first + count;
  size_t new_size = t->size + count;
  uint64_t out = 0;
  if (new_size > t->capacity) {
    out = new_size - t->capacity;
    new_size = t->capacity;
  }
  t->size = new_size;
  t->evicted += out;
  if (evicted) *evicted = out;
  return first;
}

bool replay_table_contains(const replay_table *t, uint64_t key) {
  return key < t->inserts && key >= t->inserts - t->size;
}

int replay_table_sample(replay_table *t, rng_t *rng, size_t n, uint64_t *keys, float *weights, ember_err *err) {
  if (t->size == 0) return ember_fail(err, EMBER_ESTATE, "replay table: sampling an empty table");
  uint64_t oldest = t->inserts - t->size;
  double total = t->tree ? sumtree_total(t->tree) : 0;
  if (!t->tree || !(total > 0)) {
    for (size_t i = 0; i < n; i++) {
      keys[i] = oldest + rng_below(rng, t->size);
      weights[i] = 1.0f;
    }
    return 0;
  }
  double minp = sumtree_min_positive(t->tree);
  uint64_t base_slot = oldest % t->capacity;
  for (size_t i = 0; i < n; i++) {
    size_t slot = sumtree_find(t->tree, rng_uniform(rng) * total);
    /* slot -> key: slots at or after the oldest one hold keys from oldest on, the rest wrapped */
    uint64_t offset = slot >= base_slot ? slot - base_slot : slot + t->capacity - base_slot;
    keys[i] = oldest + offset;
    double leaf = sumtree_get(t->tree, slot);
    weights[i] = (float)pow(minp / leaf, t->beta);
  }
  return 0;
}

void replay_table_gather(const replay_table *t, const uint64_t *keys, size_t n, const replay_rows *out) {
  size_t od = t->spec.obs_dim, ad = t->spec.act_dim;
  enum { AHEAD = 8 }; /* rows are random: start fetching a few rows ahead so the misses overlap */
  for (size_t i = 0; i < n; i++) {
    if (i + AHEAD < n) {
      size_t p = (size_t)(keys[i + AHEAD] % t->capacity);
      __builtin_prefetch(t->obs + p * od);
      __builtin_prefetch(t->next_obs + p * od);
      __builtin_prefetch(t->action + p * ad);
      __builtin_prefetch(t->reward + p);
      __builtin_prefetch(t->behaviour_log_prob + p);
      __builtin_prefetch(t->terminated + p);
      __builtin_prefetch(t->truncated + p);
      __builtin_prefetch(t->policy_version + p);
      __builtin_prefetch(t->actor_id + p);
    }
    size_t s = (size_t)(keys[i] % t->capacity);
    if (out->obs) memcpy(out->obs + i * od, t->obs + s * od, od * sizeof(float));
    if (out->next_obs) memcpy(out->next_obs + i * od, t->next_obs + s * od, od * sizeof(float));
    if (out->action) memcpy(out->action + i * ad, t->action + s * ad, ad * sizeof(float));
    if (out->reward) out->reward[i] = t->reward[s];
    if (out->behaviour_log_prob) out->behaviour_log_prob[i] = t->behaviour_log_prob[s];
    if (out->terminated) out->terminated[i] = t->terminated[s];
    if (out->truncated) out->truncated[i] = t->truncated[s];
    if (out->policy_version) out->policy_version[i] = t->policy_version[s];
    if (out->actor_id) out->actor_id[i] = t->actor_id[s];
  }
}

int replay_table_update_priority(replay_table *t, uint64_t key, float priority) {
  if (!replay_table_contains(t, key)) return EMBER_ENOENT;
  if (!t->tree) return 0;
  if (priority > t->max_priority) t->max_priority = priority;
  sumtree_set(t->tree, (size_t)(key % t->capacity), priority_leaf(t, priority));
  return 0;
}

float replay_table_priority_leaf(const replay_table *t, uint64_t key) {
  if (!t->tree) return 1.0f;
  return sumtree_get(t->tree, (size_t)(key % t->capacity));
}

void replay_table_restore_begin(replay_table *t, uint64_t inserts, size_t size, uint64_t evicted,
                                double max_priority) {
  t->inserts = inserts;
  t->size = size;
  t->evicted = evicted;
  t->max_priority = max_priority > 0 && isfinite(max_priority) ? max_priority : 1.0;
  if (t->tree) sumtree_set_range(t->tree, 0, t->capacity, 0.0f);
}

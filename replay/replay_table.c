#include "replay_table.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "replay_table_impl.h"

/* The record array. A big one is 2 MiB-aligned and asked to be backed by transparent huge pages:
 * sampling touches random records, and with 4 KiB pages nearly every touch is also a TLB miss.
 * The memory is written once here, so the table really holds its memory from the start (a too-large
 * capacity fails now, not hours later) and the first fill does not pay the page faults. */
static void *table_alloc(size_t bytes) {
  const size_t huge = (size_t)2 << 20;
  void *p = NULL;
  if (bytes >= huge) {
    if (posix_memalign(&p, huge, bytes) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes & ~(huge - 1), MADV_HUGEPAGE);
#endif
  } else {
    p = malloc(bytes ? bytes : 1);
  }
  if (p) memset(p, 0, bytes);
  return p;
}

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
  free(t->rows);
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
  size_t raw = 16 + (2 * od + ad + 2) * sizeof(float) + 2;
  t->stride = (raw + 7) & ~(size_t)7;
  t->off_obs = 16;
  t->off_next_obs = t->off_obs + od * sizeof(float);
  t->off_action = t->off_next_obs + od * sizeof(float);
  t->off_reward = t->off_action + ad * sizeof(float);
  t->off_logp = t->off_reward + sizeof(float);
  t->off_terminated = t->off_logp + sizeof(float);
  t->off_truncated = t->off_terminated + 1;
  if (!(t->rows = table_alloc(c * t->stride)))
    return ember_fail(err, EMBER_ENOMEM, "replay table: cannot allocate %zu transitions of obs %zu act %zu (%zu bytes)",
                      c, od, ad, c * t->stride);
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
  if (t->has_spec) bytes += t->capacity * t->stride;
  if (t->tree) bytes += sumtree_memory_bytes(t->tree);
  return bytes;
}

float replay_uniform_log_prob(uint32_t act_dim) { return (float)(-(double)act_dim * log(2.0)); }

static float priority_leaf(const replay_table *t, double p) { return replay_leaf_of(pow(p, t->alpha)); }

/* Copies rows [row, row + n) of b into slots [slot, slot + n). */
static void copy_rows(replay_table *t, const Ember__TransitionBatch *b, size_t row, size_t slot, size_t n) {
  size_t od = t->spec.obs_dim, ad = t->spec.act_dim;
  const float uniform_log_prob = replay_uniform_log_prob(t->spec.act_dim);
  for (size_t i = 0; i < n; i++) {
    uint8_t *r = t->rows + (slot + i) * t->stride;
    size_t k = row + i;
    memcpy(r, &b->policy_version, 8);
    memcpy(r + 8, &b->actor_id, 8);
    memcpy(r + t->off_obs, b->obs + k * od, od * sizeof(float));
    memcpy(r + t->off_next_obs, b->next_obs + k * od, od * sizeof(float));
    memcpy(r + t->off_action, b->action + k * ad, ad * sizeof(float));
    memcpy(r + t->off_reward, b->reward + k, sizeof(float));
    /* empty behaviour_log_prob: uniform random actions (docs/protocol.md), whose density it is */
    memcpy(r + t->off_logp, b->n_behaviour_log_prob ? b->behaviour_log_prob + k : &uniform_log_prob, sizeof(float));
    r[t->off_terminated] = b->terminated[k] ? 1 : 0;
    r[t->off_truncated] = b->truncated[k] ? 1 : 0;
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
  size_t od = t->spec.obs_dim, ad = t->spec.act_dim, stride = t->stride;
  enum { AHEAD = 6 }; /* rows are random: fetch a few records ahead so their misses overlap */
  for (size_t i = 0; i < n; i++) {
    if (i + AHEAD < n) {
      const uint8_t *p = t->rows + (size_t)(keys[i + AHEAD] % t->capacity) * stride;
      for (size_t off = 0; off < stride; off += 64) __builtin_prefetch(p + off);
      __builtin_prefetch(p + stride - 1);
    }
    const uint8_t *r = t->rows + (size_t)(keys[i] % t->capacity) * stride;
    if (out->policy_version) memcpy(out->policy_version + i, r, 8);
    if (out->actor_id) memcpy(out->actor_id + i, r + 8, 8);
    if (out->obs) memcpy(out->obs + i * od, r + t->off_obs, od * sizeof(float));
    if (out->next_obs) memcpy(out->next_obs + i * od, r + t->off_next_obs, od * sizeof(float));
    if (out->action) memcpy(out->action + i * ad, r + t->off_action, ad * sizeof(float));
    if (out->reward) memcpy(out->reward + i, r + t->off_reward, sizeof(float));
    if (out->behaviour_log_prob) memcpy(out->behaviour_log_prob + i, r + t->off_logp, sizeof(float));
    if (out->terminated) out->terminated[i] = r[t->off_terminated];
    if (out->truncated) out->truncated[i] = r[t->off_truncated];
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

/* sumtree.h: a sum-tree over per-item priorities, for prioritized sampling in O(log n).
 *
 * Leaves are float priorities (already raised to the sampler's exponent alpha by the caller), one per
 * ring slot. Internal nodes are 16-ary: each holds the exact double sum of its children and the
 * minimum of its strictly positive descendants (+inf when none), recomputed from the children on
 * every change, so sums never drift the way add-a-delta trees do. A 16-ary tree keeps the memory at
 * about 4.8 bytes per slot (4 for the leaf, ~0.8 for the internal levels) instead of the 16 of a
 * binary double tree, and a descent touches 16 contiguous children per level (two cache lines).
 *
 * Owns: its arrays, allocated once in sumtree_new (no allocation afterwards). Not thread-safe.
 * Errors: sumtree_new returns NULL with err set (EMBER_EINVAL for capacity 0, EMBER_ENOMEM).
 * Values passed to sumtree_set must be finite and >= 0 (the caller validates wire data first).
 */
#ifndef EMBER_REPLAY_SUMTREE_H
#define EMBER_REPLAY_SUMTREE_H

#include <stddef.h>

#include "err.h"

typedef struct sumtree sumtree;

sumtree *sumtree_new(size_t capacity, ember_err *err);
void sumtree_destroy(sumtree **self_p);

size_t sumtree_capacity(const sumtree *t);
/* Sets leaf i (i < capacity) and updates its ancestors. */
void sumtree_set(sumtree *t, size_t i, float value);
/* Sets leaves [first, first + n) to value (no wrap-around) with one pass over each ancestor level. */
void sumtree_set_range(sumtree *t, size_t first, size_t n, float value);
float sumtree_get(const sumtree *t, size_t i);
/* Sum of all leaves. */
double sumtree_total(const sumtree *t);
/* Smallest strictly positive leaf, or +inf when every leaf is 0. */
float sumtree_min_positive(const sumtree *t);
/* The leaf where the running prefix sum first exceeds u, for u in [0, total). Always returns a leaf
 * with a positive value when total > 0 (rounding at the edges falls back to the last positive leaf
 * on the path). Undefined (returns 0) when total == 0. */
size_t sumtree_find(const sumtree *t, double u);
/* Bulk loading (snapshot restore): write the leaves directly, then rebuild every internal node in
 * one O(capacity) pass. The leaves must be finite and >= 0. */
float *sumtree_leaves(sumtree *t);
void sumtree_rebuild(sumtree *t);
/* Bytes held (for the memory budget figures). */
size_t sumtree_memory_bytes(const sumtree *t);

#endif

/* replay_table_impl.h: the table's layout, shared only by replay_table.c and replay_snapshot.c
 * (which streams the columns to and from disk). Nothing else includes this. */
#ifndef EMBER_REPLAY_TABLE_IMPL_H
#define EMBER_REPLAY_TABLE_IMPL_H

#include <float.h>

#include "replay_table.h"
#include "sumtree.h"

struct replay_table {
  size_t capacity;
  replay_sampler sampler;
  double alpha, beta;
  replay_spec spec;
  bool has_spec;
  uint64_t inserts;  /* next key */
  size_t size;
  uint64_t evicted;
  double max_priority; /* largest raw priority seen; new items get it */
  /* One record per slot, `stride` bytes (8-byte aligned), laid out as
   *   uint64 policy_version | uint64 actor_id | float obs[obs_dim] | float next_obs[obs_dim] |
   *   float action[act_dim] | float reward | float behaviour_log_prob | uint8 terminated |
   *   uint8 truncated | zero padding to a multiple of 8.
   * Row-major rather than one array per field: a sample touches random rows, and one record is 3-4
   * adjacent cache lines where nine columns are ten or more scattered ones (2.5x faster gathers,
   * measured on HalfCheetah sizes); inserts copy each batch's columns into the records. */
  uint8_t *rows;
  size_t stride;
  size_t off_obs, off_next_obs, off_action, off_reward, off_logp, off_terminated, off_truncated;
  sumtree *tree;     /* prioritized only */
};

/* A leaf of the sum-tree from x = p^alpha: a float, held at FLT_MAX where x is larger (NaN stays NaN,
 * for the caller to refuse). With
 * alpha above 1 (the setting allows up to 10) a large but finite priority, from a PriorityUpdate or a
 * snapshot, overflowed the float to +inf; an infinite leaf made the tree's total infinite and the
 * importance weights NaN (inf / inf) for the learner. Found by tests/fuzz/fuzz_snapshot. */
static inline float replay_leaf_of(double x) { return x > (double)FLT_MAX ? FLT_MAX : (float)x; }

/* Restoring: empties the table and sets its counters so that keys [inserts - size, inserts) are the
 * items about to be written; the caller then fills the slots (slot = key % capacity) and, when
 * prioritized, the leaves. size must be <= capacity. */
void replay_table_restore_begin(replay_table *t, uint64_t inserts, size_t size, uint64_t evicted,
                                double max_priority);

#endif

/* replay_table_impl.h: the table's layout, shared only by replay_table.c and replay_snapshot.c
 * (which streams the columns to and from disk). Nothing else includes this. */
#ifndef EMBER_REPLAY_TABLE_IMPL_H
#define EMBER_REPLAY_TABLE_IMPL_H

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
  /* columns, capacity rows each */
  float *obs, *action, *reward, *next_obs, *behaviour_log_prob;
  uint8_t *terminated, *truncated;
  uint64_t *policy_version, *actor_id;
  sumtree *tree;     /* prioritized only */
};

/* Restoring: empties the table and sets its counters so that keys [inserts - size, inserts) are the
 * items about to be written; the caller then fills the slots (slot = key % capacity) and, when
 * prioritized, the leaves. size must be <= capacity. */
void replay_table_restore_begin(replay_table *t, uint64_t inserts, size_t size, uint64_t evicted,
                                double max_priority);

#endif

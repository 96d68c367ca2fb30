/* replay_snapshot.h: the replay table on disk: atomic, checksummed, zstd-compressed snapshots.
 *
 * File: <dir>/replay-<sequence, 20 digits>.snap, written as <dir>/.replay-<sequence>.snap.tmp, fsynced,
 * renamed, and the directory fsynced, so a crash leaves either the old set of files or the new one.
 * Layout: a 256-byte header (magic "EMBRRPLY", format version, spec, counters, sizes, and an FNV-1a
 * 64 checksum of the header itself), then one zstd frame with its content checksum (XXH64) on,
 * holding the items oldest first as the table's records (replay_table_impl.h: policy_version,
 * actor_id, obs, next_obs, action, reward, behaviour_log_prob, terminated, truncated, zero padding
 * to 8 bytes), then the priority leaves p^alpha (float32) when the table was prioritized.
 * Little-endian hosts only (the header records this and a big-endian reader refuses the file).
 *
 * Loading verifies first (header checksum, magic, version, sizes, file length, a full decompression
 * that checks the zstd checksum and the byte count) and only then touches the table, so a truncated
 * or corrupt file never leaves a half-loaded table. A file with another spec than a table whose spec
 * is already set is refused (EMBER_ESHAPE). A table smaller than the snapshot keeps the newest items;
 * a changed alpha re-exponentiates the stored priorities; a uniform snapshot loaded into a
 * prioritized table gives every item the max priority.
 *
 * Owns: nothing between calls; every function opens and closes its files. Thread-safety: reads the
 * table, so call it from the thread that owns the table. Errors: EMBER_EIO (naming the path and
 * errno text), EMBER_ECORRUPT (naming what failed), EMBER_ESHAPE, EMBER_ESTATE (table not empty).
 */
#ifndef EMBER_REPLAY_SNAPSHOT_H
#define EMBER_REPLAY_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "replay_table.h"

#define REPLAY_SNAPSHOT_FORMAT_VERSION 1u
#define REPLAY_SNAPSHOT_HEADER_BYTES 256u

/* Counters the server keeps beside the table (the table keeps inserts, size and evictions). */
typedef struct {
  uint64_t sequence;         /* snapshot number; increases by one per snapshot written */
  uint64_t created_unix_ms;
  uint64_t samples;          /* transitions sampled (the rate limiter's count) */
  uint64_t sample_batches;   /* SampleBatches served */
  uint64_t insert_batches;   /* TransitionBatches accepted */
} replay_snapshot_meta;

/* What a file holds, read from its header (filled by replay_snapshot_verify). */
typedef struct {
  replay_snapshot_meta meta;
  replay_spec spec;
  uint64_t capacity, size, inserts, evicted;
  double alpha, max_priority;
  int has_priorities;
  uint64_t payload_bytes, compressed_bytes;
} replay_snapshot_info;

/* Writes the table as snapshot meta->sequence. path_out (may be NULL) receives the final path. */
int replay_snapshot_write(const char *dir, const replay_table *t, const replay_snapshot_meta *meta, int zstd_level,
                          char *path_out, size_t path_cap, ember_err *err);

/* Checks a file completely without loading it. */
int replay_snapshot_verify(const char *path, replay_snapshot_info *info, ember_err *err);

/* Verifies, then loads into t, which must be empty (no inserts yet). */
int replay_snapshot_load(const char *path, replay_table *t, replay_snapshot_info *info, ember_err *err);

/* Loads the newest file in dir that verifies, logging (component "replay") one line per file skipped
 * and why. *restored = 1 and info filled when one was loaded, 0 when dir holds none (or none valid,
 * which is not an error: the server starts empty and says so). *next_sequence receives one more than
 * the largest sequence found in dir (valid or not), so new files never reuse a name. */
int replay_snapshot_restore_newest(const char *dir, replay_table *t, replay_snapshot_info *info, int *restored,
                                   uint64_t *next_sequence, ember_err *err);

/* Deletes all but the `keep` newest snapshot files in dir (and stale .tmp files). */
int replay_snapshot_prune(const char *dir, int keep, ember_err *err);

#endif

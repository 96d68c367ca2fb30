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
 * A file that fails verification is never deleted: it is moved aside as <name>.corrupt (logged
 * snapshot_quarantined), where it no longer counts as a snapshot, and left for an operator to look
 * at. Its sequence still counts, so no later file reuses its name. A file of another format version
 * is left alone (EMBER_ESCHEMA when read): neither loaded, counted, moved nor deleted.
 *
 * Owns: nothing between calls; every function opens and closes its files. Thread-safety: reads the
 * table, so call it from the thread that owns the table. One writer per directory (a second server
 * on the same directory would see the other's temporaries as stale). Errors: EMBER_EIO (naming the
 * path and errno text), EMBER_ECORRUPT (naming what failed), EMBER_ESCHEMA (another format version),
 * EMBER_ESHAPE, EMBER_ESTATE (table not empty).
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
 * and why, and moving a corrupt one aside (<name>.corrupt). *restored = 1 and info filled when one
 * was loaded, 0 when dir holds none (or none valid, which is not an error: the server starts empty
 * and says so). *next_sequence receives replay_snapshot_next_sequence's answer. */
int replay_snapshot_restore_newest(const char *dir, replay_table *t, replay_snapshot_info *info, int *restored,
                                   uint64_t *next_sequence, ember_err *err);

/* One more than the largest sequence in dir's file names (snapshots, valid or not, and those moved
 * aside as corrupt), 1 for an empty or missing dir: a new file never reuses a name, and never sorts
 * below older files (which pruning would then delete first). */
int replay_snapshot_next_sequence(const char *dir, uint64_t *next, ember_err *err);

/* Keeps the `keep` newest snapshots whose header and length check out and deletes the older valid
 * ones; a file that fails the check is moved aside (never counted in place of a valid one), one of
 * another format version is left alone. Then removes stale .tmp files. The payload is not read here
 * (restore verifies it fully, and moves a corrupt file aside). */
int replay_snapshot_prune(const char *dir, int keep, ember_err *err);

/* Deletes the temporaries (.replay-<sequence>.snap.tmp) a killed writer left in dir, logging each
 * (snapshot_tmp_removed, with its size). Call when no writer can be running: at start. *removed (may
 * be NULL) receives how many. */
int replay_snapshot_remove_stale_tmp(const char *dir, int *removed, ember_err *err);

#endif

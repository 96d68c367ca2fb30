/* fuzz_snapshot: a replay snapshot file, as the replay server meets one at start (restore) and when
 * pruning (replay/replay_snapshot.c).
 *
 * The path: replay_snapshot_verify (header checksum, magic, version, sizes, file length, a full
 * decompression checked by zstd's checksum) and replay_snapshot_load into an empty prioritized table
 * smaller than most snapshots (so the loader's skip and wrap paths run), then sampling and gathering
 * from what was loaded. Each input is tried as it is and, when its header checksum does not match,
 * once more with the checksum recomputed (fuzz.h), so that mutations reach the checks behind it.
 *
 * Properties: verify and load agree; a refusal says why; an accepted header is consistent (size <=
 * capacity and <= inserts, the payload exactly size records, computed without overflow); the loaded
 * table holds min(size, capacity) items, keyed up to inserts; sampling it gives keys it
 * holds, with finite weights > 0. */
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "replay_snapshot.h"
#include "replay_table.h"
#include "rng.h"

#define TABLE_CAPACITY 4
#define HEADER_CHECKSUM_AT 248

static unsigned __int128 row_bytes(const replay_snapshot_info *in) {
  size_t record = ((2 * (size_t)in->spec.obs_dim + in->spec.act_dim + 2) * 4 + 2 + 16 + 7) & ~(size_t)7;
  return (unsigned __int128)(record + (in->has_priorities ? 4 : 0));
}

static void try_file(const char *path) {
  replay_snapshot_info info, loaded;
  ember_err verr = {0}, lerr = {0};
  int vrc = replay_snapshot_verify(path, &info, &verr);
  replay_table_opts opts = {.capacity = TABLE_CAPACITY, .sampler = REPLAY_SAMPLER_PRIORITIZED, .alpha = 0.6,
                            .beta = 0.4};
  replay_table *t = replay_table_new(&opts, &lerr);
  FUZZ_ASSERT(t != NULL, "%s", lerr.msg);
  int lrc = replay_snapshot_load(path, t, &loaded, &lerr);
  FUZZ_ASSERT(vrc == lrc || (vrc == 0 && lrc == EMBER_EINVAL), "verify %d ('%s'), load %d ('%s')", vrc, verr.msg, lrc,
              lerr.msg); /* EINVAL: a spec the table cannot allocate for */
  if (vrc != 0) FUZZ_ASSERT(verr.msg[0], "verify refused (%d) without a message", vrc);
  if (vrc == 0) {
    FUZZ_ASSERT(info.size <= info.capacity && info.size <= info.inserts, "size %llu capacity %llu inserts %llu",
                (unsigned long long)info.size, (unsigned long long)info.capacity, (unsigned long long)info.inserts);
    FUZZ_ASSERT((unsigned __int128)info.size * row_bytes(&info) == info.payload_bytes,
                "%llu items of obs %u act %u do not make %llu payload bytes", (unsigned long long)info.size,
                info.spec.obs_dim, info.spec.act_dim, (unsigned long long)info.payload_bytes);
  }
  if (lrc == 0) {
    size_t kept = info.size < TABLE_CAPACITY ? (size_t)info.size : TABLE_CAPACITY;
    FUZZ_ASSERT(replay_table_size(t) == kept && replay_table_inserts(t) == info.inserts, "size %zu inserts %llu",
                replay_table_size(t), (unsigned long long)replay_table_inserts(t));
    if (kept > 0) {
      uint64_t keys[TABLE_CAPACITY];
      float weights[TABLE_CAPACITY];
      rng_t rng;
      rng_seed(&rng, 3, RNG_STREAM_TEST);
      FUZZ_ASSERT(replay_table_sample(t, &rng, kept, keys, weights, &lerr) == 0, "%s", lerr.msg);
      for (size_t i = 0; i < kept; i++)
        FUZZ_ASSERT(replay_table_contains(t, keys[i]) && isfinite(weights[i]) && weights[i] > 0,
                    "sampled key %llu weight %g", (unsigned long long)keys[i], (double)weights[i]);
      size_t od = info.spec.obs_dim, ad = info.spec.act_dim;
      float *obs = malloc(kept * od * sizeof *obs), *action = malloc(kept * ad * sizeof *action);
      FUZZ_ASSERT(obs && action, "out of memory");
      replay_rows rows = {.obs = obs, .action = action};
      replay_table_gather(t, keys, kept, &rows);
      free(obs), free(action);
    }
  }
  replay_table_destroy(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  try_file(fuzz_input_file(0, data, size));
  if (size >= REPLAY_SNAPSHOT_HEADER_BYTES) {
    uint64_t stored, want = fuzz_fnv1a64(data, HEADER_CHECKSUM_AT);
    memcpy(&stored, data + HEADER_CHECKSUM_AT, sizeof stored);
    if (stored != want) {
      uint8_t *fixed = malloc(size);
      FUZZ_ASSERT(fixed != NULL, "out of memory");
      memcpy(fixed, data, size);
      memcpy(fixed + HEADER_CHECKSUM_AT, &want, sizeof want);
      try_file(fuzz_input_file(1, fixed, size));
      free(fixed);
    }
  }
  return 0;
}

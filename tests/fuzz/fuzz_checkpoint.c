/* fuzz_checkpoint: a learner checkpoint file, as `ember eval` reads the policy out of one
 * (learner/learner_checkpoint.c learner_checkpoint_params; common/checkpoint.c).
 *
 * The path: checkpoint_load_file (header checksum, magic, version, file length, zstd decompression
 * checked by its checksum), the learner's records (identity, counters, publications, the algorithm's
 * state skipped as a blob, the Params), ember__params__unpack, then the Params imported into a policy
 * for the checkpoint's task (fuzz_policy.h). Each input is tried three ways: as the file it is; with
 * its header checksum recomputed (fuzz.h) when it does not match; and as the uncompressed payload,
 * wrapped here in a valid header and zstd frame, so that mutations reach the record reader behind
 * the compression (the seed corpus holds both files and payloads).
 *
 * Properties: checkpoint_verify accepts every file learner_checkpoint_params reads; a refusal says
 * why; the Params read import as fuzz_policy.h says; the info names the file read. */
#include <stddef.h>
#include <string.h>
#include <zstd.h>

#include "checkpoint.h"
#include "fuzz.h"
#include "fuzz_policy.h"
#include "learner.h"

/* common/checkpoint.c's header (checkpoint.h describes it): 64 bytes, the checksum over the first 56. */
typedef struct {
  char magic[8];
  uint32_t version, header_bytes;
  uint64_t step, payload_bytes, compressed_bytes, reserved[2];
  uint64_t header_checksum;
} ckpt_header;
#define HEADER_CHECKSUM_AT offsetof(ckpt_header, header_checksum)

static void try_file(const char *path) {
  Ember__Params *params = NULL;
  learner_ckpt_info info;
  ember_err err = {0};
  int rc = learner_checkpoint_params(path, &params, &info, &err);
  if (rc != 0) {
    FUZZ_ASSERT(params == NULL && err.msg[0], "refused (%d) with Params %s, message '%s'", rc,
                params ? "set" : "unset", err.msg);
    return;
  }
  FUZZ_ASSERT(params != NULL && strcmp(info.path, path) == 0, "accepted without Params, or info names '%s'", info.path);
  ember_err verr = {0};
  FUZZ_ASSERT(checkpoint_verify(path, NULL, &verr) == 0, "read a checkpoint that does not verify: %s", verr.msg);
  fuzz_import_params(params, info.task);
  ember__params__free_unpacked(params, NULL);
}

/* The input as a checkpoint's payload: compressed (with its checksum) behind a valid header. */
static void try_payload(const uint8_t *data, size_t size) {
  size_t bound = ZSTD_compressBound(size);
  uint8_t *file = malloc(sizeof(ckpt_header) + bound);
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  FUZZ_ASSERT(file && cctx, "out of memory");
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  size_t clen = ZSTD_compress2(cctx, file + sizeof(ckpt_header), bound, data, size);
  ZSTD_freeCCtx(cctx);
  FUZZ_ASSERT(!ZSTD_isError(clen), "zstd: %s", ZSTD_getErrorName(clen));
  ckpt_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, "EMBRCKPT", 8);
  h.version = 1, h.header_bytes = sizeof h, h.step = 1, h.payload_bytes = size, h.compressed_bytes = clen;
  h.header_checksum = fuzz_fnv1a64(&h, HEADER_CHECKSUM_AT);
  memcpy(file, &h, sizeof h);
  try_file(fuzz_input_file(1, file, sizeof h + clen));
  free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_quiet();
  try_file(fuzz_input_file(0, data, size));
  if (size >= sizeof(ckpt_header)) {
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
  try_payload(data, size);
  return 0;
}

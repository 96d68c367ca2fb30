/* checkpoint.h: durable files of a process's whole state (the learner's networks, optimiser
 * moments, RNG streams, counters), for exact resume.
 *
 * A checkpoint is <dir>/<prefix>-<step, 20 digits>.ckpt: a 64-byte header (magic "EMBRCKPT", format
 * version, step, payload and compressed sizes, an XXH64-style checksum of the uncompressed payload
 * computed by zstd's frame checksum, and an FNV-1a checksum of the header) followed by one zstd
 * frame. It is written to a temporary name, fsynced, renamed, and the directory fsynced, so a crash
 * leaves the previous checkpoint intact. Loading verifies everything before handing the payload to
 * the reader, so a truncated or corrupt file is skipped (with a log line naming why) and the next
 * older one is tried.
 *
 * The payload is whatever the writer callback writes to the FILE it is given (an in-memory stream);
 * the reader callback reads it back from a FILE over the verified bytes. The module owns nothing
 * between calls. Not thread-safe for one directory.
 */
#ifndef EMBER_CHECKPOINT_H
#define EMBER_CHECKPOINT_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

typedef int (*checkpoint_write_fn)(void *ctx, FILE *out, ember_err *err);
typedef int (*checkpoint_read_fn)(void *ctx, FILE *in, ember_err *err);

/* Writes checkpoint `step` into dir (created if missing); keeps the `keep` newest (0 = all). */
int checkpoint_save(const char *dir, const char *prefix, uint64_t step, int keep, checkpoint_write_fn write,
                    void *ctx, ember_err *err);

/* Finds the newest checkpoint in dir that verifies and passes it to read. *found = 0 (and 0
 * returned) when dir holds none, or none that verifies. *step_out receives its step. A reader
 * error is returned as is (the file verified, so its content is what the reader refused). */
int checkpoint_load_newest(const char *dir, const char *prefix, checkpoint_read_fn read, void *ctx, int *found,
                           uint64_t *step_out, ember_err *err);

/* Verifies one file completely and passes it to read (no fallback to another file: a file that does
 * not verify is the error). *step_out (may be NULL) receives its step. */
int checkpoint_load_file(const char *path, checkpoint_read_fn read, void *ctx, uint64_t *step_out, ember_err *err);

/* Verifies one file completely (header, sizes, decompression, checksum). */
int checkpoint_verify(const char *path, uint64_t *step_out, ember_err *err);

/* Small helpers for writers and readers: fixed-size binary records with a name, so a reader can
 * say exactly which record was missing or had the wrong size. */
int checkpoint_put(FILE *out, const char *name, const void *data, uint64_t bytes, ember_err *err);
int checkpoint_get(FILE *in, const char *name, void *data, uint64_t bytes, ember_err *err);

/* Writes path atomically: the bytes go to a temporary file in the same directory, which is fsynced
 * and renamed over path, then the directory is fsynced. */
int atomic_write_file(const char *path, const void *data, size_t len, ember_err *err);

#endif

/* tb.h: TensorBoard event files (the format its users already watch), written with protobuf-c.
 *
 * A writer appends TFRecord-framed Event messages (length, masked CRC-32C of the length, the
 * bytes, masked CRC-32C of the bytes) to <dir>/events.out.tfevents.<unix seconds>.<host>.<pid>.
 * The first record is the file-version event TensorBoard expects. tb_scalar buffers through stdio;
 * tb_flush pushes the records to the kernel (the learner flushes once per log interval).
 *
 * Ownership: tb_writer_open returns a writer the caller owns; tb_writer_close(&w) flushes, closes
 * and sets w to NULL. Not thread-safe: one thread per writer.
 */
#ifndef EMBER_TB_H
#define EMBER_TB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct tb_writer tb_writer;

tb_writer *tb_writer_open(const char *dir, ember_err *err);
int tb_scalar(tb_writer *w, const char *tag, int64_t step, double value, ember_err *err);
int tb_flush(tb_writer *w, ember_err *err);
const char *tb_writer_path(const tb_writer *w);
void tb_writer_close(tb_writer **w_p);

/* CRC-32C (Castagnoli), and TFRecord's masking of it: exposed for tests and readers. */
uint32_t tb_crc32c(const void *data, size_t n);
uint32_t tb_masked_crc(const void *data, size_t n);

#endif

/* err.h: ember's error convention.
 *
 * Functions that can fail return an int: 0 on success, a negative EMBER_E* code on failure, and,
 * when the caller passes a non-NULL ember_err, fill it with the code and a message naming what was
 * wrong (the key, the file, the field, the sizes). The caller owns the ember_err; nothing in it is
 * heap-allocated, so there is nothing to free. Asserts are for programmer errors only: data from a
 * file, the command line or the wire never reaches an assert.
 */
#ifndef EMBER_ERR_H
#define EMBER_ERR_H

#include <stddef.h>

enum {
  EMBER_OK = 0,
  EMBER_EINVAL = -1,     /* a value is malformed or out of range */
  EMBER_ENOENT = -2,     /* a file, key, task or name does not exist */
  EMBER_EIO = -3,        /* the operating system refused (open, write, fsync, socket) */
  EMBER_ENOMEM = -4,
  EMBER_EDECODE = -5,    /* bytes are not a valid message of the expected kind */
  EMBER_ESCHEMA = -6,    /* a message from another (newer, or missing) schema version */
  EMBER_ETOOBIG = -7,    /* a message or request over its size limit */
  EMBER_EAGAIN = -8,     /* nothing available now; try again */
  EMBER_ESHAPE = -9,     /* dimensions that do not match */
  EMBER_ENONFINITE = -10,/* NaN or Inf where finite numbers are required */
  EMBER_ECORRUPT = -11,  /* a file failed its checksum or is truncated */
  EMBER_ESTATE = -12,    /* the call is not allowed in the current state */
  EMBER_ETIMEOUT = -13,
  EMBER_EAUTH = -14,     /* a peer failed authentication */
};

typedef struct {
  int code;
  char msg[512];
} ember_err;

/* Sets err (when non-NULL) and returns code, so callers can write `return ember_fail(err, ...)`. */
int ember_fail(ember_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes err->msg with context ("loading config.yaml: " + old message); returns err->code. */
int ember_err_prefix(ember_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A short stable name for a code ("EINVAL"), for logs and metric labels. */
const char *ember_strerror(int code);

#endif

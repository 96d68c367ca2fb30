#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "log.h"

#define CKPT_MAGIC "EMBRCKPT"
#define CKPT_VERSION 1u
#define CKPT_HEADER_BYTES 64u
#define MAX_ZSTD_EXPANSION 32768u /* output bytes per input byte a zstd frame can reach: 128 KiB from 4 */

typedef struct {
  char magic[8];
  uint32_t version, header_bytes;
  uint64_t step, payload_bytes, compressed_bytes, reserved[2];
  uint64_t header_checksum; /* FNV-1a 64 over the 56 bytes before it */
} ckpt_header;
_Static_assert(sizeof(ckpt_header) == CKPT_HEADER_BYTES, "checkpoint header must be 64 bytes");

static uint64_t fnv1a(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

static int fsync_dir_of(const char *path, ember_err *err) {
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", path);
  const char *dir = dirname(copy);
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return ember_fail(err, EMBER_EIO, "open directory %s: %s", dir, strerror(errno));
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  return rc ? ember_fail(err, EMBER_EIO, "fsync directory %s: %s", dir, strerror(e)) : 0;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w, len -= (size_t)w;
  }
  return 0;
}

static int atomic_write_parts(const char *path, const void *a, size_t alen, const void *b, size_t blen, ember_err *err) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return ember_fail(err, EMBER_EIO, "create %s: %s", tmp, strerror(errno));
  int rc = 0;
  if (write_all(fd, a, alen) || (blen && write_all(fd, b, blen)))
    rc = ember_fail(err, EMBER_EIO, "write %s: %s", tmp, strerror(errno));
  if (!rc && fsync(fd) != 0) rc = ember_fail(err, EMBER_EIO, "fsync %s: %s", tmp, strerror(errno));
  close(fd);
  if (!rc && rename(tmp, path) != 0) rc = ember_fail(err, EMBER_EIO, "rename %s to %s: %s", tmp, path, strerror(errno));
  if (rc) {
    unlink(tmp);
    return rc;
  }
  return fsync_dir_of(path, err);
}

int atomic_write_file(const char *path, const void *data, size_t len, ember_err *err) {
  return atomic_write_parts(path, data, len, NULL, 0, err);
}

int checkpoint_put(FILE *out, const char *name, const void *data, uint64_t bytes, ember_err *err) {
  uint16_t nl = (uint16_t)strlen(name);
  if (fwrite(&nl, sizeof nl, 1, out) != 1 || fwrite(name, 1, nl, out) != nl || fwrite(&bytes, sizeof bytes, 1, out) != 1 ||
      (bytes && fwrite(data, 1, bytes, out) != bytes))
    return ember_fail(err, EMBER_EIO, "writing checkpoint record '%s' failed", name);
  return 0;
}

int checkpoint_get(FILE *in, const char *name, void *data, uint64_t bytes, ember_err *err) {
  uint16_t nl;
  char found[256];
  uint64_t have;
  if (fread(&nl, sizeof nl, 1, in) != 1 || nl >= sizeof found || fread(found, 1, nl, in) != nl)
    return ember_fail(err, EMBER_ECORRUPT, "checkpoint ends before record '%s'", name);
  found[nl] = 0;
  if (strcmp(found, name) != 0)
    return ember_fail(err, EMBER_ECORRUPT, "checkpoint has record '%s' where '%s' was expected", found, name);
  if (fread(&have, sizeof have, 1, in) != 1)
    return ember_fail(err, EMBER_ECORRUPT, "checkpoint record '%s' is truncated", name);
  if (have != bytes)
    return ember_fail(err, EMBER_ESHAPE, "checkpoint record '%s' holds %" PRIu64 " bytes, expected %" PRIu64
                      " (saved with another configuration?)", name, have, bytes);
  if (bytes && fread(data, 1, bytes, in) != bytes)
    return ember_fail(err, EMBER_ECORRUPT, "checkpoint record '%s' is truncated", name);
  return 0;
}

static void make_path(char *out, size_t cap, const char *dir, const char *prefix, uint64_t step) {
  snprintf(out, cap, "%s/%s-%020" PRIu64 ".ckpt", dir, prefix, step);
}

/* Steps of every <prefix>-<digits>.ckpt in dir, newest first. Caller frees *steps. */
static int list_steps(const char *dir, const char *prefix, uint64_t **steps, size_t *n, ember_err *err) {
  *steps = NULL, *n = 0;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return 0;
    return ember_fail(err, EMBER_EIO, "open checkpoint directory %s: %s", dir, strerror(errno));
  }
  size_t cap = 0, pl = strlen(prefix);
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *s = e->d_name;
    size_t len = strlen(s);
    if (len != pl + 1 + 20 + 5 || strncmp(s, prefix, pl) != 0 || s[pl] != '-' || strcmp(s + len - 5, ".ckpt") != 0)
      continue;
    char digits[21];
    memcpy(digits, s + pl + 1, 20);
    digits[20] = 0;
    char *end;
    uint64_t step = strtoull(digits, &end, 10);
    if (*end) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 8;
      uint64_t *g = realloc(*steps, cap * sizeof *g);
      if (!g) {
        closedir(d);
        return ember_fail(err, EMBER_ENOMEM, "out of memory listing checkpoints");
      }
      *steps = g;
    }
    (*steps)[(*n)++] = step;
  }
  closedir(d);
  for (size_t i = 1; i < *n; i++) /* insertion sort, newest first */
    for (size_t j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
      uint64_t t = (*steps)[j];
      (*steps)[j] = (*steps)[j - 1], (*steps)[j - 1] = t;
    }
  return 0;
}

int checkpoint_save(const char *dir, const char *prefix, uint64_t step, int keep, checkpoint_write_fn write, void *ctx,
                    ember_err *err) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    return ember_fail(err, EMBER_EIO, "create checkpoint directory %s: %s", dir, strerror(errno));
  char *payload = NULL;
  size_t payload_len = 0;
  FILE *mem = open_memstream(&payload, &payload_len);
  if (!mem) return ember_fail(err, EMBER_ENOMEM, "out of memory for a checkpoint");
  int rc = write(ctx, mem, err);
  if (fclose(mem) != 0 && !rc) rc = ember_fail(err, EMBER_ENOMEM, "out of memory for a checkpoint");
  if (rc) {
    free(payload);
    return rc;
  }
  size_t bound = ZSTD_compressBound(payload_len);
  void *packed = malloc(bound ? bound : 1);
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  if (!packed || !cctx) {
    free(payload), free(packed), ZSTD_freeCCtx(cctx);
    return ember_fail(err, EMBER_ENOMEM, "out of memory compressing a checkpoint");
  }
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  size_t clen = ZSTD_compress2(cctx, packed, bound, payload, payload_len);
  ZSTD_freeCCtx(cctx);
  free(payload);
  if (ZSTD_isError(clen)) {
    free(packed);
    return ember_fail(err, EMBER_EIO, "zstd: %s", ZSTD_getErrorName(clen));
  }
  ckpt_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, CKPT_MAGIC, 8);
  h.version = CKPT_VERSION, h.header_bytes = CKPT_HEADER_BYTES;
  h.step = step, h.payload_bytes = payload_len, h.compressed_bytes = clen;
  h.header_checksum = fnv1a(&h, offsetof(ckpt_header, header_checksum));
  char path[4096];
  make_path(path, sizeof path, dir, prefix, step);
  rc = atomic_write_parts(path, &h, sizeof h, packed, clen, err);
  free(packed);
  if (rc || keep <= 0) return rc;
  uint64_t *steps;
  size_t n;
  if (list_steps(dir, prefix, &steps, &n, NULL) == 0) {
    for (size_t i = (size_t)keep; i < n; i++) {
      make_path(path, sizeof path, dir, prefix, steps[i]);
      unlink(path);
    }
    free(steps);
  }
  return 0;
}

/* Reads and verifies a file; on success *payload (malloc'd) holds the uncompressed bytes. */
static int read_verified(const char *path, uint64_t *step, char **payload, size_t *len, ember_err *err) {
  *payload = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return ember_fail(err, EMBER_ENOENT, "open %s: %s", path, strerror(errno));
  ckpt_header h;
  if (fread(&h, sizeof h, 1, f) != 1) {
    fclose(f);
    return ember_fail(err, EMBER_ECORRUPT, "%s: shorter than a checkpoint header", path);
  }
  if (memcmp(h.magic, CKPT_MAGIC, 8) != 0 || h.header_checksum != fnv1a(&h, offsetof(ckpt_header, header_checksum))) {
    fclose(f);
    return ember_fail(err, EMBER_ECORRUPT, "%s: not a checkpoint, or its header is corrupt", path);
  }
  if (h.version != CKPT_VERSION) {
    fclose(f);
    return ember_fail(err, EMBER_ECORRUPT, "%s: checkpoint format %u, this build reads %u", path, h.version, CKPT_VERSION);
  }
  struct stat st;
  fstat(fileno(f), &st);
  if ((uint64_t)st.st_size != sizeof h + h.compressed_bytes) {
    fclose(f);
    return ember_fail(err, EMBER_ECORRUPT, "%s: %lld bytes, the header promises %" PRIu64 " (truncated?)", path,
                      (long long)st.st_size, (uint64_t)sizeof h + h.compressed_bytes);
  }
  void *packed = malloc(h.compressed_bytes ? h.compressed_bytes : 1);
  if (!packed) {
    fclose(f);
    return ember_fail(err, EMBER_ENOMEM, "%s: out of memory", path);
  }
  size_t got = fread(packed, 1, h.compressed_bytes, f);
  fclose(f);
  if (got != h.compressed_bytes) {
    free(packed);
    return ember_fail(err, EMBER_ECORRUPT, "%s: short read", path);
  }
  /* The payload's size is the header's word: before it is trusted with an allocation it must agree
   * with the zstd frame's own record of its size, and be no more than a frame of this many bytes
   * can expand to (a zstd block holds at most 128 KiB and takes at least 4 bytes), so a corrupt or
   * crafted header cannot make the reader ask for petabytes (found by tests/fuzz/fuzz_checkpoint). */
  unsigned long long frame_bytes = ZSTD_getFrameContentSize(packed, h.compressed_bytes);
  if (frame_bytes != h.payload_bytes || h.payload_bytes / MAX_ZSTD_EXPANSION > h.compressed_bytes) {
    free(packed);
    return ember_fail(err, EMBER_ECORRUPT, "%s: the header promises %" PRIu64 " payload bytes, its %" PRIu64
                      "-byte zstd frame %s", path, h.payload_bytes, h.compressed_bytes,
                      frame_bytes == h.payload_bytes ? "cannot hold that many" : "says otherwise");
  }
  char *out = malloc(h.payload_bytes ? h.payload_bytes : 1);
  if (!out) {
    free(packed);
    return ember_fail(err, EMBER_ENOMEM, "%s: out of memory for a %" PRIu64 "-byte payload", path, h.payload_bytes);
  }
  size_t d = ZSTD_decompress(out, h.payload_bytes, packed, h.compressed_bytes);
  free(packed);
  if (ZSTD_isError(d) || d != h.payload_bytes) {
    free(out);
    return ember_fail(err, EMBER_ECORRUPT, "%s: payload fails its checksum or size (%s)", path,
                      ZSTD_isError(d) ? ZSTD_getErrorName(d) : "wrong size");
  }
  *payload = out, *len = d, *step = h.step;
  return 0;
}

int checkpoint_verify(const char *path, uint64_t *step_out, ember_err *err) {
  char *payload;
  size_t len;
  uint64_t step;
  int rc = read_verified(path, &step, &payload, &len, err);
  free(payload);
  if (!rc && step_out) *step_out = step;
  return rc;
}

/* Hands a verified payload (freed here) to the reader, as a FILE over its bytes. */
static int feed_reader(const char *path, char *payload, size_t len, checkpoint_read_fn read, void *ctx,
                       ember_err *err) {
  FILE *in = fmemopen(payload, len ? len : 1, "rb");
  if (!in) {
    free(payload);
    return ember_fail(err, EMBER_ENOMEM, "out of memory reading %s", path);
  }
  int rc = read(ctx, in, err);
  fclose(in);
  free(payload);
  return rc ? ember_err_prefix(err, "%s: ", path) : 0;
}

int checkpoint_load_file(const char *path, checkpoint_read_fn read, void *ctx, uint64_t *step_out, ember_err *err) {
  char *payload;
  size_t len;
  uint64_t step;
  int rc = read_verified(path, &step, &payload, &len, err);
  if (!rc) rc = feed_reader(path, payload, len, read, ctx, err);
  if (!rc && step_out) *step_out = step;
  return rc;
}

int checkpoint_load_newest(const char *dir, const char *prefix, checkpoint_read_fn read, void *ctx, int *found,
                           uint64_t *step_out, ember_err *err) {
  *found = 0;
  uint64_t *steps;
  size_t n;
  int rc = list_steps(dir, prefix, &steps, &n, err);
  if (rc) return rc;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    make_path(path, sizeof path, dir, prefix, steps[i]);
    char *payload;
    size_t len;
    uint64_t step;
    ember_err why = {0};
    if (read_verified(path, &step, &payload, &len, &why) != 0) {
      log_event(LOG_WARN, "checkpoint", "skipping checkpoint", LF_STR("path", path), LF_STR("reason", why.msg));
      continue;
    }
    if ((rc = feed_reader(path, payload, len, read, ctx, err)) != 0) {
      free(steps);
      return rc;
    }
    *found = 1;
    if (step_out) *step_out = step;
    break;
  }
  free(steps);
  return 0;
}

#include "replay_snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "log.h"
#include "replay_table_impl.h"

static const char MAGIC[8] = {'E', 'M', 'B', 'R', 'R', 'P', 'L', 'Y'};
#define PREFIX "replay-"
#define SUFFIX ".snap"
#define MAX_SEGMENTS 32
#define MAX_FILES 4096

/* ---- header ---------------------------------------------------------------------------------- */

enum {
  H_MAGIC = 0, H_VERSION = 8, H_HEADER_BYTES = 12, H_TASK = 16, H_OBS_DIM = 80, H_ACT_DIM = 84,
  H_CAPACITY = 88, H_SIZE = 96, H_INSERTS = 104, H_EVICTED = 112, H_SAMPLES = 120, H_SAMPLE_BATCHES = 128,
  H_INSERT_BATCHES = 136, H_CREATED = 144, H_SEQUENCE = 152, H_HAS_PRIO = 160, H_ENDIAN = 164, H_ALPHA = 168,
  H_MAX_PRIO = 176, H_PAYLOAD = 184, H_COMPRESSED = 192, H_CHECKSUM = 248
};
#define ENDIAN_MARK 0x01020304u

static uint64_t fnv1a64(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

static void put32(unsigned char *h, int off, uint32_t v) { memcpy(h + off, &v, 4); }
static void put64(unsigned char *h, int off, uint64_t v) { memcpy(h + off, &v, 8); }
static void putf64(unsigned char *h, int off, double v) { memcpy(h + off, &v, 8); }
static uint32_t get32(const unsigned char *h, int off) { uint32_t v; memcpy(&v, h + off, 4); return v; }
static uint64_t get64(const unsigned char *h, int off) { uint64_t v; memcpy(&v, h + off, 8); return v; }
static double getf64(const unsigned char *h, int off) { double v; memcpy(&v, h + off, 8); return v; }

/* A record as the table stores it (replay_table_impl.h), plus the priority leaf when present. */
static size_t record_bytes(uint32_t od, uint32_t ad) { return ((2 * (size_t)od + ad + 2) * 4 + 2 + 16 + 7) & ~(size_t)7; }
static size_t row_bytes(uint32_t od, uint32_t ad, int has_prio) { return record_bytes(od, ad) + (has_prio ? 4 : 0); }

static void encode_header(unsigned char *h, const replay_snapshot_info *in) {
  memset(h, 0, REPLAY_SNAPSHOT_HEADER_BYTES);
  memcpy(h + H_MAGIC, MAGIC, 8);
  put32(h, H_VERSION, REPLAY_SNAPSHOT_FORMAT_VERSION);
  put32(h, H_HEADER_BYTES, REPLAY_SNAPSHOT_HEADER_BYTES);
  memcpy(h + H_TASK, in->spec.task, REPLAY_TASK_MAX);
  h[H_TASK + REPLAY_TASK_MAX - 1] = 0;
  put32(h, H_OBS_DIM, in->spec.obs_dim);
  put32(h, H_ACT_DIM, in->spec.act_dim);
  put64(h, H_CAPACITY, in->capacity);
  put64(h, H_SIZE, in->size);
  put64(h, H_INSERTS, in->inserts);
  put64(h, H_EVICTED, in->evicted);
  put64(h, H_SAMPLES, in->meta.samples);
  put64(h, H_SAMPLE_BATCHES, in->meta.sample_batches);
  put64(h, H_INSERT_BATCHES, in->meta.insert_batches);
  put64(h, H_CREATED, in->meta.created_unix_ms);
  put64(h, H_SEQUENCE, in->meta.sequence);
  put32(h, H_HAS_PRIO, (uint32_t)in->has_priorities);
  put32(h, H_ENDIAN, ENDIAN_MARK);
  putf64(h, H_ALPHA, in->alpha);
  putf64(h, H_MAX_PRIO, in->max_priority);
  put64(h, H_PAYLOAD, in->payload_bytes);
  put64(h, H_COMPRESSED, in->compressed_bytes);
  put64(h, H_CHECKSUM, fnv1a64(h, H_CHECKSUM));
}

static int decode_header(const unsigned char *h, const char *path, replay_snapshot_info *out, ember_err *err) {
  if (memcmp(h + H_MAGIC, MAGIC, 8) != 0) return ember_fail(err, EMBER_ECORRUPT, "%s: not a replay snapshot (bad magic)", path);
  if (get64(h, H_CHECKSUM) != fnv1a64(h, H_CHECKSUM))
    return ember_fail(err, EMBER_ECORRUPT, "%s: header checksum mismatch", path);
  if (get32(h, H_VERSION) != REPLAY_SNAPSHOT_FORMAT_VERSION) /* intact, but not ours to read (or to move aside) */
    return ember_fail(err, EMBER_ESCHEMA, "%s: format version %u, this build reads %u", path, get32(h, H_VERSION),
                      REPLAY_SNAPSHOT_FORMAT_VERSION);
  if (get32(h, H_HEADER_BYTES) != REPLAY_SNAPSHOT_HEADER_BYTES || get32(h, H_ENDIAN) != ENDIAN_MARK)
    return ember_fail(err, EMBER_ECORRUPT, "%s: header size or byte order not supported", path);
  memset(out, 0, sizeof *out);
  memcpy(out->spec.task, h + H_TASK, REPLAY_TASK_MAX);
  out->spec.task[REPLAY_TASK_MAX - 1] = 0;
  out->spec.obs_dim = get32(h, H_OBS_DIM);
  out->spec.act_dim = get32(h, H_ACT_DIM);
  out->capacity = get64(h, H_CAPACITY);
  out->size = get64(h, H_SIZE);
  out->inserts = get64(h, H_INSERTS);
  out->evicted = get64(h, H_EVICTED);
  out->meta.samples = get64(h, H_SAMPLES);
  out->meta.sample_batches = get64(h, H_SAMPLE_BATCHES);
  out->meta.insert_batches = get64(h, H_INSERT_BATCHES);
  out->meta.created_unix_ms = get64(h, H_CREATED);
  out->meta.sequence = get64(h, H_SEQUENCE);
  out->has_priorities = get32(h, H_HAS_PRIO) != 0;
  out->alpha = getf64(h, H_ALPHA);
  out->max_priority = getf64(h, H_MAX_PRIO);
  out->payload_bytes = get64(h, H_PAYLOAD);
  out->compressed_bytes = get64(h, H_COMPRESSED);
  if (out->size > out->capacity || out->size > out->inserts || out->spec.obs_dim > (1u << 20) ||
      out->spec.act_dim > (1u << 20))
    return ember_fail(err, EMBER_ECORRUPT, "%s: inconsistent counters (size %" PRIu64 ", capacity %" PRIu64 ")", path,
                      out->size, out->capacity);
  if (out->size > 0 && (out->spec.obs_dim == 0 || out->spec.act_dim == 0))
    return ember_fail(err, EMBER_ECORRUPT, "%s: items without a spec", path);
  /* size x row without wrapping: a crafted size (2^61 items of 56 bytes wrap to 0) would otherwise
   * pass with an empty payload and load a table of zeros; found writing tests/fuzz/fuzz_snapshot */
  uint64_t row = row_bytes(out->spec.obs_dim, out->spec.act_dim, out->has_priorities);
  if (out->size > UINT64_MAX / row)
    return ember_fail(err, EMBER_ECORRUPT, "%s: %" PRIu64 " items of %" PRIu64 " bytes cannot be stored", path,
                      out->size, row);
  uint64_t expect = out->size * row;
  if (out->payload_bytes != expect)
    return ember_fail(err, EMBER_ECORRUPT, "%s: payload %" PRIu64 " bytes, %" PRIu64 " items need %" PRIu64, path,
                      out->payload_bytes, out->size, expect);
  return 0;
}

/* ---- segments: where the payload's bytes come from or go to, in order ------------------------ */

typedef struct {
  unsigned char *ptr; /* NULL: skip these bytes (loading a snapshot bigger than the table) */
  size_t len;
} segment;

typedef struct {
  segment seg[MAX_SEGMENTS];
  int n;
} segment_list;

static void seg_add(segment_list *l, void *ptr, size_t len) {
  if (len == 0) return;
  l->seg[l->n++] = (segment){ptr, len};
}

/* Adds one column's items: `skip` items not kept, then keys [first, first + n) in slot order. */
static void seg_column(segment_list *l, void *base, size_t elem, size_t capacity, size_t skip, uint64_t first,
                       size_t n) {
  seg_add(l, NULL, skip * elem);
  if (!base) { /* a column the table does not keep (priorities into a uniform table) */
    seg_add(l, NULL, n * elem);
    return;
  }
  size_t slot = (size_t)(first % capacity);
  size_t run = n < capacity - slot ? n : capacity - slot;
  seg_add(l, (unsigned char *)base + slot * elem, run * elem);
  seg_add(l, base, (n - run) * elem);
}

static void table_segments(replay_table *t, size_t skip, size_t n, int with_prio, segment_list *l) {
  size_t c = t->capacity;
  uint64_t first = t->inserts - n;
  l->n = 0;
  seg_column(l, t->rows, t->stride, c, skip, first, n);
  if (with_prio) seg_column(l, t->tree ? (void *)sumtree_leaves(t->tree) : NULL, 4, c, skip, first, n);
}

/* ---- files ----------------------------------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n, const char *path, ember_err *err) {
  const unsigned char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ember_fail(err, EMBER_EIO, "writing %s: %s", path, strerror(errno));
    }
    p += w, n -= (size_t)w;
  }
  return 0;
}

static int fsync_dir(const char *dir, ember_err *err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return ember_fail(err, EMBER_EIO, "opening directory %s: %s", dir, strerror(errno));
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  if (rc != 0) return ember_fail(err, EMBER_EIO, "fsync of directory %s: %s", dir, strerror(e));
  return 0;
}

static int compress_segments(ZSTD_CCtx *cc, int fd, const segment_list *l, const char *path, uint64_t *written,
                             ember_err *err) {
  size_t out_cap = ZSTD_CStreamOutSize();
  unsigned char *out = malloc(out_cap);
  if (!out) return ember_fail(err, EMBER_ENOMEM, "snapshot: out of memory");
  int rc = 0;
  for (int i = 0; i <= l->n && rc == 0; i++) {
    int last = i == l->n;
    ZSTD_inBuffer in = {last ? NULL : l->seg[i].ptr, last ? 0 : l->seg[i].len, 0};
    ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
      ZSTD_outBuffer ob = {out, out_cap, 0};
      size_t remaining = ZSTD_compressStream2(cc, &ob, &in, mode);
      if (ZSTD_isError(remaining)) {
        rc = ember_fail(err, EMBER_EIO, "compressing %s: %s", path, ZSTD_getErrorName(remaining));
        break;
      }
      if (ob.pos > 0 && (rc = write_all(fd, out, ob.pos, path, err)) != 0) break;
      *written += ob.pos;
      if (last ? remaining == 0 : in.pos == in.size) break;
    }
  }
  free(out);
  return rc;
}

static void snapshot_name(char *buf, size_t cap, const char *dir, uint64_t seq, int tmp) {
  snprintf(buf, cap, "%s/%s" PREFIX "%020" PRIu64 SUFFIX "%s", dir, tmp ? "." : "", seq, tmp ? ".tmp" : "");
}

int replay_snapshot_write(const char *dir, const replay_table *t, const replay_snapshot_meta *meta, int zstd_level,
                          char *path_out, size_t path_cap, ember_err *err) {
  char tmp[4096], final[4096];
  snapshot_name(tmp, sizeof tmp, dir, meta->sequence, 1);
  snapshot_name(final, sizeof final, dir, meta->sequence, 0);
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    return ember_fail(err, EMBER_EIO, "creating snapshot directory %s: %s", dir, strerror(errno));
  replay_snapshot_info info = {.meta = *meta, .spec = t->spec, .capacity = t->capacity, .size = t->size,
                               .inserts = t->inserts, .evicted = t->evicted, .alpha = t->alpha,
                               .max_priority = t->max_priority, .has_priorities = t->tree != NULL};
  if (!t->has_spec) info.size = 0, info.spec.obs_dim = info.spec.act_dim = 0;
  info.payload_bytes = info.size * row_bytes(info.spec.obs_dim, info.spec.act_dim, info.has_priorities);

  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ember_fail(err, EMBER_EIO, "creating %s: %s", tmp, strerror(errno));
  unsigned char header[REPLAY_SNAPSHOT_HEADER_BYTES];
  encode_header(header, &info); /* provisional: rewritten with the compressed size below */
  int rc = write_all(fd, header, sizeof header, tmp, err);
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  if (!cc && rc == 0) rc = ember_fail(err, EMBER_ENOMEM, "snapshot: cannot create a zstd context");
  if (rc == 0) {
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, zstd_level);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setPledgedSrcSize(cc, info.payload_bytes);
    segment_list l = {.n = 0};
    if (info.size > 0) table_segments((replay_table *)t, 0, info.size, info.has_priorities, &l);
    uint64_t written = 0;
    rc = compress_segments(cc, fd, &l, tmp, &written, err);
    info.compressed_bytes = written;
  }
  ZSTD_freeCCtx(cc);
  if (rc == 0) {
    encode_header(header, &info);
    if (pwrite(fd, header, sizeof header, 0) != (ssize_t)sizeof header)
      rc = ember_fail(err, EMBER_EIO, "writing header of %s: %s", tmp, strerror(errno));
  }
  if (rc == 0 && fsync(fd) != 0) rc = ember_fail(err, EMBER_EIO, "fsync of %s: %s", tmp, strerror(errno));
  if (close(fd) != 0 && rc == 0) rc = ember_fail(err, EMBER_EIO, "closing %s: %s", tmp, strerror(errno));
  if (rc == 0 && rename(tmp, final) != 0)
    rc = ember_fail(err, EMBER_EIO, "renaming %s to %s: %s", tmp, final, strerror(errno));
  if (rc != 0) {
    unlink(tmp);
    return rc;
  }
  if ((rc = fsync_dir(dir, err)) != 0) return rc;
  if (path_out) snprintf(path_out, path_cap, "%s", final);
  return 0;
}

/* Decompresses the payload of an open file positioned after the header into the segments (or
 * nowhere when l is NULL), checking the zstd checksum and the byte counts. */
static int decompress_payload(FILE *f, const replay_snapshot_info *info, const segment_list *l, const char *path,
                              ember_err *err) {
  ZSTD_DCtx *dc = ZSTD_createDCtx();
  size_t in_cap = ZSTD_DStreamInSize(), out_cap = ZSTD_DStreamOutSize();
  unsigned char *in = malloc(in_cap), *out = malloc(out_cap);
  int rc = 0;
  if (!dc || !in || !out) {
    rc = ember_fail(err, EMBER_ENOMEM, "snapshot: out of memory");
    goto done;
  }
  uint64_t consumed = 0, produced = 0;
  int seg = 0;
  size_t seg_off = 0;
  size_t last_ret = 1;
  while (consumed < info->compressed_bytes) {
    size_t want = info->compressed_bytes - consumed < in_cap ? (size_t)(info->compressed_bytes - consumed) : in_cap;
    size_t got = fread(in, 1, want, f);
    if (got == 0) {
      rc = ember_fail(err, EMBER_ECORRUPT, "%s: truncated (%" PRIu64 " of %" PRIu64 " compressed bytes)", path,
                      consumed, info->compressed_bytes);
      goto done;
    }
    consumed += got;
    ZSTD_inBuffer ib = {in, got, 0};
    while (ib.pos < ib.size) {
      ZSTD_outBuffer ob = {out, out_cap, 0};
      last_ret = ZSTD_decompressStream(dc, &ob, &ib);
      if (ZSTD_isError(last_ret)) {
        rc = ember_fail(err, EMBER_ECORRUPT, "%s: payload does not decompress: %s", path,
                        ZSTD_getErrorName(last_ret));
        goto done;
      }
      if (produced + ob.pos > info->payload_bytes) {
        rc = ember_fail(err, EMBER_ECORRUPT, "%s: payload longer than the header says", path);
        goto done;
      }
      produced += ob.pos;
      for (size_t p = 0; l && p < ob.pos;) { /* scatter into the segments */
        const segment *s = &l->seg[seg];
        size_t n = s->len - seg_off < ob.pos - p ? s->len - seg_off : ob.pos - p;
        if (s->ptr) memcpy(s->ptr + seg_off, out + p, n);
        p += n, seg_off += n;
        if (seg_off == s->len) seg++, seg_off = 0;
      }
      if (last_ret == 0 && ib.pos < ib.size) {
        rc = ember_fail(err, EMBER_ECORRUPT, "%s: trailing bytes after the payload", path);
        goto done;
      }
    }
  }
  /* zstd may still hold output after the last input byte */
  for (;;) {
    ZSTD_inBuffer ib = {NULL, 0, 0};
    ZSTD_outBuffer ob = {out, out_cap, 0};
    if (last_ret == 0) break;
    last_ret = ZSTD_decompressStream(dc, &ob, &ib);
    if (ZSTD_isError(last_ret)) {
      rc = ember_fail(err, EMBER_ECORRUPT, "%s: payload does not decompress: %s", path, ZSTD_getErrorName(last_ret));
      goto done;
    }
    if (ob.pos == 0) break;
    if (produced + ob.pos > info->payload_bytes) {
      rc = ember_fail(err, EMBER_ECORRUPT, "%s: payload longer than the header says", path);
      goto done;
    }
    for (size_t p = 0; l && p < ob.pos;) {
      const segment *s = &l->seg[seg];
      size_t n = s->len - seg_off < ob.pos - p ? s->len - seg_off : ob.pos - p;
      if (s->ptr) memcpy(s->ptr + seg_off, out + p, n);
      p += n, seg_off += n;
      if (seg_off == s->len) seg++, seg_off = 0;
    }
    produced += ob.pos;
  }
  if (last_ret != 0 || produced != info->payload_bytes)
    rc = ember_fail(err, EMBER_ECORRUPT, "%s: truncated payload (%" PRIu64 " of %" PRIu64 " bytes, frame %s)", path,
                    produced, info->payload_bytes, last_ret == 0 ? "complete" : "incomplete");
done:
  free(in);
  free(out);
  ZSTD_freeDCtx(dc);
  return rc;
}

static int open_verified_header(const char *path, FILE **fp, replay_snapshot_info *info, ember_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return ember_fail(err, errno == ENOENT ? EMBER_ENOENT : EMBER_EIO, "opening %s: %s", path, strerror(errno));
  unsigned char h[REPLAY_SNAPSHOT_HEADER_BYTES];
  int rc = 0;
  if (fread(h, 1, sizeof h, f) != sizeof h)
    rc = ember_fail(err, EMBER_ECORRUPT, "%s: truncated header", path);
  else
    rc = decode_header(h, path, info, err);
  if (rc == 0) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
      rc = ember_fail(err, EMBER_EIO, "stat %s: %s", path, strerror(errno));
    } else if ((uint64_t)st.st_size != REPLAY_SNAPSHOT_HEADER_BYTES + info->compressed_bytes) {
      rc = ember_fail(err, EMBER_ECORRUPT, "%s: file is %lld bytes, header says %" PRIu64 " (truncated or extended)",
                      path, (long long)st.st_size, REPLAY_SNAPSHOT_HEADER_BYTES + info->compressed_bytes);
    }
  }
  if (rc != 0) {
    fclose(f);
    return rc;
  }
  *fp = f;
  return 0;
}

int replay_snapshot_verify(const char *path, replay_snapshot_info *info, ember_err *err) {
  FILE *f = NULL;
  replay_snapshot_info local;
  if (!info) info = &local;
  int rc = open_verified_header(path, &f, info, err);
  if (rc != 0) return rc;
  rc = decompress_payload(f, info, NULL, path, err);
  fclose(f);
  return rc;
}

int replay_snapshot_load(const char *path, replay_table *t, replay_snapshot_info *info, ember_err *err) {
  replay_snapshot_info local;
  if (!info) info = &local;
  if (t->inserts != 0) return ember_fail(err, EMBER_ESTATE, "loading %s: the table is not empty", path);
  int rc = replay_snapshot_verify(path, info, err);
  if (rc != 0) return rc;
  if (info->size > 0 && t->has_spec &&
      (t->spec.obs_dim != info->spec.obs_dim || t->spec.act_dim != info->spec.act_dim ||
       (t->spec.task[0] && info->spec.task[0] && strcmp(t->spec.task, info->spec.task) != 0)))
    return ember_fail(err, EMBER_ESHAPE, "%s: holds task '%s' obs %u act %u, the table is '%s' obs %u act %u", path,
                      info->spec.task, info->spec.obs_dim, info->spec.act_dim, t->spec.task, t->spec.obs_dim,
                      t->spec.act_dim);
  if (info->size > 0 && !t->has_spec && (rc = replay_table_set_spec(t, &info->spec, err)) != 0) return rc;
  size_t keep = info->size < t->capacity ? (size_t)info->size : t->capacity;
  size_t skip = (size_t)info->size - keep;
  replay_table_restore_begin(t, info->inserts, keep, info->evicted + skip, info->max_priority);
  if (info->size == 0) return 0;
  segment_list l;
  table_segments(t, skip, keep, info->has_priorities, &l);
  FILE *f = fopen(path, "rb");
  if (!f) return ember_fail(err, EMBER_EIO, "opening %s: %s", path, strerror(errno));
  fseek(f, REPLAY_SNAPSHOT_HEADER_BYTES, SEEK_SET);
  rc = decompress_payload(f, info, &l, path, err);
  fclose(f);
  if (rc != 0) { /* the file changed under us between the two passes: leave the table empty */
    replay_table_restore_begin(t, 0, 0, 0, 1.0);
    return rc;
  }
  if (t->tree) {
    float *leaves = sumtree_leaves(t->tree);
    float fresh = replay_leaf_of(pow(t->max_priority, t->alpha));
    double ratio = info->has_priorities && info->alpha > 0 ? t->alpha / info->alpha : 0;
    for (size_t i = 0; i < keep; i++) {
      size_t s = (size_t)((t->inserts - keep + i) % t->capacity);
      float v = leaves[s];
      if (!info->has_priorities || info->alpha <= 0 || !isfinite(v) || v < 0) v = fresh;
      else if (ratio != 1.0) v = replay_leaf_of(pow(v, ratio));
      leaves[s] = v;
    }
    sumtree_rebuild(t->tree);
  }
  return 0;
}

/* ---- directory ------------------------------------------------------------------------------- */

#define CORRUPT_SUFFIX ".corrupt"
#define TMP_SUFFIX ".tmp"

/* "replay-<20 digits>.snap" (a snapshot), or with ".corrupt" after it when corrupt_too (one moved
 * aside, whose sequence still counts so that no name is reused). */
static int parse_name(const char *name, uint64_t *seq, int corrupt_too) {
  size_t n = strlen(name), pl = strlen(PREFIX), sl = strlen(SUFFIX), cl = strlen(CORRUPT_SUFFIX);
  if (n < pl + 20 + sl || strncmp(name, PREFIX, pl) != 0) return 0;
  const char *tail = name + pl + 20;
  if (strcmp(tail, SUFFIX) != 0 && !(corrupt_too && n == pl + 20 + sl + cl && strncmp(tail, SUFFIX, sl) == 0 &&
                                     strcmp(tail + sl, CORRUPT_SUFFIX) == 0))
    return 0;
  uint64_t v = 0;
  for (size_t i = pl; i < pl + 20; i++) {
    if (name[i] < '0' || name[i] > '9') return 0;
    v = v * 10 + (uint64_t)(name[i] - '0');
  }
  *seq = v;
  return 1;
}

static int cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Sequences of the snapshot files in dir, newest first. */
static int list_snapshots(const char *dir, uint64_t *seqs, size_t cap, size_t *n, ember_err *err) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return 0;
    return ember_fail(err, EMBER_EIO, "listing %s: %s", dir, strerror(errno));
  }
  struct dirent *e;
  uint64_t seq;
  while ((e = readdir(d)) != NULL)
    if (parse_name(e->d_name, &seq, 0) && *n < cap) seqs[(*n)++] = seq;
  closedir(d);
  qsort(seqs, *n, sizeof *seqs, cmp_desc);
  return 0;
}

int replay_snapshot_next_sequence(const char *dir, uint64_t *next, ember_err *err) {
  *next = 1;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return 0;
    return ember_fail(err, EMBER_EIO, "listing %s: %s", dir, strerror(errno));
  }
  struct dirent *e;
  uint64_t seq;
  while ((e = readdir(d)) != NULL)
    if (parse_name(e->d_name, &seq, 1) && seq >= *next) *next = seq + 1;
  closedir(d);
  return 0;
}

/* Moves a file that failed verification out of the snapshots' way (never deleted: it is evidence). */
static void quarantine(const char *path, const char *why) {
  char moved[4096 + sizeof CORRUPT_SUFFIX];
  snprintf(moved, sizeof moved, "%s" CORRUPT_SUFFIX, path);
  if (rename(path, moved) == 0)
    log_event(LOG_WARN, "replay", "snapshot_quarantined", LF_STR("path", path), LF_STR("moved_to", moved),
              LF_STR("reason", why));
  else
    log_event(LOG_ERROR, "replay", "snapshot_quarantine_failed", LF_STR("path", path), LF_STR("reason", why),
              LF_STR("error", strerror(errno)));
}

int replay_snapshot_restore_newest(const char *dir, replay_table *t, replay_snapshot_info *info, int *restored,
                                   uint64_t *next_sequence, ember_err *err) {
  size_t n;
  *restored = 0;
  int rc = replay_snapshot_next_sequence(dir, next_sequence, err);
  if (rc != 0) return rc;
  uint64_t *seqs = malloc(MAX_FILES * sizeof *seqs);
  if (!seqs) return ember_fail(err, EMBER_ENOMEM, "snapshot: out of memory");
  rc = list_snapshots(dir, seqs, MAX_FILES, &n, err);
  if (rc != 0) {
    free(seqs);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snapshot_name(path, sizeof path, dir, seqs[i], 0);
    ember_err why = {0};
    rc = replay_snapshot_load(path, t, info, &why);
    if (rc == 0) {
      *restored = 1;
      break;
    }
    log_event(LOG_WARN, "replay", "snapshot_skipped", LF_STR("path", path), LF_STR("code", ember_strerror(rc)),
              LF_STR("reason", why.msg));
    if (rc == EMBER_ECORRUPT) quarantine(path, why.msg); /* so pruning never keeps it over a valid one */
  }
  free(seqs);
  return 0;
}

int replay_snapshot_remove_stale_tmp(const char *dir, int *removed, ember_err *err) {
  if (removed) *removed = 0;
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return 0;
    return ember_fail(err, EMBER_EIO, "listing %s: %s", dir, strerror(errno));
  }
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name), tl = strlen(TMP_SUFFIX);
    if (len <= tl || e->d_name[0] != '.' || strncmp(e->d_name + 1, PREFIX, strlen(PREFIX)) != 0 ||
        strcmp(e->d_name + len - tl, TMP_SUFFIX) != 0)
      continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : -1;
    if (unlink(path) != 0 && errno != ENOENT) {
      rc = ember_fail(err, EMBER_EIO, "deleting stale %s: %s", path, strerror(errno));
      continue;
    }
    log_event(LOG_WARN, "replay", "snapshot_tmp_removed", LF_STR("path", path), LF_I64("bytes", bytes),
              LF_STR("reason", "left by a snapshot write that did not finish (the writer was killed)"));
    if (removed) (*removed)++;
  }
  closedir(d);
  return rc;
}

int replay_snapshot_prune(const char *dir, int keep, ember_err *err) {
  size_t n;
  uint64_t *seqs = malloc(MAX_FILES * sizeof *seqs);
  if (!seqs) return ember_fail(err, EMBER_ENOMEM, "snapshot: out of memory");
  int rc = list_snapshots(dir, seqs, MAX_FILES, &n, err);
  int kept = 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    char path[4096];
    snapshot_name(path, sizeof path, dir, seqs[i], 0);
    /* the header and the file's length, not the payload: cheap enough for every prune. A file whose
     * payload is corrupt is found (and moved aside) by the full verification at restore. */
    FILE *f = NULL;
    replay_snapshot_info info;
    ember_err why = {0};
    int vrc = open_verified_header(path, &f, &info, &why);
    if (f) fclose(f);
    if (vrc == EMBER_ECORRUPT) {
      quarantine(path, why.msg);
    } else if (vrc != 0) { /* another format version, or unreadable now: neither counted nor deleted */
      log_event(LOG_WARN, "replay", "snapshot_prune_skipped", LF_STR("path", path), LF_STR("code", ember_strerror(vrc)),
                LF_STR("reason", why.msg));
    } else if (kept < keep) {
      kept++;
    } else if (unlink(path) != 0 && errno != ENOENT) {
      rc = ember_fail(err, EMBER_EIO, "deleting old snapshot %s: %s", path, strerror(errno));
    }
  }
  free(seqs);
  /* temporaries a killed writer left behind (only one writer per directory, so none is in progress) */
  if (rc == 0) rc = replay_snapshot_remove_stale_tmp(dir, NULL, err);
  return rc;
}

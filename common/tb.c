#include "tb.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tensorboard.pb-c.h"

struct tb_writer {
  FILE *file;
  char path[4096];
};

static uint32_t crc_table[256];
static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1; /* reflected Castagnoli */
    crc_table[i] = c;
  }
}

uint32_t tb_crc32c(const void *data, size_t n) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, crc_init);
  const unsigned char *p = data;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t tb_masked_crc(const void *data, size_t n) {
  uint32_t c = tb_crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int write_event(tb_writer *w, Tensorboard__Event *ev, ember_err *err) {
  size_t n = tensorboard__event__get_packed_size(ev);
  uint8_t stack[512];
  uint8_t *buf = n <= sizeof stack ? stack : malloc(n);
  if (!buf) return ember_fail(err, EMBER_ENOMEM, "out of memory writing a TensorBoard event");
  tensorboard__event__pack(ev, buf);
  uint64_t len = n; /* little-endian hosts: the length's bytes are its in-memory bytes */
  uint32_t len_crc = tb_masked_crc(&len, sizeof len), data_crc = tb_masked_crc(buf, n);
  int ok = fwrite(&len, sizeof len, 1, w->file) == 1 && fwrite(&len_crc, sizeof len_crc, 1, w->file) == 1 &&
           fwrite(buf, 1, n, w->file) == n && fwrite(&data_crc, sizeof data_crc, 1, w->file) == 1;
  if (buf != stack) free(buf);
  return ok ? 0 : ember_fail(err, EMBER_EIO, "writing %s: %s", w->path, strerror(errno));
}

tb_writer *tb_writer_open(const char *dir, ember_err *err) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    ember_fail(err, EMBER_EIO, "create TensorBoard directory %s: %s", dir, strerror(errno));
    return NULL;
  }
  tb_writer *w = calloc(1, sizeof *w);
  if (!w) {
    ember_fail(err, EMBER_ENOMEM, "out of memory");
    return NULL;
  }
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s.%ld", dir, (long long)time(NULL), host,
           (long)getpid());
  w->file = fopen(w->path, "wb");
  if (!w->file) {
    ember_fail(err, EMBER_EIO, "create %s: %s", w->path, strerror(errno));
    free(w);
    return NULL;
  }
  Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
  ev.wall_time = now_seconds();
  ev.what_case = TENSORBOARD__EVENT__WHAT_FILE_VERSION;
  ev.file_version = "brain.Event:2";
  if (write_event(w, &ev, err) != 0 || tb_flush(w, err) != 0) {
    tb_writer_close(&w);
    return NULL;
  }
  return w;
}

int tb_scalar(tb_writer *w, const char *tag, int64_t step, double value, ember_err *err) {
  Tensorboard__SummaryValue v = TENSORBOARD__SUMMARY_VALUE__INIT;
  v.tag = (char *)tag;
  v.value_case = TENSORBOARD__SUMMARY_VALUE__VALUE_SIMPLE_VALUE;
  v.simple_value = (float)value;
  Tensorboard__SummaryValue *values[1] = {&v};
  Tensorboard__Summary s = TENSORBOARD__SUMMARY__INIT;
  s.n_value = 1;
  s.value = values;
  Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
  ev.wall_time = now_seconds();
  ev.step = step;
  ev.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY;
  ev.summary = &s;
  return write_event(w, &ev, err);
}

int tb_flush(tb_writer *w, ember_err *err) {
  if (fflush(w->file) != 0) return ember_fail(err, EMBER_EIO, "flush %s: %s", w->path, strerror(errno));
  return 0;
}

const char *tb_writer_path(const tb_writer *w) { return w->path; }

void tb_writer_close(tb_writer **p) {
  if (!p || !*p) return;
  if ((*p)->file) fclose((*p)->file);
  free(*p);
  *p = NULL;
}

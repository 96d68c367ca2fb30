#include "log.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "err.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *log_out;
static log_level log_min = LOG_INFO;
static log_format log_fmt = LOG_FORMAT_JSON;

static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

void log_set_output(FILE *out) {
  pthread_mutex_lock(&log_lock);
  log_out = out;
  pthread_mutex_unlock(&log_lock);
}
void log_set_level(log_level level) { __atomic_store_n(&log_min, level, __ATOMIC_RELAXED); }
void log_set_format(log_format format) { __atomic_store_n(&log_fmt, format, __ATOMIC_RELAXED); }
log_level log_get_level(void) { return __atomic_load_n(&log_min, __ATOMIC_RELAXED); }

int log_parse_level(const char *s, log_level *out) {
  for (int i = 0; i <= LOG_OFF; i++)
    if (s && strcmp(s, level_names[i]) == 0) {
      *out = (log_level)i;
      return 0;
    }
  return EMBER_EINVAL;
}

int log_parse_format(const char *s, log_format *out) {
  if (s && strcmp(s, "json") == 0) *out = LOG_FORMAT_JSON;
  else if (s && strcmp(s, "human") == 0) *out = LOG_FORMAT_HUMAN;
  else return EMBER_EINVAL;
  return 0;
}

size_t log_json_escape(char *buf, size_t cap, const char *s) {
  size_t n = 0;
  if (cap == 0) return 0;
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    char tmp[8];
    const char *piece = tmp;
    size_t len;
    if (*p == '"' || *p == '\\') {
      tmp[0] = '\\', tmp[1] = (char)*p, len = 2;
    } else if (*p == '\n') {
      piece = "\\n", len = 2;
    } else if (*p == '\t') {
      piece = "\\t", len = 2;
    } else if (*p < 0x20) {
      len = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", *p);
    } else {
      tmp[0] = (char)*p, len = 1;
    }
    if (n + len >= cap) break;
    memcpy(buf + n, piece, len);
    n += len;
  }
  buf[n] = 0;
  return n;
}

/* Appends to a fixed line buffer; silently truncates (a log line is never worth a crash). */
typedef struct {
  char buf[4096];
  size_t n;
} line_buf;

static void put(line_buf *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(line_buf *l, const char *fmt, ...) {
  if (l->n >= sizeof l->buf - 1) return;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(l->buf + l->n, sizeof l->buf - l->n, fmt, ap);
  va_end(ap);
  if (w > 0) l->n += (size_t)w;
  if (l->n > sizeof l->buf - 1) l->n = sizeof l->buf - 1;
}

static void put_json_str(line_buf *l, const char *s) {
  char esc[2048];
  log_json_escape(esc, sizeof esc, s);
  put(l, "\"%s\"", esc);
}

static void timestamp(char *out, size_t cap) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void emit(line_buf *l) {
  if (l->n >= sizeof l->buf - 1) l->n = sizeof l->buf - 2;
  l->buf[l->n++] = '\n';
  pthread_mutex_lock(&log_lock);
  FILE *out = log_out ? log_out : stderr;
  fwrite(l->buf, 1, l->n, out);
  fflush(out);
  pthread_mutex_unlock(&log_lock);
}

static void put_field(line_buf *l, const log_field *f, int json) {
  if (json) {
    put(l, ",");
    put_json_str(l, f->key);
    put(l, ":");
  } else {
    put(l, " %s=", f->key);
  }
  switch (f->type) {
    case LF_TYPE_I64: put(l, "%lld", (long long)f->v.i); break;
    case LF_TYPE_U64: put(l, "%llu", (unsigned long long)f->v.u); break;
    case LF_TYPE_BOOL: put(l, "%s", f->v.i ? "true" : "false"); break;
    case LF_TYPE_F64:
      if (isfinite(f->v.f)) put(l, "%.6g", f->v.f);
      else if (json) put_json_str(l, isnan(f->v.f) ? "NaN" : (f->v.f > 0 ? "Infinity" : "-Infinity"));
      else put(l, "%g", f->v.f);
      break;
    case LF_TYPE_STR:
      if (json) put_json_str(l, f->v.s);
      else put(l, "%s", f->v.s ? f->v.s : "");
      break;
    case LF_TYPE_END: break;
  }
}

void log_event_fields(log_level level, const char *component, const char *event, const log_field *fields) {
  if (level < log_get_level() || level >= LOG_OFF) return;
  int json = __atomic_load_n(&log_fmt, __ATOMIC_RELAXED) == LOG_FORMAT_JSON;
  char ts[40];
  timestamp(ts, sizeof ts);
  line_buf l;
  l.n = 0;
  if (json) {
    put(&l, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":", ts, level_names[level]);
    put_json_str(&l, component);
    put(&l, ",\"msg\":");
    put_json_str(&l, event);
  } else {
    put(&l, "%s %-5s %-8s %s", ts, level_names[level], component, event);
  }
  for (const log_field *f = fields; f && f->type != LF_TYPE_END; f++) put_field(&l, f, json);
  if (json) put(&l, "}");
  emit(&l);
}

void log_msg(log_level level, const char *component, const char *fmt, ...) {
  if (level < log_get_level() || level >= LOG_OFF) return;
  char text[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  log_event_fields(level, component, text, (const log_field[]){LF_END});
}

#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct metric {
  char *name, *labels, *help;
  metric_kind kind;
  uint64_t bits; /* the double value's bits, updated atomically */
  struct metric *next;
};

struct metrics_registry {
  pthread_mutex_t lock;
  metric *head, *tail;
};

metrics_registry *metrics_new(void) {
  metrics_registry *reg = calloc(1, sizeof *reg);
  if (reg) pthread_mutex_init(&reg->lock, NULL);
  return reg;
}

void metrics_destroy(metrics_registry **self_p) {
  if (!self_p || !*self_p) return;
  metrics_registry *reg = *self_p;
  for (metric *m = reg->head, *next; m; m = next) {
    next = m->next;
    free(m->name), free(m->labels), free(m->help), free(m);
  }
  pthread_mutex_destroy(&reg->lock);
  free(reg);
  *self_p = NULL;
}

static int valid_name(const char *s) {
  if (!s || !*s) return 0;
  for (const char *p = s; *p; p++) {
    int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
    int digit = *p >= '0' && *p <= '9';
    if (!alpha && !(digit && p != s)) return 0;
  }
  return 1;
}

static int same(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

static metric *get_or_create(metrics_registry *reg, const char *name, const char *labels, const char *help,
                             metric_kind kind) {
  if (!reg || !valid_name(name)) return NULL;
  pthread_mutex_lock(&reg->lock);
  metric *found = NULL;
  int kind_clash = 0;
  for (metric *m = reg->head; m; m = m->next) {
    if (strcmp(m->name, name) != 0) continue;
    if (m->kind != kind) kind_clash = 1;
    if (same(m->labels, labels)) found = m;
  }
  if (!found && !kind_clash) {
    metric *m = calloc(1, sizeof *m);
    if (m) {
      m->name = strdup(name);
      m->labels = strdup(labels ? labels : "");
      m->help = help ? strdup(help) : NULL;
      m->kind = kind;
      if (!m->name || !m->labels || (help && !m->help)) {
        free(m->name), free(m->labels), free(m->help), free(m);
        m = NULL;
      } else {
        if (reg->tail) reg->tail->next = m;
        else reg->head = m;
        reg->tail = m;
        found = m;
      }
    }
  }
  pthread_mutex_unlock(&reg->lock);
  return kind_clash ? NULL : found;
}

metric *metrics_counter(metrics_registry *reg, const char *name, const char *labels, const char *help) {
  return get_or_create(reg, name, labels, help, METRIC_COUNTER);
}

metric *metrics_gauge(metrics_registry *reg, const char *name, const char *labels, const char *help) {
  return get_or_create(reg, name, labels, help, METRIC_GAUGE);
}

static double from_bits(uint64_t b) {
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}
static uint64_t to_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return b;
}

void metric_add(metric *m, double delta) {
  if (!m) return;
  uint64_t old = __atomic_load_n(&m->bits, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(&m->bits, &old, to_bits(from_bits(old) + delta), 1, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
}

void metric_set(metric *m, double value) {
  if (m) __atomic_store_n(&m->bits, to_bits(value), __ATOMIC_RELAXED);
}

double metric_value(const metric *m) { return m ? from_bits(__atomic_load_n(&m->bits, __ATOMIC_RELAXED)) : 0.0; }

typedef struct {
  char *buf;
  size_t len, cap;
  int oom;
} text_buf;

static void appendf(text_buf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(text_buf *t, const char *fmt, ...) {
  if (t->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (w < 0) return;
    if ((size_t)w < t->cap - t->len) {
      t->len += (size_t)w;
      return;
    }
    size_t cap = (t->cap + (size_t)w + 1) * 2;
    char *nb = realloc(t->buf, cap);
    if (!nb) {
      t->oom = 1;
      return;
    }
    t->buf = nb, t->cap = cap;
  }
}

static void format_value(char *out, size_t cap, double v) {
  if (v != v) snprintf(out, cap, "NaN");
  else if (v > 1.7976931348623157e308) snprintf(out, cap, "+Inf");
  else if (v < -1.7976931348623157e308) snprintf(out, cap, "-Inf");
  else snprintf(out, cap, "%.17g", v);
}

int metrics_render(metrics_registry *reg, char **out, size_t *len) {
  text_buf t = {.buf = malloc(4096), .cap = 4096};
  if (!t.buf) return EMBER_ENOMEM;
  t.buf[0] = 0;
  pthread_mutex_lock(&reg->lock);
  for (metric *m = reg->head; m; m = m->next) {
    /* HELP and TYPE once per name: on the first metric carrying it. */
    int first = 1;
    for (metric *p = reg->head; p != m; p = p->next)
      if (strcmp(p->name, m->name) == 0) first = 0;
    if (!first) continue;
    {
      const char *help = NULL;
      for (metric *p = m; p && !help; p = p->next)
        if (strcmp(p->name, m->name) == 0 && p->help) help = p->help;
      if (help) {
        appendf(&t, "# HELP %s ", m->name);
        for (const char *c = help; *c; c++) {
          if (*c == '\\') appendf(&t, "\\\\");
          else if (*c == '\n') appendf(&t, "\\n");
          else appendf(&t, "%c", *c);
        }
        appendf(&t, "\n");
      }
      appendf(&t, "# TYPE %s %s\n", m->name, m->kind == METRIC_COUNTER ? "counter" : "gauge");
    }
    /* every series of this family, contiguous, as the exposition format requires */
    for (metric *p = m; p; p = p->next) {
      if (strcmp(p->name, m->name) != 0) continue;
      char value[64];
      format_value(value, sizeof value, metric_value(p));
      if (p->labels[0]) appendf(&t, "%s{%s} %s\n", p->name, p->labels, value);
      else appendf(&t, "%s %s\n", p->name, value);
    }
  }
  pthread_mutex_unlock(&reg->lock);
  if (t.oom) {
    free(t.buf);
    return EMBER_ENOMEM;
  }
  *out = t.buf;
  if (len) *len = t.len;
  return 0;
}

void metrics_foreach(metrics_registry *reg, metrics_visit_fn fn, void *ctx) {
  pthread_mutex_lock(&reg->lock);
  for (metric *m = reg->head; m; m = m->next) fn(ctx, m->name, m->labels, m->kind, metric_value(m));
  pthread_mutex_unlock(&reg->lock);
}

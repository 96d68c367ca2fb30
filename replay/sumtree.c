#include "sumtree.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FANOUT 16
#define MAX_LEVELS 24

struct sumtree {
  size_t capacity;
  float *leaf;                    /* capacity */
  int nlevels;                    /* internal levels; level 0 sits on the leaves, nlevels-1 is the root */
  size_t level_len[MAX_LEVELS];   /* nodes per level */
  size_t level_off[MAX_LEVELS];   /* offset of the level in sum/minp */
  double *sum;                    /* every internal level, concatenated */
  float *minp;                    /* min of positive leaves below each node, +inf when none */
};

sumtree *sumtree_new(size_t capacity, ember_err *err) {
  if (capacity == 0) {
    ember_fail(err, EMBER_EINVAL, "sumtree: capacity must be > 0");
    return NULL;
  }
  sumtree *t = calloc(1, sizeof *t);
  if (!t) goto oom;
  t->capacity = capacity;
  size_t total = 0, len = capacity;
  do {
    len = (len + FANOUT - 1) / FANOUT;
    t->level_len[t->nlevels] = len;
    t->level_off[t->nlevels] = total;
    total += len;
    t->nlevels++;
  } while (len > 1 && t->nlevels < MAX_LEVELS);
  t->leaf = calloc(capacity, sizeof *t->leaf);
  t->sum = calloc(total, sizeof *t->sum);
  t->minp = malloc(total * sizeof *t->minp);
  if (!t->leaf || !t->sum || !t->minp) goto oom;
  for (size_t i = 0; i < total; i++) t->minp[i] = INFINITY;
  return t;
oom:
  sumtree_destroy(&t);
  ember_fail(err, EMBER_ENOMEM, "sumtree: cannot allocate %zu slots", capacity);
  return NULL;
}

void sumtree_destroy(sumtree **self_p) {
  if (!self_p || !*self_p) return;
  sumtree *t = *self_p;
  free(t->leaf);
  free(t->sum);
  free(t->minp);
  free(t);
  *self_p = NULL;
}

size_t sumtree_capacity(const sumtree *t) { return t->capacity; }
float sumtree_get(const sumtree *t, size_t i) { return t->leaf[i]; }
double sumtree_total(const sumtree *t) { return t->sum[t->level_off[t->nlevels - 1]]; }
float sumtree_min_positive(const sumtree *t) { return t->minp[t->level_off[t->nlevels - 1]]; }

size_t sumtree_memory_bytes(const sumtree *t) {
  size_t internal = t->level_off[t->nlevels - 1] + 1;
  return sizeof *t + t->capacity * sizeof(float) + internal * (sizeof(double) + sizeof(float));
}

/* Recomputes node n of level l from its children. */
static void recompute(sumtree *t, int l, size_t n) {
  size_t first = n * FANOUT, end;
  double s = 0;
  float m = INFINITY;
  if (l == 0) {
    end = first + FANOUT < t->capacity ? first + FANOUT : t->capacity;
    for (size_t c = first; c < end; c++) {
      float v = t->leaf[c];
      s += v;
      if (v > 0 && v < m) m = v;
    }
  } else {
    size_t len = t->level_len[l - 1];
    end = first + FANOUT < len ? first + FANOUT : len;
    const double *cs = t->sum + t->level_off[l - 1];
    const float *cm = t->minp + t->level_off[l - 1];
    for (size_t c = first; c < end; c++) {
      s += cs[c];
      if (cm[c] < m) m = cm[c];
    }
  }
  t->sum[t->level_off[l] + n] = s;
  t->minp[t->level_off[l] + n] = m;
}

void sumtree_set(sumtree *t, size_t i, float value) {
  t->leaf[i] = value;
  size_t n = i;
  for (int l = 0; l < t->nlevels; l++) {
    n /= FANOUT;
    recompute(t, l, n);
  }
}

void sumtree_set_range(sumtree *t, size_t first, size_t n, float value) {
  if (n == 0) return;
  for (size_t i = first; i < first + n; i++) t->leaf[i] = value;
  size_t lo = first, hi = first + n - 1;
  for (int l = 0; l < t->nlevels; l++) {
    lo /= FANOUT, hi /= FANOUT;
    for (size_t k = lo; k <= hi; k++) recompute(t, l, k);
  }
}

size_t sumtree_find(const sumtree *t, double u) {
  size_t node = 0;
  for (int l = t->nlevels - 1; l >= 0; l--) {
    size_t first = node * FANOUT, end, last_positive = first;
    int found = 0;
    if (l == 0) {
      end = first + FANOUT < t->capacity ? first + FANOUT : t->capacity;
      for (size_t c = first; c < end; c++) {
        double v = t->leaf[c];
        if (v <= 0) continue;
        last_positive = c;
        if (u < v) { node = c; found = 1; break; }
        u -= v;
      }
    } else {
      size_t len = t->level_len[l - 1];
      end = first + FANOUT < len ? first + FANOUT : len;
      const double *cs = t->sum + t->level_off[l - 1];
      for (size_t c = first; c < end; c++) {
        double v = cs[c];
        if (v <= 0) continue;
        last_positive = c;
        if (u < v) { node = c; found = 1; break; }
        u -= v;
      }
    }
    if (!found) { /* u ran past the end by rounding: take the last positive child, at its far end */
      node = last_positive;
      u = l == 0 ? 0 : t->sum[t->level_off[l - 1] + node] * 0.999999;
    }
  }
  return node;
}

float *sumtree_leaves(sumtree *t) { return t->leaf; }

void sumtree_rebuild(sumtree *t) {
  for (int l = 0; l < t->nlevels; l++)
    for (size_t k = 0; k < t->level_len[l]; k++) recompute(t, l, k);
}

#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

struct arena_block {
  arena_block *next;
  size_t cap, used;
  max_align_t data[];
};

static arena_block *block_new(size_t cap) {
  arena_block *b = malloc(sizeof *b + cap);
  if (b) b->next = NULL, b->cap = cap, b->used = 0;
  return b;
}

static void *arena_alloc(void *data, size_t size) {
  arena *a = data;
  size = (size + 15) & ~(size_t)15;
  arena_block *b = a->head;
  while (b && b->cap - b->used < size && b->next) b = b->next;
  if (!b || b->cap - b->used < size) {
    arena_block *nb = block_new(size > 65536 ? size : 65536);
    if (!nb) {
      a->failed = 1;
      return NULL;
    }
    if (b) b->next = nb;
    else a->head = nb;
    b = nb;
  }
  void *p = (char *)b->data + b->used;
  b->used += size;
  a->used_total += size;
  return p;
}

static void arena_nofree(void *data, void *ptr) { (void)data, (void)ptr; }

void arena_init(arena *a, size_t initial_bytes) {
  a->head = block_new(initial_bytes ? initial_bytes : 65536);
  a->used_total = 0;
  a->failed = 0;
  a->allocator = (ProtobufCAllocator){.alloc = arena_alloc, .free = arena_nofree, .allocator_data = a};
}

void arena_reset(arena *a) {
  if (a->head && a->head->next) { /* the last message spilled: replace the chain by one big block */
    size_t want = a->used_total + a->used_total / 4;
    arena_block *b = a->head;
    while (b) {
      arena_block *n = b->next;
      free(b);
      b = n;
    }
    a->head = block_new(want);
  }
  if (a->head) a->head->used = 0;
  a->used_total = 0;
  a->failed = 0;
}

void arena_free(arena *a) {
  arena_block *b = a->head;
  while (b) {
    arena_block *n = b->next;
    free(b);
    b = n;
  }
  a->head = NULL;
}

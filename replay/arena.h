/* arena.h: a bump allocator for protobuf-c, so decoding a message costs no malloc in steady state.
 *
 * arena_allocator() hands protobuf-c an allocator whose free() does nothing; arena_reset() releases
 * everything at once (call it after each message is handled). The first block grows to the largest
 * message seen, so after warm-up every decode is served from one reused block.
 * Owns: its blocks. Not thread-safe: one arena per receiving thread.
 */
#ifndef EMBER_REPLAY_ARENA_H
#define EMBER_REPLAY_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct arena_block arena_block;
typedef struct {
  arena_block *head;   /* the block in use first; others chained after it while a message is big */
  size_t used_total;   /* bytes handed out since the last reset */
  int failed;          /* an allocation failed since the last reset */
  ProtobufCAllocator allocator;
} arena;

void arena_init(arena *a, size_t initial_bytes);
void arena_reset(arena *a);
void arena_free(arena *a);
static inline ProtobufCAllocator *arena_allocator(arena *a) { return &a->allocator; }

#endif

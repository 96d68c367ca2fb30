/* fuzz.h: what ember's fuzz targets share (docs/reliability.md, "Fuzzing").
 *
 * Each tests/fuzz/fuzz_<target>.c defines LLVMFuzzerTestOneInput: the bytes a peer or a file could
 * hold, run through the decoder and the checks the receiving component applies, then (where they
 * pass) through what the component does next with them, with properties that must hold. A target is
 * built twice: with libFuzzer (clang, -fsanitize=fuzzer,address,undefined; `make fuzz`) to search,
 * and with replay_main.c (any compiler; `make test`) to replay the seed corpus and every crash found
 * so far. A crash is an abort: a sanitizer report, or FUZZ_ASSERT naming the property broken.
 *
 * Targets keep state only where it costs too much to rebuild per input (a table, a temporary file),
 * and never carry anything from one input into the next that could change the outcome: a crash
 * replays from its one file.
 */
#ifndef EMBER_FUZZ_H
#define EMBER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property the fuzzed code must keep: aborts, naming it, so libFuzzer records the input. */
#define FUZZ_ASSERT(cond, ...)                                               \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz property failed (%s:%d): %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                          \
      fputc('\n', stderr);                                                   \
      abort();                                                               \
    }                                                                        \
  } while (0)

/* Once per process: components log refusals, which would drown libFuzzer's output and slow it. */
static inline void fuzz_quiet(void) {
  static int done;
  if (!done) log_set_level(LOG_OFF), done = 1;
}

/* The input as a file, for loaders that take a path: an anonymous in-memory file (memfd) holding
 * exactly data, rewritten on every call, named by its /proc/self/fd path. Nothing touches the disk
 * and nothing is left behind. `which` picks one of two files (a target that needs two at once). */
static inline const char *fuzz_input_file(int which, const uint8_t *data, size_t size) {
  static int fd[2] = {-1, -1};
  static char path[2][64];
  which = which ? 1 : 0;
  if (fd[which] < 0) {
    fd[which] = memfd_create(which ? "ember-fuzz-input-1" : "ember-fuzz-input-0", 0);
    if (fd[which] < 0) {
      perror("memfd_create");
      abort();
    }
    snprintf(path[which], sizeof path[which], "/proc/self/fd/%d", fd[which]);
  }
  if (ftruncate(fd[which], 0) != 0) abort();
  for (size_t done = 0; done < size;) {
    ssize_t w = pwrite(fd[which], data + done, size - done, (off_t)done);
    if (w <= 0) abort();
    done += (size_t)w;
  }
  return path[which];
}

/* 64-bit FNV-1a, the header checksum of ember's snapshot and checkpoint files: a target recomputes
 * it over a mutated header so that the fuzzer reaches the checks behind it (a checksum only guards
 * against accidents, not against a crafted file). */
static inline uint64_t fuzz_fnv1a64(const void *p, size_t n) {
  const unsigned char *c = p;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ULL;
  return h;
}

#endif

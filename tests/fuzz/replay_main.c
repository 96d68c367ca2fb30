/* replay_main.c: a fuzz target as a plain program, for `make test` with any compiler (no libFuzzer).
 *
 *   fuzz_replay_<target> PATH...
 *
 * Each PATH is a file (one input) or a directory (every regular file in it, in name order). A path
 * that does not exist is skipped with a note: a target may have no regressions yet. Every input goes through
 * LLVMFuzzerTestOneInput once; a broken property or a sanitizer report aborts, naming the file last
 * started on stderr. Prints how many inputs ran; exits 0 when all did (and there was at least one), 1 when there was
 * none, 2 on an unreadable file. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path, size_t *count) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return 2;
  }
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? 2 * cap : 4096;
      uint8_t *grown = realloc(buf, cap);
      if (!grown) {
        fprintf(stderr, "%s: out of memory\n", path);
        free(buf);
        fclose(f);
        return 2;
      }
      buf = grown;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    fprintf(stderr, "%s: read error\n", path);
    free(buf);
    return 2;
  }
  fprintf(stderr, "running %s (%zu bytes)\n", path, len);
  /* a copy of exactly len bytes, so that AddressSanitizer sees any read past the input's end */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) {
    free(buf);
    return 2;
  }
  memcpy(exact, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  (*count)++;
  return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int run_dir(const char *dir, size_t *count) {
  DIR *d = opendir(dir);
  if (!d) return 0; /* no such corpus: nothing to replay */
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue; /* ., .., and .gitkeep-style placeholders */
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      char **grown = realloc(names, cap * sizeof *names);
      if (!grown) break;
      names = grown;
    }
    size_t need = strlen(dir) + strlen(e->d_name) + 2;
    if (!(names[n] = malloc(need))) break;
    snprintf(names[n++], need, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, by_name);
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) rc = run_file(names[i], count);
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  size_t count = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    int rc;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "%s: %s (skipped)\n", argv[i], strerror(errno));
      rc = 0;
    } else {
      rc = S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) : run_file(argv[i], &count);
    }
    if (rc) return rc;
  }
  if (count == 0) { /* a replay of nothing proves nothing: the seed corpus is missing */
    fprintf(stderr, "%s: no inputs found in the paths given\n", argc > 0 ? argv[0] : "fuzz_replay");
    return 1;
  }
  printf("%s: %zu inputs replayed, no crash\n", argc > 0 ? argv[0] : "fuzz_replay", count);
  return 0;
}

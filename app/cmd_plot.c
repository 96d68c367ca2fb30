/* cmd_plot.c: `ember plot RUN_DIR [RUN_DIR...] [--out DIR]`: PNG learning curves (common/plot.h)
 * from each run's curves.csv: returns.png (every run overlaid) and losses.png. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app.h"
#include "plot.h"

static void usage(FILE *out) {
  fprintf(out, "usage: ember plot RUN_DIR [RUN_DIR...] [--out DIR]\n"
               "Draws RUN_DIR/curves.csv of each run with gnuplot: DIR/returns.png (train and eval return\n"
               "against env steps, runs overlaid) and DIR/losses.png (each loss against updates).\n"
               "DIR defaults to the first RUN_DIR/plots.\n");
}

int app_plot(int argc, char **argv) {
  const char **runs = calloc((size_t)argc, sizeof *runs);
  if (!runs) return 1;
  size_t n = 0;
  const char *out = NULL;
  int rc = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      usage(stdout);
      goto done;
    }
    if (strcmp(argv[i], "--out") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ember plot: --out needs a directory\n");
        rc = 2;
        goto done;
      }
      out = argv[++i];
    } else if (strncmp(argv[i], "--out=", 6) == 0) {
      out = argv[i] + 6;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "ember plot: unknown option '%s'\n", argv[i]);
      usage(stderr);
      rc = 2;
      goto done;
    } else {
      runs[n++] = argv[i];
    }
  }
  if (n == 0) {
    fprintf(stderr, "ember plot: no run directory given\n");
    usage(stderr);
    rc = 2;
    goto done;
  }
  char def[4096];
  if (!out) {
    snprintf(def, sizeof def, "%s/plots", runs[0]);
    out = def;
  }
  if (mkdir(out, 0755) != 0) {
    struct stat st;
    if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode)) {
      fprintf(stderr, "ember plot: cannot create the output directory %s\n", out);
      rc = 1;
      goto done;
    }
  }
  ember_err err = {0};
  if (plot_runs(runs, n, out, &err) != 0) {
    fprintf(stderr, "ember plot: %s\n", err.msg);
    rc = 1;
    goto done;
  }
  printf("ember plot: %s/returns.png, %s/losses.png\n", out, out);
done:
  free(runs);
  return rc;
}

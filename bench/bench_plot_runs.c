/* bench_plot_runs: PNG curves of several runs (common/plot.h plot_runs), for bench/learning.sh
 * until `ember plot` exists.   bench_plot_runs OUT_DIR RUN_DIR...   Exit status 1 on an error. */
#include <stdio.h>

#include "plot.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_plot_runs OUT_DIR RUN_DIR...\n");
    return 2;
  }
  ember_err err = {0};
  if (plot_runs((const char *const *)(argv + 2), (size_t)(argc - 2), argv[1], &err) != 0) {
    fprintf(stderr, "bench_plot_runs: %s\n", err.msg);
    return 1;
  }
  return 0;
}

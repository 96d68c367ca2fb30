/* plot.h: PNG learning curves from the learner's CSV, drawn by gnuplot (`ember plot`).
 *
 * plot_runs reads RUN_DIR/curves.csv of one or more runs (header row, then one row per log
 * interval; columns env_steps, wall_s, updates, train_return, eval_return, then one per loss; an
 * empty field or "nan" is a missing value) and writes:
 *   OUT_DIR/returns.png   train and evaluation return against environment steps, every run overlaid
 *   OUT_DIR/losses.png    each loss column against updates, one panel per loss (first run)
 * Errors name the file or the program: a missing CSV, a CSV without the env_steps column, gnuplot
 * not installed or failing (its message is passed on). Owns nothing between calls.
 */
#ifndef EMBER_PLOT_H
#define EMBER_PLOT_H

#include <stddef.h>

#include "err.h"

int plot_runs(const char *const *run_dirs, size_t n, const char *out_dir, ember_err *err);

#endif

#include "plot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PLOT_MAX_COLUMNS 64

typedef struct {
  int count;
  char names[PLOT_MAX_COLUMNS][64];
} csv_header;

static int read_header(const char *csv, csv_header *h, ember_err *err) {
  FILE *f = fopen(csv, "r");
  if (!f) return ember_fail(err, EMBER_ENOENT, "no learning curves at '%s': %s", csv, strerror(errno));
  char line[4096];
  if (!fgets(line, sizeof line, f)) {
    fclose(f);
    return ember_fail(err, EMBER_EINVAL, "'%s' is empty", csv);
  }
  fclose(f);
  h->count = 0;
  for (char *save = NULL, *tok = strtok_r(line, ",\r\n", &save); tok && h->count < PLOT_MAX_COLUMNS;
       tok = strtok_r(NULL, ",\r\n", &save))
    snprintf(h->names[h->count++], sizeof h->names[0], "%s", tok);
  return 0;
}

static int column(const csv_header *h, const char *name) {
  for (int i = 0; i < h->count; i++)
    if (strcmp(h->names[i], name) == 0) return i + 1; /* gnuplot counts from 1 */
  return 0;
}

/* gnuplot single-quoted string: only the quote itself needs doubling. */
static void put_quoted(FILE *f, const char *s) {
  fputc('\'', f);
  for (; *s; s++) {
    if (*s == '\'') fputc('\'', f);
    fputc(*s, f);
  }
  fputc('\'', f);
}

static const char *base_name(const char *path) {
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  const char *p = path + n;
  while (p > path && p[-1] != '/') p--;
  return p;
}

static int run_gnuplot(const char *script, ember_err *err) {
  char log_path[] = "/tmp/ember-gnuplot-XXXXXX";
  int log_fd = mkstemp(log_path);
  if (log_fd < 0) return ember_fail(err, EMBER_EIO, "mkstemp: %s", strerror(errno));
  pid_t pid = fork();
  if (pid < 0) {
    close(log_fd), unlink(log_path);
    return ember_fail(err, EMBER_EIO, "fork: %s", strerror(errno));
  }
  if (pid == 0) {
    dup2(log_fd, STDERR_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    execlp("gnuplot", "gnuplot", script, (char *)NULL);
    _exit(127);
  }
  int status;
  waitpid(pid, &status, 0);
  char msg[400] = "";
  lseek(log_fd, 0, SEEK_SET);
  ssize_t n = read(log_fd, msg, sizeof msg - 1);
  msg[n > 0 ? n : 0] = 0;
  close(log_fd), unlink(log_path);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    return ember_fail(err, EMBER_ENOENT, "gnuplot is not installed (Debian: apt-get install gnuplot-nox)");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return ember_fail(err, EMBER_EIO, "gnuplot failed: %s", msg[0] ? msg : "(no message)");
  return 0;
}

int plot_runs(const char *const *run_dirs, size_t n, const char *out_dir, ember_err *err) {
  if (n == 0) return ember_fail(err, EMBER_EINVAL, "no run directory given");
  csv_header headers[16];
  if (n > 16) return ember_fail(err, EMBER_EINVAL, "at most 16 runs in one plot (got %zu)", n);
  char csv[16][4096];
  for (size_t i = 0; i < n; i++) {
    snprintf(csv[i], sizeof csv[i], "%s/curves.csv", run_dirs[i]);
    int rc = read_header(csv[i], &headers[i], err);
    if (rc) return rc;
    if (!column(&headers[i], "env_steps"))
      return ember_fail(err, EMBER_EINVAL, "'%s' has no env_steps column: not an ember learning-curve file", csv[i]);
  }
  if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
    return ember_fail(err, EMBER_EIO, "create %s: %s", out_dir, strerror(errno));

  char script[] = "/tmp/ember-plot-XXXXXX";
  int fd = mkstemp(script);
  if (fd < 0) return ember_fail(err, EMBER_EIO, "mkstemp: %s", strerror(errno));
  FILE *f = fdopen(fd, "w");
  fprintf(f, "set datafile separator ','\nset datafile missing 'nan'\nset terminal pngcairo size 1000,600 noenhanced\n"
             "set grid\nset key outside right top\n");
  fprintf(f, "set output ");
  char out[4200];
  snprintf(out, sizeof out, "%s/returns.png", out_dir);
  put_quoted(f, out);
  fprintf(f, "\nset title 'return'\nset xlabel 'environment steps'\nset ylabel 'episode return'\nplot ");
  int series = 0;
  for (size_t i = 0; i < n; i++) {
    int xs = column(&headers[i], "env_steps");
    /* evaluations are placed where the evaluated policy was published (eval_env_steps), when the
     * file says: a long evaluation finishes many env steps after its policy was taken */
    int xe = column(&headers[i], "eval_env_steps");
    const char *which[2] = {"eval_return", "train_return"};
    for (int k = 0; k < 2; k++) {
      int c = column(&headers[i], which[k]);
      if (!c) continue;
      if (series++) fprintf(f, ", ");
      put_quoted(f, csv[i]);
      char title[300];
      snprintf(title, sizeof title, "%s %s", base_name(run_dirs[i]), k == 0 ? "eval" : "train");
      fprintf(f, " using %d:%d every ::1 with %s title ", k == 0 && xe ? xe : xs, c,
              k == 0 ? "linespoints pt 7 ps 0.6" : "lines dt 2");
      put_quoted(f, title);
    }
  }
  if (!series) fprintf(f, "0 notitle");
  fprintf(f, "\n");

  /* losses of the first run: every column but the standard ones */
  int loss_cols[PLOT_MAX_COLUMNS], nloss = 0;
  static const char *standard[] = {"env_steps",      "wall_s",       "updates",  "train_return", "eval_return",
                                   "eval_env_steps", "eval_version", "eval_std", "eval_episodes"};
  for (int c = 0; c < headers[0].count; c++) {
    int std = 0;
    for (size_t k = 0; k < sizeof standard / sizeof *standard; k++) std |= strcmp(headers[0].names[c], standard[k]) == 0;
    if (!std) loss_cols[nloss++] = c + 1;
  }
  int xu = column(&headers[0], "updates");
  if (nloss && xu) {
    int cols = nloss < 3 ? nloss : 3, rows = (nloss + cols - 1) / cols;
    fprintf(f, "set terminal pngcairo size %d,%d noenhanced\nset output ", 420 * cols, 300 * rows);
    snprintf(out, sizeof out, "%s/losses.png", out_dir);
    put_quoted(f, out);
    fprintf(f, "\nset key off\nset xlabel 'updates'\nset ylabel ''\nset multiplot layout %d,%d\n", rows, cols);
    for (int i = 0; i < nloss; i++) {
      fprintf(f, "set title ");
      put_quoted(f, headers[0].names[loss_cols[i] - 1]);
      fprintf(f, "\nplot ");
      put_quoted(f, csv[0]);
      fprintf(f, " using %d:%d every ::1 with lines\n", xu, loss_cols[i]);
    }
    fprintf(f, "unset multiplot\n");
  }
  fclose(f);
  int rc = run_gnuplot(script, err);
  unlink(script);
  return rc;
}

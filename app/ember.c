/* ember: the one command a user needs. Subcommands:
 *   ember train ...   replay, learner and actors in one process (app/train.c)
 *   ember config      every setting with its default, range and meaning
 *   ember eval        a checkpoint's policy over many episodes (app/cmd_eval.c)
 *   ember plot        PNG learning curves from runs' curves.csv (app/cmd_plot.c)
 *   ember status      a one-screen summary of a running cluster (app/cmd_status.c)
 *   ember keygen      a CurveZMQ key pair (app/cmd_keygen.c) */
#include <stdio.h>
#include <string.h>

#include "algo.h"
#include "app.h"
#include "settings.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: ember <command> [options]\n"
          "commands:\n"
          "  train    train an agent: replay, learner and actors as threads of this process\n"
          "  config   list every setting (--markdown for a table)\n"
          "  eval     a run's newest checkpoint over many episodes: ember eval RUN_DIR [--episodes N]\n"
          "  plot     PNG learning curves of runs: ember plot RUN_DIR... [--out DIR]\n"
          "  status   summary of a running cluster: ember status ENDPOINT...\n"
          "  keygen   a CurveZMQ key pair: ember keygen DIR NAME\n"
          "algorithms (--algo):\n");
  for (const algo_ops *const *a = algo_all(); *a; a++) fprintf(out, "  %-8s %s\n", (*a)->name, (*a)->summary);
  fprintf(out, "`ember <command> --help` says more. Settings come from --config FILE, EMBER_<SECTION>_<KEY>\n"
               "variables and --set section.key=value (docs/configuration.md).\n");
}

int app_config(int argc, char **argv) {
  bool markdown = argc > 2 && strcmp(argv[2], "--markdown") == 0;
  if (argc > 2 && !markdown) {
    fprintf(stderr, "usage: ember config [--markdown]\n");
    return 2;
  }
  app_settings s;
  ember_err err = {0};
  if (app_settings_init(&s, &err) != 0) {
    fprintf(stderr, "ember config: %s\n", err.msg);
    return 1;
  }
  app_print_settings(&s, stdout, markdown);
  app_settings_free(&s);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "train") == 0) return app_train(argc, argv);
  if (strcmp(argv[1], "config") == 0) return app_config(argc, argv);
  if (strcmp(argv[1], "eval") == 0) return app_eval(argc, argv);
  if (strcmp(argv[1], "plot") == 0) return app_plot(argc, argv);
  if (strcmp(argv[1], "status") == 0) return app_status(argc, argv);
  if (strcmp(argv[1], "keygen") == 0) return app_keygen(argc, argv);
  if (strcmp(argv[1], "--version") == 0) {
    printf("ember %s\n", EMBER_VERSION);
    return 0;
  }
  fprintf(stderr, "ember: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}

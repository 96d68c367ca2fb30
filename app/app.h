/* app.h: the subcommands of the `ember` program (app/ember.c dispatches to them). Each takes the
 * whole argv (argv[1] is the subcommand) and returns the process exit code. */
#ifndef EMBER_APP_H
#define EMBER_APP_H

#include "settings.h"

int app_train(int argc, char **argv);
int app_config(int argc, char **argv);
int app_plot(int argc, char **argv);    /* cmd_plot.c */
int app_status(int argc, char **argv);  /* cmd_status.c */
int app_keygen(int argc, char **argv);  /* cmd_keygen.c */
int app_eval(int argc, char **argv);    /* cmd_eval.c */

/* The local source of `ember train --deterministic` (cmd_deterministic.c; the design is in its
 * header comment): one actor and a replay table in the learner's thread, in lock-step with it.
 * det_source_new makes one from the settings (refuses a prioritized sampler); det_source_attach
 * fills a learner_source for learner_set_source. The learner is borrowed and must outlive it. */
typedef struct det_source det_source;
det_source *det_source_new(const app_settings *s, learner_t *learner, ember_err *err);
void det_source_attach(det_source *d, learner_source *out);
void det_source_destroy(det_source **d_p);

#endif

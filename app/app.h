/* app.h: the subcommands of the `ember` program (app/ember.c dispatches to them). Each takes the
 * whole argv (argv[1] is the subcommand) and returns the process exit code. */
#ifndef EMBER_APP_H
#define EMBER_APP_H

int app_train(int argc, char **argv);
int app_config(int argc, char **argv);

#endif

/* ember-actor: one actor as its own process (actor.h), configured like every ember program
 * (--config FILE, EMBER_<SECTION>_<KEY> variables, --set section.key=value). actor.task defaults to
 * run.task, so one YAML file or `--task T` configures a whole cluster. SIGTERM and SIGINT stop it
 * cleanly (the partial batch is handed over and acks are awaited for up to actor.drain_ms). */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "actor.h"
#include "log.h"
#include "program.h"

static void stop(void *actor) { actor_stop(actor); }

/* actor.id 0: an id from the host name and pid, so `docker compose up --scale actor=8` needs no
 * per-replica settings. FNV-1a into [1, 1e9]: two of a thousand actors collide with odds ~5e-4. */
static int64_t derived_actor_id(void) {
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const char *c = host; *c; c++) h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
  for (int i = 0; i < 4; i++) h = (h ^ (uint64_t)((unsigned)getpid() >> (8 * i) & 0xff)) * 0x100000001b3ULL;
  return (int64_t)(h % 1000000000ULL) + 1;
}

static void usage(FILE *out) {
  fprintf(out, "usage: ember-actor [--task T] [--seed S] [--role train|eval] [--config FILE]\n"
               "                   [--set section.key=value ...]\n"
               "Runs one actor: K environments of a task, acting with the learner's latest Params and\n"
               "streaming transitions to the replay server. With --role eval (actor.role) it is the\n"
               "evaluator instead: no replay, only evaluations of the learner's policy (actor.eval_episodes\n"
               "complete deterministic episodes every actor.eval_every_steps env steps), reported to the\n"
               "learner. `ember config` lists every setting (sections actor, run, metrics, security).\n");
}

int main(int argc, char **argv) {
  program p;
  int exit_code = program_init(&p, "actor", argc, argv, usage);
  if (exit_code >= 0) return exit_code;
  actor_config *cfg = &p.settings.actor;
  if (!cfg->task[0]) snprintf(cfg->task, sizeof cfg->task, "%s", p.settings.run.task);
  if (cfg->id == 0) cfg->id = derived_actor_id();
  /* The policy forward is a small GEMM per step: threads would cost more than they save, and the
   * env loop is this process's one busy thread. */
  openblas_set_num_threads(1);
  ember_err err = {0};
  int rc = 1;
  actor_t *a = actor_new(cfg, p.zmq, p.metrics, &err);
  if (!a) {
    log_event(LOG_ERROR, "actor", "start_failed", LF_STR("error", err.msg));
  } else if (program_serve_metrics(&p, p.settings.metrics.actor_port) == 0) {
    program_on_stop(stop, a);
    rc = actor_run(a, &err) == 0 ? 0 : 1;
    program_on_stop(NULL, NULL);
    if (rc) log_event(LOG_ERROR, "actor", "failed", LF_STR("error", err.msg));
  }
  actor_destroy(&a);
  program_fini(&p);
  return rc;
}

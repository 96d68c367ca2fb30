/* learner_internal.h: the learner's state and the functions its files share (not part of the API).
 *
 * The learner is three files along what it does:
 *   learner.c             settings, lifecycle, sockets, publishing, the control socket, the loop
 *   learner_report.c      what it reports: training episodes, complete evaluations (evals.csv, the
 *                         stop criterion), curves.csv, TensorBoard, the progress log line
 *   learner_checkpoint.c  checkpoints: writing, resuming, and a checkpoint's policy alone
 * Everything here is owned by the learner_t (see learner.h for ownership and thread-safety).
 */
#ifndef EMBER_LEARNER_INTERNAL_H
#define EMBER_LEARNER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "env_task.h"
#include "learner.h"
#include "metrics.h"
#include "net.h"
#include "replay_client.h"
#include "tb.h"

/* The latest complete evaluation, as curves.csv, TensorBoard, Prometheus and the progress line show it. */
typedef struct {
  uint64_t version;   /* the policy version evaluated; 0 = none yet */
  double env_steps;   /* env steps at that version's publication (NAN when not known) */
  double mean, std;   /* over its episodes; std is the sample standard deviation (NAN for one episode) */
  uint32_t episodes;
  uint32_t pad;
} learner_eval_summary;

#define TRAIN_WINDOW 10
#define PUB_RING 4096 /* versions whose env steps at publication are remembered (eval_env_steps) */
#define MAX_ACTORS 1024

typedef struct {
  uint64_t id, version;
  double last_seen_s;
  metric *version_gauge; /* learner_actor_policy_version{actor="<id>"} */
  metric *age_gauge;     /* learner_actor_last_seen_seconds{actor="<id>"} */
} actor_seen;

struct learner {
  run_config run;
  learner_config cfg;
  const algo_ops *ops;
  void *algo;
  const env_spec *spec;
  void *zmq, *pub, *control;
  replay_sample_client *sampler;
  char params_ep[CONFIG_STRING_MAX], control_ep[CONFIG_STRING_MAX];

  metrics_registry *metrics, *own_metrics;
  bool resumed_from_checkpoint; /* versions may then continue past what actors report */
  metric *m_updates, *m_version, *m_env_steps, *m_refused, *m_episodes, *m_eval_episodes, *m_msgs_refused,
      *m_params_sent, *m_actors, *m_lag, *m_train_return, *m_eval_return, *m_updates_per_s, *m_env_steps_per_s,
      *m_eval_std, *m_eval_n, *m_eval_steps, *m_eval_version, *m_evaluations,
      *m_stats[ALGO_MAX_STATS];

  float *terminated, *truncated, *priorities; /* [batch_size] */
  algo_stats stats;
  double stat_sum[ALGO_MAX_STATS];
  uint64_t stat_rows;
  int stat_count;

  Ember__Params current; /* the last published Params (version 0: none yet) */
  uint64_t version, updates, env_steps;

  double train_returns[TRAIN_WINDOW];
  int train_n, train_next;
  learner_eval_summary eval; /* the latest complete evaluation (version 0: none yet) */
  uint64_t evaluations;        /* complete evaluations received */
  bool stopped_at_return;      /* cfg.stop_on_return ended the run */
  uint64_t pub_version[PUB_RING], pub_steps[PUB_RING]; /* version v at [v % PUB_RING] */
  uint64_t episodes, eval_episodes, batches_refused;

  actor_seen actors[MAX_ACTORS];
  int n_actors;

  FILE *csv, *evals_csv;
  char csv_path[CONFIG_STRING_MAX + 32], evals_path[CONFIG_STRING_MAX + 32];
  bool csv_ready;      /* header written or kept (after the resume decision) */
  tb_writer *tb;
  char ckpt_dir[CONFIG_STRING_MAX];
  double last_ckpt;
  bool resume_done, running;
  uint64_t env_base;   /* added to replay's count when replay restarted below what was seen */
  double wall_offset;  /* wall time of the run before the resume */
  learner_source src;
  bool has_src;

  double t0, last_log, last_csv, last_stats, last_progress, last_refusal_log, last_wait_log, last_control_log;
  uint64_t updates_at_last_log, steps_at_last_log;
  double rate_updates, rate_steps;

  atomic_bool stop;
  pthread_mutex_t progress_mu;
  learner_progress progress;
};

static inline double learner_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* learner.c */
int learner_mkdir_p(const char *path, ember_err *err);
void learner_note_actor(learner_t *l, uint64_t id, uint64_t version, bool has_version);
void learner_refuse_message(learner_t *l, const net_route *route, int code, const char *what);

/* learner_report.c */
int learner_open_csv(learner_t *l, ember_err *err);
/* Cuts curves.csv to curves_bytes and evals.csv to evals_bytes (0: fresh files with their headers). */
void learner_csv_reset(learner_t *l, uint64_t curves_bytes, uint64_t evals_bytes);
/* An EvaluationReport from the control socket: checked (refused with an ErrorReply naming what was
 * wrong), then recorded as learner_report_evaluation does. */
void learner_take_evaluation(learner_t *l, const Ember__EvaluationReport *r, const net_route *route);
double learner_train_return(const learner_t *l);
void learner_write_csv_row(learner_t *l, double t);
void learner_write_tb(learner_t *l);
void learner_log_progress(learner_t *l);

#endif

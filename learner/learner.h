/* learner.h: the learner: pulls sample batches from replay, runs an algorithm's E-step and M-step,
 * publishes the acting policy to the actors, collects their episode reports, logs progress and
 * writes training curves. The same code runs embedded (a thread of `ember train`, over inproc://)
 * and standalone (`ember-learner`, over tcp:// or ipc://).
 *
 *   run_config run; learner_config cfg; + the algorithm's own section (algo_ops.settings)
 *   learner_t *l = learner_new(&run, &cfg, algo_settings, zmq_ctx, metrics, &err);
 *   thread: learner_run(l, &err);   until run->steps env steps, max_updates, or learner_stop
 *   any thread or a signal handler: learner_stop(l);
 *   any thread: learner_get_progress(l, &p);
 *   learner_destroy(&l);
 *
 * The loop (one iteration = one update):
 *   1. answer what waits on the control socket (non-blocking).
 *   2. take the next SampleBatch from the replay sample client, which keeps `prefetch` requests
 *      outstanding, so the next batch travels while this one is computed.
 *   3. algo e_step(batch) then m_step(batch); a batch the algorithm refuses (non-finite, wrong shape)
 *      is logged once per reason per 10 s, counted (learner_batches_refused_total) and skipped: the
 *      parameters are unchanged. With send_priorities (prioritized replay), the algorithm's new
 *      priorities for the batch's keys go back to the server.
 *   4. every publish_every updates, once env steps reach random_steps: export the policy as Params
 *      (version + 1, with the env steps so far) and publish it. Before the first Params the actors
 *      act uniformly at random (learner.random_steps: the warm-up of the standard SAC loop).
 *   4b. a complete evaluation whose mean reaches stop_at_return (with stop_on_return) stops the run
 *      as learner_stop does (a final checkpoint; progress.stopped_at_return).
 *   5. every stats_interval_s: ask replay for its inserted-transition count (= env steps); stop once
 *      it reaches run->steps. Every csv_interval_s a CSV row, every log_interval_s a log line.
 *
 * Sockets (docs/protocol.md, "Learner sockets"):
 *   params_endpoint (PUB, bound): Params, one Envelope per message, no topic.
 *   control_endpoint (ROUTER, bound): ParamsRequest -> Params when newer than have_version (else
 *     nothing); EpisodeReport -> nothing (training returns); EvaluationReport -> nothing (a complete
 *     evaluation: evals.csv, the latest-evaluation figures, the stop criterion; a malformed one is
 *     refused with an ErrorReply naming what was wrong); Hello, Heartbeat -> nothing (the
 *     peer's policy version, for staleness); StatsRequest -> Stats (role "learner"). Anything else
 *     and undecodable messages are refused: counted, logged once per 10 s, ErrorReply when the
 *     message decoded.
 *   replay_endpoint: the replay server's sample endpoint (the sample client's DEALER connects).
 *
 * Run directory (run->run_dir, created when missing; "" = none): curves.csv with columns
 *   env_steps, wall_s, updates, train_return, eval_return, eval_env_steps, eval_version, eval_std,
 *   eval_episodes, <algo stat names...>
 * (a row every csv_interval_s; the eval_ columns are the latest complete evaluation's, NaN, written
 * "nan", before the first), evals.csv with one row per complete evaluation as it arrives:
 *   version, env_steps (at its publication), wall_s, updates, episodes, mean, std, min, max,
 *   mean_length, terminated, actor_id
 * learner_state.bin (algo save) at
 * the end of the run, tb/ (TensorBoard event files with the same scalars as the CSV, flushed every
 * log interval, when cfg->tensorboard) and checkpoints/ (below).
 *
 * Checkpoints and exact resume: every checkpoint_interval_s and when the loop ends (run.steps,
 * max_updates, learner_stop: SIGTERM in the programs), the whole learner state is written with
 * common/checkpoint.h to checkpoint_dir (default run_dir/checkpoints) as learner-<updates>.ckpt,
 * keeping checkpoint_keep files. Records, in order:
 *   identity      format, algorithm, task, obs/act dims, whether a local source was attached
 *   counters      updates, parameter version, env steps, episodes, the returns window, the latest
 *                 evaluation, wall time, the CSV row accumulators and the CSV's length in bytes
 *   publications  where recent versions were published (format 2 on); the latest evaluation whole,
 *                 the evaluations received and evals.csv's length (format 3 on)
 *   algo          the algorithm's save (every network, optimiser moments, temperatures, RNG)
 *   params        the last published Params (so a ParamsRequest after resume gets exactly them)
 *   source        the local source's own state (learner_source.save), when one is attached
 * With cfg->resume, learner_resume (or learner_run, if not called before) loads the newest file that
 * verifies (corrupt or truncated ones are skipped with a log line): the version continues from the
 * saved one (the next Params is version + 1, never a version already used), curves.csv and evals.csv are cut
 * back to the lengths they had at the checkpoint and appended to, and a "resumed" log line names the file,
 * version, updates and env steps. A checkpoint of another algorithm, task or shape is refused with
 * an error naming both (EMBER_ESHAPE), and so is one with(out) source state resumed without (with)
 * a source. What the sample client has in flight is not saved: after a resume the learner simply
 * asks again. Env steps come from replay: when replay's count is below the saved one (replay
 * restarted without its snapshot), the learner counts on from the saved value.
 *
 * Ownership: the learner owns its algorithm instance, sockets, sample client and buffers; the zmq
 * context and the metrics registry are the caller's and must outlive it (metrics may be NULL: it
 * keeps its own). The config structs are copied. Thread-safety: learner_new in any thread;
 * learner_run and learner_destroy in one thread; learner_stop and learner_get_progress from anywhere.
 * Allocation: all buffers in learner_new, sized for batch_size; the update loop allocates nothing
 * except the decoded SampleBatch (in the sample client's reused arena) and, every publish_every
 * updates, the exported Params and its encoding.
 */
#ifndef EMBER_LEARNER_H
#define EMBER_LEARNER_H

#include <stdbool.h>
#include <stdint.h>

#include <stdio.h>

#include "algo.h"
#include "config.h"
#include "ember.pb-c.h"
#include "env_task.h"
#include "err.h"
#include "metrics.h"

/* The "run" section: what is trained and for how long, shared by `ember train`'s components. */
typedef struct {
  char task[CONFIG_STRING_MAX];
  char algo[CONFIG_STRING_MAX];
  int64_t steps;                    /* env steps (transitions stored in replay) to train for */
  int64_t seed;
  char run_dir[CONFIG_STRING_MAX];  /* curves, config and final state; "" = none */
} run_config;

extern const config_section run_config_section;

/* The "learner" section. */
typedef struct {
  int64_t batch_size;
  int64_t publish_every;            /* P: publish Params every P updates */
  int64_t prefetch;                 /* SampleRequests kept outstanding */
  int64_t max_updates;              /* stop after this many updates; 0 = no limit */
  char params_endpoint[CONFIG_STRING_MAX];
  char control_endpoint[CONFIG_STRING_MAX];
  char replay_endpoint[CONFIG_STRING_MAX]; /* replay's sample endpoint */
  double log_interval_s;            /* progress log line; 0 = none */
  double csv_interval_s;            /* CSV row; 0 = only at the end */
  double stats_interval_s;          /* how often env steps are asked of replay */
  int64_t sample_timeout_ms;        /* a wait this long for a batch is logged (and retried) */
  int64_t max_message_bytes;        /* inbound limit on the control socket */
  bool save_state;                  /* write learner_state.bin into run_dir at the end */
  bool send_priorities;             /* PriorityUpdate after each update (prioritized replay) */
  double checkpoint_interval_s;     /* periodic checkpoints; 0 = only when the loop ends */
  char checkpoint_dir[CONFIG_STRING_MAX]; /* "" = run_dir/checkpoints (no run_dir: no checkpoints) */
  int64_t checkpoint_keep;          /* newest files kept */
  bool checkpoints;                 /* write checkpoints at all */
  bool resume;                      /* resume from the newest valid checkpoint at start */
  bool tensorboard;                 /* write run_dir/tb/ event files */
  int64_t random_steps;             /* no Params before this many env steps: the actors act uniformly at
                                       random until then (the learner already updates) */
  bool stop_on_return;              /* stop once a complete evaluation's mean reaches stop_at_return */
  double stop_at_return;
} learner_config;

extern const config_section learner_config_section;

typedef struct learner learner_t;

/* The task's functions as learner_new hands them to the algorithm (algo_context.task), for
 * model-based algorithms that score transitions their model predicted: the termination function
 * (env_spec_terminated) for every task, exact or approximate as spec->terminated_exact says (only
 * hopper's is approximate: docs/tasks.md, "The learner's view"); the reward function only where
 * spec->reward_exact (elsewhere NULL: the algorithm learns a reward model). spec must come from
 * env_spec_find / env_spec_at. Pure; the result points at static functions and at spec. */
algo_task_fns learner_task_fns(const env_spec *spec);

/* Finds the algorithm (run->algo) and the task (run->task, for its dims), creates the algorithm
 * with algo_settings (its config section's struct, or NULL for its defaults), binds the PUB and
 * ROUTER sockets, connects the sample client, opens the CSV. NULL with err set (unknown algorithm or
 * task, an endpoint libzmq refuses, a run_dir that cannot be written). */
learner_t *learner_new(const run_config *run, const learner_config *cfg, const void *algo_settings, void *zmq_ctx,
                       metrics_registry *metrics, ember_err *err);

/* Runs the loop until run->steps env steps, cfg->max_updates, or learner_stop. Returns 0, or the
 * error that stopped it with err set. */
int learner_run(learner_t *l, ember_err *err);

/* Asks learner_run to return (within one update or one poll interval). Async-signal-safe. */
void learner_stop(learner_t *l);

void learner_destroy(learner_t **l_p);

typedef struct {
  uint64_t env_steps, updates, version;
  double wall_s;
  double updates_per_s, env_steps_per_s;  /* over the last progress interval */
  double train_return;      /* mean of the last 10 training episodes (NaN before the first) */
  double eval_return;       /* mean of the latest complete evaluation (NaN before the first) */
  double eval_std;          /* the standard deviation of its returns (NaN for one episode) */
  double eval_env_steps;    /* env steps when its version was published (NaN when not known) */
  uint32_t eval_n;          /* its episodes */
  uint64_t eval_version;    /* the policy version it evaluated (0: none yet) */
  uint64_t evaluations;     /* complete evaluations received */
  uint64_t episodes, eval_episodes, batches_refused, actors_seen;
  bool stopped_at_return;   /* learner.stop_on_return ended the run */
  bool done;                /* learner_run has returned */
} learner_progress;

/* A consistent copy of the progress (updated every 100 ms and at every report). Thread-safe. */
void learner_get_progress(learner_t *l, learner_progress *out);

/* Loads the newest valid checkpoint when cfg->resume (see above); *resumed = 1 when one was
 * loaded. Safe to call once before learner_run (which otherwise calls it first); 0 when there is
 * nothing to resume. Errors: the checkpoint's identity differs (EMBER_ESHAPE, naming both), a
 * record the algorithm or the source refuses. Same thread as learner_run. */
int learner_resume(learner_t *l, int *resumed, ember_err *err);

/* Writes a checkpoint now (same thread as learner_run, between updates; learner_run does this
 * itself periodically and at the end). */
int learner_checkpoint(learner_t *l, ember_err *err);

/* The policy of a learner checkpoint (`ember eval`): its last published Params, without building the
 * algorithm. path is a directory (its newest checkpoint that verifies) or one checkpoint file (that
 * file, which must verify). On success *params is the caller's, freed with
 * ember__params__free_unpacked(*params, NULL), and info (may be NULL) says whose it is. Errors:
 * EMBER_ENOENT (the directory holds no checkpoint that verifies, or the path does not exist),
 * EMBER_ECORRUPT (the file does not verify), EMBER_ESCHEMA (not a learner checkpoint),
 * EMBER_ESTATE (it was written before the first publication: no policy yet), EMBER_ECORRUPT (its
 * Params do not decode), EMBER_ENOMEM. */
typedef struct {
  char path[CONFIG_STRING_MAX + 64]; /* the file read */
  char algo[64], task[64];
  uint64_t updates, version, env_steps;
} learner_ckpt_info;

int learner_checkpoint_params(const char *path, Ember__Params **params, learner_ckpt_info *info, ember_err *err);

/* ---- a local batch source (`ember train --deterministic`) ---------------------------------------
 * Instead of sampling from a replay server, the learner can take its batches from a source running
 * in its own thread: learner_run then calls next() for every update, with no sockets, timers or
 * prefetch between them, so the run is a function of its inputs alone. next() returns 0 with a
 * batch (valid until the next call) and the env steps made so far, LEARNER_SOURCE_DONE when
 * nothing more will come, or a negative error (which ends learner_run with it). published() is
 * called with every Params the learner publishes (restored = false) and, after a resume, with the
 * restored last Params (restored = true). save/load put the source's state into the learner's
 * checkpoints (after the learner's own records) and read it back. The source's functions run on
 * learner_run's thread; ctx stays the caller's. */
#define LEARNER_SOURCE_DONE 1

typedef struct {
  void *ctx;
  int (*next)(void *ctx, const algo_batch **batch, uint64_t *env_steps, ember_err *err);
  int (*published)(void *ctx, const Ember__Params *params, bool restored, ember_err *err);
  int (*save)(void *ctx, FILE *out, ember_err *err);
  int (*load)(void *ctx, FILE *in, ember_err *err);
} learner_source;

/* Attaches a source (copied) before learner_resume / learner_run. EMBER_ESTATE afterwards. */
int learner_set_source(learner_t *l, const learner_source *src, ember_err *err);

/* An episode finished by the caller's own actor (a source): counted like an EpisodeReport. Same
 * thread as learner_run. */
void learner_report_episode(learner_t *l, uint64_t actor_id, uint64_t policy_version, double episode_return,
                            bool evaluation);

/* Checks an EvaluationReport from the wire as the learner does before recording it: 1 to
 * LEARNER_MAX_EVAL_EPISODES returns, as many lengths and terminated flags, policy_version >= 1, every
 * return finite. 0, or EMBER_ESHAPE / EMBER_ENONFINITE with `why` (cap bytes) naming what was wrong.
 * Needs no learner (the fuzz targets call it alone). */
#define LEARNER_MAX_EVAL_EPISODES 100000
int learner_check_evaluation(const Ember__EvaluationReport *r, char *why, size_t cap);

/* One complete evaluation made by the caller (a source): n episodes of the deterministic policy of
 * `version`, published at env_steps; returns [n] finite, lengths and terminated [n] (may be NULL).
 * Recorded like an EvaluationReport. EMBER_EINVAL (n < 1 or too large), EMBER_ENONFINITE (a return).
 * Same thread as learner_run. */
int learner_report_evaluation(learner_t *l, uint64_t actor_id, uint64_t version, uint64_t env_steps, int n,
                              const double *returns, const int32_t *lengths, const uint8_t *terminated,
                              ember_err *err);

/* The last published Params (NULL before the first publication), owned by the learner and valid
 * until the next publication or learner_destroy. Same thread as learner_run, or after it returned. */
const Ember__Params *learner_last_params(const learner_t *l);

/* The bound endpoints (with the real port for tcp://...:0 or :*), valid until destroy. */
const char *learner_params_endpoint(const learner_t *l);
const char *learner_control_endpoint(const learner_t *l);

#endif

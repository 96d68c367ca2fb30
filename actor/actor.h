/* actor.h: the actor: K environments of one task, the acting policy, and the sockets that feed
 * replay and hear from the learner. The same code runs embedded (threads of `ember train`, over
 * inproc://) and standalone (`ember-actor`, over tcp:// or ipc://).
 *
 *   actor_config cfg;  config_defaults / config_load with actor_config_section (keys in actor.c)
 *   actor_t *a = actor_new(&cfg, zmq_ctx, metrics, &err);   loads the model, makes the envs, connects
 *   thread: actor_run(a);            the env loop, until stopped or max_env_steps; returns 0 or EMBER_E*
 *   any thread or a signal handler: actor_stop(a);
 *   after run returned: actor_get_stats(a, &st);  actor_destroy(&a);
 *
 * Two roles (actor.role):
 *   train (default): K envs with the stochastic policy, transitions to replay, as below.
 *   eval: no training envs and no replay: it only evaluates (evaluation.h). The first version whose
 *      Params.env_steps (env steps at its publication) reaches the next multiple of eval_every_steps
 *      is played for eval_episodes complete episodes of the deterministic policy, side by side, as
 *      fast as the envs go; once all have finished, one EvaluationReport (every episode's return,
 *      length and ending, the version and its env steps) goes to the learner. One evaluation at a
 *      time, each to its end: a due version arriving meanwhile waits, and a newer due one replaces
 *      it (counted as skipped). Idle, it waits on its sockets rather than spinning. `ember train`
 *      runs one as a thread of its own; clusters run `ember-actor --set actor.role=eval`. Training
 *      actors never evaluate, so evaluations neither slow nor change their data.
 *
 * The loop of the train role (one iteration = one step of all K envs):
 *   1. take in Params waiting on the SUB or DEALER socket (non-blocking; never waits for the learner).
 *      Newer Params of the expected task, dims and kind are swapped in; others are refused, logged
 *      and counted, and acting continues with the policy held. Older or equal versions are ignored.
 *   2. act: one batched policy forward over the K observations (stochastic); before the first
 *      Params, uniform random actions in [-1, 1] with policy_version 0 and behaviour log-prob
 *      -act_dim * log 2 (the density of the uniform on [-1, 1]^act_dim).
 *   3. step the K envs; append K transitions (obs, action, reward, next_obs = the true final
 *      observation at an episode's end, terminated, truncated, behaviour log-prob) to the current
 *      TransitionBatch, except those of a physics fault: a step env.h flags (MuJoCo found NaN/Inf or
 *      ran out of contact/constraint room; the env truncates and resets it) or whose obs, next_obs
 *      or reward is not finite is not data. It is dropped, counted in transitions_physics_fault (a
 *      part of transitions_dropped), and logged when a burst of faults starts (`physics_fault`) and
 *      when it has been quiet for a second (`physics_faults_ended`, with the burst's count).
 *      A batch is handed to the replay insert client when it holds transitions_per_batch rows, or
 *      earlier when the policy version changes (every batch is played by exactly one version, the
 *      one in its policy_version).
 *   4. finished episodes: an EpisodeReport to the learner (DEALER), logged at debug level; a progress
 *      line every log_interval_s.
 *   5. (no evaluation here: that is the eval role's.)
 *   6. the insert client sends what its credits allow and reads acks (non-blocking); Heartbeat
 *      every heartbeat_ms; ParamsRequest again after params_request_ms without any Params.
 *      With replay_wait_ms > 0 (off by default), an actor whose queue is full holds its training
 *      envs up to that long per step for room in it (an ack, a timed-out batch's credit, or the link
 *      taking a queued batch): replay's rate limiter then paces the actor instead of the actor making
 *      transitions only to drop them. The hold is waited in slices of at most 50 ms, and between them
 *      the loop goes on reading Params, sending heartbeats and requests, and honouring actor_stop. This holds too when a short ack_timeout_ms has written off
 *      everything in flight while the link is still backed up, and when no replay is there at all:
 *      the loop then makes one step per replay_wait_ms and drops the oldest queued batch for each
 *      new one, counted.
 * On start: with nice > 0, the calling thread's scheduling niceness is set to it (Linux, per thread:
 * setpriority on its tid; a failure is logged as a warning naming the error, and the run goes on);
 * then Hello and ParamsRequest on the DEALER (a late joiner need not wait for a broadcast).
 * On stop: the partial batch is handed over and the insert client flushed for up to drain_ms.
 *
 * Sockets: SUB connected to params_endpoint (Params); DEALER connected to control_endpoint (Hello,
 * ParamsRequest, Heartbeat, EpisodeReport out; Params, ErrorReply in); the replay insert client's
 * DEALER connected to replay_endpoint (docs/protocol.md, "Actor sockets").
 *
 * Accounting (metrics, labelled actor="<id>"):
 *   actor_transitions_made_total = stored + rejected + dropped + unconfirmed + in flight + queued
 *                                  + pending (rows not yet handed to the client)
 * holds at every moment; actor_get_stats returns every term of it.
 *
 * Allocation: everything is allocated in actor_new (and the policy on the first Params). The step
 * loop allocates nothing; receiving Params (protobuf decode) and sending a message (one encode
 * buffer, owned by libzmq) allocate per message, not per step.
 *
 * Ownership: the actor owns its envs, policies, buffers and sockets; the zmq context and the
 * metrics registry are the caller's and must outlive the actor (metrics may be NULL: the actor then
 * keeps a registry of its own). Thread-safety: actor_new may run in any thread, but loads a MuJoCo
 * model, so create actors one at a time; actor_run, actor_get_stats and actor_destroy in one thread
 * (the sockets migrate to the thread that runs, as ZeroMQ allows with a memory barrier such as
 * pthread_create); actor_stop from anywhere, including a signal handler (it sets an atomic flag).
 */
#ifndef EMBER_ACTOR_H
#define EMBER_ACTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "metrics.h"

typedef struct {
  int64_t id;                      /* actor id (>= 1), in every batch and report */
  char task[CONFIG_STRING_MAX];    /* "pendulum", "half_cheetah", ... */
  int64_t num_envs;                /* K: envs stepped together, one policy GEMM over K rows */
  int64_t seed;                    /* run seed; env streams RNG_STREAM_ENV + id*K + i */
  char model_dir[CONFIG_STRING_MAX];/* "" = EMBER_MODEL_DIR or the built-in search (env.h) */
  int64_t max_episode_steps;       /* 0 = the task's own time limit */
  double ctrl_noise_std;           /* Gaussian noise on the applied controls, in half ranges (env.h);
                                      every env of the actor, training and evaluation; 0 = none */
  char params_endpoint[CONFIG_STRING_MAX];  /* learner PUB (Params) */
  char control_endpoint[CONFIG_STRING_MAX]; /* learner ROUTER (Hello, requests, reports) */
  char replay_endpoint[CONFIG_STRING_MAX];  /* replay insert ROUTER */
  int64_t transitions_per_batch;   /* rows per TransitionBatch */
  int64_t max_in_flight;           /* batches sent without an InsertAck (credits) */
  int64_t queue_batches;           /* batches waiting for credit; beyond this the oldest is dropped */
  int64_t ack_timeout_ms;          /* a batch unacknowledged this long is written off as unconfirmed */
  int64_t replay_wait_ms;          /* 0: never wait for replay (drop when the queue is full); > 0: when
                                      the queue is full, hold the training envs up to this long for
                                      room before the next step (pace to replay's rate limiter) */
  char role[CONFIG_STRING_MAX];    /* "train" or "eval" (below) */
  int64_t eval_every_steps;        /* eval role: the first version published at or after every multiple
                                      of this many env steps is evaluated; 0 = every version while idle */
  int64_t eval_episodes;           /* eval role: episodes per evaluation (side by side, reported together) */
  int64_t eval_every_versions_unused; /* the key of older embers, read and ignored (old config.yaml files) */
  int64_t heartbeat_ms;
  int64_t params_request_ms;       /* ask for Params again after this long without any */
  int64_t log_interval_s;          /* progress line period; 0 = none */
  int64_t max_env_steps;           /* stop after this many env steps (all K envs); 0 = until stopped */
  int64_t drain_ms;                /* on stop, wait this long for acks of what is in flight */
  int64_t max_message_bytes;       /* size limit on every socket; 0 = net's default */
  int64_t nice;                    /* 0..19: niceness of the thread that runs actor_run; 0 = inherited */
} actor_config;

extern const config_section actor_config_section;

typedef struct actor actor_t;

/* Loads the task's model, creates the envs (and the eval envs), connects the sockets and registers
 * the metrics. Nothing is sent until actor_run. NULL with err set on a bad config (naming the key),
 * an unknown task, a model that does not load, or an endpoint libzmq refuses. */
actor_t *actor_new(const actor_config *cfg, void *zmq_ctx, metrics_registry *metrics, ember_err *err);

/* Runs the loop until actor_stop or max_env_steps, then hands over the partial batch and flushes for
 * up to drain_ms. Returns 0, or the error that stopped it (an env failure) with err set. */
int actor_run(actor_t *a, ember_err *err);

/* Asks actor_run to return (within one loop iteration). Async-signal-safe. */
void actor_stop(actor_t *a);

void actor_destroy(actor_t **a_p);

typedef struct {
  uint64_t env_steps;              /* transitions made: K per loop iteration */
  uint64_t transitions_pending;    /* in the actor's current batch, not yet handed over */
  uint64_t transitions_sent;       /* handed to the wire by the insert client */
  uint64_t transitions_stored;     /* acknowledged stored by replay */
  uint64_t transitions_rejected;   /* acknowledged refused by replay */
  uint64_t transitions_dropped;    /* dropped: by the insert client (queue full, replay gone), and
                                      transitions_physics_fault */
  uint64_t transitions_physics_fault;/* of those, dropped as physics faults (never handed over) */
  uint64_t transitions_unconfirmed;/* sent, never acknowledged within ack_timeout_ms */
  uint64_t transitions_in_flight;  /* sent, ack awaited */
  uint64_t transitions_queued;     /* waiting for credit */
  uint64_t batches_made;
  uint64_t episodes, eval_episodes, evaluations;
  uint64_t evaluations_skipped;    /* eval role: due versions replaced by a newer due one while busy */
  uint64_t evaluations_abandoned;  /* eval role: non-finite actions or an env failure ended one */
  uint64_t params_received, params_applied, params_refused, params_stale;
  uint64_t messages_refused;       /* undecodable or unexpected messages on the learner sockets */
  uint64_t reports_dropped;        /* EpisodeReports/heartbeats the DEALER could not queue */
  uint64_t nonfinite_actions;      /* steps whose policy actions were not finite (uniform ones used) */
  uint64_t replay_wait_us;         /* time spent waiting for replay (replay_wait_ms > 0 only) */
  uint64_t policy_version;         /* 0 until the first Params */
  double last_episode_return;      /* of the last finished training episode (NAN before) */
  double last_eval_return;         /* mean return of the last complete evaluation (NAN before) */
  uint64_t last_eval_version;      /* the version it evaluated (0 before) */
  int32_t nice;                    /* niceness of the thread running actor_run (getpriority), read at
                                      its start after applying actor.nice */
} actor_stats;

/* A consistent snapshot of the counters. Call from the thread that runs actor_run, or after it
 * returned (other threads: read the metrics registry, which is atomic). */
void actor_get_stats(const actor_t *a, actor_stats *out);

/* The metrics registry the actor counts in (the caller's, or its own). */
metrics_registry *actor_metrics(actor_t *a);

#endif

/* replay_server.h: the replay server: one table, its sampler and rate limiter, served over two
 * ZeroMQ ROUTER sockets, with periodic snapshots. The same code runs embedded (a thread of
 * `ember train`, over inproc://) and standalone (`ember-replay`, over tcp:// or ipc://).
 *
 *   replay_config cfg;  config_defaults / config_load with replay_config_section (keys below)
 *   replay_server *s = replay_server_new(&cfg, zmq_ctx, metrics, &err);  binds, restores a snapshot
 *   thread: replay_server_run(s);          serves until stopped; returns 0 or an EMBER_E* code
 *   any thread or a signal handler: replay_server_stop(s);
 *   after run returned: replay_server_snapshot(s, &err);  (the owner decides; ember-replay does it
 *                                                          on SIGTERM/SIGINT)
 *   replay_server_destroy(&s);
 *
 * Sockets and messages (docs/protocol.md, "Replay server"):
 *   insert_endpoint (ROUTER, bound): TransitionBatch -> InsertAck, one per batch, in order. Actors
 *     keep a bounded number of batches in flight (credits; see replay_client.h). When the rate
 *     limiter holds inserts back, the server stops reading this socket, so ZeroMQ queues and the
 *     actors' credits do the back-pressure; nothing is dropped by the server.
 *   sample_endpoint (ROUTER, bound): SampleRequest -> SampleBatch (or ErrorReply), PriorityUpdate ->
 *     nothing (ErrorReply when refused). A request the rate limiter must hold is parked, FIFO, and
 *     answered when allowed.
 *   both: StatsRequest -> Stats (role "replay", every replay_* metric). Hello is logged, and refused
 *     (ErrorReply) when it announces another task or other dims than the table's; Heartbeat is
 *     ignored. Any other body is refused with ErrorReply (reason unexpected_message).
 *   Replies echo the request's framing: a DEALER peer gets [routing id][Envelope], a REQ peer
 *   [routing id][empty][Envelope].
 * Bad input is refused (InsertAck with rejected = count and the reason in `error`, or ErrorReply),
 * logged once per reason per 10 s (with how many were suppressed), counted in
 * replay_rejected_total{reason="..."}, and the server goes on serving. A batch refused for its
 * envelope still gets its own InsertAck, and a SampleRequest its request_id, whenever the message
 * says what it is; only bytes that do not decode get an ErrorReply naming nothing (request_id 0).
 *
 * Snapshots (replay.snapshot_dir): at start the server removes temporaries a killed writer left,
 * numbers new snapshots after every file present, and restores the newest valid one (moving corrupt
 * ones aside as .corrupt); after each snapshot it keeps the snapshot_keep newest valid files. An
 * InsertAck means in memory: what was acknowledged after the newest complete snapshot is lost if
 * the process dies without a final one (docs/replay.md, "Durability").
 *
 * The implementation is split by path (insert, sample, snapshot orchestration, stats and control,
 * receiving); replay_server_impl.h says which file owns what.
 *
 * Threads: replay_server_run serves the insert socket (and the timers: periodic snapshots, progress
 * lines) on the caller's thread and starts one more thread, named "replay-sample", for the sample
 * socket; the two share the table under a mutex, and run joins the second before it returns.
 * Processes: a periodic snapshot is written by a forked child (copy-on-write image of the table) that
 * run reaps; run and destroy wait for one still writing.
 *
 * Ownership: the server owns its sockets, table, threads and scratch buffers; the zmq context and
 * the metrics registry belong to the caller and must outlive the server (metrics may be NULL: the
 * server then keeps a registry of its own). Thread-safety: run, snapshot and destroy from one thread
 * at a time (snapshot is also safe while run is running, it takes the table's lock); stop from
 * anywhere (it only sets an atomic flag, so it is async-signal-safe; run notices it within
 * poll_interval_ms); get_counters from anywhere.
 */
#ifndef EMBER_REPLAY_SERVER_H
#define EMBER_REPLAY_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "err.h"
#include "metrics.h"

typedef struct {
  int64_t capacity;              /* transitions held (FIFO eviction) */
  char task[CONFIG_STRING_MAX];  /* "" = from the first accepted insert */
  int64_t obs_dim, act_dim;      /* 0 = from the first accepted insert */
  char sampler[CONFIG_STRING_MAX]; /* "uniform" | "prioritized" */
  double alpha, beta;            /* prioritized: priority exponent, importance-weight exponent */
  int64_t min_size_to_sample;    /* rate limiter: no sample before the table holds this many */
  double samples_per_insert;     /* rate limiter target ratio; 0 = off (only min_size_to_sample) */
  double error_buffer;           /* rate limiter tolerance, in sampled transitions */
  int64_t max_pending_samples;   /* parked SampleRequests beyond which new ones are refused */
  char insert_endpoint[CONFIG_STRING_MAX];
  char sample_endpoint[CONFIG_STRING_MAX];
  int64_t max_message_bytes;     /* inbound limit: ZMQ_MAXMSGSIZE on tcp/ipc, checked on inproc */
  char snapshot_dir[CONFIG_STRING_MAX]; /* "" = no snapshots */
  double snapshot_interval_s;    /* 0 = only when the owner asks (replay_server_snapshot) */
  int64_t snapshot_keep;         /* snapshot files kept */
  int64_t snapshot_zstd_level;
  bool restore;                  /* restore the newest valid snapshot at start */
  int64_t seed;                  /* sampling stream (RNG_STREAM_REPLAY) */
  int64_t poll_interval_ms;      /* how quickly run() notices stop and timers */
  double log_interval_s;         /* progress line (size, rates, rejections) every this many seconds; 0 = off */
} replay_config;

extern const config_section replay_config_section;

/* Checks cross-field constraints the per-key ranges cannot (sampler name, min size <= capacity,
 * the rate limiter's error buffer, dims given together). */
int replay_config_validate(const replay_config *cfg, ember_err *err);

typedef struct replay_server replay_server;

/* Validates cfg, allocates the table, restores the newest valid snapshot when cfg->restore and a
 * snapshot_dir are set (logging how many transitions came back, and every file skipped), binds both
 * sockets and registers the metrics. Returns NULL with err set on failure (EMBER_EINVAL for a bad
 * config or endpoint, EMBER_ENOMEM). */
replay_server *replay_server_new(const replay_config *cfg, void *zmq_ctx, metrics_registry *metrics, ember_err *err);
void replay_server_destroy(replay_server **self_p);

/* Serves until replay_server_stop. Returns 0, or EMBER_EIO when a socket fails for good. */
int replay_server_run(replay_server *s);
void replay_server_stop(replay_server *s);

/* Writes a snapshot now (blocking both server threads while it writes). No-op (returns 0) without a
 * snapshot_dir. */
int replay_server_snapshot(replay_server *s, ember_err *err);

/* The endpoints actually bound (with the real port when the config said tcp://127.0.0.1:0 or :*),
 * for tests and for logs. Valid until destroy. */
const char *replay_server_insert_endpoint(const replay_server *s);
const char *replay_server_sample_endpoint(const replay_server *s);

/* Counters, for the owner (and tests): a consistent copy, taken under the table's lock. */
typedef struct {
  uint64_t size, capacity, inserts, evicted, samples, sample_batches, insert_batches, rejected;
  uint64_t restored;             /* transitions restored from a snapshot at start */
  uint64_t pending_samples;
} replay_server_counters;
void replay_server_get_counters(const replay_server *s, replay_server_counters *out);

#endif

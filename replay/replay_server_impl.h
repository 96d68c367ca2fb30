/* replay_server_impl.h: the replay server's state and the functions its files share. Only the
 * server's own files include it; everyone else uses replay_server.h. Internal functions are
 * prefixed srv_.
 *
 * Who owns what (one file per path through the server):
 *   replay_server.c           the public lifecycle (config, new, destroy, stop, endpoints) and the
 *                             two threads' loops.
 *   replay_server_receive.c   receiving: a message's frames, its Envelope, refusing a bad envelope
 *                             (naming the batch or request when that can be read from it), and
 *                             handing the body to the paths below. Either thread, on its socket.
 *   replay_server_checks.c    what one message tells alone: its identity (decoded, or scanned from
 *                             bytes too big to decode) and the checks of each body that need no
 *                             server state (only the spec, capacity, rate limiter). Pure functions,
 *                             shared by the paths below and by the fuzz targets (tests/fuzz/).
 *   replay_server_insert.c    TransitionBatches: checks, the insert into the table, acks (coalesced
 *                             per burst), the per-actor sequence/drop bookkeeping. Insert thread.
 *   replay_server_sample.c    SampleRequests (served, parked, or refused), the parked-request FIFO,
 *                             the sample scratch, PriorityUpdates. Sample thread.
 *   replay_server_snapshot.c  snapshot orchestration: the restore at start, periodic snapshots by a
 *                             forked child, the owner's snapshot, pruning after each. Insert thread
 *                             (and the owner's thread for replay_server_snapshot). The file format
 *                             itself is replay_snapshot.c.
 *   replay_server_control.c   stats and control: sending replies, refusal accounting (metrics and
 *                             rate-limited logs), metric registration and gauges, Stats, Hello,
 *                             counters and progress lines. Either thread.
 *
 * Locking: `lock` guards the table, the rate limiter, the RNG and the counters beside the table;
 * `log_lock` guards the refusal log's rate limiting and rejected_total. Everything marked below as a
 * thread's own is touched by that thread only.
 */
#ifndef EMBER_REPLAY_SERVER_IMPL_H
#define EMBER_REPLAY_SERVER_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "arena.h"
#include "net.h"
#include "rate_limiter.h"
#include "replay_server.h"
#include "replay_table.h"
#include "rng.h"

/* ---- refusal reasons (replay_rejected_total{reason=...}; docs/protocol.md) ------------------- */

typedef enum {
  R_NOT_PROTOBUF, R_SCHEMA_VERSION, R_NO_BODY, R_BAD_FRAMING, R_TOO_BIG, R_TASK_MISMATCH, R_DIMS_MISMATCH,
  R_INCONSISTENT_LENGTHS, R_NONFINITE, R_EMPTY_BATCH, R_BAD_BATCH_SIZE, R_BATCH_TOO_LARGE,
  R_BATCH_EXCEEDS_RATE_LIMITER, R_TOO_MANY_PENDING, R_BAD_PRIORITY, R_UNEXPECTED_MESSAGE, R_MISSING_LOG_PROB,
  R_ACTION_OUT_OF_RANGE, R_TERMINATED_AND_TRUNCATED, R_COUNT
} reject_reason;

extern const char *const srv_reason_names[R_COUNT];
extern const int srv_reason_codes[R_COUNT]; /* the EMBER_E* code each reason is answered with */

#define LOG_EVERY_MS 10000

/* ---- state ----------------------------------------------------------------------------------- */

typedef struct {
  net_route route;
  bool delimiter;       /* REQ peer: the reply needs the empty frame */
} peer;

typedef struct {
  peer from;
  uint64_t request_id;
  uint32_t batch_size;
} pending_sample;

/* Acks for consecutive stored batches of one peer, held until the end of an insert burst and sent
 * as one InsertAck covering first..last (fewer messages and wake-ups under load; at light load a
 * burst is one batch, so every batch is acked at once). */
#define MAX_ACK_RUNS 32
typedef struct {
  peer to;
  uint64_t actor_id, first, last;
  uint64_t accepted;
} ack_run;

/* What each actor last told us: its latest dropped_before (cumulative, per the protocol) and batch
 * sequence, so the server can export how much actors dropped and notice sequence gaps (batches lost
 * in flight). Open addressing; actors beyond MAX_ACTORS are not tracked (counted once in a log). */
#define MAX_ACTORS 4096
typedef struct {
  uint64_t actor_id, dropped_before, last_sequence;
  bool used;
} actor_entry;

typedef struct {
  metric *size, *capacity, *inserted, *insert_batches, *evicted, *sampled, *sample_batches;
  metric *rejected[R_COUNT];
  metric *sample_waits, *insert_waits, *pending, *priority_updates, *priority_stale, *undeliverable;
  metric *snapshot_age, *snapshots_written, *snapshot_failures, *restored, *actor_dropped, *memory_bytes;
  metric *sequence_gaps, *table_inserted, *table_sampled, *snap_inserted, *snap_sampled;
} server_metrics;

/* Threads: replay_server_run's thread serves the insert socket (and the timers: snapshots, progress
 * lines); a second thread, started by run, serves the sample socket. They share the table, the rate
 * limiter and the counters below under `lock`. Each thread owns its socket, arena and what is
 * marked as its own. Two threads rather than one: the learner's requests never wait behind a burst
 * of inserts, the two paths run in parallel on a multi-core host, and on a loaded host the server
 * is not one thread among many competing for a single fair share of the CPU. */
struct replay_server {
  replay_config cfg;
  void *ctx;
  void *insert_sock, *sample_sock;
  char insert_ep[CONFIG_STRING_MAX], sample_ep[CONFIG_STRING_MAX];
  atomic_int stop;
  pthread_mutex_t lock;          /* table, rl, rng, counters, snapshot state */
  pthread_mutex_t log_lock;      /* rejection log rate limiting, rejected_total */
  replay_table *table;
  atomic_bool spec_ready;        /* set once (release) by the insert thread after the spec is set */
  replay_spec spec;              /* a copy, immutable once spec_ready */
  rate_limiter rl;
  rng_t rng;
  arena insert_arena, sample_arena;
  metrics_registry *metrics, *own_metrics;
  server_metrics m;
  /* sample thread's own: parked sample requests (a ring) and scratch */
  pending_sample *pending;
  size_t pending_cap, pending_head, pending_len;
  atomic_size_t pending_count;   /* pending_len, readable from other threads */
  atomic_bool inserts_waiting;   /* the insert thread is held back by the rate limiter */
  /* wake-ups between the threads (inproc PAIRs): the insert thread tells the sample thread that
   * parked requests may be servable now, the sample thread tells the insert thread that inserts
   * may be allowed again */
  void *kick_sample_tx, *kick_sample_rx, *kick_insert_tx, *kick_insert_rx;
  pthread_t sample_thread;
  int sample_rc;
  /* scratch for building SampleBatches; grows to the largest batch served, then stays */
  size_t scratch_rows;
  float *s_obs, *s_next_obs, *s_action, *s_reward, *s_logp, *s_weights;
  protobuf_c_boolean *s_term, *s_trunc;
  uint64_t *s_keys, *s_pv, *s_aid;
  /* counters beside the table's own */
  uint64_t samples, sample_batches, insert_batches, rejected_total, restored, actor_dropped;
  uint64_t snapshot_seq;
  double last_snapshot_s, started_s, last_log_s;
  uint64_t snap_inserts, snap_samples, snap_updates, priority_updates; /* what the last snapshot saw */
  /* the periodic snapshot being written by a child process (insert thread's own; see
   * replay_server_snapshot.c) */
  pid_t snap_child;              /* 0 = none */
  int snap_child_err;            /* read end of a pipe the child writes its error message to */
  double snap_child_started_s, snap_retry_s;
  uint64_t child_inserts, child_samples, child_updates, child_size;
  bool inserts_blocked;
  uint64_t last_log_inserts, last_log_samples;
  ack_run runs[MAX_ACK_RUNS];
  int n_runs;
  actor_entry *actors;
  size_t n_actors;
  double reason_last_log_s[R_COUNT];
  uint64_t reason_suppressed[R_COUNT];
};

static inline double srv_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline uint64_t srv_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- replay_server_checks.c (pure: no socket, no lock, no server state) ----------------------- */

/* What a message says about itself, when that can be read: a refused TransitionBatch is answered
 * with its own InsertAck, a refused SampleRequest with its request_id. */
typedef struct {
  Ember__Envelope__BodyCase body; /* TRANSITION_BATCH, SAMPLE_REQUEST, or NOT_SET: nothing known */
  uint64_t actor_id, sequence, dropped_before; /* a TransitionBatch's */
  uint32_t count;
  uint64_t request_id;                         /* a SampleRequest's */
} srv_identity;

extern const srv_identity SRV_NOBODY;
/* The identity of a decoded Envelope (any schema version); SRV_NOBODY for other bodies or NULL. */
srv_identity srv_identity_of(const Ember__Envelope *env);
/* The identity in encoded Envelope bytes, read without decoding them (for a message too big to
 * decode); SRV_NOBODY when the bytes are not well-formed protobuf or carry neither body. */
srv_identity srv_scan_identity(const void *data, size_t len);

/* Each check returns 0 when the body may be served, else the EMBER_E* code to answer with, with
 * *reason and `why` (cap bytes, always terminated) saying what was wrong. */

/* A TransitionBatch against the table's spec (NULL: none yet, the first accepted batch sets it):
 * count, task, dims, lengths (net_check_transitions), finite values, log-probs present unless
 * policy_version 0, actions in [-1, 1], never both terminated and truncated. A batch that passes
 * may be given to replay_table_insert. */
int srv_check_batch(const Ember__TransitionBatch *b, const replay_spec *spec, reject_reason *reason, char *why,
                    size_t cap);
/* A SampleRequest's batch size against the table's capacity and what the rate limiter can ever allow. */
int srv_check_sample_request(const Ember__SampleRequest *r, size_t capacity, const rate_limiter *rl,
                             reject_reason *reason, char *why, size_t cap);
/* A PriorityUpdate: as many priorities as keys, each finite and >= 0 (keys are looked up later). */
int srv_check_priority_update(const Ember__PriorityUpdate *u, reject_reason *reason, char *why, size_t cap);
/* A Hello against the table's spec (NULL: anything goes): its task and non-zero dims must match. */
int srv_check_hello(const Ember__Hello *h, const replay_spec *spec, reject_reason *reason, char *why, size_t cap);

/* ---- replay_server_control.c ----------------------------------------------------------------- */

/* Sends env to a peer (routing id, the REQ delimiter when needed, the packed Envelope). 0, or
 * EMBER_ENOMEM / EMBER_EIO (peer gone or its queue full; counted as undeliverable). */
int srv_send_envelope(replay_server *s, void *sock, const peer *to, Ember__Envelope *env);
void srv_send_error(replay_server *s, void *sock, const peer *to, int code, const char *text, uint64_t request_id);
/* Counts a refusal under its reason and logs it (at most once per reason per LOG_EVERY_MS). */
void srv_count_reject(replay_server *s, reject_reason r, const char *socket_name, const char *why);
/* Refuses with an ErrorReply "<reason>: <why>" carrying request_id (0 when there is none). */
void srv_reject_with_error(replay_server *s, void *sock, const peer *to, reject_reason r, const char *why,
                           uint64_t request_id);
void srv_register_metrics(replay_server *s);
void srv_update_gauges(replay_server *s);
void srv_send_stats(replay_server *s, void *sock, const peer *to);
void srv_handle_hello(replay_server *s, void *sock, const peer *from, const Ember__Hello *h);
void srv_log_progress(replay_server *s, double t);

/* ---- replay_server_receive.c ----------------------------------------------------------------- */

/* Handles one message waiting on sock. Returns 0, EMBER_EAGAIN when none was waiting, EMBER_EIO. */
int srv_handle_one(replay_server *s, void *sock);

/* ---- replay_server_insert.c (insert thread) -------------------------------------------------- */

void srv_handle_insert(replay_server *s, const peer *from, const Ember__TransitionBatch *b);
/* Refuses a batch with its own InsertAck (rejected = b->count, error "<reason>: <why>"), counted and
 * logged; b needs only actor_id, sequence, count and dropped_before. */
void srv_refuse_batch(replay_server *s, const peer *to, const Ember__TransitionBatch *b, reject_reason r,
                      const char *why);
/* Sends every held ack (end of a burst). */
void srv_flush_acks(replay_server *s);
/* Sends the held ack of this peer, if any: before anything else goes to it, to keep order. */
void srv_flush_peer(replay_server *s, const peer *to);

/* ---- replay_server_sample.c (sample thread) -------------------------------------------------- */

void srv_handle_sample_request(replay_server *s, const peer *from, const Ember__SampleRequest *r);
void srv_handle_priority_update(replay_server *s, const peer *from, const Ember__PriorityUpdate *u);
/* Serves parked requests, oldest first, while the rate limiter allows. */
void srv_serve_pending(replay_server *s);

/* ---- replay_server_snapshot.c ---------------------------------------------------------------- */

/* At start, with a snapshot_dir: removes temporaries a killed writer left, numbers the next snapshot
 * after every file there, and restores the newest valid snapshot when cfg.restore (logging what
 * came back). 0 or an EMBER_E* code with err set. */
int srv_snapshots_at_start(replay_server *s, ember_err *err);
/* Insert thread, every loop: reaps a finished snapshot child, starts a new one when due. */
void srv_maybe_snapshot(replay_server *s, double t);
/* Reaps the snapshot child (waiting for it when `wait`), then counts and logs its outcome. */
void srv_reap_snapshot_child(replay_server *s, bool wait);

#endif

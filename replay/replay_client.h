/* replay_client.h: the actor's and the learner's side of the replay protocol (docs/protocol.md,
 * "Replay server").
 *
 * Insert client (actors). Credit-based flow control: at most max_in_flight TransitionBatches are on
 * the wire without an InsertAck. Beyond that, batches wait in a local queue of queue_batches
 * (encoded, in buffers that are reused); when the queue is full the oldest queued batch is dropped
 * and counted. replay_insert_client_send never blocks the env loop: it encodes, queues, sends what
 * the credits allow and returns. The socket uses ZMQ_IMMEDIATE, so nothing is handed to libzmq while
 * no server is connected: a server that is gone shows up as a queue that fills, then as drops.
 * A batch sent but not acknowledged within ack_timeout_ms (the server died, or libzmq dropped the
 * connection for an oversize message) is written off as `unconfirmed` and its credit returned; an
 * ack that arrives later moves it back to stored. At every moment
 *     transitions given to send = stored + rejected + dropped + unconfirmed + in_flight + queued.
 *
 * Sample client (learner). Keeps `prefetch` SampleRequests outstanding so the next batch is on its
 * way while the learner computes. replay_sample_client_next returns the next SampleBatch, decoded
 * into an arena the client owns: the batch is valid until the next call to next() or destroy.
 * A request parked by the server's rate limiter is simply answered later; after request_timeout_ms
 * without any reply the client presumes its requests lost (server restarted) and sends new ones.
 *
 * Ownership: each client owns its socket and buffers; the zmq context is the caller's and must
 * outlive the client. Batches passed to send are only read (their actor_id, sequence and
 * dropped_before fields are set by the client). Not thread-safe: one client per thread.
 * Errors: EMBER_EINVAL (bad options or endpoint), EMBER_ETIMEOUT, EMBER_ETOOBIG (a batch over
 * max_message_bytes, refused locally), and for the sample client the code of a server ErrorReply.
 */
#ifndef EMBER_REPLAY_CLIENT_H
#define EMBER_REPLAY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "ember.pb-c.h"
#include "err.h"

/* ---- inserts --------------------------------------------------------------------------------- */

typedef struct {
  const char *endpoint;       /* the server's insert_endpoint */
  uint64_t actor_id;
  int max_in_flight;          /* credits; 0 = 8 */
  int queue_batches;          /* local queue; 0 = 64 */
  int ack_timeout_ms;         /* 0 = 5000 */
  int64_t max_message_bytes;  /* 0 = 64 MiB */
  /* CurveZMQ (NULL = plain tcp): this client's key pair and the server's public key, Z85 text */
  const char *curve_public_key, *curve_secret_key, *curve_server_key;
} replay_insert_opts;

typedef struct {
  uint64_t batches_sent, transitions_sent;      /* handed to the wire */
  uint64_t transitions_stored;                  /* acknowledged as stored */
  uint64_t transitions_rejected;                /* acknowledged as refused (InsertAck.error says why) */
  uint64_t transitions_dropped;                 /* dropped from a full local queue */
  uint64_t transitions_unconfirmed;             /* sent, no ack within ack_timeout_ms */
  uint64_t transitions_in_flight, transitions_queued;
  uint64_t error_replies;                       /* ErrorReply messages received */
  uint64_t acks_refused;                        /* InsertAcks that cannot be this client's: another
                                                   actor id, a sequence never sent, or more rows than
                                                   the batches they name could hold; ignored */
  uint32_t in_flight, queued;                   /* batches */
  char last_error[256];                         /* the last InsertAck.error or ErrorReply text */
} replay_insert_stats;

typedef struct replay_insert_client replay_insert_client;

replay_insert_client *replay_insert_client_new(void *zmq_ctx, const replay_insert_opts *opts, ember_err *err);
void replay_insert_client_destroy(replay_insert_client **self_p);

/* Queues b (setting b->actor_id, b->sequence, b->dropped_before) and sends what the credits allow.
 * Never blocks. Returns 0, or EMBER_ETOOBIG / EMBER_ENOMEM (the batch is then counted as dropped). */
int replay_insert_client_send(replay_insert_client *c, Ember__TransitionBatch *b, ember_err *err);
/* Reads acknowledgements, writes off timed-out batches and sends queued ones, waiting up to
 * timeout_ms (0 = don't wait) for the first ack. Returns the number of acks read. */
int replay_insert_client_poll(replay_insert_client *c, int timeout_ms);
/* Waits up to timeout_ms for room in the local queue (returns at once when there is some): reads
 * acks, writes off timed-out batches and hands queued batches to the link as soon as it takes them,
 * which happens even when every batch sent was already written off as unconfirmed (a backed-up link
 * with a short ack_timeout_ms). Returns 1 when the queue has room, 0 when timeout_ms passed first or
 * a signal interrupted the wait. */
int replay_insert_client_wait_for_room(replay_insert_client *c, int timeout_ms);
/* Polls until nothing is queued or in flight; EMBER_ETIMEOUT when that takes longer than timeout_ms. */
int replay_insert_client_flush(replay_insert_client *c, int timeout_ms);
void replay_insert_client_stats(const replay_insert_client *c, replay_insert_stats *out);

/* ---- samples --------------------------------------------------------------------------------- */

typedef struct {
  const char *endpoint;       /* the server's sample_endpoint */
  uint32_t batch_size;
  int prefetch;               /* requests kept outstanding; 0 = 2 */
  int request_timeout_ms;     /* 0 = 30000 */
  int64_t max_message_bytes;  /* 0 = 256 MiB */
  const char *curve_public_key, *curve_secret_key, *curve_server_key; /* as for inserts */
} replay_sample_opts;

typedef struct replay_sample_client replay_sample_client;

replay_sample_client *replay_sample_client_new(void *zmq_ctx, const replay_sample_opts *opts, ember_err *err);
void replay_sample_client_destroy(replay_sample_client **self_p);

/* Waits up to timeout_ms (-1 = forever) for the next batch. The batch is the client's, valid until
 * the next call. A server ErrorReply is returned as its (negative) code with the message in err. */
int replay_sample_client_next(replay_sample_client *c, int timeout_ms, const Ember__SampleBatch **out,
                              ember_err *err);
/* Sends new priorities for keys (fire and forget; a refusal comes back as an ErrorReply that the next
 * call to next() reports). */
int replay_sample_client_update_priorities(replay_sample_client *c, const uint64_t *keys, const float *priorities,
                                           size_t n, ember_err *err);

/* ---- stats ----------------------------------------------------------------------------------- */

/* Asks a replay server (either endpoint) for its Stats. *out is the caller's, freed with
 * net_envelope_free; (*out)->stats holds the metrics. */
int replay_client_stats(void *zmq_ctx, const char *endpoint, int timeout_ms, Ember__Envelope **out, ember_err *err);
/* A metric's value from a Stats message (labels NULL or "" for none); NAN when absent. */
double replay_stats_get(const Ember__Stats *stats, const char *name, const char *labels);

#endif

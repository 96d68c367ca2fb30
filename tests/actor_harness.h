/* actor_harness.h: a real actor on a thread, with a fake replay server (a ROUTER that acks, rejects
 * or stays silent) and a fake learner (a PUB for Params, a ROUTER for the control socket) played by
 * the test thread over inproc://. Test-only. */
#ifndef EMBER_TEST_ACTOR_HARNESS_H
#define EMBER_TEST_ACTOR_HARNESS_H

#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "actor.h"
#include "env_task.h"
#include "net.h"
#include "policy_params_fixture.h"

#define HARNESS_MAX_KEPT 4096
#define HARNESS_MAX_EPISODES 4096
#define HARNESS_MAX_EVALUATIONS 64
#define HARNESS_MAX_EVAL_EPISODES 16

/* ACK: acks every batch at once; SLOW: reads and acks one batch per slow_ms (default 5 ms: a
 * rate-limited replay); REJECT: refuses every batch; SILENT: bound, never reads; ABSENT: nothing bound
 * at the endpoint. */
typedef enum { REPLAY_ACK, REPLAY_SLOW, REPLAY_REJECT, REPLAY_SILENT, REPLAY_ABSENT } replay_mode;

typedef struct {
  uint64_t version;
  double episode_return;
  uint32_t length;
  int evaluation, terminated;
} episode_record;

typedef struct {
  uint64_t actor_id, version, env_steps;
  int episodes;
  double returns[HARNESS_MAX_EVAL_EPISODES];
  uint32_t lengths[HARNESS_MAX_EVAL_EPISODES];
  int terminated[HARNESS_MAX_EVAL_EPISODES];
} evaluation_record;

typedef struct {
  void *ctx;
  void *replay, *pub, *control;
  actor_config cfg;
  actor_t *actor;
  metrics_registry *metrics;
  pthread_t thread;
  int started;
  atomic_int finished;
  int run_rc;
  ember_err run_err;
  replay_mode mode;
  int slow_ms; /* REPLAY_SLOW: ms per batch; 0 = 5 */
  const env_spec *spec;

  /* what the fake replay saw */
  uint64_t batches, transitions, accepted, rejected, last_sequence, sequence_errors;
  Ember__Envelope *kept[HARNESS_MAX_KEPT]; /* the transition batches, in arrival order */
  int nkept;

  /* what the fake learner saw */
  int hellos, heartbeats, params_requests;
  uint64_t heartbeat_version;
  Ember__Hello first_hello;
  char hello_role[32], hello_task[64];
  episode_record episodes[HARNESS_MAX_EPISODES];
  int nepisodes;
  evaluation_record evaluations[HARNESS_MAX_EVALUATIONS];
  int nevaluations;
  const Ember__Params *reply_params; /* when set, ParamsRequests are answered with it */
  int params_replies;
} harness;

static inline int64_t harness_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *harness_thread(void *arg) {
  harness *h = arg;
  h->run_rc = actor_run(h->actor, &h->run_err);
  atomic_store(&h->finished, 1);
  return NULL;
}

/* Sockets and a default test config: pendulum (or task), K envs, short episodes, fast timers. */
static inline void harness_init(harness *h, const char *task, int num_envs, replay_mode mode) {
  memset(h, 0, sizeof *h);
  h->mode = mode;
  h->ctx = zmq_ctx_new();
  ck_assert_ptr_nonnull(h->ctx);
  h->metrics = metrics_new();
  ember_err err = {0};
  config_binding b = {&actor_config_section, &h->cfg, NULL};
  ck_assert_msg(config_defaults(&b, 1, &err) == 0, "%s", err.msg);
  snprintf(h->cfg.task, sizeof h->cfg.task, "%s", task);
  h->cfg.id = 1; /* the default 0 means "derive one" in ember-actor; the library needs a real id */
  ck_assert_int_eq(env_spec_find(task, &h->spec, &err), 0);
  h->cfg.num_envs = num_envs;
  h->cfg.max_episode_steps = 10;
  h->cfg.transitions_per_batch = 16;
  h->cfg.heartbeat_ms = 20;
  h->cfg.params_request_ms = 200;
  h->cfg.log_interval_s = 0;
  h->cfg.drain_ms = 200;
  /* the actor outruns this thread's fake replay by far: let it wait for acks rather than drop, so
   * that the stream is complete (tests of dropping set 0) */
  h->cfg.replay_wait_ms = 1000;
  int pid = (int)getpid();
  snprintf(h->cfg.params_endpoint, CONFIG_STRING_MAX, "inproc://params-%d", pid);
  snprintf(h->cfg.control_endpoint, CONFIG_STRING_MAX, "inproc://control-%d", pid);
  snprintf(h->cfg.replay_endpoint, CONFIG_STRING_MAX, "inproc://replay-%d", pid);
  net_socket_opts o = {0};
  o.linger_ms = 0;
  h->pub = net_socket(h->ctx, ZMQ_PUB, h->cfg.params_endpoint, true, &o, &err);
  ck_assert_msg(h->pub != NULL, "%s", err.msg);
  h->control = net_socket(h->ctx, ZMQ_ROUTER, h->cfg.control_endpoint, true, &o, &err);
  ck_assert_msg(h->control != NULL, "%s", err.msg);
  if (mode != REPLAY_ABSENT) {
    h->replay = net_socket(h->ctx, ZMQ_ROUTER, h->cfg.replay_endpoint, true, &o, &err);
    ck_assert_msg(h->replay != NULL, "%s", err.msg);
  }
}

static inline void harness_start(harness *h) {
  ember_err err = {0};
  h->actor = actor_new(&h->cfg, h->ctx, h->metrics, &err);
  ck_assert_msg(h->actor != NULL, "actor_new: %s", err.msg);
  ck_assert_int_eq(pthread_create(&h->thread, NULL, harness_thread, h), 0);
  h->started = 1;
}

static inline void harness_pump(harness *h, int timeout_ms);

/* Serves replay and learner until the actor's run returns by itself, then joins it. */
static inline void harness_wait(harness *h) {
  if (!h->started) return;
  while (!atomic_load(&h->finished)) harness_pump(h, 5);
  pthread_join(h->thread, NULL);
  h->started = 0;
}

/* Stops the actor and keeps serving while it drains, then joins it. */
static inline void harness_join(harness *h) {
  if (!h->started) return;
  actor_stop(h->actor);
  harness_wait(h);
}

static inline void harness_free(harness *h) {
  harness_join(h);
  actor_destroy(&h->actor);
  for (int i = 0; i < h->nkept; i++) net_envelope_free(h->kept[i]);
  if (h->replay) zmq_close(h->replay);
  zmq_close(h->pub);
  zmq_close(h->control);
  metrics_destroy(&h->metrics);
  zmq_ctx_term(h->ctx);
}

static inline void harness_on_batch(harness *h, Ember__Envelope *env, const net_route *route) {
  Ember__TransitionBatch *b = env->transition_batch;
  h->batches++;
  h->transitions += b->count;
  if (b->sequence != h->last_sequence + 1) h->sequence_errors++; /* a gap: batches dropped in between */
  h->last_sequence = b->sequence;
  if (h->mode == REPLAY_SILENT) {
    net_envelope_free(env);
    return;
  }
  if (h->mode == REPLAY_SLOW) /* 200 batches/s at most by default: far below what the actor makes */
    usleep(1000 * (useconds_t)(h->slow_ms > 0 ? h->slow_ms : 5));
  Ember__InsertAck ack = EMBER__INSERT_ACK__INIT;
  ack.actor_id = b->actor_id;
  ack.sequence = b->sequence;
  if (h->mode == REPLAY_ACK || h->mode == REPLAY_SLOW) {
    ack.accepted = b->count;
    h->accepted += b->count;
  } else {
    ack.rejected = b->count;
    ack.error = "test replay refuses everything";
    h->rejected += b->count;
  }
  ember_err err = {0};
  ck_assert_msg(net_send_body(h->replay, EMBER__ENVELOPE__BODY_INSERT_ACK, &ack, route, 0, &err) == 0, "%s", err.msg);
  if (h->nkept < HARNESS_MAX_KEPT) h->kept[h->nkept++] = env;
  else net_envelope_free(env);
}

static inline void harness_on_control(harness *h, Ember__Envelope *env, const net_route *route) {
  switch (env->body_case) {
    case EMBER__ENVELOPE__BODY_HELLO:
      if (h->hellos++ == 0) {
        snprintf(h->hello_role, sizeof h->hello_role, "%s", env->hello->role);
        snprintf(h->hello_task, sizeof h->hello_task, "%s", env->hello->task);
        h->first_hello = *env->hello;
        h->first_hello.role = h->hello_role;
        h->first_hello.task = h->hello_task;
        h->first_hello.software_version = NULL;
        h->first_hello.hostname = NULL;
      }
      break;
    case EMBER__ENVELOPE__BODY_HEARTBEAT:
      h->heartbeats++;
      h->heartbeat_version = env->heartbeat->policy_version;
      break;
    case EMBER__ENVELOPE__BODY_PARAMS_REQUEST:
      h->params_requests++;
      if (h->reply_params && env->params_request->have_version < h->reply_params->version) {
        ember_err err = {0};
        ck_assert_msg(net_send_body(h->control, EMBER__ENVELOPE__BODY_PARAMS, (void *)h->reply_params, route, 0,
                                    &err) == 0,
                      "%s", err.msg);
        h->params_replies++;
      }
      break;
    case EMBER__ENVELOPE__BODY_EPISODE:
      if (h->nepisodes < HARNESS_MAX_EPISODES) {
        episode_record *r = &h->episodes[h->nepisodes++];
        r->version = env->episode->policy_version;
        r->episode_return = env->episode->episode_return;
        r->length = env->episode->length;
        r->evaluation = env->episode->evaluation;
        r->terminated = env->episode->terminated;
      }
      break;
    case EMBER__ENVELOPE__BODY_EVALUATION: {
      const Ember__EvaluationReport *e = env->evaluation;
      ck_assert_uint_le(e->n_returns, HARNESS_MAX_EVAL_EPISODES);
      ck_assert_uint_eq(e->n_lengths, e->n_returns);
      ck_assert_uint_eq(e->n_terminated, e->n_returns);
      if (h->nevaluations < HARNESS_MAX_EVALUATIONS) {
        evaluation_record *r = &h->evaluations[h->nevaluations++];
        *r = (evaluation_record){.actor_id = e->actor_id, .version = e->policy_version, .env_steps = e->env_steps,
                                 .episodes = (int)e->n_returns};
        for (size_t i = 0; i < e->n_returns; i++) {
          r->returns[i] = e->returns[i];
          r->lengths[i] = e->lengths[i];
          r->terminated[i] = e->terminated[i];
        }
      }
      break;
    }
    default:
      ck_abort_msg("the actor sent %s on its control socket", net_body_name(env->body_case));
  }
  net_envelope_free(env);
}

/* Serves the fake replay and learner for up to timeout_ms (returns sooner once something came). */
static inline void harness_pump(harness *h, int timeout_ms) {
  zmq_pollitem_t items[2] = {{h->control, 0, ZMQ_POLLIN, 0}, {h->replay, 0, ZMQ_POLLIN, 0}};
  int n = h->replay && h->mode != REPLAY_SILENT ? 2 : 1;
  if (zmq_poll(items, n, timeout_ms) <= 0) return;
  for (;;) {
    int got = 0;
    Ember__Envelope *env = NULL;
    net_route route;
    ember_err err = {0};
    if (net_recv(h->control, &env, &route, ZMQ_DONTWAIT, &err) == 0) {
      harness_on_control(h, env, &route);
      got = 1;
    }
    if (n == 2 && net_recv(h->replay, &env, &route, ZMQ_DONTWAIT, &err) == 0) {
      ck_assert_int_eq(env->body_case, EMBER__ENVELOPE__BODY_TRANSITION_BATCH);
      harness_on_batch(h, env, &route);
      got = h->mode != REPLAY_SLOW; /* slow: one batch per pump */
    }
    if (!got) return;
  }
}

static inline void harness_publish(harness *h, const Ember__Params *p) {
  ember_err err = {0};
  ck_assert_msg(net_send_body(h->pub, EMBER__ENVELOPE__BODY_PARAMS, (void *)p, NULL, 0, &err) == 0, "%s", err.msg);
}

/* The value of an actor metric (labels actor="<id>"). */
static inline double harness_metric(harness *h, const char *name, int gauge) {
  char labels[64];
  snprintf(labels, sizeof labels, "actor=\"%lld\"", (long long)h->cfg.id);
  metric *m = gauge ? metrics_gauge(h->metrics, name, labels, NULL) : metrics_counter(h->metrics, name, labels, NULL);
  ck_assert_ptr_nonnull(m);
  return metric_value(m);
}

/* A 2x8 tanh policy for the harness task. */
static inline void harness_params(harness *h, params_fixture *f, uint64_t version, uint64_t seed) {
  static const int hidden[2] = {8, 8};
  fixture_build(f, h->cfg.task, h->spec->obs_dim, h->spec->act_dim, hidden, 2, "tanh", version, seed, 0.5f);
}

/* The made = stored + rejected + dropped + unconfirmed + in flight + queued + pending identity. */
static inline void harness_check_accounting(const actor_stats *s) {
  uint64_t accounted = s->transitions_stored + s->transitions_rejected + s->transitions_dropped +
                       s->transitions_unconfirmed + s->transitions_in_flight + s->transitions_queued +
                       s->transitions_pending;
  ck_assert_msg(s->env_steps == accounted,
                "made %llu != stored %llu + rejected %llu + dropped %llu + unconfirmed %llu + in flight %llu + "
                "queued %llu + pending %llu",
                (unsigned long long)s->env_steps, (unsigned long long)s->transitions_stored,
                (unsigned long long)s->transitions_rejected, (unsigned long long)s->transitions_dropped,
                (unsigned long long)s->transitions_unconfirmed, (unsigned long long)s->transitions_in_flight,
                (unsigned long long)s->transitions_queued, (unsigned long long)s->transitions_pending);
}

#endif

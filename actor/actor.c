/* actor.c: the actor's lifecycle and its env loop (see actor.h). */
#include "actor.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "auth.h"
#include "env.h"
#include "log.h"
#include "net.h"
#include "policy.h"
#include "replay_client.h"
#include "rng.h"

#define COMPONENT "actor"
/* Messages taken from each learner socket per loop iteration: bounds the time the loop spends on
 * the learner when a backlog has built up (the rest wait for the next iteration). */
#define MAX_MESSAGES_PER_STEP 8
/* A refusal is logged at once, then at most once per this many ms (with a count of the suppressed). */
#define REFUSAL_LOG_INTERVAL_MS 10000
/* The eval envs draw their reset noise from a seed of their own, so their streams never meet the
 * training envs' (env.h numbers streams by env id only). */
#define EVAL_SEED_SALT 0x9E3779B97F4A7C15ull
/* Physics faults this close together are one burst: logged when it starts and when it ends. */
#define PHYSICS_FAULT_QUIET_MS 1000

typedef struct {
  metric *made, *sent, *stored, *rejected, *dropped, *unconfirmed, *pending;
  metric *batches, *episodes, *eval_episodes, *evaluations;
  metric *params_received, *params_refused, *params_stale, *messages_refused, *reports_dropped;
  metric *nonfinite_actions, *replay_wait, *auth_refused, *physics_faults;
  metric *policy_version, *last_return, *eval_return, *eval_version;
} actor_metrics_t;

/* What has been added to the counters already, so that sync_metrics adds only the difference. */
typedef struct {
  uint64_t made, sent, stored, rejected, dropped, unconfirmed, batches, episodes, eval_episodes, evaluations;
  uint64_t params_received, params_refused, params_stale, messages_refused, reports_dropped, nonfinite_actions;
  uint64_t replay_wait_us, physics_faults;
} published_t;

/* The burst of physics faults under way, if any (see note_physics_faults). */
typedef struct {
  bool active;
  int64_t start_ms, last_ms;
  uint64_t transitions;
} fault_burst;

typedef struct {
  int64_t last_ms;
  uint64_t suppressed;
} refusal_log;

struct actor {
  actor_config cfg;
  void *ctx;
  metrics_registry *metrics, *own_metrics;
  atomic_int stop;

  env_model_t *model;
  const env_spec *spec;
  env_vec_t *vec, *eval_vec;
  int K, E, obs_dim, act_dim;
  float uniform_log_prob; /* -act_dim * log 2 */

  policy_t *policy, *eval_policy;
  rng_t rng; /* eps of the stochastic policy and the uniform actions */

  void *sub, *dealer;
  auth_watch *watch_sub, *watch_dealer; /* CurveZMQ refusals of our key, when security is on */
  replay_insert_client *insert;

  /* one step of the K training envs */
  float *obs, *actions, *log_probs, *next_obs, *reward;
  uint8_t *terminated, *truncated;
  double *episode_return;
  int32_t *episode_length;

  /* one step of the E eval envs */
  float *eval_actions, *eval_next_obs, *eval_reward;
  uint8_t *eval_terminated, *eval_truncated, *eval_done;
  double *eval_return;
  int32_t *eval_length;
  bool eval_active;
  int eval_remaining;
  double eval_return_sum;
  uint64_t eval_version, next_eval_version;

  /* the TransitionBatch being filled: columns of B rows */
  Ember__TransitionBatch batch;
  int B, rows;
  float *b_obs, *b_action, *b_reward, *b_next_obs, *b_log_prob;
  protobuf_c_boolean *b_terminated, *b_truncated;

  /* timers (CLOCK_MONOTONIC ms) */
  int64_t start_ms, last_heartbeat_ms, last_params_ms, last_request_ms, last_log_ms, last_sync_ms;
  /* the progress line's interval */
  uint64_t log_steps, log_episodes;
  double log_return_sum, log_length_sum;

  actor_stats st;
  actor_metrics_t m;
  published_t pub;
  refusal_log params_log, message_log, insert_log;
  fault_burst faults;
  int64_t held_since_us; /* the training envs held for replay since then (pace_to_replay); 0 = not held */
  char hostname[256];
};

/* ---- small helpers --------------------------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Logs a refusal the first time and then at most once per REFUSAL_LOG_INTERVAL_MS. */
static void log_refusal(actor_t *a, refusal_log *rl, const char *event, const char *why) {
  int64_t t = now_ms();
  if (rl->last_ms && t - rl->last_ms < REFUSAL_LOG_INTERVAL_MS) {
    rl->suppressed++;
    return;
  }
  log_event(LOG_WARN, COMPONENT, event, LF_U64("actor_id", a->cfg.id), LF_STR("error", why),
            LF_U64("suppressed_since_last", rl->suppressed));
  rl->last_ms = t;
  rl->suppressed = 0;
}

static void *zalloc(size_t n, size_t size, int *failed) {
  void *p = calloc(n ? n : 1, size);
  if (!p) *failed = 1;
  return p;
}

/* ---- metrics --------------------------------------------------------------------------------- */

static void register_metrics(actor_t *a) {
  char labels[64];
  snprintf(labels, sizeof labels, "actor=\"%" PRId64 "\"", a->cfg.id);
  metrics_registry *r = a->metrics;
  actor_metrics_t *m = &a->m;
  m->made = metrics_counter(r, "actor_transitions_made_total", labels, "transitions made (env steps)");
  m->sent = metrics_counter(r, "actor_transitions_sent_total", labels, "transitions handed to the wire");
  m->stored = metrics_counter(r, "actor_transitions_stored_total", labels, "transitions acknowledged stored by replay");
  m->rejected = metrics_counter(r, "actor_transitions_rejected_total", labels, "transitions replay refused");
  m->dropped = metrics_counter(r, "actor_transitions_dropped_total", labels,
                               "transitions dropped by the actor (queue full, replay gone)");
  m->unconfirmed = metrics_counter(r, "actor_transitions_unconfirmed_total", labels,
                                   "transitions sent but never acknowledged in time");
  m->pending = metrics_gauge(r, "actor_transitions_pending", labels,
                             "transitions made but not yet acknowledged or written off (batch, queue, in flight)");
  m->batches = metrics_counter(r, "actor_batches_total", labels, "TransitionBatches made");
  m->episodes = metrics_counter(r, "actor_episodes_total", labels, "training episodes finished");
  m->eval_episodes = metrics_counter(r, "actor_eval_episodes_total", labels, "evaluation episodes finished");
  m->evaluations = metrics_counter(r, "actor_evaluations_total", labels, "evaluations completed");
  m->params_received = metrics_counter(r, "actor_params_received_total", labels, "Params messages received");
  m->params_refused = metrics_counter(r, "actor_params_refused_total", labels,
                                      "Params refused (task, dims, kind, shapes or values)");
  m->params_stale = metrics_counter(r, "actor_params_stale_total", labels,
                                    "Params ignored: not newer than the policy held");
  m->messages_refused = metrics_counter(r, "actor_messages_refused_total", labels,
                                        "undecodable or unexpected messages from the learner");
  m->reports_dropped = metrics_counter(r, "actor_reports_dropped_total", labels,
                                       "reports and heartbeats the control socket could not queue");
  m->nonfinite_actions = metrics_counter(r, "actor_nonfinite_actions_total", labels,
                                         "steps where the policy gave non-finite actions (uniform ones used)");
  m->replay_wait = metrics_counter(r, "actor_replay_wait_seconds_total", labels,
                                   "time spent waiting for replay acks (actor.replay_wait_ms > 0)");
  m->auth_refused = metrics_counter(r, "actor_auth_refused_total", labels,
                                    "CurveZMQ handshakes in which a server refused this actor's key");
  m->physics_faults = metrics_counter(r, "actor_physics_fault_transitions_total", labels,
                                      "transitions dropped as physics faults (MuJoCo instability, non-finite "
                                      "values); part of actor_transitions_dropped_total");
  m->policy_version = metrics_gauge(r, "actor_policy_version", labels, "Params version acted with (0 = random)");
  m->last_return = metrics_gauge(r, "actor_episode_return", labels, "return of the last training episode");
  m->eval_return = metrics_gauge(r, "actor_eval_return", labels, "mean return of the last evaluation");
  m->eval_version = metrics_gauge(r, "actor_eval_policy_version", labels, "the version the last evaluation played");
}

static void add_delta(metric *m, uint64_t now, uint64_t *published) {
  if (m && now > *published) metric_add(m, (double)(now - *published));
  *published = now;
}

/* Copies the counters into the metrics (only differences; counters never go back). */
static void sync_metrics(actor_t *a) {
  actor_stats s;
  actor_get_stats(a, &s);
  published_t *p = &a->pub;
  actor_metrics_t *m = &a->m;
  add_delta(m->made, s.env_steps, &p->made);
  add_delta(m->sent, s.transitions_sent, &p->sent);
  add_delta(m->stored, s.transitions_stored, &p->stored);
  add_delta(m->rejected, s.transitions_rejected, &p->rejected);
  add_delta(m->dropped, s.transitions_dropped, &p->dropped);
  add_delta(m->unconfirmed, s.transitions_unconfirmed, &p->unconfirmed);
  add_delta(m->batches, s.batches_made, &p->batches);
  add_delta(m->episodes, s.episodes, &p->episodes);
  add_delta(m->eval_episodes, s.eval_episodes, &p->eval_episodes);
  add_delta(m->evaluations, s.evaluations, &p->evaluations);
  add_delta(m->params_received, s.params_received, &p->params_received);
  add_delta(m->params_refused, s.params_refused, &p->params_refused);
  add_delta(m->params_stale, s.params_stale, &p->params_stale);
  add_delta(m->messages_refused, s.messages_refused, &p->messages_refused);
  add_delta(m->reports_dropped, s.reports_dropped, &p->reports_dropped);
  add_delta(m->nonfinite_actions, s.nonfinite_actions, &p->nonfinite_actions);
  add_delta(m->physics_faults, s.transitions_physics_fault, &p->physics_faults);
  if (m->replay_wait && s.replay_wait_us > p->replay_wait_us)
    metric_add(m->replay_wait, (double)(s.replay_wait_us - p->replay_wait_us) / 1e6);
  p->replay_wait_us = s.replay_wait_us;
  if (m->pending)
    metric_set(m->pending, (double)(s.transitions_pending + s.transitions_queued + s.transitions_in_flight));
  if (m->policy_version) metric_set(m->policy_version, (double)s.policy_version);
  if (m->last_return && isfinite(s.last_episode_return)) metric_set(m->last_return, s.last_episode_return);
  if (m->eval_return && isfinite(s.last_eval_return)) metric_set(m->eval_return, s.last_eval_return);
  if (m->eval_version) metric_set(m->eval_version, (double)s.last_eval_version);
}

void actor_get_stats(const actor_t *a, actor_stats *out) {
  *out = a->st;
  out->transitions_pending = (uint64_t)a->rows;
  replay_insert_stats is;
  replay_insert_client_stats(a->insert, &is);
  out->transitions_sent = is.transitions_sent;
  out->transitions_stored = is.transitions_stored;
  out->transitions_rejected = is.transitions_rejected;
  out->transitions_dropped = is.transitions_dropped + a->st.transitions_physics_fault;
  out->transitions_unconfirmed = is.transitions_unconfirmed;
  out->transitions_in_flight = is.transitions_in_flight;
  out->transitions_queued = is.transitions_queued;
}

metrics_registry *actor_metrics(actor_t *a) { return a->metrics; }

/* ---- creation -------------------------------------------------------------------------------- */

static int check_config(const actor_config *c, ember_err *err) {
  if (c->id < 1) return ember_fail(err, EMBER_EINVAL, "actor.id = %" PRId64 " must be >= 1", c->id);
  if (c->num_envs < 1) return ember_fail(err, EMBER_EINVAL, "actor.num_envs = %" PRId64 " must be >= 1", c->num_envs);
  if (c->transitions_per_batch < 1 || c->max_in_flight < 1 || c->queue_batches < 1)
    return ember_fail(err, EMBER_EINVAL, "actor.transitions_per_batch, max_in_flight and queue_batches must be >= 1");
  if (c->eval_episodes < 1) return ember_fail(err, EMBER_EINVAL, "actor.eval_episodes must be >= 1");
  /* env.h: env i of this actor uses RNG stream RNG_STREAM_ENV + id * K + i; ids <= 1e9 and K <= 4096
   * (the config's ranges) keep these below 2^62 streams above RNG_STREAM_ENV, apart from all others. */
  if (!c->params_endpoint[0] || !c->control_endpoint[0] || !c->replay_endpoint[0])
    return ember_fail(err, EMBER_EINVAL, "actor.params_endpoint, control_endpoint and replay_endpoint must be set");
  return EMBER_OK;
}

static int alloc_buffers(actor_t *a, ember_err *err) {
  size_t K = (size_t)a->K, E = (size_t)a->E, O = (size_t)a->obs_dim, A = (size_t)a->act_dim, B = (size_t)a->B;
  int failed = 0;
  a->obs = zalloc(K * O, sizeof(float), &failed);
  a->actions = zalloc(K * A, sizeof(float), &failed);
  a->log_probs = zalloc(K, sizeof(float), &failed);
  a->next_obs = zalloc(K * O, sizeof(float), &failed);
  a->reward = zalloc(K, sizeof(float), &failed);
  a->terminated = zalloc(K, 1, &failed);
  a->truncated = zalloc(K, 1, &failed);
  a->episode_return = zalloc(K, sizeof(double), &failed);
  a->episode_length = zalloc(K, sizeof(int32_t), &failed);
  a->eval_actions = zalloc(E * A, sizeof(float), &failed);
  a->eval_next_obs = zalloc(E * O, sizeof(float), &failed);
  a->eval_reward = zalloc(E, sizeof(float), &failed);
  a->eval_terminated = zalloc(E, 1, &failed);
  a->eval_truncated = zalloc(E, 1, &failed);
  a->eval_done = zalloc(E, 1, &failed);
  a->eval_return = zalloc(E, sizeof(double), &failed);
  a->eval_length = zalloc(E, sizeof(int32_t), &failed);
  a->b_obs = zalloc(B * O, sizeof(float), &failed);
  a->b_action = zalloc(B * A, sizeof(float), &failed);
  a->b_reward = zalloc(B, sizeof(float), &failed);
  a->b_next_obs = zalloc(B * O, sizeof(float), &failed);
  a->b_log_prob = zalloc(B, sizeof(float), &failed);
  a->b_terminated = zalloc(B, sizeof(protobuf_c_boolean), &failed);
  a->b_truncated = zalloc(B, sizeof(protobuf_c_boolean), &failed);
  if (failed) return ember_fail(err, EMBER_ENOMEM, "actor: out of memory for %zu envs and %zu-row batches", K, B);
  return EMBER_OK;
}

static void init_batch(actor_t *a) {
  Ember__TransitionBatch *b = &a->batch;
  ember__transition_batch__init(b);
  b->task = a->cfg.task;
  b->obs_dim = (uint32_t)a->obs_dim;
  b->act_dim = (uint32_t)a->act_dim;
  b->actor_id = (uint64_t)a->cfg.id;
  b->obs = a->b_obs;
  b->action = a->b_action;
  b->reward = a->b_reward;
  b->next_obs = a->b_next_obs;
  b->terminated = a->b_terminated;
  b->truncated = a->b_truncated;
  b->behaviour_log_prob = a->b_log_prob;
}

static int open_sockets(actor_t *a, ember_err *err) {
  net_socket_opts o = {0};
  o.max_message_bytes = a->cfg.max_message_bytes;
  o.linger_ms = 0;
  o.subscribe = "";
  o.recv_hwm = 4; /* only the newest Params matter: a short queue keeps stale ones from piling up */
  a->sub = net_socket(a->ctx, ZMQ_SUB, a->cfg.params_endpoint, false, &o, err);
  if (!a->sub) return ember_err_prefix(err, "actor.params_endpoint: ");
  net_socket_opts d = {0};
  d.max_message_bytes = a->cfg.max_message_bytes;
  d.linger_ms = 0;
  a->dealer = net_socket(a->ctx, ZMQ_DEALER, a->cfg.control_endpoint, false, &d, err);
  if (!a->dealer) return ember_err_prefix(err, "actor.control_endpoint: ");
  replay_insert_opts io = {0};
  io.endpoint = a->cfg.replay_endpoint;
  io.actor_id = (uint64_t)a->cfg.id;
  io.max_in_flight = (int)a->cfg.max_in_flight;
  io.queue_batches = (int)a->cfg.queue_batches;
  io.ack_timeout_ms = (int)a->cfg.ack_timeout_ms;
  io.max_message_bytes = a->cfg.max_message_bytes;
  a->insert = replay_insert_client_new(a->ctx, &io, err);
  if (!a->insert) return ember_err_prefix(err, "actor.replay_endpoint: ");
  if (net_default_security_enabled() && strncmp(a->cfg.control_endpoint, "inproc://", 9) != 0) {
    /* A server that refuses our key says nothing to us; the socket monitor does. */
    if (!(a->watch_sub = auth_watch_new(a->ctx, a->sub, err)) ||
        !(a->watch_dealer = auth_watch_new(a->ctx, a->dealer, err)))
      return ember_err_prefix(err, "actor: watching for CurveZMQ refusals: ");
  }
  return EMBER_OK;
}

actor_t *actor_new(const actor_config *cfg, void *zmq_ctx, metrics_registry *metrics, ember_err *err) {
  if (!cfg || !zmq_ctx) {
    ember_fail(err, EMBER_EINVAL, "actor_new needs a config and a zmq context");
    return NULL;
  }
  if (check_config(cfg, err)) return NULL;
  actor_t *a = calloc(1, sizeof *a);
  if (!a) {
    ember_fail(err, EMBER_ENOMEM, "actor: out of memory");
    return NULL;
  }
  a->cfg = *cfg;
  a->ctx = zmq_ctx;
  atomic_init(&a->stop, 0);
  a->metrics = metrics;
  if (!a->metrics) a->metrics = a->own_metrics = metrics_new();
  if (!a->metrics) {
    ember_fail(err, EMBER_ENOMEM, "actor: out of memory for metrics");
    goto fail;
  }
  if (env_model_load(cfg->task, cfg->model_dir[0] ? cfg->model_dir : NULL, &a->model, err)) {
    ember_err_prefix(err, "actor.task = '%s': ", cfg->task);
    goto fail;
  }
  a->spec = env_model_spec(a->model);
  a->K = (int)cfg->num_envs;
  a->E = (int)cfg->eval_episodes;
  a->B = (int)cfg->transitions_per_batch;
  a->obs_dim = a->spec->obs_dim;
  a->act_dim = a->spec->act_dim;
  a->uniform_log_prob = (float)(-a->act_dim * log(2.0));

  env_vec_config vc = {0};
  vc.n_envs = a->K;
  vc.seed = (uint64_t)cfg->seed;
  vc.first_env_id = (uint64_t)cfg->id * (uint64_t)a->K;
  vc.max_episode_steps = (int)cfg->max_episode_steps;
  if (env_vec_new(a->model, &vc, &a->vec, err)) goto fail;
  env_vec_config ec = vc;
  ec.n_envs = a->E;
  ec.seed = (uint64_t)cfg->seed ^ EVAL_SEED_SALT;
  ec.first_env_id = (uint64_t)cfg->id * (uint64_t)a->E;
  if (env_vec_new(a->model, &ec, &a->eval_vec, err)) goto fail;

  if (alloc_buffers(a, err)) goto fail;
  init_batch(a);
  rng_seed(&a->rng, (uint64_t)cfg->seed, RNG_STREAM_ACTOR + (uint64_t)cfg->id);
  if (open_sockets(a, err)) goto fail;
  register_metrics(a);
  a->st.last_episode_return = NAN;
  a->st.last_eval_return = NAN;
  a->next_eval_version = (uint64_t)cfg->eval_every_versions;
  if (gethostname(a->hostname, sizeof a->hostname - 1) != 0) snprintf(a->hostname, sizeof a->hostname, "unknown");
  return a;
fail:
  actor_destroy(&a);
  return NULL;
}

void actor_destroy(actor_t **a_p) {
  if (!a_p || !*a_p) return;
  actor_t *a = *a_p;
  replay_insert_client_destroy(&a->insert);
  auth_watch_destroy(&a->watch_sub);
  auth_watch_destroy(&a->watch_dealer);
  if (a->sub) zmq_close(a->sub);
  if (a->dealer) zmq_close(a->dealer);
  policy_destroy(&a->policy);
  policy_destroy(&a->eval_policy);
  env_vec_destroy(&a->vec);
  env_vec_destroy(&a->eval_vec);
  env_model_destroy(&a->model);
  void *bufs[] = {a->obs, a->actions, a->log_probs, a->next_obs, a->reward, a->terminated, a->truncated,
                  a->episode_return, a->episode_length, a->eval_actions, a->eval_next_obs, a->eval_reward,
                  a->eval_terminated, a->eval_truncated, a->eval_done, a->eval_return, a->eval_length,
                  a->b_obs, a->b_action, a->b_reward, a->b_next_obs, a->b_log_prob, a->b_terminated,
                  a->b_truncated};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
  metrics_destroy(&a->own_metrics);
  free(a);
  *a_p = NULL;
}

void actor_stop(actor_t *a) { atomic_store(&a->stop, 1); }

/* ---- talking to the learner ------------------------------------------------------------------- */

static void send_control(actor_t *a, Ember__Envelope__BodyCase body_case, void *body) {
  ember_err err = {0};
  if (net_send_body(a->dealer, body_case, body, NULL, ZMQ_DONTWAIT, &err) != 0) a->st.reports_dropped++;
}

static void send_hello(actor_t *a) {
  Ember__Hello h = EMBER__HELLO__INIT;
  h.role = "actor";
  h.id = (uint64_t)a->cfg.id;
  h.task = a->cfg.task;
  h.obs_dim = (uint32_t)a->obs_dim;
  h.act_dim = (uint32_t)a->act_dim;
  h.software_version = EMBER_VERSION;
  h.hostname = a->hostname;
  h.pid = (uint32_t)getpid();
  send_control(a, EMBER__ENVELOPE__BODY_HELLO, &h);
}

static void send_params_request(actor_t *a, int64_t t) {
  Ember__ParamsRequest r = EMBER__PARAMS_REQUEST__INIT;
  r.actor_id = (uint64_t)a->cfg.id;
  r.have_version = a->st.policy_version;
  send_control(a, EMBER__ENVELOPE__BODY_PARAMS_REQUEST, &r);
  a->last_request_ms = t;
}

static void send_heartbeat(actor_t *a, int64_t t) {
  Ember__Heartbeat h = EMBER__HEARTBEAT__INIT;
  h.role = "actor";
  h.id = (uint64_t)a->cfg.id;
  h.unix_ms = unix_ms();
  h.policy_version = a->st.policy_version;
  send_control(a, EMBER__ENVELOPE__BODY_HEARTBEAT, &h);
  a->last_heartbeat_ms = t;
}

static void send_episode(actor_t *a, uint64_t version, double ret, int32_t length, bool evaluation, bool terminated) {
  Ember__EpisodeReport r = EMBER__EPISODE_REPORT__INIT;
  r.actor_id = (uint64_t)a->cfg.id;
  r.policy_version = version;
  r.episode_return = ret;
  r.length = (uint32_t)length;
  r.evaluation = evaluation;
  r.terminated = terminated;
  send_control(a, EMBER__ENVELOPE__BODY_EPISODE, &r);
}

static void start_eval(actor_t *a, const Ember__Params *p) {
  ember_err err = {0};
  int rc;
  if (!a->eval_policy) {
    policy_config pc = {a->cfg.task, a->obs_dim, a->act_dim, a->E};
    a->eval_policy = policy_new(p, &pc, &err);
    rc = a->eval_policy ? 0 : err.code;
  } else {
    rc = policy_update(a->eval_policy, p, &err);
  }
  if (rc) { /* cannot happen for Params the training policy accepted; say so if it does */
    log_event(LOG_ERROR, COMPONENT, "eval_policy_failed", LF_U64("actor_id", a->cfg.id), LF_STR("error", err.msg));
    return;
  }
  env_vec_reset(a->eval_vec);
  memset(a->eval_done, 0, (size_t)a->E);
  a->eval_active = true;
  a->eval_remaining = a->E;
  a->eval_return_sum = 0.0;
  a->eval_version = p->version;
  a->next_eval_version = p->version + (uint64_t)a->cfg.eval_every_versions;
}

/* Swaps in newer Params, or refuses them (counted, logged) and keeps the policy held. */
static void take_params(actor_t *a, const Ember__Params *p, int64_t t) {
  a->st.params_received++;
  a->last_params_ms = t;
  if (p->version == 0 || p->version <= a->st.policy_version) {
    if (p->version == 0) {
      a->st.params_refused++;
      log_refusal(a, &a->params_log, "params_refused", "Params version 0 is reserved for random actions");
    } else {
      a->st.params_stale++;
    }
    return;
  }
  ember_err err = {0};
  int rc;
  if (!a->policy) {
    policy_config pc = {a->cfg.task, a->obs_dim, a->act_dim, a->K};
    a->policy = policy_new(p, &pc, &err);
    rc = a->policy ? 0 : err.code;
  } else {
    rc = policy_update(a->policy, p, &err);
  }
  if (rc) {
    a->st.params_refused++;
    char why[600];
    snprintf(why, sizeof why, "Params version %" PRIu64 " from '%s' refused (%s): %s", p->version,
             p->algorithm ? p->algorithm : "", ember_strerror(rc), err.msg);
    log_refusal(a, &a->params_log, "params_refused", why);
    return;
  }
  uint64_t old = a->st.policy_version;
  a->st.policy_version = p->version;
  a->st.params_applied++;
  if (old == 0)
    log_event(LOG_INFO, COMPONENT, "first_params", LF_U64("actor_id", a->cfg.id), LF_U64("version", p->version),
              LF_STR("algorithm", p->algorithm ? p->algorithm : ""), LF_U64("env_steps", a->st.env_steps));
  if (a->cfg.eval_every_versions > 0 && !a->eval_active && p->version >= a->next_eval_version) start_eval(a, p);
}

static void handle_message(actor_t *a, Ember__Envelope *env, bool from_dealer, int64_t t) {
  switch (env->body_case) {
    case EMBER__ENVELOPE__BODY_PARAMS:
      take_params(a, env->params, t);
      break;
    case EMBER__ENVELOPE__BODY_ERROR:
      if (from_dealer) {
        char why[600];
        snprintf(why, sizeof why, "learner replied with error %u: %s", env->error->code,
                 env->error->message ? env->error->message : "");
        log_refusal(a, &a->message_log, "learner_error", why);
        break;
      }
      __attribute__((fallthrough)); /* an ErrorReply on the broadcast socket is unexpected */
    default: {
      a->st.messages_refused++;
      char why[128];
      snprintf(why, sizeof why, "unexpected %s on the %s socket", net_body_name(env->body_case),
               from_dealer ? "control" : "params");
      log_refusal(a, &a->message_log, "message_refused", why);
    }
  }
}

static void poll_socket(actor_t *a, void *sock, bool from_dealer, int64_t t) {
  for (int i = 0; i < MAX_MESSAGES_PER_STEP; i++) {
    Ember__Envelope *env = NULL;
    ember_err err = {0};
    int rc = net_recv(sock, &env, NULL, ZMQ_DONTWAIT, &err);
    if (rc == EMBER_EAGAIN) return;
    if (rc) {
      a->st.messages_refused++;
      log_refusal(a, &a->message_log, "message_refused", err.msg);
      if (rc == EMBER_EIO) return;
      continue;
    }
    handle_message(a, env, from_dealer, t);
    net_envelope_free(env);
  }
}

/* ---- transitions ------------------------------------------------------------------------------ */

static void hand_over_batch(actor_t *a) {
  if (a->rows == 0) return;
  Ember__TransitionBatch *b = &a->batch;
  size_t n = (size_t)a->rows, O = (size_t)a->obs_dim, A = (size_t)a->act_dim;
  b->count = (uint32_t)n;
  b->n_obs = b->n_next_obs = n * O;
  b->n_action = n * A;
  b->n_reward = b->n_terminated = b->n_truncated = b->n_behaviour_log_prob = n;
  ember_err err = {0};
  if (replay_insert_client_send(a->insert, b, &err) != 0)
    log_refusal(a, &a->insert_log, "batch_dropped", err.msg); /* the client counted it as dropped */
  a->st.batches_made++;
  a->rows = 0;
}

static int all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

/* Logs a burst of physics faults once: when it starts, and when no fault has come for
 * PHYSICS_FAULT_QUIET_MS (with the burst's count). Called every step, n = this step's faults. */
static void note_physics_faults(actor_t *a, int n, int first_env, const char *why, int64_t t) {
  fault_burst *b = &a->faults;
  if (n == 0) {
    if (b->active && t - b->last_ms >= PHYSICS_FAULT_QUIET_MS) {
      log_event(LOG_INFO, COMPONENT, "physics_faults_ended", LF_U64("actor_id", a->cfg.id),
                LF_U64("transitions_dropped", b->transitions), LF_I64("duration_ms", b->last_ms - b->start_ms),
                LF_U64("physics_fault_transitions_total", a->st.transitions_physics_fault));
      b->active = false;
    }
    return;
  }
  if (!b->active) {
    log_event(LOG_WARN, COMPONENT, "physics_fault", LF_U64("actor_id", a->cfg.id), LF_STR("task", a->cfg.task),
              LF_I64("env", first_env), LF_STR("error", why),
              LF_STR("action", "transition dropped and counted in actor_physics_fault_transitions_total, env "
                               "reset; logged once per burst"),
              LF_U64("env_steps", a->st.env_steps));
    *b = (fault_burst){.active = true, .start_ms = t};
  }
  b->transitions += (uint64_t)n;
  b->last_ms = t;
}

/* Appends the K transitions of one step, leaving out physics faults; a batch is handed over when
 * full, and before the first row of another policy version. */
static void append_transitions(actor_t *a, uint64_t version, int64_t t) {
  if (a->rows > 0 && a->batch.policy_version != version) hand_over_batch(a);
  const size_t O = (size_t)a->obs_dim, A = (size_t)a->act_dim;
  const uint8_t *faults = env_vec_physics_faults(a->vec);
  int n_faults = 0, first_fault = -1;
  const char *why = NULL;
  for (int k = 0; k < a->K; k++) {
    int flagged = faults[k] != 0;
    if (flagged || !isfinite(a->reward[k]) || !all_finite(a->obs + (size_t)k * O, O) ||
        !all_finite(a->next_obs + (size_t)k * O, O)) {
      a->st.transitions_physics_fault++;
      if (n_faults++ == 0) {
        first_fault = k;
        why = flagged ? "MuJoCo found the step unstable (NaN/Inf state, or contact/constraint buffer full)"
                      : "non-finite observation or reward";
      }
      continue;
    }
    if (a->rows == 0) a->batch.policy_version = version;
    size_t r = (size_t)a->rows;
    memcpy(a->b_obs + r * O, a->obs + (size_t)k * O, O * sizeof(float));
    memcpy(a->b_next_obs + r * O, a->next_obs + (size_t)k * O, O * sizeof(float));
    memcpy(a->b_action + r * A, a->actions + (size_t)k * A, A * sizeof(float));
    a->b_reward[r] = a->reward[k];
    a->b_terminated[r] = a->terminated[k] != 0;
    a->b_truncated[r] = a->truncated[k] != 0;
    a->b_log_prob[r] = a->log_probs[k];
    a->rows++;
    if (a->rows == a->B) hand_over_batch(a);
  }
  note_physics_faults(a, n_faults, first_fault, why, t);
}

/* ---- the loop ---------------------------------------------------------------------------------- */

static void uniform_actions(actor_t *a, int first_env, int count) {
  for (int i = first_env * a->act_dim; i < (first_env + count) * a->act_dim; i++)
    a->actions[i] = 2.0f * rng_uniform_f(&a->rng) - 1.0f;
  for (int k = first_env; k < first_env + count; k++) a->log_probs[k] = a->uniform_log_prob;
}

static void finish_episodes(actor_t *a, uint64_t version) {
  for (int k = 0; k < a->K; k++) {
    if (!a->terminated[k] && !a->truncated[k]) continue;
    double ret = a->episode_return[k];
    int32_t len = a->episode_length[k];
    a->st.episodes++;
    a->st.last_episode_return = ret;
    a->log_episodes++;
    a->log_return_sum += ret;
    a->log_length_sum += len;
    send_episode(a, version, ret, len, false, a->terminated[k] != 0);
    if (log_get_level() <= LOG_DEBUG)
      log_event(LOG_DEBUG, COMPONENT, "episode", LF_U64("actor_id", a->cfg.id), LF_U64("policy_version", version),
                LF_F64("return", ret), LF_I64("length", len), LF_BOOL("terminated", a->terminated[k]));
  }
}

static int eval_step(actor_t *a, ember_err *err) {
  const float *obs = env_vec_obs(a->eval_vec);
  int rc = policy_act(a->eval_policy, obs, a->E, true, NULL, a->eval_actions, NULL, err);
  if (rc) return rc;
  if (!all_finite(a->eval_actions, (size_t)a->E * a->act_dim)) {
    /* the policy is broken for these states: end the evaluation, it could not be completed */
    a->st.nonfinite_actions++;
    a->eval_active = false;
    log_event(LOG_WARN, COMPONENT, "evaluation_abandoned", LF_U64("actor_id", a->cfg.id),
              LF_U64("policy_version", a->eval_version), LF_STR("error", "non-finite actions"));
    return EMBER_OK;
  }
  env_step_out out = {a->eval_next_obs, a->eval_reward, a->eval_terminated, a->eval_truncated, a->eval_return,
                      a->eval_length};
  rc = env_vec_step(a->eval_vec, a->eval_actions, &out, err);
  if (rc) return rc;
  for (int e = 0; e < a->E; e++) {
    if (a->eval_done[e] || (!a->eval_terminated[e] && !a->eval_truncated[e])) continue;
    a->eval_done[e] = 1;
    a->eval_remaining--;
    a->eval_return_sum += a->eval_return[e];
    a->st.eval_episodes++;
    send_episode(a, a->eval_version, a->eval_return[e], a->eval_length[e], true, a->eval_terminated[e] != 0);
  }
  if (a->eval_remaining == 0) {
    a->eval_active = false;
    a->st.evaluations++;
    a->st.last_eval_return = a->eval_return_sum / a->E;
    a->st.last_eval_version = a->eval_version;
    log_event(LOG_INFO, COMPONENT, "evaluation", LF_U64("actor_id", a->cfg.id),
              LF_U64("policy_version", a->eval_version), LF_I64("episodes", a->E),
              LF_F64("mean_return", a->st.last_eval_return), LF_U64("env_steps", a->st.env_steps));
  }
  return EMBER_OK;
}

static void log_progress(actor_t *a, int64_t t) {
  double seconds = (double)(t - a->last_log_ms) / 1000.0;
  actor_stats s;
  actor_get_stats(a, &s);
  log_event(LOG_INFO, COMPONENT, "progress", LF_U64("actor_id", a->cfg.id), LF_U64("env_steps", s.env_steps),
            LF_F64("env_steps_per_s", seconds > 0 ? (double)a->log_steps / seconds : 0.0),
            LF_U64("episodes", a->log_episodes),
            LF_F64("mean_return", a->log_episodes ? a->log_return_sum / (double)a->log_episodes : NAN),
            LF_F64("mean_length", a->log_episodes ? a->log_length_sum / (double)a->log_episodes : NAN),
            LF_U64("policy_version", s.policy_version), LF_U64("stored", s.transitions_stored),
            LF_U64("dropped", s.transitions_dropped), LF_U64("physics_faults", s.transitions_physics_fault),
            LF_U64("params_refused", s.params_refused));
  a->last_log_ms = t;
  a->log_steps = a->log_episodes = 0;
  a->log_return_sum = a->log_length_sum = 0.0;
}

/* With replay_wait_ms: a full queue means replay is not taking inserts as fast as the actor makes
 * them (its rate limiter, a link still backed up, or no replay at all); hold the training envs, up to
 * replay_wait_ms per step, rather than make transitions only to drop them. Waiting only while batches
 * were in flight was not enough: once a short ack_timeout_ms had written them off, the loop ran on at
 * full speed and dropped nearly everything until the link drained. The hold is waited in slices of at
 * most PACE_SLICE_MS, each followed by the rest of the loop (Params, heartbeats, actor_stop), and an
 * evaluation under way plays its steps instead of sleeping: held back by replay's rate limiter (`ember
 * train`), an evaluation of 1000-step episodes otherwise ends thousands of env steps after its
 * policy's publication. Returns true when the training envs may step (room, or the hold ran out: the
 * step then drops the oldest queued batch, counted). */
#define PACE_SLICE_MS 50
static bool pace_to_replay(actor_t *a, ember_err *err, int *rc) {
  *rc = EMBER_OK;
  replay_insert_stats is;
  replay_insert_client_stats(a->insert, &is);
  if (is.queued < (uint32_t)a->cfg.queue_batches) {
    a->held_since_us = 0;
    return true;
  }
  int64_t t0 = now_us();
  if (!a->held_since_us) a->held_since_us = t0;
  int64_t left_ms = a->cfg.replay_wait_ms - (t0 - a->held_since_us) / 1000;
  if (left_ms <= 0) {
    a->held_since_us = 0;
    return true; /* held long enough: step, even if that drops a batch */
  }
  bool room;
  if (a->eval_active) {
    *rc = eval_step(a, err);
    room = replay_insert_client_wait_for_room(a->insert, 0) == 1;
  } else {
    room = replay_insert_client_wait_for_room(a->insert, (int)(left_ms < PACE_SLICE_MS ? left_ms : PACE_SLICE_MS)) == 1;
  }
  a->st.replay_wait_us += (uint64_t)(now_us() - t0);
  if (room) a->held_since_us = 0;
  return room;
}

/* Learner messages, heartbeats, a ParamsRequest when Params are overdue, progress and metrics: the part
 * of a loop iteration that goes on while the training envs are held. */
static int housekeeping(actor_t *a, int64_t t, ember_err *err) {
  replay_insert_client_poll(a->insert, 0);
  if (t - a->last_heartbeat_ms >= a->cfg.heartbeat_ms) {
    send_heartbeat(a, t);
    if (a->watch_dealer && (auth_watch_refusals(a->watch_dealer) || auth_watch_refusals(a->watch_sub))) {
      metric_inc(a->m.auth_refused);
      return ember_fail(err, EMBER_EAUTH,
                        "the learner at %s refused this actor's CurveZMQ key (is its .pub in the servers' "
                        "security.allow_dir, and security.server_key_file the servers' key?)",
                        a->cfg.control_endpoint);
    }
  }
  int64_t silent_since = a->last_params_ms > a->last_request_ms ? a->last_params_ms : a->last_request_ms;
  if (t - silent_since >= a->cfg.params_request_ms) send_params_request(a, t);
  if (a->cfg.log_interval_s > 0 && t - a->last_log_ms >= a->cfg.log_interval_s * 1000) log_progress(a, t);
  if (t - a->last_sync_ms >= 100) {
    sync_metrics(a);
    a->last_sync_ms = t;
  }
  return EMBER_OK;
}

/* One iteration: learner messages, act, step, record, evaluate, send, timers (or, held for replay,
 * all but the training step). */
static int step_once(actor_t *a, ember_err *err) {
  int rc = EMBER_OK;
  const bool step = a->cfg.replay_wait_ms <= 0 || pace_to_replay(a, err, &rc);
  if (rc) return rc;
  int64_t t = now_ms();
  poll_socket(a, a->sub, false, t);
  poll_socket(a, a->dealer, true, t);
  if (!step) return housekeeping(a, t, err); /* held for replay */

  const size_t OK = (size_t)a->K * a->obs_dim;
  memcpy(a->obs, env_vec_obs(a->vec), OK * sizeof(float));
  uint64_t version = a->policy ? a->st.policy_version : 0;
  if (a->policy) {
    rc = policy_act(a->policy, a->obs, a->K, false, &a->rng, a->actions, a->log_probs, err);
    if (rc) return rc;
    if (!all_finite(a->actions, (size_t)a->K * a->act_dim)) {
      a->st.nonfinite_actions++;
      uniform_actions(a, 0, a->K);
    }
  } else {
    uniform_actions(a, 0, a->K);
  }
  env_step_out out = {a->next_obs, a->reward, a->terminated, a->truncated, a->episode_return, a->episode_length};
  rc = env_vec_step(a->vec, a->actions, &out, err);
  if (rc) return rc;
  a->st.env_steps += (uint64_t)a->K;
  a->log_steps += (uint64_t)a->K;
  append_transitions(a, version, t);
  finish_episodes(a, version);
  if (a->eval_active) {
    rc = eval_step(a, err);
    if (rc) return rc;
  }
  return housekeeping(a, t, err);
}

/* actor.nice: where actors share cores with the replay server and the learner (a laptop, `ember
 * train`), a nicer env thread keeps them from being starved by their own clients. Linux keeps a
 * niceness per thread, set through the thread's id; only this thread changes. Returns the niceness
 * the thread then runs at. */
static int apply_nice(actor_t *a) {
#ifdef __linux__
  id_t tid = (id_t)syscall(SYS_gettid);
  if (a->cfg.nice > 0 && setpriority(PRIO_PROCESS, tid, (int)a->cfg.nice) != 0) {
    char why[160];
    snprintf(why, sizeof why, "setpriority(thread %ld, %" PRId64 "): %s", (long)tid, a->cfg.nice, strerror(errno));
    log_event(LOG_WARN, COMPONENT, "nice_failed", LF_U64("actor_id", a->cfg.id), LF_I64("nice", a->cfg.nice),
              LF_STR("error", why));
  }
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, tid);
  return errno ? 0 : nice;
#else
  if (a->cfg.nice > 0)
    log_event(LOG_WARN, COMPONENT, "nice_failed", LF_U64("actor_id", a->cfg.id), LF_I64("nice", a->cfg.nice),
              LF_STR("error", "actor.nice is applied per thread on Linux only; the thread runs as inherited"));
  return 0;
#endif
}

int actor_run(actor_t *a, ember_err *err) {
  a->st.nice = apply_nice(a);
  int64_t t = now_ms();
  a->start_ms = a->last_log_ms = a->last_sync_ms = a->last_params_ms = t;
  log_event(LOG_INFO, COMPONENT, "started", LF_U64("actor_id", a->cfg.id), LF_STR("task", a->cfg.task),
            LF_I64("num_envs", a->K), LF_STR("params_endpoint", a->cfg.params_endpoint),
            LF_STR("control_endpoint", a->cfg.control_endpoint), LF_STR("replay_endpoint", a->cfg.replay_endpoint),
            LF_I64("nice", a->st.nice));
  send_hello(a);
  send_params_request(a, t);
  send_heartbeat(a, t);
  int rc = EMBER_OK;
  const uint64_t max_steps = (uint64_t)a->cfg.max_env_steps;
  while (!atomic_load_explicit(&a->stop, memory_order_relaxed)) {
    if (max_steps && a->st.env_steps >= max_steps) break;
    rc = step_once(a, err);
    if (rc) {
      log_event(LOG_ERROR, COMPONENT, "env_loop_failed", LF_U64("actor_id", a->cfg.id),
                LF_STR("error", err ? err->msg : ember_strerror(rc)));
      break;
    }
  }
  hand_over_batch(a);
  int drained = replay_insert_client_flush(a->insert, (int)a->cfg.drain_ms);
  sync_metrics(a);
  actor_stats s;
  actor_get_stats(a, &s);
  log_event(LOG_INFO, COMPONENT, "stopped", LF_U64("actor_id", a->cfg.id), LF_U64("env_steps", s.env_steps),
            LF_U64("stored", s.transitions_stored), LF_U64("rejected", s.transitions_rejected),
            LF_U64("dropped", s.transitions_dropped), LF_U64("physics_faults", s.transitions_physics_fault),
            LF_U64("unconfirmed", s.transitions_unconfirmed),
            LF_U64("in_flight", s.transitions_in_flight + s.transitions_queued), LF_U64("episodes", s.episodes),
            LF_U64("policy_version", s.policy_version), LF_BOOL("drained", drained == 0));
  return rc;
}

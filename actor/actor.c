/* actor.c: the actor's lifecycle (see actor.h; its files: actor_internal.h). */
#include "actor.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "actor_internal.h"
#include "log.h"

/* ---- small helpers --------------------------------------------------------------------------- */

/* Logs a refusal the first time and then at most once per REFUSAL_LOG_INTERVAL_MS. */
void actor_log_refusal(actor_t *a, refusal_log *rl, const char *event, const char *why) {
  int64_t t = actor_now_ms();
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
  m->evaluations = metrics_counter(r, "actor_evaluations_total", labels, "evaluations completed and reported");
  m->evaluations_skipped = metrics_counter(r, "actor_evaluations_skipped_total", labels,
                                           "due versions not evaluated: a newer one became due while an "
                                           "evaluation ran");
  m->evaluations_abandoned = metrics_counter(r, "actor_evaluations_abandoned_total", labels,
                                             "evaluations given up (non-finite actions, an env failure): nothing "
                                             "reported for that version");
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
void actor_sync_metrics(actor_t *a) {
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
  add_delta(m->evaluations_skipped, s.evaluations_skipped, &p->evaluations_skipped);
  add_delta(m->evaluations_abandoned, s.evaluations_abandoned, &p->evaluations_abandoned);
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
  replay_insert_stats is = {0};
  if (a->insert) replay_insert_client_stats(a->insert, &is);
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
  if (strcmp(c->role, "train") != 0 && strcmp(c->role, "eval") != 0)
    return ember_fail(err, EMBER_EINVAL, "actor.role = '%s' is not train or eval", c->role);
  if (!isfinite(c->ctrl_noise_std) || c->ctrl_noise_std < 0) /* the config loader refuses these too */
    return ember_fail(err, EMBER_EINVAL, "actor.ctrl_noise_std = %g must be finite and >= 0", c->ctrl_noise_std);
  /* env.h: env i of this actor uses RNG stream RNG_STREAM_ENV + id * K + i; ids <= 1e9 and K <= 4096
   * (the config's ranges) keep these below 2^62 streams above RNG_STREAM_ENV, apart from all others. */
  if (!c->params_endpoint[0] || !c->control_endpoint[0])
    return ember_fail(err, EMBER_EINVAL, "actor.params_endpoint and control_endpoint must be set");
  if (strcmp(c->role, "train") == 0 && !c->replay_endpoint[0])
    return ember_fail(err, EMBER_EINVAL, "actor.replay_endpoint must be set for actor.role train");
  return EMBER_OK;
}

static int alloc_buffers(actor_t *a, ember_err *err) {
  size_t K = (size_t)a->K, O = (size_t)a->obs_dim, A = (size_t)a->act_dim, B = (size_t)a->B;
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
  if (!a->eval_role) {
    replay_insert_opts io = {0};
    io.endpoint = a->cfg.replay_endpoint;
    io.actor_id = (uint64_t)a->cfg.id;
    io.max_in_flight = (int)a->cfg.max_in_flight;
    io.queue_batches = (int)a->cfg.queue_batches;
    io.ack_timeout_ms = (int)a->cfg.ack_timeout_ms;
    io.max_message_bytes = a->cfg.max_message_bytes;
    a->insert = replay_insert_client_new(a->ctx, &io, err);
    if (!a->insert) return ember_err_prefix(err, "actor.replay_endpoint: ");
  }
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
  a->eval_role = strcmp(cfg->role, "eval") == 0;
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
  a->K = a->eval_role ? 0 : (int)cfg->num_envs;
  a->B = (int)cfg->transitions_per_batch;
  a->obs_dim = a->spec->obs_dim;
  a->act_dim = a->spec->act_dim;
  a->uniform_log_prob = (float)(-a->act_dim * log(2.0));

  env_vec_config vc = {0};
  vc.n_envs = a->K;
  vc.seed = (uint64_t)cfg->seed;
  vc.first_env_id = (uint64_t)cfg->id * (uint64_t)a->K;
  vc.max_episode_steps = (int)cfg->max_episode_steps;
  vc.ctrl_noise_std = cfg->ctrl_noise_std;
  if (a->eval_role) {
    /* the start states: env streams of their own (the actor's id range for eval_episodes envs) */
    evaluation_config ec = {.episodes = (int)cfg->eval_episodes, .seed = (uint64_t)cfg->seed ^ EVAL_SEED_SALT,
                            .first_env_id = (uint64_t)cfg->id * (uint64_t)cfg->eval_episodes,
                            .max_episode_steps = (int)cfg->max_episode_steps,
                            .ctrl_noise_std = cfg->ctrl_noise_std};
    if (!(a->eval = evaluation_new(a->model, &ec, err))) goto fail;
  } else if (env_vec_new(a->model, &vc, &a->vec, err)) {
    goto fail;
  }

  if (alloc_buffers(a, err)) goto fail;
  init_batch(a);
  rng_seed(&a->rng, (uint64_t)cfg->seed, RNG_STREAM_ACTOR + (uint64_t)cfg->id);
  if (open_sockets(a, err)) goto fail;
  register_metrics(a);
  a->st.last_episode_return = NAN;
  a->st.last_eval_return = NAN;
  a->next_eval_steps = (uint64_t)cfg->eval_every_steps;
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
  evaluation_destroy(&a->eval);
  if (a->eval_pending) net_envelope_free(a->eval_pending);
  env_vec_destroy(&a->vec);
  env_model_destroy(&a->model);
  void *bufs[] = {a->obs, a->actions, a->log_probs, a->next_obs, a->reward, a->terminated, a->truncated,
                  a->episode_return, a->episode_length, a->b_obs, a->b_action, a->b_reward, a->b_next_obs, a->b_log_prob, a->b_terminated,
                  a->b_truncated};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
  metrics_destroy(&a->own_metrics);
  free(a);
  *a_p = NULL;
}

void actor_stop(actor_t *a) { atomic_store(&a->stop, 1); }

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
  int64_t t = actor_now_ms();
  a->start_ms = a->last_log_ms = a->last_sync_ms = a->last_params_ms = t;
  if (a->eval_role)
    log_event(LOG_INFO, COMPONENT, "started", LF_U64("actor_id", a->cfg.id), LF_STR("role", "eval"),
              LF_STR("task", a->cfg.task), LF_I64("eval_episodes", a->cfg.eval_episodes),
              LF_I64("eval_every_steps", a->cfg.eval_every_steps), LF_F64("ctrl_noise_std", a->cfg.ctrl_noise_std),
              LF_STR("params_endpoint", a->cfg.params_endpoint), LF_STR("control_endpoint", a->cfg.control_endpoint),
              LF_I64("nice", a->st.nice));
  else
    log_event(LOG_INFO, COMPONENT, "started", LF_U64("actor_id", a->cfg.id), LF_STR("role", "train"),
              LF_STR("task", a->cfg.task), LF_I64("num_envs", a->K), LF_F64("ctrl_noise_std", a->cfg.ctrl_noise_std),
              LF_STR("params_endpoint", a->cfg.params_endpoint), LF_STR("control_endpoint", a->cfg.control_endpoint),
              LF_STR("replay_endpoint", a->cfg.replay_endpoint), LF_I64("nice", a->st.nice));
  actor_send_hello(a);
  actor_send_params_request(a, t);
  actor_send_heartbeat(a, t);
  int rc = EMBER_OK;
  const uint64_t max_steps = (uint64_t)a->cfg.max_env_steps;
  while (!atomic_load_explicit(&a->stop, memory_order_relaxed)) {
    if (max_steps && a->st.env_steps >= max_steps) break;
    rc = a->eval_role ? actor_step_eval(a, err) : actor_step_train(a, err);
    if (rc) {
      log_event(LOG_ERROR, COMPONENT, "env_loop_failed", LF_U64("actor_id", a->cfg.id),
                LF_STR("error", err ? err->msg : ember_strerror(rc)));
      break;
    }
  }
  int drained = 0;
  if (a->insert) {
    actor_hand_over_batch(a);
    drained = replay_insert_client_flush(a->insert, (int)a->cfg.drain_ms);
  }
  actor_sync_metrics(a);
  actor_stats s;
  actor_get_stats(a, &s);
  if (a->eval_role)
    log_event(LOG_INFO, COMPONENT, "evaluator_stopped", LF_U64("actor_id", a->cfg.id),
              LF_U64("evaluations", s.evaluations), LF_U64("eval_episodes", s.eval_episodes),
              LF_U64("evaluations_skipped", s.evaluations_skipped),
              LF_U64("evaluations_abandoned", s.evaluations_abandoned), LF_U64("policy_version", s.policy_version));
  else
    log_event(LOG_INFO, COMPONENT, "stopped", LF_U64("actor_id", a->cfg.id), LF_U64("env_steps", s.env_steps),
              LF_U64("stored", s.transitions_stored), LF_U64("rejected", s.transitions_rejected),
              LF_U64("dropped", s.transitions_dropped), LF_U64("physics_faults", s.transitions_physics_fault),
              LF_U64("unconfirmed", s.transitions_unconfirmed),
              LF_U64("in_flight", s.transitions_in_flight + s.transitions_queued), LF_U64("episodes", s.episodes),
              LF_U64("policy_version", s.policy_version), LF_BOOL("drained", drained == 0));
  return rc;
}

/* learner.c: the learner loop (see learner.h). */
#include "learner_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "algo.h"
#include "checkpoint.h"
#include "env_task.h"
#include "log.h"
#include "net.h"
#include "replay_client.h"
#include "tb.h"

/* ---- settings ----------------------------------------------------------------------------------- */

#define RF(name, type, lo, hi, def, help) {#name, type, offsetof(run_config, name), lo, hi, def, help}
static const config_field run_fields[] = {
    RF(task, CONFIG_STRING, 0, 0, "pendulum",
       "task to train on: pendulum, reacher, reacher7dof, half_cheetah, hopper, walker2d, ant, humanoid (docs/tasks.md)"),
    RF(algo, CONFIG_STRING, 0, 0, "sac", "algorithm (see `ember --help`)"),
    RF(steps, CONFIG_INT, 0, 1e12, "20000", "environment steps (transitions stored in replay) to train for; 0 = no limit"),
    RF(seed, CONFIG_INT, 0, 9.2e18, "1", "run seed: every RNG stream derives from it"),
    RF(run_dir, CONFIG_STRING, 0, 0, "", "directory for curves.csv, config.yaml and the final state; empty = none"),
};
#undef RF
const config_section run_config_section = {"run", run_fields, sizeof run_fields / sizeof *run_fields};

#define LF(name, type, lo, hi, def, help) {#name, type, offsetof(learner_config, name), lo, hi, def, help}
static const config_field learner_fields[] = {
    LF(batch_size, CONFIG_INT, 1, 65536, "256", "transitions per update"),
    LF(publish_every, CONFIG_INT, 1, 1e9, "50", "publish the policy (Params) every this many updates"),
    LF(prefetch, CONFIG_INT, 1, 64, "2", "sample requests kept outstanding while updating"),
    LF(max_updates, CONFIG_INT, 0, 1e15, "0", "stop after this many updates; 0 = no limit"),
    LF(params_endpoint, CONFIG_STRING, 0, 0, "tcp://127.0.0.1:5562", "PUB the learner binds for Params"),
    LF(control_endpoint, CONFIG_STRING, 0, 0, "tcp://127.0.0.1:5563",
       "ROUTER the learner binds for ParamsRequest, EpisodeReport, EvaluationReport, Hello, Heartbeat, "
       "StatsRequest"),
    LF(replay_endpoint, CONFIG_STRING, 0, 0, "tcp://127.0.0.1:5561", "the replay server's sample endpoint"),
    LF(log_interval_s, CONFIG_FLOAT, 0, 1e9, "10", "seconds between progress log lines; 0 = none"),
    LF(csv_interval_s, CONFIG_FLOAT, 0, 1e9, "2", "seconds between rows of curves.csv; 0 = only at the end"),
    LF(stats_interval_s, CONFIG_FLOAT, 0.01, 1e6, "0.25", "seconds between env-step queries to replay"),
    LF(sample_timeout_ms, CONFIG_INT, 100, 1e9, "30000", "waiting this long for a batch is logged"),
    LF(max_message_bytes, CONFIG_INT, 1024, 2147483647, "16777216", "largest message accepted on the control socket"),
    LF(save_state, CONFIG_BOOL, 0, 0, "true", "write the learner state to run_dir/learner_state.bin at the end"),
    LF(send_priorities, CONFIG_BOOL, 0, 0, "false",
       "send the algorithm's new priorities (|TD error|) back to replay: for replay.sampler prioritized"),
    LF(checkpoint_interval_s, CONFIG_FLOAT, 0, 1e9, "60",
       "seconds between checkpoints of the whole learner state; 0 = only when the run ends or is stopped"),
    LF(checkpoint_dir, CONFIG_STRING, 0, 0, "", "directory of the learner's checkpoints; empty = run_dir/checkpoints"),
    LF(checkpoint_keep, CONFIG_INT, 1, 1000, "3", "checkpoint files kept (the newest)"),
    LF(checkpoints, CONFIG_BOOL, 0, 0, "true", "write checkpoints (periodically and at the end)"),
    LF(resume, CONFIG_BOOL, 0, 0, "true", "at start, resume from the newest valid checkpoint in checkpoint_dir"),
    LF(tensorboard, CONFIG_BOOL, 0, 0, "true", "write TensorBoard event files to run_dir/tb"),
    LF(random_steps, CONFIG_INT, 0, 1e12, "0",
       "publish no Params before this many env steps: the actors act uniformly at random until then (the "
       "warm-up of the standard SAC loop); the learner updates from replay.min_size_to_sample on"),
    LF(stop_on_return, CONFIG_BOOL, 0, 0, "false",
       "stop the run (final checkpoint) once a complete evaluation's mean return reaches stop_at_return"),
    LF(stop_at_return, CONFIG_FLOAT, -1e300, 1e300, "0",
       "the mean evaluation return that stops the run; setting it turns stop_on_return on unless that is set too"),
};
#undef LF
const config_section learner_config_section = {"learner", learner_fields,
                                               sizeof learner_fields / sizeof *learner_fields};

int learner_mkdir_p(const char *path, ember_err *err) {
  char buf[CONFIG_STRING_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return ember_fail(err, EMBER_EIO, "cannot create directory %s: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST)
    return ember_fail(err, EMBER_EIO, "cannot create directory %s: %s", buf, strerror(errno));
  return 0;
}

const char *learner_params_endpoint(const learner_t *l) { return l->params_ep; }
const Ember__Params *learner_last_params(const learner_t *l) { return l->version > 0 ? &l->current : NULL; }
const char *learner_control_endpoint(const learner_t *l) { return l->control_ep; }
void learner_stop(learner_t *l) { atomic_store(&l->stop, true); }

void learner_destroy(learner_t **l_p) {
  if (!l_p || !*l_p) return;
  learner_t *l = *l_p;
  if (l->algo) l->ops->destroy(l->algo);
  algo_params_free(&l->current);
  replay_sample_client_destroy(&l->sampler);
  if (l->pub) zmq_close(l->pub);
  if (l->control) zmq_close(l->control);
  if (l->csv) fclose(l->csv);
  if (l->evals_csv) fclose(l->evals_csv);
  tb_writer_close(&l->tb);
  free(l->terminated);
  free(l->truncated);
  free(l->priorities);
  metrics_destroy(&l->own_metrics);
  pthread_mutex_destroy(&l->progress_mu);
  free(l);
  *l_p = NULL;
}

static void register_metrics(learner_t *l) {
  metrics_registry *r = l->metrics;
  l->m_updates = metrics_counter(r, "learner_updates_total", NULL, "E-step + M-step updates done");
  l->m_version = metrics_gauge(r, "learner_params_version", NULL, "version of the last published Params");
  l->m_env_steps = metrics_gauge(r, "learner_env_steps", NULL, "transitions stored in replay (last query)");
  l->m_refused = metrics_counter(r, "learner_batches_refused_total", NULL,
                                 "sample batches the algorithm or the shape checks refused");
  l->m_episodes = metrics_counter(r, "learner_episodes_total", "kind=\"train\"", "episodes reported by actors");
  l->m_eval_episodes = metrics_counter(r, "learner_episodes_total", "kind=\"eval\"",
                                      "episodes reported by actors (evaluations: their episodes)");
  l->m_msgs_refused = metrics_counter(r, "learner_messages_refused_total", NULL,
                                      "control messages refused (undecodable or unexpected)");
  l->m_params_sent = metrics_counter(r, "learner_params_sent_total", NULL, "Params published or sent on request");
  l->m_actors = metrics_gauge(r, "learner_actors", NULL, "actors heard from in the last 30 s");
  l->m_lag = metrics_gauge(r, "learner_actor_policy_lag_max", NULL,
                           "largest (published version - version an actor acts with) over live actors");
  l->m_train_return = metrics_gauge(r, "learner_train_return", NULL, "mean of the last 10 training returns");
  l->m_eval_return = metrics_gauge(r, "learner_eval_return", NULL,
                                   "mean return of the latest complete evaluation (of the newest version evaluated)");
  l->m_eval_std = metrics_gauge(r, "learner_eval_return_std", NULL,
                                "standard deviation of the returns of the latest complete evaluation");
  l->m_eval_n = metrics_gauge(r, "learner_eval_episodes", NULL, "episodes of the latest complete evaluation");
  l->m_eval_steps = metrics_gauge(r, "learner_eval_env_steps", NULL,
                                  "env steps when the latest evaluated version was published");
  l->m_eval_version = metrics_gauge(r, "learner_eval_policy_version", NULL, "the version of the latest evaluation");
  l->m_evaluations = metrics_counter(r, "learner_evaluations_total", NULL, "complete evaluations received");
  l->m_updates_per_s = metrics_gauge(r, "learner_updates_per_second", NULL, "over the last progress interval");
  l->m_env_steps_per_s = metrics_gauge(r, "learner_env_steps_per_second", NULL, "over the last progress interval");
  for (int i = 0; i < ALGO_MAX_STATS && l->ops->stat_names[i]; i++) {
    char labels[128];
    snprintf(labels, sizeof labels, "stat=\"%.100s\"", l->ops->stat_names[i]);
    l->m_stats[i] = metrics_gauge(r, "learner_algo_stat", labels, "the algorithm's statistics of the latest update");
  }
}

static void *bind_socket(learner_t *l, int type, const char *endpoint, char *bound, ember_err *err) {
  net_socket_opts o = {.linger_ms = 0, .max_message_bytes = l->cfg.max_message_bytes, .send_hwm = 1000};
  void *s = net_socket(l->zmq, type, endpoint, true, &o, err);
  if (!s) return NULL;
  size_t len = CONFIG_STRING_MAX;
  if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &len) != 0) snprintf(bound, CONFIG_STRING_MAX, "%s", endpoint);
  return s;
}

/* The task's reward and termination as algo_task_fns, for model-based algorithms (learner_task_fns). */
static void task_reward(const void *task, const float *obs, const float *action, const float *next_obs, int n,
                        float *reward_out) {
  env_spec_reward(task, n, obs, action, next_obs, reward_out);
}

static void task_terminated(const void *task, const float *next_obs, int n, float *terminated_out) {
  /* env_task writes bytes: write them into the start of the float buffer, then widen from the end
   * (float i occupies bytes 4i..4i+3, never a byte j < i that is still to be read). */
  uint8_t *bytes = (uint8_t *)terminated_out;
  env_spec_terminated(task, n, next_obs, bytes);
  for (int i = n - 1; i >= 0; i--) terminated_out[i] = bytes[i] ? 1.0f : 0.0f;
}

algo_task_fns learner_task_fns(const env_spec *spec) {
  /* The reward only where it is the env's own: the locomotion rewards' substitute (end-of-step
   * velocity for a finite difference of x) is biased, and a learned reward model is not. The
   * termination always: every task's check is a function of the observation, exact except hopper's,
   * which cannot see the |qvel| < 100 bound behind the observation's clip (env_task.h, docs/tasks.md)
   * and is still far closer to the env than "never terminates", the only alternative a learner has
   * without a termination model. spec->terminated_exact says which; learner_run's start line shows it. */
  return (algo_task_fns){.task = spec,
                         .reward_fn = spec->reward_exact ? task_reward : NULL,
                         .terminated_fn = task_terminated};
}

learner_t *learner_new(const run_config *run, const learner_config *cfg, const void *algo_settings, void *zmq_ctx,
                       metrics_registry *metrics, ember_err *err) {
  const algo_ops *ops = algo_find(run->algo);
  if (!ops) {
    char known[512] = "";
    for (const algo_ops *const *a = algo_all(); *a; a++)
      snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", known[0] ? ", " : "", (*a)->name);
    ember_fail(err, EMBER_ENOENT, "run.algo: unknown algorithm '%s' (known: %s)", run->algo, known);
    return NULL;
  }
  const env_spec *spec;
  if (env_spec_find(run->task, &spec, err) != 0) {
    ember_err_prefix(err, "run.task: ");
    return NULL;
  }
  learner_t *l = calloc(1, sizeof *l);
  if (!l) {
    ember_fail(err, EMBER_ENOMEM, "learner: out of memory");
    return NULL;
  }
  pthread_mutex_init(&l->progress_mu, NULL);
  ember__params__init(&l->current);
  l->run = *run;
  l->cfg = *cfg;
  l->ops = ops;
  l->spec = spec;
  l->zmq = zmq_ctx;
  l->eval = (learner_eval_summary){.version = 0, .env_steps = NAN, .mean = NAN, .std = NAN};
  l->metrics = metrics;
  if (!l->metrics) l->metrics = l->own_metrics = metrics_new();
  if (!l->metrics) {
    ember_fail(err, EMBER_ENOMEM, "learner: out of memory");
    goto fail;
  }
  register_metrics(l);

  algo_context ctx = {.task_name = run->task, .obs_dim = spec->obs_dim, .act_dim = spec->act_dim,
                      .max_batch = (int)cfg->batch_size, .seed = (uint64_t)run->seed,
                      .task = learner_task_fns(spec),
                      .settings = algo_settings};
  if (!(l->algo = ops->create(&ctx, err))) goto fail;
  l->terminated = calloc((size_t)cfg->batch_size, sizeof(float));
  l->truncated = calloc((size_t)cfg->batch_size, sizeof(float));
  l->priorities = calloc((size_t)cfg->batch_size, sizeof(float));
  if (!l->terminated || !l->truncated || !l->priorities) {
    ember_fail(err, EMBER_ENOMEM, "learner: out of memory");
    goto fail;
  }
  if (!(l->pub = bind_socket(l, ZMQ_PUB, cfg->params_endpoint, l->params_ep, err))) {
    ember_err_prefix(err, "learner.params_endpoint: ");
    goto fail;
  }
  if (!(l->control = bind_socket(l, ZMQ_ROUTER, cfg->control_endpoint, l->control_ep, err))) {
    ember_err_prefix(err, "learner.control_endpoint: ");
    goto fail;
  }
  replay_sample_opts so = {.endpoint = cfg->replay_endpoint, .batch_size = (uint32_t)cfg->batch_size,
                           .prefetch = (int)cfg->prefetch};
  if (!(l->sampler = replay_sample_client_new(zmq_ctx, &so, err))) {
    ember_err_prefix(err, "learner.replay_endpoint: ");
    goto fail;
  }
  if (learner_open_csv(l, err) != 0) goto fail;
  if (cfg->checkpoint_dir[0])
    snprintf(l->ckpt_dir, sizeof l->ckpt_dir, "%s", cfg->checkpoint_dir);
  else if (run->run_dir[0])
    snprintf(l->ckpt_dir, sizeof l->ckpt_dir, "%.*s/checkpoints", CONFIG_STRING_MAX - 16, run->run_dir);
  l->progress.train_return = l->progress.eval_return = NAN;
  return l;
fail:
  learner_destroy(&l);
  return NULL;
}

/* ---- publishing ---------------------------------------------------------------------------------- */

static int publish(learner_t *l, ember_err *err) {
  algo_params_free(&l->current);
  int rc = l->ops->export_params(l->algo, &l->current, err);
  if (rc) return rc;
  l->current.version = ++l->version;
  l->current.learner_updates = l->updates;
  l->current.env_steps = l->env_steps;
  l->pub_version[l->version % PUB_RING] = l->version;
  l->pub_steps[l->version % PUB_RING] = l->env_steps;
  ember_err e = {0};
  if (net_send_body(l->pub, EMBER__ENVELOPE__BODY_PARAMS, &l->current, NULL, ZMQ_DONTWAIT, &e) == 0)
    metric_inc(l->m_params_sent);
  metric_set(l->m_version, (double)l->version);
  if (l->has_src && l->src.published) return l->src.published(l->src.ctx, &l->current, false, err);
  return 0;
}

/* ---- the control socket -------------------------------------------------------------------------- */

/* Registers an actor on first sight (one gauge per actor id: allocation once per actor, not per
 * message) and records the policy version it reports. */
void learner_note_actor(learner_t *l, uint64_t id, uint64_t version, bool has_version) {
  double t = learner_now_s();
  actor_seen *a = NULL;
  for (int i = 0; i < l->n_actors && !a; i++)
    if (l->actors[i].id == id) a = &l->actors[i];
  if (!a) {
    if (l->n_actors >= MAX_ACTORS) return;
    a = &l->actors[l->n_actors++];
    char labels[64];
    snprintf(labels, sizeof labels, "actor=\"%llu\"", (unsigned long long)id);
    *a = (actor_seen){.id = id,
                      .version_gauge = metrics_gauge(l->metrics, "learner_actor_policy_version", labels,
                                                     "the Params version an actor last reported acting with"),
                      .age_gauge = metrics_gauge(l->metrics, "learner_actor_last_seen_seconds", labels,
                                                 "seconds since the actor's last message (Heartbeat, report)")};
  }
  if (has_version) {
    a->version = version;
    if (a->version_gauge) metric_set(a->version_gauge, (double)version);
    if (l->resumed_from_checkpoint && version > l->version) {
      /* An actor holds Params newer than ours: we resumed from a checkpoint older than the last
       * publication. Number the next publication past it, so versions never go back for anyone.
       * (Only after a resume: a fresh learner owes nothing to numbers it never published.) */
      log_event(LOG_WARN, "learner", "version_skipped", LF_U64("from", l->version), LF_U64("to", version),
                LF_U64("actor_id", id));
      l->version = version;
      metric_set(l->m_version, (double)l->version);
    }
  }
  a->last_seen_s = t;
}

void learner_refuse_message(learner_t *l, const net_route *route, int code, const char *what) {
  metric_inc(l->m_msgs_refused);
  double t = learner_now_s();
  if (t - l->last_control_log > 10) {
    log_event(LOG_WARN, "learner", "message_refused", LF_STR("reason", ember_strerror(code)), LF_STR("detail", what));
    l->last_control_log = t;
  }
  if (!route) return;
  Ember__ErrorReply r = EMBER__ERROR_REPLY__INIT;
  r.code = (uint32_t)-code;
  r.message = (char *)what;
  net_send_body(l->control, EMBER__ENVELOPE__BODY_ERROR, &r, route, ZMQ_DONTWAIT, NULL);
}

typedef struct {
  Ember__Metric *items;
  Ember__Metric **ptrs;
  char (*labels)[128];
  char (*names)[128];
  size_t n, cap;
} stats_collect;

static void collect_metric(void *ctx, const char *name, const char *labels, metric_kind kind, double value) {
  (void)kind;
  stats_collect *c = ctx;
  if (c->n >= c->cap) return;
  Ember__Metric *m = &c->items[c->n];
  ember__metric__init(m);
  snprintf(c->names[c->n], 128, "%s", name);
  snprintf(c->labels[c->n], 128, "%s", labels ? labels : "");
  m->name = c->names[c->n];
  m->labels = c->labels[c->n];
  m->value = value;
  c->ptrs[c->n] = m;
  c->n++;
}

static void answer_stats(learner_t *l, const net_route *route) {
  stats_collect c = {.cap = 256};
  c.items = calloc(c.cap, sizeof *c.items);
  c.ptrs = calloc(c.cap, sizeof *c.ptrs);
  c.labels = calloc(c.cap, sizeof *c.labels);
  c.names = calloc(c.cap, sizeof *c.names);
  if (c.items && c.ptrs && c.labels && c.names) {
    metrics_foreach(l->metrics, collect_metric, &c);
    Ember__Stats st = EMBER__STATS__INIT;
    st.role = "learner";
    st.n_metrics = c.n;
    st.metrics = c.ptrs;
    net_send_body(l->control, EMBER__ENVELOPE__BODY_STATS, &st, route, ZMQ_DONTWAIT, NULL);
  }
  free(c.items), free(c.ptrs), free(c.labels), free(c.names);
}

static void handle_control(learner_t *l) {
  for (int budget = 0; budget < 256; budget++) {
    Ember__Envelope *env = NULL;
    net_route route;
    ember_err e = {0};
    int rc = net_recv(l->control, &env, &route, ZMQ_DONTWAIT, &e);
    if (rc == EMBER_EAGAIN) return;
    if (rc != 0) {
      learner_refuse_message(l, NULL, rc, e.msg); /* undecodable: no reply, the bytes may not be ember's */
      continue;
    }
    switch (env->body_case) {
      case EMBER__ENVELOPE__BODY_PARAMS_REQUEST:
        learner_note_actor(l, env->params_request->actor_id, env->params_request->have_version, true);
        if (l->version > 0 && l->version > env->params_request->have_version &&
            net_send_body(l->control, EMBER__ENVELOPE__BODY_PARAMS, &l->current, &route, ZMQ_DONTWAIT, NULL) == 0)
          metric_inc(l->m_params_sent);
        break;
      case EMBER__ENVELOPE__BODY_EVALUATION:
        learner_take_evaluation(l, env->evaluation, &route);
        break;
      case EMBER__ENVELOPE__BODY_EPISODE:
        learner_report_episode(l, env->episode->actor_id, env->episode->policy_version,
                               env->episode->episode_return, env->episode->evaluation);
        break;
      case EMBER__ENVELOPE__BODY_HELLO: {
        const Ember__Hello *h = env->hello;
        learner_note_actor(l, h->id, 0, false);
        if (h->task && h->task[0] && strcmp(h->task, l->run.task) != 0) {
          char why[300];
          snprintf(why, sizeof why, "this learner trains task '%s', not '%s'", l->run.task, h->task);
          learner_refuse_message(l, &route, EMBER_EINVAL, why);
          break;
        }
        log_event(LOG_INFO, "learner", "hello", LF_STR("role", h->role), LF_U64("id", h->id),
                  LF_STR("host", h->hostname), LF_U64("pid", h->pid));
        break;
      }
      case EMBER__ENVELOPE__BODY_HEARTBEAT:
        learner_note_actor(l, env->heartbeat->id, env->heartbeat->policy_version, true);
        break;
      case EMBER__ENVELOPE__BODY_STATS_REQUEST:
        answer_stats(l, &route);
        break;
      default: {
        char why[128];
        snprintf(why, sizeof why, "the learner's control socket does not take %s", net_body_name(env->body_case));
        learner_refuse_message(l, &route, EMBER_EINVAL, why);
        break;
      }
    }
    net_envelope_free(env);
  }
}

/* ---- periodic work ------------------------------------------------------------------------------- */

static void query_env_steps(learner_t *l) {
  Ember__Envelope *env = NULL;
  ember_err e = {0};
  if (replay_client_stats(l->zmq, l->cfg.replay_endpoint, 1000, &env, &e) == 0 && env->stats) {
    double v = replay_stats_get(env->stats, "replay_inserted_transitions_total", NULL);
    if (isfinite(v) && v >= 0) {
      /* replay restarted below what this learner has seen (no snapshot, or after a resume): count on */
      if ((double)l->env_base + v < (double)l->env_steps) l->env_base = l->env_steps;
      if ((double)l->env_base + v > (double)l->env_steps) l->env_steps = l->env_base + (uint64_t)v;
    }
    metric_set(l->m_env_steps, (double)l->env_steps);
  }
  if (env) net_envelope_free(env);
}

static void live_actors(learner_t *l, uint64_t *count, uint64_t *lag) {
  double t = learner_now_s();
  *count = *lag = 0;
  for (int i = 0; i < l->n_actors; i++) {
    if (l->actors[i].age_gauge) metric_set(l->actors[i].age_gauge, t - l->actors[i].last_seen_s);
    if (t - l->actors[i].last_seen_s > 30) continue;
    (*count)++;
    if (l->version > l->actors[i].version && l->version - l->actors[i].version > *lag)
      *lag = l->version - l->actors[i].version;
  }
}

static void periodic(learner_t *l, bool force) {
  double t = learner_now_s();
  if (!l->has_src && (force || t - l->last_stats >= l->cfg.stats_interval_s)) {
    query_env_steps(l);
    l->last_stats = t;
  }
  if (force || t - l->last_progress >= 1.0) {
    double dt = t - l->last_progress;
    if (dt > 0 && l->last_progress > 0) {
      l->rate_updates = (double)(l->updates - l->updates_at_last_log) / dt;
      l->rate_steps = (double)(l->env_steps - l->steps_at_last_log) / dt;
    }
    l->updates_at_last_log = l->updates;
    l->steps_at_last_log = l->env_steps;
    l->last_progress = t;
    metric_set(l->m_updates_per_s, l->rate_updates);
    metric_set(l->m_env_steps_per_s, l->rate_steps);
    for (int i = 0; i < l->stats.count && i < ALGO_MAX_STATS; i++)
      if (l->m_stats[i]) metric_set(l->m_stats[i], l->stats.values[i]);
    metric_set(l->m_train_return, learner_train_return(l));
  }
  bool log_now = l->cfg.log_interval_s > 0 && (force || t - l->last_log >= l->cfg.log_interval_s);
  if (log_now) {
    learner_log_progress(l);
    l->last_log = t;
  }
  if (force || (l->cfg.csv_interval_s > 0 && t - l->last_csv >= l->cfg.csv_interval_s)) {
    learner_write_tb(l);
    learner_write_csv_row(l, t);
    l->last_csv = t;
  }
  if (l->tb && (log_now || force)) {
    ember_err e = {0};
    if (tb_flush(l->tb, &e) != 0) log_event(LOG_WARN, "learner", "tensorboard_failed", LF_STR("error", e.msg));
  }
  if (!force && l->cfg.checkpoints && l->cfg.checkpoint_interval_s > 0 &&
      t - l->last_ckpt >= l->cfg.checkpoint_interval_s) {
    ember_err e = {0};
    if (learner_checkpoint(l, &e) != 0) log_event(LOG_ERROR, "learner", "checkpoint_failed", LF_STR("error", e.msg));
    l->last_ckpt = t;
  }
  uint64_t actors, lag;
  live_actors(l, &actors, &lag);
  metric_set(l->m_actors, (double)actors);
  metric_set(l->m_lag, (double)lag);
  pthread_mutex_lock(&l->progress_mu);
  learner_progress *p = &l->progress;
  p->env_steps = l->env_steps;
  p->updates = l->updates;
  p->version = l->version;
  p->wall_s = t - l->t0;
  p->updates_per_s = l->rate_updates;
  p->env_steps_per_s = l->rate_steps;
  p->train_return = learner_train_return(l);
  p->eval_return = (l->eval.version ? l->eval.mean : NAN);
  p->eval_version = l->eval.version;
  p->eval_std = l->eval.std;
  p->eval_env_steps = l->eval.env_steps;
  p->eval_n = l->eval.episodes;
  p->evaluations = l->evaluations;
  p->stopped_at_return = l->stopped_at_return;
  p->episodes = l->episodes;
  p->eval_episodes = l->eval_episodes;
  p->batches_refused = l->batches_refused;
  p->actors_seen = actors;
  pthread_mutex_unlock(&l->progress_mu);
}

void learner_get_progress(learner_t *l, learner_progress *out) {
  pthread_mutex_lock(&l->progress_mu);
  *out = l->progress;
  pthread_mutex_unlock(&l->progress_mu);
}

/* ---- one update ---------------------------------------------------------------------------------- */

static void refuse_batch(learner_t *l, int code, const char *why) {
  l->batches_refused++;
  metric_inc(l->m_refused);
  double t = learner_now_s();
  if (t - l->last_refusal_log > 10) {
    log_event(LOG_WARN, "learner", "batch_refused", LF_STR("reason", ember_strerror(code)), LF_STR("detail", why),
              LF_U64("refused_total", l->batches_refused));
    l->last_refusal_log = t;
  }
}

/* A SampleBatch as the algorithm's columnar batch; the flags become floats in the learner's buffers. */
static int to_algo_batch(learner_t *l, const Ember__SampleBatch *sb, algo_batch *b, ember_err *err) {
  const Ember__TransitionBatch *tb = sb->transitions;
  if (!tb) return ember_fail(err, EMBER_EDECODE, "SampleBatch without transitions");
  int rc = net_check_transitions(tb, (uint32_t)l->spec->obs_dim, (uint32_t)l->spec->act_dim, err);
  if (rc) return rc;
  if (tb->count > (uint32_t)l->cfg.batch_size)
    return ember_fail(err, EMBER_ESHAPE, "SampleBatch of %u transitions, asked for %lld", tb->count,
                      (long long)l->cfg.batch_size);
  if (sb->n_weights != 0 && sb->n_weights != tb->count)
    return ember_fail(err, EMBER_ESHAPE, "SampleBatch has %zu weights for %u transitions", sb->n_weights, tb->count);
  for (uint32_t i = 0; i < tb->count; i++) {
    if (sb->n_weights && !(isfinite(sb->weights[i]) && sb->weights[i] >= 0))
      return ember_fail(err, EMBER_ENONFINITE, "SampleBatch weight %u is %g", i, sb->weights[i]);
    l->terminated[i] = tb->terminated[i] ? 1.0f : 0.0f;
    l->truncated[i] = tb->truncated[i] ? 1.0f : 0.0f;
  }
  *b = (algo_batch){.size = (int)tb->count, .obs_dim = l->spec->obs_dim, .act_dim = l->spec->act_dim,
                    .obs = tb->obs, .action = tb->action, .reward = tb->reward, .next_obs = tb->next_obs,
                    .terminated = l->terminated, .truncated = l->truncated,
                    .weights = sb->n_weights ? sb->weights : NULL,
                    .keys = sb->n_keys == tb->count ? sb->keys : NULL};
  return 0;
}

/* One E-step + M-step on b. Returns 0, or an error of the local source's published hook (which ends
 * the run); refused batches and export failures are counted and logged, not returned. */
static int update_batch(learner_t *l, const algo_batch *b, bool from_replay, ember_err *err) {
  ember_err e = {0};
  int rc = l->ops->e_step(l->algo, b, &l->stats, &e);
  if (rc == 0) rc = l->ops->m_step(l->algo, b, &l->stats, &e);
  if (rc != 0) {
    refuse_batch(l, rc, e.msg);
    return 0;
  }
  if (from_replay && l->cfg.send_priorities && l->ops->priorities && b->keys &&
      (l->ops->priorities(l->algo, l->priorities, &e) != 0 ||
       replay_sample_client_update_priorities(l->sampler, b->keys, l->priorities, (size_t)b->size, &e) != 0))
    refuse_batch(l, e.code, e.msg); /* counted; the update itself stands */
  l->updates++;
  metric_inc(l->m_updates);
  for (int i = 0; i < l->stats.count; i++) l->stat_sum[i] += l->stats.values[i];
  l->stat_rows++;
  if (l->updates % (uint64_t)l->cfg.publish_every == 0 && l->env_steps >= (uint64_t)l->cfg.random_steps &&
      (rc = publish(l, &e)) != 0) {
    if (l->has_src) return ember_fail(err, rc, "%s", e.msg);
    log_event(LOG_ERROR, "learner", "export_failed", LF_STR("error", e.msg));
  }
  return 0;
}

static void update(learner_t *l, const Ember__SampleBatch *sb) {
  /* The table size travels with every batch: a fresh lower bound on the transitions stored (exact
   * until the table first evicts), between the periodic Stats queries. */
  if (l->env_base + sb->table_size > l->env_steps) l->env_steps = l->env_base + sb->table_size;
  algo_batch b;
  ember_err e = {0};
  int rc = to_algo_batch(l, sb, &b, &e);
  if (rc != 0) {
    refuse_batch(l, rc, e.msg);
    return;
  }
  update_batch(l, &b, true, &e);
}

int learner_set_source(learner_t *l, const learner_source *src, ember_err *err) {
  if (l->resume_done || l->running)
    return ember_fail(err, EMBER_ESTATE, "learner_set_source after learner_resume or learner_run");
  if (!src || !src->next) return ember_fail(err, EMBER_EINVAL, "learner_set_source: no next function");
  l->src = *src;
  l->has_src = true;
  return 0;
}

/* ---- the loop ------------------------------------------------------------------------------------ */

static void save_state(learner_t *l) {
  if (!l->run.run_dir[0] || !l->cfg.save_state) return;
  char path[CONFIG_STRING_MAX + 32], tmp[CONFIG_STRING_MAX + 40];
  snprintf(path, sizeof path, "%s/learner_state.bin", l->run.run_dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  ember_err e = {0};
  int rc = f ? l->ops->save(l->algo, f, &e) : ember_fail(&e, EMBER_EIO, "cannot write %s", tmp);
  if (f && (fflush(f) != 0 || fsync(fileno(f)) != 0)) rc = ember_fail(&e, EMBER_EIO, "cannot write %s", tmp);
  if (f) fclose(f);
  if (rc == 0 && rename(tmp, path) != 0) rc = ember_fail(&e, EMBER_EIO, "cannot rename %s", tmp);
  if (rc) log_event(LOG_ERROR, "learner", "save_failed", LF_STR("error", e.msg));
}

/* The next batch from replay (0), EMBER_ETIMEOUT while none came, or a refusal (counted). */
static int next_from_replay(learner_t *l, double *waiting_since) {
  const Ember__SampleBatch *sb = NULL;
  ember_err e = {0};
  int rc = replay_sample_client_next(l->sampler, 20, &sb, &e);
  if (rc == EMBER_ETIMEOUT) {
    double t = learner_now_s();
    if ((t - *waiting_since) * 1000 >= (double)l->cfg.sample_timeout_ms && t - l->last_wait_log > 10) {
      log_event(LOG_WARN, "learner", "waiting_for_replay", LF_STR("endpoint", l->cfg.replay_endpoint),
                LF_F64("waited_s", t - *waiting_since));
      l->last_wait_log = t;
    }
    return rc;
  }
  *waiting_since = learner_now_s();
  if (rc != 0) {
    refuse_batch(l, rc, e.msg);
    return rc;
  }
  update(l, sb);
  return 0;
}

static int run_loop(learner_t *l, ember_err *err) {
  int rc = learner_resume(l, NULL, err);
  if (rc) return rc;
  l->t0 = learner_now_s() - l->wall_offset;
  l->last_ckpt = learner_now_s();
  if (l->cfg.tensorboard && l->run.run_dir[0] && !l->tb) {
    char dir[CONFIG_STRING_MAX + 8];
    snprintf(dir, sizeof dir, "%s/tb", l->run.run_dir);
    ember_err e = {0};
    if (learner_mkdir_p(dir, &e) != 0 || !(l->tb = tb_writer_open(dir, &e)))
      log_event(LOG_WARN, "learner", "tensorboard_failed", LF_STR("error", e.msg));
  }
  log_event(LOG_INFO, "learner", "start", LF_STR("algo", l->ops->name), LF_STR("task", l->run.task),
            LF_STR("task_reward", l->spec->reward_exact ? "exact" : "learned"),
            LF_STR("task_termination", l->spec->terminated_exact ? "exact" : "approximate"),
            LF_U64("steps", l->run.steps), LF_STR("params_endpoint", l->params_ep),
            LF_STR("control_endpoint", l->control_ep),
            LF_STR("replay_endpoint", l->has_src ? "(local source)" : l->cfg.replay_endpoint));
  double waiting_since = learner_now_s();
  while (!atomic_load(&l->stop)) {
    handle_control(l);
    periodic(l, false);
    if (l->run.steps > 0 && l->env_steps >= (uint64_t)l->run.steps) break;
    if (l->cfg.max_updates > 0 && l->updates >= (uint64_t)l->cfg.max_updates) break;
    if (!l->has_src) {
      next_from_replay(l, &waiting_since);
      continue;
    }
    const algo_batch *b = NULL;
    uint64_t steps = l->env_steps;
    rc = l->src.next(l->src.ctx, &b, &steps, err);
    if (steps > l->env_steps) l->env_steps = steps;
    if (rc == LEARNER_SOURCE_DONE) break;
    if (rc != 0 || (rc = update_batch(l, b, false, err)) != 0) break;
  }
  periodic(l, true);
  ember_err e = {0};
  if (rc == 0 && learner_checkpoint(l, &e) != 0)
    log_event(LOG_ERROR, "learner", "checkpoint_failed", LF_STR("error", e.msg));
  save_state(l);
  log_event(LOG_INFO, "learner", "done", LF_U64("env_steps", l->env_steps), LF_U64("updates", l->updates),
            LF_U64("version", l->version), LF_F64("train_return", learner_train_return(l)),
            LF_F64("eval_return", (l->eval.version ? l->eval.mean : NAN)), LF_F64("wall_s", learner_now_s() - l->t0));
  return rc;
}

int learner_run(learner_t *l, ember_err *err) {
  l->running = true;
  int rc = run_loop(l, err);
  if (rc == LEARNER_SOURCE_DONE) rc = 0;
  pthread_mutex_lock(&l->progress_mu);
  l->progress.done = true;
  pthread_mutex_unlock(&l->progress_mu);
  return rc;
}

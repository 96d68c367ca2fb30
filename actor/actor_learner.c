/* actor_learner.c: the actor's side of the learner's sockets (actor_internal.h): Params intake, Hello,
 * heartbeats, ParamsRequests, episode and evaluation reports; in the eval role, which versions are
 * evaluated. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "actor_internal.h"
#include "log.h"

static uint64_t unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}


static void send_control(actor_t *a, Ember__Envelope__BodyCase body_case, void *body) {
  ember_err err = {0};
  if (net_send_body(a->dealer, body_case, body, NULL, ZMQ_DONTWAIT, &err) != 0) a->st.reports_dropped++;
}

void actor_send_hello(actor_t *a) {
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

void actor_send_params_request(actor_t *a, int64_t t) {
  Ember__ParamsRequest r = EMBER__PARAMS_REQUEST__INIT;
  r.actor_id = (uint64_t)a->cfg.id;
  r.have_version = a->st.policy_version;
  send_control(a, EMBER__ENVELOPE__BODY_PARAMS_REQUEST, &r);
  a->last_request_ms = t;
}

void actor_send_heartbeat(actor_t *a, int64_t t) {
  Ember__Heartbeat h = EMBER__HEARTBEAT__INIT;
  h.role = "actor";
  h.id = (uint64_t)a->cfg.id;
  h.unix_ms = unix_ms();
  h.policy_version = a->st.policy_version;
  send_control(a, EMBER__ENVELOPE__BODY_HEARTBEAT, &h);
  a->last_heartbeat_ms = t;
}

void actor_send_episode(actor_t *a, uint64_t version, double ret, int32_t length, bool terminated) {
  Ember__EpisodeReport r = EMBER__EPISODE_REPORT__INIT;
  r.actor_id = (uint64_t)a->cfg.id;
  r.policy_version = version;
  r.episode_return = ret;
  r.length = (uint32_t)length;
  r.evaluation = false; /* evaluations travel whole, as an EvaluationReport */
  r.terminated = terminated;
  send_control(a, EMBER__ENVELOPE__BODY_EPISODE, &r);
}

static void refuse_params(actor_t *a, const Ember__Params *p, int rc, const ember_err *err) {
  a->st.params_refused++;
  char why[600];
  snprintf(why, sizeof why, "Params version %" PRIu64 " from '%s' refused (%s): %s", p->version,
           p->algorithm ? p->algorithm : "", ember_strerror(rc), err->msg);
  actor_log_refusal(a, &a->params_log, "params_refused", why);
}

/* Eval role: begins the evaluation of p now. */
static void begin_evaluation(actor_t *a, const Ember__Params *p) {
  ember_err err = {0};
  int rc = evaluation_start(a->eval, p, &err);
  if (rc) { /* checked when they arrived; say so if it happens anyway */
    log_event(LOG_ERROR, COMPONENT, "evaluation_not_started", LF_U64("actor_id", a->cfg.id),
              LF_U64("policy_version", p->version), LF_STR("error", err.msg));
    return;
  }
  log_event(LOG_DEBUG, COMPONENT, "evaluation_started", LF_U64("actor_id", a->cfg.id),
            LF_U64("policy_version", p->version), LF_U64("env_steps", p->env_steps));
}

void actor_start_pending_evaluation(actor_t *a) {
  if (!a->eval_pending || evaluation_active(a->eval)) return;
  begin_evaluation(a, a->eval_pending->params);
  net_envelope_free(a->eval_pending);
  a->eval_pending = NULL;
}

/* Eval role: the first version published at or after each multiple of eval_every_steps env steps is
 * evaluated (every version, while idle, with eval_every_steps 0), so that the curves of different
 * runs and algorithms are sampled at the same env steps. Evaluations run one at a time, each to its
 * end; a due version arriving while one runs waits, and a newer due version replaces it (the older
 * is counted in actor_evaluations_skipped_total: evaluations take longer than eval_every_steps of
 * training). Returns true when it kept env (the caller must not free it). */
static bool consider_for_evaluation(actor_t *a, Ember__Envelope *env) {
  const Ember__Params *p = env->params;
  const uint64_t every = (uint64_t)a->cfg.eval_every_steps;
  if (every > 0 && p->env_steps < a->next_eval_steps) return false;
  if (every > 0) a->next_eval_steps = (p->env_steps / every + 1) * every;
  if (!evaluation_active(a->eval)) {
    begin_evaluation(a, p);
    return false;
  }
  if (a->eval_pending) {
    if (every > 0) {
      a->st.evaluations_skipped++;
      log_event(LOG_WARN, COMPONENT, "evaluation_skipped", LF_U64("actor_id", a->cfg.id),
                LF_U64("policy_version", a->eval_pending->params->version),
                LF_U64("env_steps", a->eval_pending->params->env_steps),
                LF_STR("reason", "a newer version became due while an evaluation ran: evaluations take longer "
                                 "than actor.eval_every_steps of training"));
    }
    net_envelope_free(a->eval_pending);
  }
  a->eval_pending = env;
  return true;
}

void actor_send_evaluation(actor_t *a, const evaluation_result *r) {
  Ember__EvaluationReport e = EMBER__EVALUATION_REPORT__INIT;
  e.actor_id = (uint64_t)a->cfg.id;
  e.policy_version = r->version;
  e.env_steps = r->env_steps;
  e.n_returns = (size_t)r->episodes;
  e.returns = (double *)r->returns;
  e.n_lengths = (size_t)r->episodes;
  e.lengths = (uint32_t *)r->lengths; /* int32 lengths >= 1: the same bits */
  e.n_terminated = (size_t)r->episodes;
  protobuf_c_boolean terminated[r->episodes > 0 ? r->episodes : 1];
  for (int i = 0; i < r->episodes; i++) terminated[i] = r->ended_by_task[i] != 0;
  e.terminated = terminated;
  send_control(a, EMBER__ENVELOPE__BODY_EVALUATION, &e);
}

/* Swaps in newer Params (train role: the acting policy; eval role: checked, then perhaps evaluated),
 * or refuses them (counted, logged) and keeps what is held. Returns true when it kept env. */
static bool take_params(actor_t *a, Ember__Envelope *env, int64_t t) {
  const Ember__Params *p = env->params;
  a->st.params_received++;
  a->last_params_ms = t;
  if (p->version == 0 || p->version <= a->st.policy_version) {
    if (p->version == 0) {
      a->st.params_refused++;
      actor_log_refusal(a, &a->params_log, "params_refused", "Params version 0 is reserved for random actions");
    } else {
      a->st.params_stale++;
    }
    return false;
  }
  ember_err err = {0};
  int rc;
  if (a->eval_role) {
    policy_config pc = {a->cfg.task, a->obs_dim, a->act_dim, (int)a->cfg.eval_episodes};
    rc = policy_check_params(p, &pc, &err);
  } else if (!a->policy) {
    policy_config pc = {a->cfg.task, a->obs_dim, a->act_dim, a->K};
    a->policy = policy_new(p, &pc, &err);
    rc = a->policy ? 0 : err.code;
  } else {
    rc = policy_update(a->policy, p, &err);
  }
  if (rc) {
    refuse_params(a, p, rc, &err);
    return false;
  }
  uint64_t old = a->st.policy_version;
  a->st.policy_version = p->version;
  a->st.params_applied++;
  if (old == 0)
    log_event(LOG_INFO, COMPONENT, "first_params", LF_U64("actor_id", a->cfg.id), LF_U64("version", p->version),
              LF_STR("algorithm", p->algorithm ? p->algorithm : ""), LF_U64("env_steps", a->st.env_steps));
  return a->eval_role && consider_for_evaluation(a, env);
}

/* Returns true when it kept env. */
static bool handle_message(actor_t *a, Ember__Envelope *env, bool from_dealer, int64_t t) {
  switch (env->body_case) {
    case EMBER__ENVELOPE__BODY_PARAMS:
      return take_params(a, env, t);
    case EMBER__ENVELOPE__BODY_ERROR:
      if (from_dealer) {
        char why[600];
        snprintf(why, sizeof why, "learner replied with error %u: %s", env->error->code,
                 env->error->message ? env->error->message : "");
        actor_log_refusal(a, &a->message_log, "learner_error", why);
        break;
      }
      __attribute__((fallthrough)); /* an ErrorReply on the broadcast socket is unexpected */
    default: {
      a->st.messages_refused++;
      char why[128];
      snprintf(why, sizeof why, "unexpected %s on the %s socket", net_body_name(env->body_case),
               from_dealer ? "control" : "params");
      actor_log_refusal(a, &a->message_log, "message_refused", why);
    }
  }
  return false;
}

void actor_poll_learner(actor_t *a, void *sock, bool from_dealer, int64_t t) {
  for (int i = 0; i < MAX_MESSAGES_PER_STEP; i++) {
    Ember__Envelope *env = NULL;
    ember_err err = {0};
    int rc = net_recv(sock, &env, NULL, ZMQ_DONTWAIT, &err);
    if (rc == EMBER_EAGAIN) return;
    if (rc) {
      a->st.messages_refused++;
      actor_log_refusal(a, &a->message_log, "message_refused", err.msg);
      if (rc == EMBER_EIO) return;
      continue;
    }
    if (!handle_message(a, env, from_dealer, t)) net_envelope_free(env);
  }
}

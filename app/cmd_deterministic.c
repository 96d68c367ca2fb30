/* cmd_deterministic.c: the local source behind `ember train --deterministic` (app.h).
 *
 * One actor and one replay table live in the learner's thread and strictly alternate with it:
 * next() steps the actor's K envs (one batched policy forward, stochastic actions from the actor's
 * own seeded stream; uniform random actions before the first Params) and stores every transition
 * in a replay_table, until the update credit allows one update; then it samples a uniform batch
 * with the replay stream (RNG_STREAM_REPLAY) and hands it over. The credit grows by
 * train.updates_per_step (0 counts as 1) per stored transition once the table holds
 * max(replay.min_size_to_sample, batch_size) transitions. Params are swapped in exactly when the
 * learner publishes them (every learner.publish_every updates), and evaluations
 * (evaluation.h: the first version published at or after every multiple of actor.eval_every_steps
 * env steps, actor.eval_episodes complete episodes of the deterministic policy) run to their end
 * inside that call and are reported whole (learner_report_evaluation). No socket, clock or thread decides anything, so the run is a function of
 * the seed and the settings.
 *
 * Its state goes into the learner's checkpoints (learner_source.save/load), after the learner's
 * own records: counters, both RNG streams, every env (env_vec_save_state: physics, warm start,
 * episode counters, env RNG), and the whole replay table, rows oldest first. Loading re-inserts the
 * rows into the fresh (empty) table in the same order; uniform sampling draws offsets from the
 * oldest item, so the same draws give the same rows. That is why prioritized replay is refused
 * here: its sum-tree is not rebuilt bit for bit by re-insertion.
 *
 * Ownership: det_source owns its env model and vectors, table, policies and buffers; the learner
 * is borrowed (learner_report_episode) and must outlive it. One thread: the learner's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "checkpoint.h"
#include "env.h"
#include "log.h"
#include "evaluation.h"
#include "policy.h"
#include "replay_table.h"

#define DET_FORMAT 4u /* 2: physics_faults counted; 3: evaluations every actor.eval_every_steps env steps;
                         4: env snapshots carry the control-noise stream and sigma (env.h) */

struct det_source {
  learner_t *learner;
  const env_spec *spec;
  env_model_t *model;
  env_vec_t *vec;
  evaluation_t *eval;
  replay_table *table;
  policy_t *policy;
  rng_t actor_rng, sample_rng;
  int K, E, od, ad, batch;
  uint64_t actor_id, steps_limit, min_size, env_steps, next_eval_steps, policy_version;
  uint64_t physics_faults; /* transitions left out as physics faults (the actor's counter, here) */
  bool fault_last_step;    /* the previous step had one: a burst is logged once, when it starts */
  bool evaluate;      /* train.evaluator */
  int64_t eval_every;  /* actor.eval_every_steps; 0 = every published version */
  double credit, updates_per_step;
  float uniform_log_prob;
  char task[CONFIG_STRING_MAX];

  /* one env step: [K] rows */
  float *obs, *actions, *log_probs, *next_obs, *reward;
  uint8_t *term, *trunc;
  double *ep_return;
  int32_t *ep_length;
  protobuf_c_boolean *b_term, *b_trunc;
  float *s_obs, *s_next_obs, *s_actions, *s_reward, *s_logp; /* the stored rows of one step */
  /* one batch: [batch] rows */
  uint64_t *keys;
  float *weights, *b_obs, *b_action, *b_reward, *b_next_obs, *b_terminated_f, *b_truncated_f;
  protobuf_c_boolean *bb_term, *bb_trunc;
  algo_batch out;
};

/* calloc of n elements (at least one) into p; true when it failed */
#define ALLOC(p, n) (((p) = calloc(alloc_count((size_t)(n)), sizeof *(p))) == NULL)
static size_t alloc_count(size_t n) { return n ? n : 1; }

void det_source_destroy(det_source **d_p) {
  if (!d_p || !*d_p) return;
  det_source *d = *d_p;
  if (d->physics_faults > 0)
    log_event(LOG_WARN, "train", "physics_faults_total", LF_STR("task", d->task),
              LF_U64("physics_fault_transitions_total", d->physics_faults), LF_U64("env_steps", d->env_steps),
              LF_STR("note", "transitions left out of replay as physics faults over this run"));
  policy_destroy(&d->policy);
  replay_table_destroy(&d->table);
  env_vec_destroy(&d->vec);
  evaluation_destroy(&d->eval);
  env_model_destroy(&d->model);
  void *bufs[] = {d->obs, d->actions, d->log_probs, d->next_obs, d->reward, d->term, d->trunc, d->ep_return,
                  d->ep_length, d->b_term, d->b_trunc, d->s_obs, d->s_next_obs, d->s_actions, d->s_reward,
                  d->s_logp, d->keys, d->weights, d->b_obs, d->b_action, d->b_reward,
                  d->b_next_obs, d->b_terminated_f, d->b_truncated_f, d->bb_term, d->bb_trunc};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
  free(d);
  *d_p = NULL;
}

det_source *det_source_new(const app_settings *s, learner_t *learner, ember_err *err) {
  if (strcmp(s->replay.sampler, "uniform") != 0) {
    ember_fail(err, EMBER_EINVAL,
               "--deterministic takes replay.sampler uniform, not '%s' (a prioritized table is not restored bit "
               "for bit)", s->replay.sampler);
    return NULL;
  }
  det_source *d = calloc(1, sizeof *d);
  if (!d) {
    ember_fail(err, EMBER_ENOMEM, "out of memory");
    return NULL;
  }
  d->learner = learner;
  snprintf(d->task, sizeof d->task, "%s", s->run.task);
  if (env_model_load(s->run.task, s->actor.model_dir, &d->model, err) != 0) goto fail;
  d->spec = env_model_spec(d->model);
  d->K = (int)s->actor.num_envs;
  d->E = (int)s->actor.eval_episodes;
  d->od = d->spec->obs_dim;
  d->ad = d->spec->act_dim;
  d->batch = (int)s->learner.batch_size;
  d->actor_id = s->actor.id > 0 ? (uint64_t)s->actor.id : 1; /* 0 = the first id, as in ember train */
  d->steps_limit = (uint64_t)s->run.steps;
  d->min_size = (uint64_t)s->replay.min_size_to_sample;
  if (d->min_size < (uint64_t)d->batch) d->min_size = (uint64_t)d->batch;
  d->evaluate = s->train.evaluator;
  d->eval_every = s->actor.eval_every_steps;
  d->next_eval_steps = (uint64_t)d->eval_every;
  d->updates_per_step = s->train.updates_per_step > 0 ? s->train.updates_per_step : 1.0;
  d->uniform_log_prob = (float)(-d->ad * log(2.0));

  env_vec_config vc = {.n_envs = d->K, .seed = (uint64_t)s->run.seed, .first_env_id = d->actor_id * (uint64_t)d->K,
                       .max_episode_steps = (int)s->actor.max_episode_steps,
                       .ctrl_noise_std = s->actor.ctrl_noise_std};
  if (env_vec_new(d->model, &vc, &d->vec, err) != 0) goto fail;
  evaluation_config ec = {.episodes = d->E, .seed = (uint64_t)s->run.seed ^ 0x5eed0e7a15ULL, /* their own streams */
                          .first_env_id = d->actor_id * (uint64_t)d->K, .max_episode_steps = vc.max_episode_steps,
                          .ctrl_noise_std = s->actor.ctrl_noise_std};
  if (!(d->eval = evaluation_new(d->model, &ec, err))) goto fail;
  rng_seed(&d->actor_rng, (uint64_t)s->run.seed, RNG_STREAM_ACTOR + d->actor_id);
  rng_seed(&d->sample_rng, (uint64_t)s->run.seed, RNG_STREAM_REPLAY);

  replay_spec spec = {.obs_dim = (uint32_t)d->od, .act_dim = (uint32_t)d->ad};
  snprintf(spec.task, sizeof spec.task, "%.63s", s->run.task);
  /* no eviction within run.steps, so the table never holds more than it needs */
  size_t capacity = (size_t)s->replay.capacity;
  if (d->steps_limit > 0 && d->steps_limit + (uint64_t)d->K < capacity) capacity = d->steps_limit + (size_t)d->K;
  replay_table_opts to = {.capacity = capacity, .sampler = REPLAY_SAMPLER_UNIFORM, .spec = &spec};
  if (!(d->table = replay_table_new(&to, err))) goto fail;

  int K = d->K, B = d->batch, od = d->od, ad = d->ad;
  if (ALLOC(d->obs, K * od) || ALLOC(d->actions, K * ad) || ALLOC(d->log_probs, K) || ALLOC(d->next_obs, K * od) ||
      ALLOC(d->reward, K) || ALLOC(d->term, K) || ALLOC(d->trunc, K) || ALLOC(d->ep_return, K) ||
      ALLOC(d->ep_length, K) || ALLOC(d->b_term, K) || ALLOC(d->b_trunc, K) || ALLOC(d->s_obs, K * od) ||
      ALLOC(d->s_next_obs, K * od) || ALLOC(d->s_actions, K * ad) || ALLOC(d->s_reward, K) || ALLOC(d->s_logp, K) ||
      ALLOC(d->keys, B) || ALLOC(d->weights, B) || ALLOC(d->b_obs, B * od) ||
      ALLOC(d->b_action, B * ad) || ALLOC(d->b_reward, B) || ALLOC(d->b_next_obs, B * od) ||
      ALLOC(d->b_terminated_f, B) || ALLOC(d->b_truncated_f, B) || ALLOC(d->bb_term, B) || ALLOC(d->bb_trunc, B)) {
    ember_fail(err, EMBER_ENOMEM, "out of memory");
    goto fail;
  }
  return d;
fail:
  det_source_destroy(&d);
  return NULL;
}

/* One step of the K training envs; the transitions go into the table. */
static int step_envs(det_source *d, ember_err *err) {
  int K = d->K, od = d->od, ad = d->ad;
  memcpy(d->obs, env_vec_obs(d->vec), sizeof(float) * (size_t)(K * od));
  if (!d->policy) {
    for (int i = 0; i < K * ad; i++) d->actions[i] = 2.0f * rng_uniform_f(&d->actor_rng) - 1.0f;
    for (int i = 0; i < K; i++) d->log_probs[i] = d->uniform_log_prob;
  } else {
    int rc = policy_act(d->policy, d->obs, K, false, &d->actor_rng, d->actions, d->log_probs, err);
    if (rc) return rc;
  }
  env_step_out o = {.next_obs = d->next_obs, .reward = d->reward, .terminated = d->term, .truncated = d->trunc,
                    .episode_return = d->ep_return, .episode_length = d->ep_length};
  int rc = env_vec_step(d->vec, d->actions, &o, err);
  if (rc) return rc;
  const uint8_t *faults = env_vec_physics_faults(d->vec);
  int n = 0, n_faults = 0, first_fault = -1;
  for (int i = 0; i < K; i++) {
    if (d->term[i] || d->trunc[i])
      learner_report_episode(d->learner, d->actor_id, d->policy_version, d->ep_return[i], false);
    if (faults[i]) { /* a physics fault's transition is not data */
      if (n_faults++ == 0) first_fault = i;
      continue;
    }
    memcpy(d->s_obs + n * od, d->obs + i * od, sizeof(float) * (size_t)od);
    memcpy(d->s_next_obs + n * od, d->next_obs + i * od, sizeof(float) * (size_t)od);
    memcpy(d->s_actions + n * ad, d->actions + i * ad, sizeof(float) * (size_t)ad);
    d->s_reward[n] = d->reward[i];
    d->s_logp[n] = d->log_probs[i];
    d->b_term[n] = d->term[i];
    d->b_trunc[n] = d->trunc[i];
    n++;
  }
  d->physics_faults += (uint64_t)n_faults;
  if (n_faults > 0 && !d->fault_last_step)
    log_event(LOG_WARN, "train", "physics_fault", LF_STR("task", d->task), LF_I64("env", first_fault),
              LF_I64("envs_this_step", n_faults), LF_U64("physics_fault_transitions_total", d->physics_faults),
              LF_STR("action", "transition dropped and counted, env reset; logged once per burst"));
  d->fault_last_step = n_faults > 0;
  if (n == 0) return 0;
  Ember__TransitionBatch tb = EMBER__TRANSITION_BATCH__INIT;
  tb.task = d->task;
  tb.obs_dim = (uint32_t)od, tb.act_dim = (uint32_t)ad, tb.count = (uint32_t)n;
  tb.actor_id = d->actor_id, tb.policy_version = d->policy_version;
  tb.n_obs = tb.n_next_obs = (size_t)(n * od), tb.obs = d->s_obs, tb.next_obs = d->s_next_obs;
  tb.n_action = (size_t)(n * ad), tb.action = d->s_actions;
  tb.n_reward = tb.n_terminated = tb.n_truncated = tb.n_behaviour_log_prob = (size_t)n;
  tb.reward = d->s_reward, tb.terminated = d->b_term, tb.truncated = d->b_trunc, tb.behaviour_log_prob = d->s_logp;
  replay_table_insert(d->table, &tb, NULL);
  d->env_steps += (uint64_t)n;
  if (replay_table_size(d->table) >= d->min_size) d->credit += d->updates_per_step * (double)n;
  return 0;
}

static int det_next(void *ctx, const algo_batch **out, uint64_t *env_steps, ember_err *err) {
  det_source *d = ctx;
  for (;;) {
    if (d->credit >= 1.0 && replay_table_size(d->table) >= d->min_size) {
      d->credit -= 1.0;
      int rc = replay_table_sample(d->table, &d->sample_rng, (size_t)d->batch, d->keys, d->weights, err);
      if (rc) return rc;
      replay_rows rows = {.obs = d->b_obs, .action = d->b_action, .reward = d->b_reward, .next_obs = d->b_next_obs,
                          .terminated = d->bb_term, .truncated = d->bb_trunc};
      replay_table_gather(d->table, d->keys, (size_t)d->batch, &rows);
      for (int i = 0; i < d->batch; i++) {
        d->b_terminated_f[i] = d->bb_term[i] ? 1.0f : 0.0f;
        d->b_truncated_f[i] = d->bb_trunc[i] ? 1.0f : 0.0f;
      }
      d->out = (algo_batch){.size = d->batch, .obs_dim = d->od, .act_dim = d->ad, .obs = d->b_obs,
                            .action = d->b_action, .reward = d->b_reward, .next_obs = d->b_next_obs,
                            .terminated = d->b_terminated_f, .truncated = d->b_truncated_f, .keys = d->keys};
      *out = &d->out;
      *env_steps = d->env_steps;
      return 0;
    }
    if (d->steps_limit > 0 && d->env_steps >= d->steps_limit) {
      *env_steps = d->env_steps;
      return LEARNER_SOURCE_DONE;
    }
    int rc = step_envs(d, err);
    *env_steps = d->env_steps;
    if (rc) return rc;
  }
}

static int take_policy(det_source *d, policy_t **pol, int max_batch, const Ember__Params *p, ember_err *err) {
  if (*pol) return policy_update(*pol, p, err);
  policy_config pc = {d->task, d->od, d->ad, max_batch};
  *pol = policy_new(p, &pc, err);
  return *pol ? 0 : err->code;
}

/* One evaluation of p, to its end, reported whole. One that cannot complete (a policy giving
 * non-finite actions, an env failure) is abandoned and logged, as the evaluator does: it reports
 * nothing, and training goes on. */
static int evaluate(det_source *d, const Ember__Params *p, ember_err *err) {
  ember_err e = {0};
  int rc = evaluation_start(d->eval, p, &e);
  if (!rc) rc = evaluation_run(d->eval, &e);
  if (rc != 1) {
    log_event(LOG_WARN, "train", "evaluation_abandoned", LF_U64("policy_version", p->version),
              LF_STR("error", rc ? e.msg : "the evaluation did not complete"));
    return 0;
  }
  evaluation_result r;
  evaluation_get_result(d->eval, &r);
  return learner_report_evaluation(d->learner, d->actor_id, r.version, r.env_steps, r.episodes, r.returns, r.lengths,
                                   r.ended_by_task, err);
}

static int det_published(void *ctx, const Ember__Params *p, bool restored, ember_err *err) {
  det_source *d = ctx;
  int rc = take_policy(d, &d->policy, d->K, p, err);
  if (rc) return ember_err_prefix(err, "--deterministic: the learner's Params: ");
  d->policy_version = p->version;
  /* the first version published at or after each multiple of eval_every env steps, as the eval
   * role's actor chooses (evaluation.h) */
  if (restored || !d->evaluate || (d->eval_every > 0 && p->env_steps < d->next_eval_steps)) return 0;
  if (d->eval_every > 0) d->next_eval_steps = (p->env_steps / (uint64_t)d->eval_every + 1) * (uint64_t)d->eval_every;
  return evaluate(d, p, err);
}

/* ---- checkpoint records -------------------------------------------------------------------------- */

typedef struct {
  uint32_t format, K, E, obs_dim, act_dim, pad;
  uint64_t env_state_bytes, capacity, table_size, env_steps, next_eval_steps, policy_version;
  double credit;
  rng_t actor_rng, sample_rng;
  uint64_t physics_faults, fault_last_step;
} det_counters;

static void counters_of(const det_source *d, det_counters *c) {
  memset(c, 0, sizeof *c);
  c->format = DET_FORMAT, c->K = (uint32_t)d->K, c->E = (uint32_t)d->E;
  c->obs_dim = (uint32_t)d->od, c->act_dim = (uint32_t)d->ad;
  c->env_state_bytes = env_state_size(d->model);
  c->capacity = replay_table_capacity(d->table);
  c->table_size = replay_table_size(d->table);
  c->env_steps = d->env_steps, c->next_eval_steps = d->next_eval_steps, c->policy_version = d->policy_version;
  c->credit = d->credit;
  c->actor_rng = d->actor_rng, c->sample_rng = d->sample_rng;
  c->physics_faults = d->physics_faults, c->fault_last_step = d->fault_last_step;
}

/* Every env of vec, one after the other, as one record. */
static int put_envs(FILE *out, const char *name, env_vec_t *vec, size_t each, ember_err *err) {
  int n = env_vec_size(vec);
  unsigned char *buf = malloc(each * (size_t)n);
  if (!buf) return ember_fail(err, EMBER_ENOMEM, "out of memory");
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) rc = env_vec_save_state(vec, i, buf + each * (size_t)i, each, err);
  if (!rc) rc = checkpoint_put(out, name, buf, each * (size_t)n, err);
  free(buf);
  return rc;
}

static int get_envs(FILE *in, const char *name, env_vec_t *vec, size_t each, ember_err *err) {
  int n = env_vec_size(vec);
  unsigned char *buf = malloc(each * (size_t)n);
  if (!buf) return ember_fail(err, EMBER_ENOMEM, "out of memory");
  int rc = checkpoint_get(in, name, buf, each * (size_t)n, err);
  for (int i = 0; i < n && !rc; i++) rc = env_vec_load_state(vec, i, buf + each * (size_t)i, each, err);
  free(buf);
  return rc;
}

/* The table's rows, oldest first, column by column. */
typedef struct {
  float *obs, *action, *reward, *next_obs, *logp;
  protobuf_c_boolean *term, *trunc;
  uint64_t *version, *actor, *keys;
} det_rows;

static void rows_free(det_rows *r) {
  free(r->obs), free(r->action), free(r->reward), free(r->next_obs), free(r->logp);
  free(r->term), free(r->trunc), free(r->version), free(r->actor), free(r->keys);
}

static int rows_alloc(det_rows *r, size_t n, int od, int ad) {
  memset(r, 0, sizeof *r);
  if (ALLOC(r->obs, n * (size_t)od) || ALLOC(r->action, n * (size_t)ad) || ALLOC(r->reward, n) ||
      ALLOC(r->next_obs, n * (size_t)od) || ALLOC(r->logp, n) || ALLOC(r->term, n) || ALLOC(r->trunc, n) ||
      ALLOC(r->version, n) || ALLOC(r->actor, n) || ALLOC(r->keys, n)) {
    rows_free(r);
    return EMBER_ENOMEM;
  }
  return 0;
}

#define ROW_RECORDS(X)                                    \
  X("det_table_obs", r.obs, n * (size_t)d->od)            \
  X("det_table_action", r.action, n * (size_t)d->ad)      \
  X("det_table_reward", r.reward, n)                      \
  X("det_table_next_obs", r.next_obs, n * (size_t)d->od)  \
  X("det_table_log_prob", r.logp, n)                      \
  X("det_table_terminated", r.term, n)                    \
  X("det_table_truncated", r.trunc, n)                    \
  X("det_table_policy_version", r.version, n)             \
  X("det_table_actor_id", r.actor, n)

static int det_save(void *ctx, FILE *out, ember_err *err) {
  det_source *d = ctx;
  det_counters c;
  counters_of(d, &c);
  int rc = checkpoint_put(out, "det_counters", &c, sizeof c, err);
  if (!rc) rc = put_envs(out, "det_envs", d->vec, c.env_state_bytes, err);
  if (!rc) rc = put_envs(out, "det_eval_envs", evaluation_envs(d->eval), c.env_state_bytes, err);
  if (rc) return rc;
  size_t n = c.table_size;
  det_rows r;
  if (rows_alloc(&r, n, d->od, d->ad) != 0) return ember_fail(err, EMBER_ENOMEM, "out of memory");
  uint64_t oldest = replay_table_inserts(d->table) - n;
  for (size_t i = 0; i < n; i++) r.keys[i] = oldest + i;
  replay_rows rows = {.obs = r.obs, .action = r.action, .reward = r.reward, .next_obs = r.next_obs,
                      .behaviour_log_prob = r.logp, .terminated = r.term, .truncated = r.trunc,
                      .policy_version = r.version, .actor_id = r.actor};
  replay_table_gather(d->table, r.keys, n, &rows);
#define PUT(name, ptr, count) \
  if (!rc) rc = checkpoint_put(out, name, ptr, sizeof *(ptr) * (count), err);
  ROW_RECORDS(PUT)
#undef PUT
  rows_free(&r);
  return rc;
}

static int det_load(void *ctx, FILE *in, ember_err *err) {
  det_source *d = ctx;
  det_counters c, mine;
  counters_of(d, &mine);
  int rc = checkpoint_get(in, "det_counters", &c, sizeof c, err);
  if (rc) return rc;
  if (c.format != DET_FORMAT)
    return ember_fail(err, EMBER_ESCHEMA,
                      "the deterministic checkpoint is of format %u, this ember writes and reads format %u (format 3 "
                      "evaluates every actor.eval_every_steps env steps): its run cannot be resumed bit for bit; "
                      "start it again, or use another run_dir",
                      c.format, DET_FORMAT);
  if (c.K != mine.K || c.E != mine.E || c.obs_dim != mine.obs_dim ||
      c.act_dim != mine.act_dim || c.env_state_bytes != mine.env_state_bytes || c.capacity != mine.capacity)
    return ember_fail(err, EMBER_ESHAPE,
                      "the deterministic checkpoint has %u envs, %u eval envs, obs %u, act %u, %llu-byte env states, "
                      "a table of %llu; this run has %u, %u, %u, %u, %llu, %llu (actor.num_envs, "
                      "actor.eval_episodes, replay.capacity and run.steps must stay the same)",
                      c.K, c.E, c.obs_dim, c.act_dim, (unsigned long long)c.env_state_bytes,
                      (unsigned long long)c.capacity, mine.K, mine.E, mine.obs_dim, mine.act_dim,
                      (unsigned long long)mine.env_state_bytes, (unsigned long long)mine.capacity);
  if (c.table_size > c.capacity) return ember_fail(err, EMBER_ECORRUPT, "deterministic checkpoint: table size");
  if (replay_table_inserts(d->table) != 0)
    return ember_fail(err, EMBER_ESTATE, "--deterministic: resuming into a table that is not empty");
  if ((rc = get_envs(in, "det_envs", d->vec, c.env_state_bytes, err)) != 0) return rc;
  if ((rc = get_envs(in, "det_eval_envs", evaluation_envs(d->eval), c.env_state_bytes, err)) != 0) return rc;
  size_t n = c.table_size;
  det_rows r;
  if (rows_alloc(&r, n, d->od, d->ad) != 0) return ember_fail(err, EMBER_ENOMEM, "out of memory");
#define GET(name, ptr, count) \
  if (!rc) rc = checkpoint_get(in, name, ptr, sizeof *(ptr) * (count), err);
  ROW_RECORDS(GET)
#undef GET
  /* back into the table oldest first, one batch per run of rows with the same version and actor */
  for (size_t i = 0; !rc && i < n;) {
    size_t j = i + 1;
    while (j < n && r.version[j] == r.version[i] && r.actor[j] == r.actor[i]) j++;
    size_t m = j - i;
    Ember__TransitionBatch tb = EMBER__TRANSITION_BATCH__INIT;
    tb.task = d->task;
    tb.obs_dim = (uint32_t)d->od, tb.act_dim = (uint32_t)d->ad, tb.count = (uint32_t)m;
    tb.actor_id = r.actor[i], tb.policy_version = r.version[i];
    tb.n_obs = tb.n_next_obs = m * (size_t)d->od, tb.obs = r.obs + i * d->od, tb.next_obs = r.next_obs + i * d->od;
    tb.n_action = m * (size_t)d->ad, tb.action = r.action + i * d->ad;
    tb.n_reward = tb.n_terminated = tb.n_truncated = tb.n_behaviour_log_prob = m;
    tb.reward = r.reward + i, tb.terminated = r.term + i, tb.truncated = r.trunc + i, tb.behaviour_log_prob = r.logp + i;
    replay_table_insert(d->table, &tb, NULL);
    i = j;
  }
  rows_free(&r);
  if (rc) return rc;
  d->env_steps = c.env_steps, d->next_eval_steps = c.next_eval_steps, d->policy_version = c.policy_version;
  d->physics_faults = c.physics_faults, d->fault_last_step = c.fault_last_step != 0;
  d->credit = c.credit;
  d->actor_rng = c.actor_rng, d->sample_rng = c.sample_rng;
  log_event(LOG_INFO, "train", "deterministic_resumed", LF_U64("env_steps", d->env_steps),
            LF_U64("table_size", (uint64_t)n), LF_U64("policy_version", d->policy_version));
  return 0;
}

void det_source_attach(det_source *d, learner_source *out) {
  *out = (learner_source){.ctx = d, .next = det_next, .published = det_published, .save = det_save,
                          .load = det_load};
}

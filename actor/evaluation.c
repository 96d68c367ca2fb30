/* evaluation.c: E complete deterministic episodes of one policy version (evaluation.h). */
#include "evaluation.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

/* An episode still running after this many steps of the evaluation means a time limit the task
 * does not have (max_episode_steps is bounded by the config); it is a programmer error, not data. */
#define EVALUATION_MAX_STEPS 100000000

struct evaluation {
  const env_spec *spec;
  env_vec_t *vec;
  policy_t *policy;
  int E, od, ad;
  bool active;
  int remaining;
  uint64_t steps;
  float *actions, *next_obs, *reward;
  uint8_t *terminated, *truncated, *done, *ended_by_task;
  double *episode_return, *returns;
  int32_t *episode_length, *lengths;
  uint64_t version, env_steps; /* of the evaluation under way */
  evaluation_result completed;  /* the last one to finish */
};

evaluation_t *evaluation_new(const env_model_t *model, const evaluation_config *cfg, ember_err *err) {
  if (!model || !cfg || cfg->episodes < 1) {
    ember_fail(err, EMBER_EINVAL, "evaluation: %d episodes per evaluation (at least 1)", cfg ? cfg->episodes : 0);
    return NULL;
  }
  evaluation_t *ev = calloc(1, sizeof *ev);
  if (!ev) {
    ember_fail(err, EMBER_ENOMEM, "evaluation: out of memory");
    return NULL;
  }
  ev->spec = env_model_spec(model);
  ev->E = cfg->episodes;
  ev->od = ev->spec->obs_dim;
  ev->ad = ev->spec->act_dim;
  env_vec_config vc = {.n_envs = ev->E, .seed = cfg->seed, .first_env_id = cfg->first_env_id,
                       .max_episode_steps = cfg->max_episode_steps, .ctrl_noise_std = cfg->ctrl_noise_std};
  if (env_vec_new(model, &vc, &ev->vec, err) != 0) {
    evaluation_destroy(&ev);
    return NULL;
  }
  size_t E = (size_t)ev->E;
  ev->actions = calloc(E * (size_t)ev->ad, sizeof(float));
  ev->next_obs = calloc(E * (size_t)ev->od, sizeof(float));
  ev->reward = calloc(E, sizeof(float));
  ev->terminated = calloc(E, 1);
  ev->truncated = calloc(E, 1);
  ev->done = calloc(E, 1);
  ev->ended_by_task = calloc(E, 1);
  ev->episode_return = calloc(E, sizeof(double));
  ev->returns = calloc(E, sizeof(double));
  ev->episode_length = calloc(E, sizeof(int32_t));
  ev->lengths = calloc(E, sizeof(int32_t));
  if (!ev->actions || !ev->next_obs || !ev->reward || !ev->terminated || !ev->truncated || !ev->done ||
      !ev->ended_by_task || !ev->episode_return || !ev->returns || !ev->episode_length || !ev->lengths) {
    ember_fail(err, EMBER_ENOMEM, "evaluation: out of memory for %d envs", ev->E);
    evaluation_destroy(&ev);
  }
  return ev;
}

void evaluation_destroy(evaluation_t **ev_p) {
  if (!ev_p || !*ev_p) return;
  evaluation_t *ev = *ev_p;
  env_vec_destroy(&ev->vec);
  policy_destroy(&ev->policy);
  free(ev->actions), free(ev->next_obs), free(ev->reward), free(ev->terminated), free(ev->truncated);
  free(ev->done), free(ev->ended_by_task), free(ev->episode_return), free(ev->returns);
  free(ev->episode_length), free(ev->lengths);
  free(ev);
  *ev_p = NULL;
}

int evaluation_start(evaluation_t *ev, const Ember__Params *params, ember_err *err) {
  ev->active = false;
  int rc;
  if (!ev->policy) {
    policy_config pc = {ev->spec->name, ev->od, ev->ad, ev->E};
    ev->policy = policy_new(params, &pc, err);
    rc = ev->policy ? 0 : err->code;
  } else {
    rc = policy_update(ev->policy, params, err);
  }
  if (rc) return rc;
  env_vec_reset(ev->vec);
  memset(ev->done, 0, (size_t)ev->E);
  ev->remaining = ev->E;
  ev->steps = 0;
  ev->version = params->version;
  ev->env_steps = params->env_steps;
  ev->active = true;
  return 0;
}

void evaluation_summarise(evaluation_result *r) {
  const int n = r->episodes;
  double sum = 0, len = 0, lo = INFINITY, hi = -INFINITY;
  int term = 0;
  for (int i = 0; i < n; i++) {
    sum += r->returns[i];
    len += r->lengths ? r->lengths[i] : 0;
    if (r->returns[i] < lo) lo = r->returns[i];
    if (r->returns[i] > hi) hi = r->returns[i];
    term += r->ended_by_task && r->ended_by_task[i];
  }
  r->mean = n ? sum / n : NAN;
  double ss = 0;
  for (int i = 0; i < n; i++) ss += (r->returns[i] - r->mean) * (r->returns[i] - r->mean);
  r->std = n > 1 ? sqrt(ss / (n - 1)) : NAN;
  r->min = n ? lo : NAN;
  r->max = n ? hi : NAN;
  r->mean_length = n ? len / n : NAN;
  r->terminated = term;
}

int evaluation_step(evaluation_t *ev, ember_err *err) {
  if (!ev->active) return ember_fail(err, EMBER_ESTATE, "evaluation_step: no evaluation under way");
  int rc = policy_act(ev->policy, env_vec_obs(ev->vec), ev->E, true, NULL, ev->actions, NULL, err);
  if (rc) {
    ev->active = false;
    return rc;
  }
  /* an env whose episode has ended plays on (the vector steps every env) but is not evaluated: its
   * actions are zeros, so only the episodes that count can abandon the evaluation */
  for (int e = 0; e < ev->E; e++) {
    float *act = ev->actions + (size_t)e * (size_t)ev->ad;
    for (int j = 0; j < ev->ad; j++) {
      if (ev->done[e]) {
        act[j] = 0.0f;
      } else if (!isfinite(act[j])) {
        ev->active = false;
        return ember_fail(err, EMBER_ENONFINITE,
                          "evaluation of version %llu abandoned: the policy gave a non-finite action in episode %d",
                          (unsigned long long)ev->version, e);
      }
    }
  }
  env_step_out out = {ev->next_obs, ev->reward, ev->terminated, ev->truncated, ev->episode_return,
                      ev->episode_length};
  if ((rc = env_vec_step(ev->vec, ev->actions, &out, err)) != 0) {
    ev->active = false;
    return rc;
  }
  /* an env whose episode has ended starts another (env.h); that one is not part of the evaluation */
  for (int e = 0; e < ev->E; e++) {
    if (ev->done[e] || (!ev->terminated[e] && !ev->truncated[e])) continue;
    ev->done[e] = 1;
    ev->remaining--;
    ev->returns[e] = ev->episode_return[e];
    ev->lengths[e] = ev->episode_length[e];
    ev->ended_by_task[e] = ev->terminated[e];
  }
  if (++ev->steps >= EVALUATION_MAX_STEPS && ev->remaining > 0) {
    ev->active = false;
    return ember_fail(err, EMBER_ESTATE, "evaluation of version %llu: episodes still running after %d steps",
                      (unsigned long long)ev->version, EVALUATION_MAX_STEPS);
  }
  if (ev->remaining > 0) return 0;
  ev->active = false;
  evaluation_result *r = &ev->completed;
  r->version = ev->version;
  r->env_steps = ev->env_steps;
  r->episodes = ev->E;
  r->returns = ev->returns;
  r->lengths = ev->lengths;
  r->ended_by_task = ev->ended_by_task;
  evaluation_summarise(r);
  return 1;
}

int evaluation_run(evaluation_t *ev, ember_err *err) {
  int rc;
  while ((rc = evaluation_step(ev, err)) == 0) {
  }
  return rc;
}

bool evaluation_active(const evaluation_t *ev) { return ev->active; }

void evaluation_get_result(const evaluation_t *ev, evaluation_result *out) {
  *out = ev->completed;
}

env_vec_t *evaluation_envs(evaluation_t *ev) { return ev->vec; }

/* evaluation.h: one evaluation of a policy version, as the papers measure it: E complete episodes
 * of the deterministic policy (a = tanh(mu)), one per env, each from its own reset, played side by
 * side to their end. The result (every episode's return, length and ending, their mean and standard
 * deviation) exists only once all E episodes have finished: an evaluation is never reported half
 * done, never cut short by a newer version, and never mixed with another version's episodes.
 *
 *   evaluation_t *ev = evaluation_new(model, &cfg, &err);     E envs over the caller's model
 *   evaluation_start(ev, params, &err);   builds (or updates) the policy from Params, resets the envs
 *   while ((rc = evaluation_step(ev, &err)) == 0) { ... }       one step of the unfinished envs
 *   rc == 1: evaluation_get_result(ev, &r)                      valid until the next start
 *   evaluation_destroy(&ev);
 *
 * Used by the actor's eval role (actor.role = eval: `ember train`'s evaluator thread, `ember-actor
 * --set actor.role=eval`) and by `ember train --deterministic`, so both measure the same way.
 *
 * Start states: env i of the evaluation draws its reset noise from env stream cfg->first_env_id + i
 * of cfg->seed (env.h); each evaluation continues those streams, so successive evaluations start
 * from fresh states, and the sequence is a function of the seed. With ctrl_noise_std > 0 the
 * control noise comes from env i's control-noise stream of the same seed and id, likewise continued.
 *
 * Errors: evaluation_new: EMBER_EINVAL (episodes < 1), what env_vec_new returns, EMBER_ENOMEM.
 * evaluation_start: what policy_new / policy_update refuse (the Params are not this task's or not a
 * policy); the evaluation is then not active. evaluation_step: EMBER_ESTATE when none is active,
 * EMBER_ENONFINITE when the policy gives non-finite actions (the evaluation is abandoned, not active
 * any more), and env_vec_step's errors.
 *
 * Ownership: the evaluation owns its envs, policy and buffers; the model is the caller's and must
 * outlive it. The Params given to evaluation_start are not kept. No allocation after evaluation_new
 * except building the policy at the first start. Thread-safety: one thread per evaluation.
 */
#ifndef EMBER_EVALUATION_H
#define EMBER_EVALUATION_H

#include <stdbool.h>
#include <stdint.h>

#include "ember.pb-c.h"
#include "env.h"
#include "err.h"

typedef struct evaluation evaluation_t;

typedef struct {
  int episodes;              /* E: episodes per evaluation, played side by side (>= 1) */
  uint64_t seed;             /* the start states' seed (the caller salts the run seed) */
  uint64_t first_env_id;     /* env streams first_env_id .. first_env_id + E - 1 */
  int max_episode_steps;     /* 0 = the task's own time limit */
  double ctrl_noise_std;     /* noise on the applied controls (env.h): the training envs' own, so that
                                an evaluation measures the task the policy learned */
} evaluation_config;

typedef struct {
  uint64_t version;          /* Params.version evaluated */
  uint64_t env_steps;        /* Params.env_steps: env steps when that version was exported */
  int episodes;              /* E */
  int terminated;            /* episodes ended by the task (the rest by the time limit or a fault) */
  double mean, std;          /* std: the sample standard deviation (n - 1); NaN for one episode */
  double min, max, mean_length;
  const double *returns;     /* [episodes], in env order; owned by the evaluation */
  const int32_t *lengths;    /* [episodes] */
  const uint8_t *ended_by_task; /* [episodes]: 1 = terminated */
} evaluation_result;

evaluation_t *evaluation_new(const env_model_t *model, const evaluation_config *cfg, ember_err *err);
void evaluation_destroy(evaluation_t **ev_p);

/* Begins an evaluation of params (any evaluation under way is dropped). */
int evaluation_start(evaluation_t *ev, const Ember__Params *params, ember_err *err);

/* One step of all E envs (one batched forward). 1 when the last episode has just finished (the
 * result is ready and the evaluation no longer active), 0 while episodes are still running, or an
 * error (see above). */
int evaluation_step(evaluation_t *ev, ember_err *err);

/* Steps until the evaluation completes (1) or fails (an error). */
int evaluation_run(evaluation_t *ev, ember_err *err);

bool evaluation_active(const evaluation_t *ev);

/* The last completed evaluation (zeroed before the first). */
void evaluation_get_result(const evaluation_t *ev, evaluation_result *out);

/* Fills mean, std, min, max, mean_length and terminated of r from its arrays (r->episodes long):
 * the one definition of an evaluation's summary, shared with the learner's checks of reports. */
void evaluation_summarise(evaluation_result *r);

/* The evaluation's envs (for `ember train --deterministic`'s checkpoints of their state). */
env_vec_t *evaluation_envs(evaluation_t *ev);

#endif

/* env_task.h: what each MuJoCo task is, for code that never simulates it (the learner).
 *
 * A task spec (env_spec) is a constant description: name, observation and action sizes, episode
 * limit, and whether its reward and termination can be computed from observations alone. The specs
 * live in a static table inside the library: nothing to allocate or free, and every function here is
 * pure and thread-safe. The simulator side (models, vector environments) is in env.h.
 *
 * Actions are always in [-1, 1]^act_dim (the env scales them to each actuator's control range);
 * observations are float vectors laid out as docs/tasks.md says, task by task.
 *
 * Reward and termination as pure functions: env_spec_reward(obs, act, next_obs) and
 * env_spec_terminated(next_obs) run on batches (spec must come from env_spec_find/env_spec_at), so a
 * learner can score transitions its dynamics model predicted. reward_exact / terminated_exact say
 * whether they reproduce the environment's own numbers (to float rounding). Where reward_exact is 0
 * the function is only an approximation (the locomotion tasks reward the finite difference of x
 * position over a step, and x is not in the observation: the function substitutes the observed
 * end-of-step velocity); a learner must then learn a reward model instead of trusting it. Where
 * terminated_exact is 0 (hopper only) the function is an approximation a learner should still use:
 * on real observations it agrees with the env except when a joint velocity hidden behind the
 * observation's clip exceeds the env's bound (docs/tasks.md, "The learner's view"; tasks.c says
 * exactly how), and it never reports a termination the env would not.
 */
#ifndef EMBER_ENV_TASK_H
#define EMBER_ENV_TASK_H

#include <stdint.h>

#include "err.h"

typedef struct {
  const char *name;         /* "hopper": the name config files and the command line use */
  const char *reference;    /* the published definition it reproduces, e.g. "Gym Hopper-v3" */
  int obs_dim;
  int act_dim;
  int max_episode_steps;    /* the time limit: reaching it truncates, it never terminates */
  int frame_skip;           /* physics steps per env step */
  double dt;                /* seconds per env step (timestep * frame_skip) */
  int reward_exact;         /* 1: env_spec_reward equals the env's reward; 0: approximation only */
  int terminated_exact;     /* 1: env_spec_terminated equals the env's termination; 0: a close
                               approximation (hopper: see above), which the learner passes too */
} env_spec;

/* The table of tasks: env_spec_count() entries, in a fixed order. */
int env_spec_count(void);
const env_spec *env_spec_at(int i);

/* Looks a task up by name. Unknown name: EMBER_ENOENT, with a message naming it and listing the
 * known tasks. */
int env_spec_find(const char *name, const env_spec **out, ember_err *err);

/* reward_out[b] = reward of the transition (obs[b], act[b], next_obs[b]) for b < n.
 * obs and next_obs: [n * obs_dim], act: [n * act_dim] (clipped to [-1, 1], as the env does). */
void env_spec_reward(const env_spec *spec, int n, const float *obs, const float *act,
                     const float *next_obs, float *reward_out);

/* terminated_out[b] = 1 if next_obs[b] ends the episode (the hopper fell), else 0. Never reports
 * the time limit, which is not a property of the state. */
void env_spec_terminated(const env_spec *spec, int n, const float *next_obs, uint8_t *terminated_out);

#endif

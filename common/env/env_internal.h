/* env_internal.h: how env.c and tasks.c talk; not installed, not for other modules.
 *
 * A task is a table entry (env_task_def) of constants and small functions. The env loop calls them in
 * this order for each env at each step:
 *   ctrl <- scaled action (+ control noise, clipped to the ctrlrange); mj_step x frame_skip;
 *   after_step (optional fix-up); after_forward; carry(after); reward(commanded ctrl, carry before,
 *   carry after); terminated; observe.
 * The reward's control cost reads the commanded control (the scaled action, before the noise) that
 * the loop passes, never mjData.ctrl (the applied one): env.h says why.
 * "carry" is what a reward needs from the state before the step (x position, centre of mass, the
 * fingertip-to-target vector): it is computed once at the end of each step or reset, kept per env,
 * and saved with env snapshots, so a restored env rewards its next step exactly as the original did.
 */
#ifndef EMBER_ENV_INTERNAL_H
#define EMBER_ENV_INTERNAL_H

#include <mujoco/mujoco.h>

#include "env.h"
#include "rng.h"

enum { ENV_CARRY_MAX = 4, ENV_BODIES_MAX = 2, ENV_PATH_MAX = 4096 };

struct env_model {
  mjModel *m;
  const struct env_task_def *task;
  int body[ENV_BODIES_MAX]; /* ids of the bodies the task names in env_task_def.bodies */
  double dt;               /* seconds per env step: timestep * frame_skip */
  double total_mass;       /* sum of body masses (the humanoid's centre of mass) */
  double *ctrl_center;     /* [nu] (lo + hi) / 2 of each actuator's ctrlrange */
  double *ctrl_half;       /* [nu] (hi - lo) / 2 */
  char path[ENV_PATH_MAX];
};

typedef struct env_task_def {
  env_spec spec;
  const char *model_file;          /* file name inside the model directory */
  int nq, nv, nu, nbody;           /* the layout the code below assumes; other models are refused */
  const char *bodies[ENV_BODIES_MAX]; /* bodies the task reads by name (NULL: unused slot) */
  double ctrl_half;                /* the ctrlrange half-width of every actuator, which the pure
                                      reward functions assume (checked against the model) */
  void (*reset)(const struct env_model *em, mjData *d, rng_t *rng);  /* sets qpos, qvel */
  void (*after_step)(const struct env_model *em, mjData *d, const double *carry_before); /* or NULL */
  void (*after_forward)(const struct env_model *em, mjData *d);  /* after steps and resets; or NULL */
  void (*carry)(const struct env_model *em, const mjData *d, double *carry);
  double (*reward)(const struct env_model *em, const mjData *d, const double *ctrl_commanded,
                   const double *carry_before, const double *carry_after);
  int (*terminated)(const struct env_model *em, const mjData *d);
  void (*observe)(const struct env_model *em, const mjData *d, float *obs);
  /* the learner-side pure functions of one transition */
  float (*obs_reward)(const float *obs, const float *act, const float *next_obs);
  int (*obs_terminated)(const float *next_obs);
} env_task_def;

const env_task_def *env_task_def_at(int i);
int env_task_def_count(void);

#endif

/* env.h: MuJoCo tasks for the actor: a loaded model per task, and vectors of environments over it.
 *
 * Two objects, kept apart the way MuJoCo keeps mjModel from mjData:
 *
 *  env_model_t  one task's compiled MJCF model plus what the task code needs from it (body ids,
 *               control ranges). Created by env_model_load*, freed by env_model_destroy. Read-only
 *               after loading: any number of vectors, on any threads, may share one.
 *  env_vec_t    K environments of one task: K mjData over the shared model, each with its own RNG
 *               stream, episode counters and current observation. Created by env_vec_new (which
 *               resets every env), freed by env_vec_destroy. Not thread-safe: one thread per vector.
 *               It borrows the model, which must outlive it.
 *
 * Where model files come from (env_model_load): the first of
 *   1. model_dir, when the caller passes one (config key env.model_dir);
 *   2. the directory in the environment variable EMBER_MODEL_DIR, when set and non-empty;
 *   3. the source tree's common/env/models (compiled in: a build run where it was built);
 *   4. the install location <prefix>/share/ember/models (`cmake --install`, the Docker image).
 * A directory named by 1 or 2 is authoritative: a file missing there is an error, not a fallback.
 * env_model_load_file loads an explicit file instead (a variant model, a test).
 *
 * Stepping: env_vec_step takes K actions in [-1, 1] (clipped to it, then mapped linearly onto each
 * actuator's ctrlrange, plus the control noise below when it is on), advances every env by
 * frame_skip physics steps, and reports per env the
 * observation the action led to, the reward, and two separate flags: terminated (the task ended:
 * do not bootstrap) and truncated (the time limit, or a physics fault: see env_vec_stats). An env whose
 * episode ended is reset at once; next_obs keeps its final observation and env_vec_obs() then holds
 * the new episode's first one. No allocation happens after env_vec_new.
 *
 * Control noise (env_vec_config.ctrl_noise_std = sigma > 0; docs/tasks.md, "Stochastic dynamics:
 * noise on the applied controls"): the control the actuators apply is
 *     ctrl_j = clip(centre_j + half_j * clip(a_j, -1, 1) + sigma * half_j * N(0, 1), ctrlrange_j)
 * sigma in units of each actuator's half range, so one sigma means the same on every task. One draw
 * per actuator per env step, held over the step's frame_skip physics substeps (an actuator's noise,
 * not the integrator's), from env i's own control-noise stream
 *     rng_seed(seed, RNG_STREAM_ENV_CTRL_NOISE + first_env_id + i),
 * apart from its reset-noise stream, so start states do not depend on sigma or on how many steps the
 * episodes before took. The noise goes in before the clip to the ctrlrange: the range is the
 * actuator's limit (pendulum's torque limit of 2 is what makes it a swing-up), which noise must not
 * lift, and mjData.ctrl then holds exactly what was applied (MuJoCo would clamp it anyway).
 * The reward's control cost is of the commanded control centre + half * clip(a, -1, 1), not of the
 * noisy one: the reward stays a function of (state, action, next state), so env_spec_reward stays
 * exact where reward_exact says it is, and the noise is part of the dynamics only. mjData.ctrl
 * (env_vec_data) is the applied control. sigma = 0 (the default) draws nothing: the tasks are Gym's,
 * bit for bit as before the option existed.
 *
 * Errors: EMBER_ENOENT (unknown task, missing file), EMBER_EINVAL (malformed model, bad argument
 * such as a negative or non-finite ctrl_noise_std; the message includes MuJoCo's parser text), EMBER_ESHAPE (a model that does not have the task's
 * layout, a state buffer of the wrong size), EMBER_ENONFINITE (an action that is NaN or infinite:
 * nothing is stepped, the message names the env and action index), EMBER_ENOMEM.
 * Loading goes through mj_loadXML, which is not known to be thread-safe: load models from one
 * thread at a time (start-up), then share them freely.
 *
 * MuJoCo's own errors and warnings: the first model load of a process installs handlers
 * (mju_user_error, mju_user_warning) in place of MuJoCo's, which print to stdout, append to
 * MUJOCO_LOG.TXT in the working directory and exit(1). Problems in a model file never reach them:
 * mj_loadXML returns its text, and the load fails with it. Warnings (contact buffer full, NaN state
 * reset) become `mujoco_warning` log events (component env, at most one per 10 s, with a count of
 * the suppressed). An error is MuJoCo giving up in the middle of a call (out of memory, stack
 * overflow): its handler must not return, so it logs a `mujoco_error` event naming MuJoCo's message
 * and ends the process with exit status ENV_EXIT_MUJOCO_ERROR.
 */
#ifndef EMBER_ENV_H
#define EMBER_ENV_H

#include <stddef.h>
#include <stdint.h>

#include "env_task.h"
#include "err.h"

struct mjModel_;
struct mjData_;

/* The exit status of a process that MuJoCo stopped with an error (sysexits' EX_SOFTWARE). */
enum { ENV_EXIT_MUJOCO_ERROR = 70 };

/* Installs ember's MuJoCo error and warning handlers, once per process (thread-safe; model loading
 * calls it, so only code that uses MuJoCo without loading a model through env needs to). */
void env_install_mujoco_handlers(void);

typedef struct env_model env_model_t;
typedef struct env_vec env_vec_t;

/* ---- models ---- */

/* Loads the model of task `task`, looking for its file as described above (model_dir may be NULL or
 * ""). On success *out owns a new model; free it with env_model_destroy. */
int env_model_load(const char *task, const char *model_dir, env_model_t **out, ember_err *err);

/* Loads `task` from the MJCF file at xml_path. */
int env_model_load_file(const char *task, const char *xml_path, env_model_t **out, ember_err *err);

/* Frees the model and sets *model_p to NULL; NULL and *model_p == NULL are fine. */
void env_model_destroy(env_model_t **model_p);

const env_spec *env_model_spec(const env_model_t *model);
/* The compiled MuJoCo model (borrowed; read-only). */
const struct mjModel_ *env_model_mj(const env_model_t *model);
/* The file it was loaded from. */
const char *env_model_path(const env_model_t *model);

/* ---- vectors of environments ---- */

typedef struct {
  int n_envs;                /* K >= 1 */
  uint64_t seed;             /* run seed */
  uint64_t first_env_id;     /* env i uses RNG stream RNG_STREAM_ENV + first_env_id + i for its reset
                                noise (and RNG_STREAM_ENV_CTRL_NOISE + first_env_id + i for its
                                control noise): give each actor its own range (actor a with K envs:
                                a * K); first_env_id + K at most 2^62 */
  int max_episode_steps;     /* 0: the task's own limit; > 0 overrides it (tests, other horizons) */
  double ctrl_noise_std;     /* sigma >= 0, finite: Gaussian noise on the applied controls in units of
                                each actuator's half range (above); 0 = the deterministic task */
} env_vec_config;

/* The control-noise streams: above the reset-noise ones (RNG_STREAM_ENV + id, id < 2^62), so the two
 * never meet. */
#define RNG_STREAM_ENV_CTRL_NOISE (3ULL << 62)

/* Creates K environments over `model` and resets each (observations ready in env_vec_obs). */
int env_vec_new(const env_model_t *model, const env_vec_config *cfg, env_vec_t **out, ember_err *err);
void env_vec_destroy(env_vec_t **vec_p);

int env_vec_size(const env_vec_t *vec);
const env_spec *env_vec_spec(const env_vec_t *vec);
/* The vector's ctrl_noise_std (sigma of the config). */
double env_vec_ctrl_noise_std(const env_vec_t *vec);

/* Starts a new episode in every env (each draws its reset noise from its own stream; the streams
 * go on, they are not reseeded). */
void env_vec_reset(env_vec_t *vec);

/* The current observation of every env, [K * obs_dim], owned by the vector: what the policy acts on
 * next. Its contents change at every env_vec_step / env_vec_reset; copy what you keep. */
const float *env_vec_obs(const env_vec_t *vec);

/* Caller-owned outputs of one step; arrays of K (next_obs: K * obs_dim). The optional ones may be
 * NULL; episode_return and episode_length are written only for envs whose episode ended. */
typedef struct {
  float *next_obs;          /* required: the observation each action led to (final one if ended) */
  float *reward;            /* required */
  uint8_t *terminated;      /* required: 1 = the task ended; do not bootstrap */
  uint8_t *truncated;       /* required: 1 = time limit (or physics blow-up); bootstrap. Never both. */
  double *episode_return;   /* optional: total reward of the episode that just ended */
  int32_t *episode_length;  /* optional: its number of steps */
} env_step_out;

/* Steps every env once with actions [K * act_dim]. A non-finite action fails the whole call with
 * EMBER_ENONFINITE before any env moves. */
int env_vec_step(env_vec_t *vec, const float *actions, const env_step_out *out, ember_err *err);

/* Per env, 1 if the last env_vec_step hit a physics fault (see physics_unstable_total): that
 * step is reported truncated and its transition should be dropped. [K], owned by the vector,
 * overwritten by every step (all 0 after creation). */
const uint8_t *env_vec_physics_faults(const env_vec_t *vec);

/* Counters since creation. */
typedef struct {
  uint64_t steps_total;           /* env steps (K per env_vec_step) */
  uint64_t episodes_total;        /* episodes ended (terminated + truncated) */
  uint64_t terminated_total;
  uint64_t truncated_total;
  uint64_t physics_unstable_total;/* steps where MuJoCo found NaN/Inf and reset the state itself,
                                     or dropped contacts beyond the model's capacity, or that gave a
                                     non-finite observation or reward; such a step is reported
                                     truncated (unless terminated) and its transition should be
                                     dropped */
} env_vec_stats;
env_vec_stats env_vec_get_stats(const env_vec_t *vec);

/* ---- state access (planning, tests, evaluation tools) ---- */

/* Starts a new episode of env i from a hand-built state: qpos [nq], qvel [nv] (no reset noise).
 * Non-finite values: EMBER_ENONFINITE. */
int env_vec_set_qpos_qvel(env_vec_t *vec, int i, const double *qpos, const double *qvel, ember_err *err);

/* The simulator data of env i, read-only (valid until the vector is destroyed); NULL if i is out
 * of range. */
const struct mjData_ *env_vec_data(const env_vec_t *vec, int i);

/* A snapshot of one env (physics state, solver warm start, episode counters, both RNG streams,
 * observation) that env_vec_load_state restores so that the following steps are bit-identical to the
 * original run. Snapshots are plain bytes of env_state_size(model) bytes, valid for the same model in
 * this process (they are not a file format); one taken with another ctrl_noise_std than the vector's
 * is refused (EMBER_EINVAL): its future would not be the original's. */
size_t env_state_size(const env_model_t *model);
int env_vec_save_state(const env_vec_t *vec, int i, void *buf, size_t size, ember_err *err);
int env_vec_load_state(env_vec_t *vec, int i, const void *buf, size_t size, ember_err *err);

#endif

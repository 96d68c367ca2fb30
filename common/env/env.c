/* env.c: loading task models and running vectors of environments over them (see env.h). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "env_internal.h"
#include "log.h"

#ifndef EMBER_ENV_MODEL_DIR_SOURCE
#error "EMBER_ENV_MODEL_DIR_SOURCE must name the source tree's models directory (common/env/CMakeLists.txt)"
#endif
#ifndef EMBER_ENV_MODEL_DIR_INSTALL
#error "EMBER_ENV_MODEL_DIR_INSTALL must name the installed models directory (common/env/CMakeLists.txt)"
#endif

/* ---- MuJoCo's error and warning handlers ---- */

/* MuJoCo's defaults print to stdout and append to MUJOCO_LOG.TXT in the working directory, and the
 * error one then calls exit(1): a process would end with nothing in its log. Ours log an event
 * instead. mju_user_error must not return (MuJoCo 2.2.2 carries on with corrupt state if it does), so
 * after the event the process ends with ENV_EXIT_MUJOCO_ERROR; _exit, not exit: the other threads
 * (learner, replay in `ember train`) are still running and atexit handlers would race them. */
static void on_mujoco_error(const char *msg) {
  if (log_get_level() <= LOG_ERROR)
    log_event(LOG_ERROR, "env", "mujoco_error", LF_STR("message", msg), LF_I64("exit_code", ENV_EXIT_MUJOCO_ERROR));
  else /* logging is off: still say why the process ends */
    fprintf(stderr, "ember: MuJoCo error: %s (exit %d)\n", msg, ENV_EXIT_MUJOCO_ERROR);
  fflush(NULL);
  _exit(ENV_EXIT_MUJOCO_ERROR);
}

/* MuJoCo warns once per mjData and warning kind until the counter is cleared, which env_vec_step does
 * after each fault: a model that keeps overflowing its contact buffer warns every step. At most one
 * line per interval, with a count of the suppressed (faults themselves are counted per env). */
#define MUJOCO_WARNING_LOG_INTERVAL_MS 10000
static atomic_llong mujoco_warning_last_ms;
static atomic_ullong mujoco_warnings_suppressed;

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_mujoco_warning(const char *msg) {
  long long t = mono_ms(), last = atomic_load(&mujoco_warning_last_ms);
  if ((last && t - last < MUJOCO_WARNING_LOG_INTERVAL_MS) ||
      !atomic_compare_exchange_strong(&mujoco_warning_last_ms, &last, t)) {
    atomic_fetch_add(&mujoco_warnings_suppressed, 1);
    return;
  }
  log_event(LOG_WARN, "env", "mujoco_warning", LF_STR("message", msg),
            LF_U64("suppressed_since_last", atomic_exchange(&mujoco_warnings_suppressed, 0)));
}

static pthread_once_t mujoco_handlers_once = PTHREAD_ONCE_INIT;
static void install_mujoco_handlers(void) {
  mju_user_error = on_mujoco_error;
  mju_user_warning = on_mujoco_warning;
}

/* Every MuJoCo call of this process follows a model load, which calls this first. (The XML compiler
 * swaps in handlers of its own while it runs and restores ours: its errors come back as text.) */
void env_install_mujoco_handlers(void) { pthread_once(&mujoco_handlers_once, install_mujoco_handlers); }

/* ---- models ---- */

static const env_task_def *find_def(const char *task, ember_err *err) {
  const env_spec *spec;
  int rc = env_spec_find(task, &spec, err);
  if (rc) return NULL;
  for (int i = 0; i < env_task_def_count(); i++)
    if (&env_task_def_at(i)->spec == spec) return env_task_def_at(i);
  return NULL;
}

/* The model must have the layout the task code indexes into, and the control ranges and timestep
 * the task's spec and pure functions assume. */
static int check_model(const env_task_def *t, const mjModel *m, const char *path, ember_err *err) {
  if (m->nq != t->nq || m->nv != t->nv || m->nu != t->nu || m->nbody != t->nbody)
    return ember_fail(err, EMBER_ESHAPE,
                      "model file '%s' does not fit task %s: it has nq=%d nv=%d nu=%d nbody=%d, the task "
                      "needs nq=%d nv=%d nu=%d nbody=%d",
                      path, t->spec.name, m->nq, m->nv, m->nu, m->nbody, t->nq, t->nv, t->nu, t->nbody);
  for (int i = 0; i < m->nu; i++) {
    const mjtNum *r = m->actuator_ctrlrange + 2 * i;
    if (!m->actuator_ctrllimited[i] || r[0] != -t->ctrl_half || r[1] != t->ctrl_half)
      return ember_fail(err, EMBER_ESHAPE,
                        "model file '%s': actuator %d must be ctrllimited with ctrlrange [-%g, %g] for "
                        "task %s",
                        path, i, t->ctrl_half, t->ctrl_half, t->spec.name);
  }
  double dt = m->opt.timestep * t->spec.frame_skip;
  if (fabs(dt - t->spec.dt) > 1e-12)
    return ember_fail(err, EMBER_ESHAPE, "model file '%s': timestep %g gives dt %g, task %s needs dt %g",
                      path, m->opt.timestep, dt, t->spec.name, t->spec.dt);
  return EMBER_OK;
}

static int bind_model(env_model_t *em, ember_err *err) {
  const env_task_def *t = em->task;
  const mjModel *m = em->m;
  for (int k = 0; k < ENV_BODIES_MAX; k++) {
    em->body[k] = -1;
    if (!t->bodies[k]) continue;
    em->body[k] = mj_name2id(m, mjOBJ_BODY, t->bodies[k]);
    if (em->body[k] < 0)
      return ember_fail(err, EMBER_ESHAPE, "model file '%s' has no body named '%s', which task %s reads",
                        em->path, t->bodies[k], t->spec.name);
  }
  em->total_mass = 0;
  for (int b = 0; b < m->nbody; b++) em->total_mass += m->body_mass[b];
  em->dt = m->opt.timestep * t->spec.frame_skip;
  em->ctrl_center = malloc(sizeof(double) * (size_t)m->nu);
  em->ctrl_half = malloc(sizeof(double) * (size_t)m->nu);
  if (!em->ctrl_center || !em->ctrl_half) return ember_fail(err, EMBER_ENOMEM, "env model: out of memory");
  for (int i = 0; i < m->nu; i++) {
    const mjtNum *r = m->actuator_ctrlrange + 2 * i;
    em->ctrl_center[i] = 0.5 * (r[0] + r[1]);
    em->ctrl_half[i] = 0.5 * (r[1] - r[0]);
  }
  return EMBER_OK;
}

static int load_def_file(const env_task_def *t, const char *path, env_model_t **out, ember_err *err) {
  *out = NULL;
  if (strlen(path) >= ENV_PATH_MAX)
    return ember_fail(err, EMBER_EINVAL, "model file path for task %s is too long (%zu bytes)",
                      t->spec.name, strlen(path));
  FILE *f = fopen(path, "rb");
  if (!f)
    return ember_fail(err, errno == ENOENT ? EMBER_ENOENT : EMBER_EIO, "model file '%s' for task %s: %s",
                      path, t->spec.name, strerror(errno));
  fclose(f);

  env_install_mujoco_handlers();
  char mj_error[1000] = "";
  mjModel *m = mj_loadXML(path, NULL, mj_error, sizeof mj_error);
  if (!m)
    return ember_fail(err, EMBER_EINVAL, "model file '%s' for task %s is not a valid MuJoCo model: %s", path,
                      t->spec.name, mj_error);
  int rc = check_model(t, m, path, err);
  if (rc) {
    mj_deleteModel(m);
    return rc;
  }
  env_model_t *em = calloc(1, sizeof *em);
  if (!em) {
    mj_deleteModel(m);
    return ember_fail(err, EMBER_ENOMEM, "env model: out of memory");
  }
  em->m = m;
  em->task = t;
  snprintf(em->path, sizeof em->path, "%s", path);
  rc = bind_model(em, err);
  if (rc) {
    env_model_destroy(&em);
    return rc;
  }
  *out = em;
  return EMBER_OK;
}

int env_model_load_file(const char *task, const char *xml_path, env_model_t **out, ember_err *err) {
  *out = NULL;
  const env_task_def *t = find_def(task, err);
  if (!t) return EMBER_ENOENT;
  if (!xml_path || !*xml_path) return ember_fail(err, EMBER_EINVAL, "no model file given for task %s", task);
  return load_def_file(t, xml_path, out, err);
}

static int file_exists(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  fclose(f);
  return 1;
}

int env_model_load(const char *task, const char *model_dir, env_model_t **out, ember_err *err) {
  *out = NULL;
  const env_task_def *t = find_def(task, err);
  if (!t) return EMBER_ENOENT;
  char path[ENV_PATH_MAX];
  const char *from_env = getenv("EMBER_MODEL_DIR");
  const char *chosen = NULL, *why = NULL;
  if (model_dir && *model_dir)
    chosen = model_dir, why = "env.model_dir";
  else if (from_env && *from_env)
    chosen = from_env, why = "EMBER_MODEL_DIR";
  if (chosen) {
    snprintf(path, sizeof path, "%s/%s", chosen, t->model_file);
    int rc = load_def_file(t, path, out, err);
    if (rc && err) ember_err_prefix(err, "model directory '%s' (from %s): ", chosen, why);
    return rc;
  }
  const char *defaults[] = {EMBER_ENV_MODEL_DIR_SOURCE, EMBER_ENV_MODEL_DIR_INSTALL};
  for (size_t k = 0; k < sizeof defaults / sizeof defaults[0]; k++) {
    snprintf(path, sizeof path, "%s/%s", defaults[k], t->model_file);
    if (file_exists(path)) return load_def_file(t, path, out, err);
  }
  return ember_fail(err, EMBER_ENOENT,
                    "model file %s for task %s not found in %s nor %s; set EMBER_MODEL_DIR or env.model_dir",
                    t->model_file, task, EMBER_ENV_MODEL_DIR_SOURCE, EMBER_ENV_MODEL_DIR_INSTALL);
}

void env_model_destroy(env_model_t **model_p) {
  if (!model_p || !*model_p) return;
  env_model_t *em = *model_p;
  if (em->m) mj_deleteModel(em->m);
  free(em->ctrl_center);
  free(em->ctrl_half);
  free(em);
  *model_p = NULL;
}

const env_spec *env_model_spec(const env_model_t *model) { return &model->task->spec; }
const struct mjModel_ *env_model_mj(const env_model_t *model) { return model->m; }
const char *env_model_path(const env_model_t *model) { return model->path; }

/* ---- vectors ---- */

/* Env ids (first_env_id + i) stay below this: env.h's two stream ranges are this wide. */
#define ENV_ID_LIMIT (1ULL << 62)

struct env_vec {
  const env_model_t *model;
  const env_task_def *task;
  int n_envs, obs_dim, act_dim, max_steps;
  double ctrl_noise_std; /* sigma of the control noise, in half ranges (env.h); 0 = none */
  mjData **data;       /* [K] */
  rng_t *rng;          /* [K] reset noise */
  rng_t *ctrl_rng;     /* [K] control noise, drawn from only when ctrl_noise_std > 0 */
  double *ctrl_commanded; /* [nu] the step's commanded control, before the noise: the reward's */
  double *carry;       /* [K * ENV_CARRY_MAX] */
  int32_t *ep_step;    /* [K] steps in the current episode */
  double *ep_return;   /* [K] */
  float *obs;          /* [K * obs_dim] current observations */
  uint8_t *fault;      /* [K] physics fault in the last step */
  env_vec_stats stats;
};

/* Warnings that make a step's physics untrustworthy: MuJoCo met NaN/Inf and reset the data itself
 * (mj_checkPos/Vel/Acc), or contacts/constraints beyond the model's <size> capacity were dropped. */
static const int FAULT_WARNINGS[] = {mjWARN_BADQPOS, mjWARN_BADQVEL, mjWARN_BADQACC, mjWARN_CONTACTFULL,
                                     mjWARN_CNSTRFULL};
enum { N_FAULT_WARNINGS = sizeof FAULT_WARNINGS / sizeof FAULT_WARNINGS[0] };

static int physics_unstable(const mjData *d) {
  int n = 0;
  for (int k = 0; k < N_FAULT_WARNINGS; k++) n += d->warning[FAULT_WARNINGS[k]].number;
  return n > 0;
}
static void clear_instability(mjData *d) {
  for (int k = 0; k < N_FAULT_WARNINGS; k++) d->warning[FAULT_WARNINGS[k]].number = 0;
}

/* After qpos/qvel were set: derived quantities, carry, observation, fresh episode counters. */
static void start_episode(env_vec_t *v, int i) {
  const env_model_t *em = v->model;
  mjData *d = v->data[i];
  mj_forward(em->m, d);
  if (v->task->after_forward) v->task->after_forward(em, d);
  clear_instability(d);
  v->task->carry(em, d, v->carry + (size_t)i * ENV_CARRY_MAX);
  v->task->observe(em, d, v->obs + (size_t)i * v->obs_dim);
  v->ep_step[i] = 0;
  v->ep_return[i] = 0;
}

static void reset_one(env_vec_t *v, int i) {
  mjData *d = v->data[i];
  mj_resetData(v->model->m, d);
  v->task->reset(v->model, d, &v->rng[i]);
  start_episode(v, i);
}

void env_vec_reset(env_vec_t *vec) {
  for (int i = 0; i < vec->n_envs; i++) reset_one(vec, i);
}

void env_vec_destroy(env_vec_t **vec_p) {
  if (!vec_p || !*vec_p) return;
  env_vec_t *v = *vec_p;
  if (v->data)
    for (int i = 0; i < v->n_envs; i++)
      if (v->data[i]) mj_deleteData(v->data[i]);
  free(v->data);
  free(v->rng);
  free(v->ctrl_rng);
  free(v->ctrl_commanded);
  free(v->carry);
  free(v->ep_step);
  free(v->ep_return);
  free(v->obs);
  free(v->fault);
  free(v);
  *vec_p = NULL;
}

int env_vec_new(const env_model_t *model, const env_vec_config *cfg, env_vec_t **out, ember_err *err) {
  *out = NULL;
  if (!model || !cfg) return ember_fail(err, EMBER_EINVAL, "env_vec_new: model and config are required");
  if (cfg->n_envs < 1)
    return ember_fail(err, EMBER_EINVAL, "env_vec_new: n_envs must be >= 1 (got %d)", cfg->n_envs);
  if (cfg->max_episode_steps < 0)
    return ember_fail(err, EMBER_EINVAL, "env_vec_new: max_episode_steps must be >= 0 (got %d)",
                      cfg->max_episode_steps);
  if (!isfinite(cfg->ctrl_noise_std) || cfg->ctrl_noise_std < 0)
    return ember_fail(err, EMBER_EINVAL, "env_vec_new: ctrl_noise_std must be finite and >= 0 (got %g)",
                      cfg->ctrl_noise_std);
  /* the env ids must stay below 2^62 for the reset and control-noise streams to stay apart (env.h) */
  if (cfg->first_env_id > ENV_ID_LIMIT - (uint64_t)cfg->n_envs)
    return ember_fail(err, EMBER_EINVAL, "env_vec_new: first_env_id %llu + %d envs exceeds 2^62",
                      (unsigned long long)cfg->first_env_id, cfg->n_envs);
  env_vec_t *v = calloc(1, sizeof *v);
  if (!v) return ember_fail(err, EMBER_ENOMEM, "env_vec_new: out of memory");
  const env_spec *spec = &model->task->spec;
  size_t k = (size_t)cfg->n_envs;
  v->model = model;
  v->task = model->task;
  v->n_envs = cfg->n_envs;
  v->obs_dim = spec->obs_dim;
  v->act_dim = spec->act_dim;
  v->max_steps = cfg->max_episode_steps ? cfg->max_episode_steps : spec->max_episode_steps;
  v->ctrl_noise_std = cfg->ctrl_noise_std;
  v->data = calloc(k, sizeof *v->data);
  v->rng = calloc(k, sizeof *v->rng);
  v->ctrl_rng = calloc(k, sizeof *v->ctrl_rng);
  v->ctrl_commanded = calloc((size_t)model->m->nu, sizeof *v->ctrl_commanded);
  v->carry = calloc(k * ENV_CARRY_MAX, sizeof *v->carry);
  v->ep_step = calloc(k, sizeof *v->ep_step);
  v->ep_return = calloc(k, sizeof *v->ep_return);
  v->obs = calloc(k * (size_t)v->obs_dim, sizeof *v->obs);
  v->fault = calloc(k, sizeof *v->fault);
  int ok = v->data && v->rng && v->ctrl_rng && v->ctrl_commanded && v->carry && v->ep_step && v->ep_return && v->obs && v->fault;
  for (int i = 0; ok && i < v->n_envs; i++) ok = (v->data[i] = mj_makeData(model->m)) != NULL;
  if (!ok) {
    env_vec_destroy(&v);
    return ember_fail(err, EMBER_ENOMEM, "env_vec_new: out of memory for %d %s envs", cfg->n_envs, spec->name);
  }
  for (int i = 0; i < v->n_envs; i++) {
    rng_seed(&v->rng[i], cfg->seed, RNG_STREAM_ENV + cfg->first_env_id + (uint64_t)i);
    rng_seed(&v->ctrl_rng[i], cfg->seed, RNG_STREAM_ENV_CTRL_NOISE + cfg->first_env_id + (uint64_t)i);
  }
  env_vec_reset(v);
  *out = v;
  return EMBER_OK;
}

int env_vec_size(const env_vec_t *vec) { return vec->n_envs; }
const env_spec *env_vec_spec(const env_vec_t *vec) { return &vec->task->spec; }
double env_vec_ctrl_noise_std(const env_vec_t *vec) { return vec->ctrl_noise_std; }
const float *env_vec_obs(const env_vec_t *vec) { return vec->obs; }
env_vec_stats env_vec_get_stats(const env_vec_t *vec) { return vec->stats; }
const uint8_t *env_vec_physics_faults(const env_vec_t *vec) { return vec->fault; }
const struct mjData_ *env_vec_data(const env_vec_t *vec, int i) {
  return i >= 0 && i < vec->n_envs ? vec->data[i] : NULL;
}

static int check_actions(const env_vec_t *v, const float *actions, ember_err *err) {
  size_t n = (size_t)v->n_envs * (size_t)v->act_dim;
  for (size_t k = 0; k < n; k++) {
    if (!isfinite(actions[k]))
      return ember_fail(err, EMBER_ENONFINITE, "env_vec_step (%s): env %zu action %zu is %s; no env was stepped",
                        v->task->spec.name, k / (size_t)v->act_dim, k % (size_t)v->act_dim,
                        isnan(actions[k]) ? "NaN" : "infinite");
  }
  return EMBER_OK;
}

static int obs_finite(const float *obs, int n) {
  for (int k = 0; k < n; k++)
    if (!isfinite(obs[k])) return 0;
  return 1;
}

/* The applied control of env i: the commanded one plus sigma * half range * N(0, 1) per actuator,
 * clipped to the ctrlrange (env.h says why the clip comes after the noise). */
static void add_ctrl_noise(env_vec_t *v, int i, mjData *d) {
  const env_model_t *em = v->model;
  const mjModel *m = em->m;
  for (int j = 0; j < m->nu; j++) {
    double u = d->ctrl[j] + v->ctrl_noise_std * em->ctrl_half[j] * rng_normal(&v->ctrl_rng[i]);
    const mjtNum *range = m->actuator_ctrlrange + 2 * j;
    d->ctrl[j] = u < range[0] ? range[0] : (u > range[1] ? range[1] : u);
  }
}

/* One env, one step; returns the reward and sets the flags. */
static double step_one(env_vec_t *v, int i, const float *action, float *next_obs, int *terminated,
                       int *truncated, int *fault) {
  const env_model_t *em = v->model;
  const mjModel *m = em->m;
  const env_task_def *t = v->task;
  mjData *d = v->data[i];
  double *carry = v->carry + (size_t)i * ENV_CARRY_MAX;
  double before[ENV_CARRY_MAX];
  memcpy(before, carry, sizeof before);

  double *commanded = v->ctrl_commanded;
  for (int j = 0; j < m->nu; j++) {
    double a = action[j] < -1.0f ? -1.0 : (action[j] > 1.0f ? 1.0 : (double)action[j]);
    commanded[j] = d->ctrl[j] = em->ctrl_center[j] + em->ctrl_half[j] * a;
  }
  if (v->ctrl_noise_std > 0) add_ctrl_noise(v, i, d); /* none at all at 0: Gym's tasks bit for bit */
  /* one draw per env step, held over its substeps, as an actuator's noise would be */
  for (int s = 0; s < t->spec.frame_skip; s++) mj_step(m, d);
  if (t->after_step) t->after_step(em, d, before);
  if (t->after_forward) t->after_forward(em, d);
  t->carry(em, d, carry);
  double reward = t->reward(em, d, commanded, before, carry);
  t->observe(em, d, next_obs);
  /* a state MuJoCo let through can still give numbers no learner should see */
  int unstable = physics_unstable(d) || !isfinite(reward) || !obs_finite(next_obs, v->obs_dim);
  *terminated = t->terminated(em, d);
  *fault = unstable;
  if (unstable) {
    v->stats.physics_unstable_total++;
    clear_instability(d);
  }
  v->ep_step[i]++;
  *truncated = !*terminated && (v->ep_step[i] >= v->max_steps || unstable);
  return reward;
}

int env_vec_step(env_vec_t *vec, const float *actions, const env_step_out *out, ember_err *err) {
  if (!actions || !out || !out->next_obs || !out->reward || !out->terminated || !out->truncated)
    return ember_fail(err, EMBER_EINVAL, "env_vec_step: actions, next_obs, reward, terminated and truncated are required");
  int rc = check_actions(vec, actions, err);
  if (rc) return rc;
  for (int i = 0; i < vec->n_envs; i++) {
    float *next_obs = out->next_obs + (size_t)i * vec->obs_dim;
    int terminated, truncated, fault;
    double r = step_one(vec, i, actions + (size_t)i * vec->act_dim, next_obs, &terminated, &truncated, &fault);
    vec->fault[i] = (uint8_t)fault;
    vec->ep_return[i] += r;
    out->reward[i] = (float)r;
    out->terminated[i] = (uint8_t)terminated;
    out->truncated[i] = (uint8_t)truncated;
    vec->stats.steps_total++;
    if (terminated || truncated) {
      if (out->episode_return) out->episode_return[i] = vec->ep_return[i];
      if (out->episode_length) out->episode_length[i] = vec->ep_step[i];
      vec->stats.episodes_total++;
      vec->stats.terminated_total += (uint64_t)terminated;
      vec->stats.truncated_total += (uint64_t)truncated;
      reset_one(vec, i);
    } else {
      memcpy(vec->obs + (size_t)i * vec->obs_dim, next_obs, sizeof(float) * (size_t)vec->obs_dim);
    }
  }
  return EMBER_OK;
}

/* ---- state access ---- */

static int check_index(const env_vec_t *v, int i, const char *what, ember_err *err) {
  if (i < 0 || i >= v->n_envs)
    return ember_fail(err, EMBER_EINVAL, "%s: env index %d out of range [0, %d)", what, i, v->n_envs);
  return EMBER_OK;
}

int env_vec_set_qpos_qvel(env_vec_t *vec, int i, const double *qpos, const double *qvel, ember_err *err) {
  int rc = check_index(vec, i, "env_vec_set_qpos_qvel", err);
  if (rc) return rc;
  const mjModel *m = vec->model->m;
  for (int k = 0; k < m->nq; k++)
    if (!isfinite(qpos[k])) return ember_fail(err, EMBER_ENONFINITE, "env_vec_set_qpos_qvel: qpos[%d] is not finite", k);
  for (int k = 0; k < m->nv; k++)
    if (!isfinite(qvel[k])) return ember_fail(err, EMBER_ENONFINITE, "env_vec_set_qpos_qvel: qvel[%d] is not finite", k);
  mjData *d = vec->data[i];
  mj_resetData(m, d);
  memcpy(d->qpos, qpos, sizeof(mjtNum) * (size_t)m->nq);
  memcpy(d->qvel, qvel, sizeof(mjtNum) * (size_t)m->nv);
  start_episode(vec, i);
  return EMBER_OK;
}

/* Snapshot layout: header, then doubles [time, qpos, qvel, act, qacc_warmstart, carry], then the
 * observation floats. */
typedef struct {
  uint32_t magic;
  int32_t task;  /* position in the task table: half_cheetah and walker2d share every size below */
  int32_t nq, nv, na, obs_dim;
  int32_t ep_step;
  double ep_return;
  rng_t rng;
  rng_t ctrl_rng;
  double ctrl_noise_std; /* of the vector it came from: a snapshot's future depends on it */
} env_state_header;

enum { ENV_STATE_MAGIC = 0x656e7673 /* "envs" */ };

static int32_t task_index(const env_task_def *t) {
  for (int i = 0; i < env_task_def_count(); i++)
    if (env_task_def_at(i) == t) return i;
  return -1;
}

static size_t state_doubles(const mjModel *m) {
  return 1 + (size_t)m->nq + 2 * (size_t)m->nv + (size_t)m->na + ENV_CARRY_MAX;
}

size_t env_state_size(const env_model_t *model) {
  return sizeof(env_state_header) + sizeof(double) * state_doubles(model->m) +
         sizeof(float) * (size_t)model->task->spec.obs_dim;
}

int env_vec_save_state(const env_vec_t *vec, int i, void *buf, size_t size, ember_err *err) {
  int rc = check_index(vec, i, "env_vec_save_state", err);
  if (rc) return rc;
  size_t need = env_state_size(vec->model);
  if (size != need)
    return ember_fail(err, EMBER_ESHAPE, "env_vec_save_state: buffer of %zu bytes, %s needs %zu", size,
                      vec->task->spec.name, need);
  const mjModel *m = vec->model->m;
  const mjData *d = vec->data[i];
  env_state_header h = {.magic = ENV_STATE_MAGIC, .task = task_index(vec->task), .nq = m->nq, .nv = m->nv, .na = m->na,
                        .obs_dim = vec->obs_dim, .ep_step = vec->ep_step[i],
                        .ep_return = vec->ep_return[i], .rng = vec->rng[i], .ctrl_rng = vec->ctrl_rng[i],
                        .ctrl_noise_std = vec->ctrl_noise_std};
  unsigned char *p = buf;
  memcpy(p, &h, sizeof h), p += sizeof h;
  memcpy(p, &d->time, sizeof(double)), p += sizeof(double);
  memcpy(p, d->qpos, sizeof(double) * (size_t)m->nq), p += sizeof(double) * (size_t)m->nq;
  memcpy(p, d->qvel, sizeof(double) * (size_t)m->nv), p += sizeof(double) * (size_t)m->nv;
  memcpy(p, d->act, sizeof(double) * (size_t)m->na), p += sizeof(double) * (size_t)m->na;
  memcpy(p, d->qacc_warmstart, sizeof(double) * (size_t)m->nv), p += sizeof(double) * (size_t)m->nv;
  memcpy(p, vec->carry + (size_t)i * ENV_CARRY_MAX, sizeof(double) * ENV_CARRY_MAX);
  p += sizeof(double) * ENV_CARRY_MAX;
  memcpy(p, vec->obs + (size_t)i * vec->obs_dim, sizeof(float) * (size_t)vec->obs_dim);
  return EMBER_OK;
}

int env_vec_load_state(env_vec_t *vec, int i, const void *buf, size_t size, ember_err *err) {
  int rc = check_index(vec, i, "env_vec_load_state", err);
  if (rc) return rc;
  const mjModel *m = vec->model->m;
  size_t need = env_state_size(vec->model);
  env_state_header h;
  if (size == need) memcpy(&h, buf, sizeof h);
  if (size != need || h.magic != ENV_STATE_MAGIC || h.task != task_index(vec->task) || h.nq != m->nq || h.nv != m->nv || h.na != m->na ||
      h.obs_dim != vec->obs_dim)
    return ember_fail(err, EMBER_ESHAPE, "env_vec_load_state: %zu bytes are not a %s env snapshot", size,
                      vec->task->spec.name);
  if (h.ctrl_noise_std != vec->ctrl_noise_std)
    return ember_fail(err, EMBER_EINVAL,
                      "env_vec_load_state: the snapshot is of a %s env with ctrl_noise_std %g, this vector has %g",
                      vec->task->spec.name, h.ctrl_noise_std, vec->ctrl_noise_std);
  mjData *d = vec->data[i];
  const unsigned char *p = (const unsigned char *)buf + sizeof h;
  double time;
  memcpy(&time, p, sizeof time), p += sizeof time;
  mj_resetData(m, d);
  d->time = time;
  memcpy(d->qpos, p, sizeof(double) * (size_t)m->nq), p += sizeof(double) * (size_t)m->nq;
  memcpy(d->qvel, p, sizeof(double) * (size_t)m->nv), p += sizeof(double) * (size_t)m->nv;
  memcpy(d->act, p, sizeof(double) * (size_t)m->na), p += sizeof(double) * (size_t)m->na;
  const unsigned char *warmstart = p;
  p += sizeof(double) * (size_t)m->nv;
  /* derived quantities for anyone reading env_vec_data; the next step recomputes them anyway */
  mj_forward(m, d);
  if (vec->task->after_forward) vec->task->after_forward(vec->model, d);
  memcpy(d->qacc_warmstart, warmstart, sizeof(double) * (size_t)m->nv);
  memcpy(vec->carry + (size_t)i * ENV_CARRY_MAX, p, sizeof(double) * ENV_CARRY_MAX), p += sizeof(double) * ENV_CARRY_MAX;
  memcpy(vec->obs + (size_t)i * vec->obs_dim, p, sizeof(float) * (size_t)vec->obs_dim);
  vec->ep_step[i] = h.ep_step;
  vec->ep_return[i] = h.ep_return;
  vec->rng[i] = h.rng;
  vec->ctrl_rng[i] = h.ctrl_rng;
  return EMBER_OK;
}

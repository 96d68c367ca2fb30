/* tasks.c: the eight tasks, each a table entry of constants and small functions (env_internal.h).
 *
 * Every constant below is listed with its source in docs/tasks.md. The simulator-side functions
 * read mjData exactly as Gym's Python code reads mujoco-py's sim.data after sim.step(): quantities
 * such as xpos, xipos, cinert and cvel are those of the last forward pass inside mj_step (one
 * physics substep behind qpos), which is what the published rewards and observations were built
 * from.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "env_internal.h"

/* ---- helpers ---- */

static double uniform(rng_t *rng, double lo, double hi) { return lo + (hi - lo) * rng_uniform(rng); }

/* Clamp that lets NaN through (so a blown-up state stays visible in the observation). */
static double clip_nan(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* Sum of squares of the commanded control (the scaled action before any control noise: env.h). */
static double ctrl_sq_sum(const mjModel *m, const double *ctrl) {
  double s = 0;
  for (int i = 0; i < m->nu; i++) s += ctrl[i] * ctrl[i];
  return s;
}

/* Sum of squares of actions clipped to [-1, 1] and scaled by the actuators' half range: the control
 * the env commanded, whose squares its control cost sums (every task here has symmetric, equal
 * ranges; control noise, when on, is not in the cost: env.h). */
static double action_sq_sum(const float *act, int n, double half) {
  double s = 0;
  for (int i = 0; i < n; i++) {
    double u = half * clip_nan(act[i], -1.0, 1.0);
    s += u * u;
  }
  return s;
}

static void qpos_uniform_noise(const mjModel *m, mjData *d, rng_t *rng, double scale) {
  for (int i = 0; i < m->nq; i++) d->qpos[i] = m->qpos0[i] + uniform(rng, -scale, scale);
}
static void qvel_uniform_noise(const mjModel *m, mjData *d, rng_t *rng, double scale) {
  for (int i = 0; i < m->nv; i++) d->qvel[i] = uniform(rng, -scale, scale);
}
static void qvel_normal_noise(const mjModel *m, mjData *d, rng_t *rng, double scale) {
  for (int i = 0; i < m->nv; i++) d->qvel[i] = scale * rng_normal(rng);
}

static void copy_to_float(float *dst, const mjtNum *src, int n) {
  for (int i = 0; i < n; i++) dst[i] = (float)src[i];
}

static int all_finite(const float *x, int n) {
  for (int i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}


static int terminated_never(const struct env_model *em, const mjData *d) {
  (void)em, (void)d;
  return 0;
}
static int obs_terminated_never(const float *next_obs) {
  (void)next_obs;
  return 0;
}

/* Carry of the planar runners: the root's x position (qpos[0], exact after the step). */
static void carry_root_x(const struct env_model *em, const mjData *d, double *carry) {
  (void)em;
  carry[0] = d->qpos[0];
}

/* ---- pendulum: Gym Pendulum-v1 ---- */

enum { PENDULUM_MAX_SPEED = 8 };

/* Gym's angle_normalize: ((x + pi) mod 2 pi) - pi, with a non-negative mod, into [-pi, pi). The
 * common case needs no division. */
static double angle_normalize(double x) {
  if (x >= -M_PI && x < M_PI) return x;
  double r = x + M_PI;
  r -= 2.0 * M_PI * floor(r / (2.0 * M_PI));
  return r - M_PI;
}

static void pendulum_reset(const struct env_model *em, mjData *d, rng_t *rng) {
  (void)em;
  d->qpos[0] = uniform(rng, -M_PI, M_PI);
  d->qvel[0] = uniform(rng, -1.0, 1.0);
}

/* Gym clips the new angular velocity to +-8 before integrating the angle with it. MuJoCo's Euler
 * step already did theta += h * thetadot_unclipped; redo the angle with the clipped velocity. */
static void pendulum_after_step(const struct env_model *em, mjData *d, const double *carry_before) {
  double v = d->qvel[0];
  if (v > PENDULUM_MAX_SPEED || v < -PENDULUM_MAX_SPEED) {
    double clipped = v > 0 ? PENDULUM_MAX_SPEED : -PENDULUM_MAX_SPEED;
    d->qvel[0] = clipped;
    d->qpos[0] = carry_before[0] + em->m->opt.timestep * clipped;
  }
}

static void pendulum_carry(const struct env_model *em, const mjData *d, double *carry) {
  (void)em;
  carry[0] = d->qpos[0];
  carry[1] = d->qvel[0];
}

/* The cost is of the state the action was taken in, as in Gym. */
static double pendulum_cost(double theta, double theta_dot, double torque) {
  double th = angle_normalize(theta);
  return th * th + 0.1 * theta_dot * theta_dot + 0.001 * torque * torque;
}

static double pendulum_reward(const struct env_model *em, const mjData *d, const double *ctrl,
                              const double *before, const double *after) {
  (void)em, (void)d, (void)after;
  return -pendulum_cost(before[0], before[1], ctrl[0]);
}

/* The observation is float: reduce the (unbounded) angle in double, then a float sincos, which
 * is accurate to ~1e-7 and a visible part of this 0.5 us task's step otherwise. */
static void pendulum_observe(const struct env_model *em, const mjData *d, float *obs) {
  (void)em;
  float s, c;
  sincosf((float)angle_normalize(d->qpos[0]), &s, &c);
  obs[0] = c;
  obs[1] = s;
  obs[2] = (float)d->qvel[0];
}

static float pendulum_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)next_obs;
  double theta = atan2(obs[1], obs[0]);
  double torque = 2.0 * clip_nan(act[0], -1.0, 1.0);
  return (float)-pendulum_cost(theta, obs[2], torque);
}

/* ---- reacher: Gym Reacher-v2 ---- */

enum { REACHER_FINGERTIP = 0, REACHER_TARGET = 1 };

static void reacher_reset(const struct env_model *em, mjData *d, rng_t *rng) {
  const mjModel *m = em->m;
  qpos_uniform_noise(m, d, rng, 0.1);
  double gx, gy;
  do {
    gx = uniform(rng, -0.2, 0.2);
    gy = uniform(rng, -0.2, 0.2);
  } while (gx * gx + gy * gy >= 0.2 * 0.2);
  d->qpos[2] = gx;
  d->qpos[3] = gy;
  qvel_uniform_noise(m, d, rng, 0.005);
  d->qvel[2] = d->qvel[3] = 0;
}

/* fingertip - target, from the body frames of the last forward pass (Gym's get_body_com). */
static void reacher_carry(const struct env_model *em, const mjData *d, double *carry) {
  const mjtNum *tip = d->xpos + 3 * em->body[REACHER_FINGERTIP];
  const mjtNum *target = d->xpos + 3 * em->body[REACHER_TARGET];
  for (int k = 0; k < 3; k++) carry[k] = tip[k] - target[k];
}

/* Distance before the step (Gym computes it before simulating) plus the control cost. */
static double reacher_reward(const struct env_model *em, const mjData *d, const double *ctrl,
                             const double *before, const double *after) {
  (void)d, (void)after;
  double dist = sqrt(before[0] * before[0] + before[1] * before[1] + before[2] * before[2]);
  return -dist - ctrl_sq_sum(em->m, ctrl);
}

static void reacher_observe(const struct env_model *em, const mjData *d, float *obs) {
  obs[0] = (float)cos(d->qpos[0]);
  obs[1] = (float)cos(d->qpos[1]);
  obs[2] = (float)sin(d->qpos[0]);
  obs[3] = (float)sin(d->qpos[1]);
  obs[4] = (float)d->qpos[2];
  obs[5] = (float)d->qpos[3];
  obs[6] = (float)d->qvel[0];
  obs[7] = (float)d->qvel[1];
  double vec[3];
  reacher_carry(em, d, vec);
  for (int k = 0; k < 3; k++) obs[8 + k] = (float)vec[k];
}

static float reacher_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)next_obs;
  double dist = sqrt((double)obs[8] * obs[8] + (double)obs[9] * obs[9] + (double)obs[10] * obs[10]);
  return (float)(-dist - action_sq_sum(act, 2, 1.0));
}

/* ---- reacher7dof: PETS's Reacher3D (kchua/handful-of-trials, dmbrl/env/reacher.py) ---- */

enum { R7_ARM = 7, R7_GOAL = 7, R7_OBS_DIM = 17 };

/* PETS's get_EE_pos, operation for operation: the point 0.16828 m along the wrist roll axis, from
 * the first six arm angles alone (t = qpos[0:7]; the wrist roll t[6] does not move it). It follows a
 * frame (axis a, perpendicular p) down the chain. After the elbow the new p is a_new x a_old,
 * normalised: the joint frame's y axis while the elbow flex angle is negative, but its opposite
 * above 0 (the limit is 0, and MuJoCo's limits are soft), where the formula therefore mirrors the
 * wrist's bend; at exactly 0 it keeps the old p, which ignores the upper-arm roll. Kept as PETS has
 * it, since the published rewards come from it (docs/tasks.md). */
static void reacher7dof_ee(const double *t, double *end) {
  double a[3] = {cos(t[1]) * cos(t[0]), cos(t[1]) * sin(t[0]), -sin(t[1])};
  double p[3] = {-sin(t[0]), cos(t[0]), 0.0};
  end[0] = 0.1 * cos(t[0]) + 0.4 * cos(t[0]) * cos(t[1]);
  end[1] = 0.1 * sin(t[0]) + 0.4 * sin(t[0]) * cos(t[1]) - 0.188;
  end[2] = -0.4 * sin(t[1]);
  static const double length[2] = {0.321, 0.16828};
  static const int hinge[2] = {3, 5}, roll[2] = {2, 4};
  for (int k = 0; k < 2; k++) {
    double perp_all[3], new_a[3], new_p[3];
    mju_cross(perp_all, a, p);
    double ch = cos(t[hinge[k]]), sh = sin(t[hinge[k]]), sr = sin(t[roll[k]]), cr = cos(t[roll[k]]);
    for (int i = 0; i < 3; i++) new_a[i] = ch * a[i] + sh * sr * p[i] - sh * cr * perp_all[i];
    mju_cross(new_p, new_a, a);
    if (sqrt(new_p[0] * new_p[0] + new_p[1] * new_p[1] + new_p[2] * new_p[2]) < 1e-30)
      for (int i = 0; i < 3; i++) new_p[i] = p[i];
    double norm = sqrt(new_p[0] * new_p[0] + new_p[1] * new_p[1] + new_p[2] * new_p[2]);
    for (int i = 0; i < 3; i++) {
      a[i] = new_a[i];
      p[i] = new_p[i] / norm;
      end[i] += length[k] * new_a[i];
    }
  }
}

/* Squared distance from the end effector of arm angles t to the goal g. */
static double reacher7dof_dist_sq(const double *t, const double *g) {
  double end[3];
  reacher7dof_ee(t, end);
  double s = 0;
  for (int k = 0; k < 3; k++) s += (end[k] - g[k]) * (end[k] - g[k]);
  return s;
}

/* The arm starts at qpos0 (all angles 0) at rest; only the goal is drawn: qpos0's (0, 0.25, 0) plus
 * 0.1 N(0, 1) per coordinate. Nothing moves the goal afterwards (no gravity, damping or contact). */
static void reacher7dof_reset(const struct env_model *em, mjData *d, rng_t *rng) {
  for (int k = 0; k < 3; k++) d->qpos[R7_GOAL + k] = em->m->qpos0[R7_GOAL + k] + 0.1 * rng_normal(rng);
}

/* The reward is of the state after the step: nothing to carry over from before it. */
static void carry_nothing(const struct env_model *em, const mjData *d, double *carry) {
  (void)em, (void)d, (void)carry;
}

static double reacher7dof_reward(const struct env_model *em, const mjData *d, const double *ctrl,
                                 const double *before, const double *after) {
  (void)before, (void)after;
  return -reacher7dof_dist_sq(d->qpos, d->qpos + R7_GOAL) - 0.01 * ctrl_sq_sum(em->m, ctrl);
}

/* qpos (7 angles, goal x y z), then the 7 arm velocities. */
static void reacher7dof_observe(const struct env_model *em, const mjData *d, float *obs) {
  (void)em;
  copy_to_float(obs, d->qpos, R7_ARM + 3);
  copy_to_float(obs + R7_ARM + 3, d->qvel, R7_ARM);
}

static float reacher7dof_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)obs;
  double t[R7_ARM], g[3];
  for (int i = 0; i < R7_ARM; i++) t[i] = next_obs[i];
  for (int k = 0; k < 3; k++) g[k] = next_obs[R7_GOAL + k];
  return (float)(-reacher7dof_dist_sq(t, g) - 0.01 * action_sq_sum(act, R7_ARM, 20.0));
}

/* ---- half_cheetah: Gym HalfCheetah-v3 (= v2) ---- */

static void half_cheetah_reset(const struct env_model *em, mjData *d, rng_t *rng) {
  qpos_uniform_noise(em->m, d, rng, 0.1);
  qvel_normal_noise(em->m, d, rng, 0.1);
}

static double half_cheetah_reward(const struct env_model *em, const mjData *d, const double *ctrl,
                                  const double *before, const double *after) {
  (void)d;
  double forward = (after[0] - before[0]) / em->dt;
  return forward - 0.1 * ctrl_sq_sum(em->m, ctrl);
}

static void half_cheetah_observe(const struct env_model *em, const mjData *d, float *obs) {
  (void)em;
  copy_to_float(obs, d->qpos + 1, 8);
  copy_to_float(obs + 8, d->qvel, 9);
}

static float half_cheetah_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)obs;
  return (float)(next_obs[8] - 0.1 * action_sq_sum(act, 6, 1.0));
}

/* ---- hopper: Gym Hopper-v3 (= v2) ---- */

static void hopper_walker_reset(const struct env_model *em, mjData *d, rng_t *rng) {
  qpos_uniform_noise(em->m, d, rng, 5e-3);
  qvel_uniform_noise(em->m, d, rng, 5e-3);
}

static double hopper_walker_reward(const struct env_model *em, const mjData *d, const double *ctrl,
                                   const double *before, const double *after) {
  (void)d;
  double forward = (after[0] - before[0]) / em->dt;
  return forward + 1.0 - 1e-3 * ctrl_sq_sum(em->m, ctrl);
}

static int hopper_terminated(const struct env_model *em, const mjData *d) {
  const mjModel *m = em->m;
  if (!isfinite(d->qpos[0]) || !isfinite(d->qpos[1])) return 1;
  for (int i = 2; i < m->nq; i++)
    if (!(fabs(d->qpos[i]) < 100)) return 1;
  for (int i = 0; i < m->nv; i++)
    if (!(fabs(d->qvel[i]) < 100)) return 1;
  double z = d->qpos[1], angle = d->qpos[2];
  return !(z > 0.7 && fabs(angle) < 0.2);
}

/* qpos without x, then qvel clipped to +-10 (hopper: 5 + 6, walker2d: 8 + 9). */
static void planar_observe_clipped(const mjModel *m, const mjData *d, float *obs) {
  copy_to_float(obs, d->qpos + 1, m->nq - 1);
  for (int i = 0; i < m->nv; i++) obs[m->nq - 1 + i] = (float)clip_nan(d->qvel[i], -10.0, 10.0);
}

static void hopper_walker_observe(const struct env_model *em, const mjData *d, float *obs) {
  planar_observe_clipped(em->m, d, obs);
}

static float hopper_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)obs;
  return (float)(next_obs[5] + 1.0 - 1e-3 * action_sq_sum(act, 3, 1.0));
}

/* hopper_terminated from the observation o = (z, angle, 3 joints, qvel clipped to +-10): the check
 * of MBPO's reference code for Hopper (static/hopper.py, whose np.abs(o[1:] < 100) bounds o from
 * above only; Gym's check, and this one, bound |o|). It is the env's, term by term, except the
 * velocity bound:
 *   env (on the state)                here (on the observation)
 *   finite qpos[1..5] and qvel        o all finite (clip_nan keeps a NaN velocity NaN)
 *   |qpos[2..5]| < 100                |o[1..4]| < 100
 *   |qvel[i]| < 100                   |o[5..10]| < 100, which a real observation always passes: the
 *                                     clip hides the bound (an infinite qvel is clipped to +-10 too)
 *   z > 0.7, |angle| < 0.2            o[0] > 0.7f, |o[1]| < 0.2f
 *   finite qpos[0] (x)                not observed
 * So on a real observation, float rounding aside, it can only miss a termination, never invent one:
 * it says "healthy" where the env terminated exactly when some |qvel[i]| >= 100 (or x is
 * non-finite) while the rest is healthy, and then that velocity's observation sits at the clip,
 * |o[5 + i]| = 10. Float rounding of the observation adds bands narrower than one float ulp at the
 * thresholds (z within 2e-8 above 0.7, the angle within 5e-9 below 0.2, a joint within 4e-6 below
 * 100), as it does for every task's check. Random and bang-bang rollouts never bring a healthy
 * hopper near |qvel| = 100 (largest 24; tests/test_env_vec.c,
 * hopper_observed_termination_agrees_with_the_env). On a model's predicted observation the
 * velocities are not clipped, and |o[5..10]| >= 100 terminates as the env's bound would. */
static int hopper_obs_terminated(const float *o) {
  if (!all_finite(o, 11)) return 1;
  for (int i = 1; i < 11; i++)
    if (!(fabsf(o[i]) < 100.0f)) return 1;
  return !(o[0] > 0.7f && fabsf(o[1]) < 0.2f);
}

/* ---- walker2d: Gym Walker2d-v3 (= v2) ---- */

static int walker2d_healthy(double z, double angle) {
  return z > 0.8 && z < 2.0 && angle > -1.0 && angle < 1.0;
}
static int walker2d_terminated(const struct env_model *em, const mjData *d) {
  (void)em;
  return !walker2d_healthy(d->qpos[1], d->qpos[2]);
}
static float walker2d_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)obs;
  return (float)(next_obs[8] + 1.0 - 1e-3 * action_sq_sum(act, 6, 1.0));
}
static int walker2d_obs_terminated(const float *o) { return !walker2d_healthy(o[0], o[1]); }

/* ---- ant: Gym Ant-v3 without the contact-force block (= Gymnasium Ant-v4 default) ---- */

enum { ANT_TORSO = 0 };

static void ant_reset(const struct env_model *em, mjData *d, rng_t *rng) {
  qpos_uniform_noise(em->m, d, rng, 0.1);
  qvel_normal_noise(em->m, d, rng, 0.1);
}

static void ant_carry(const struct env_model *em, const mjData *d, double *carry) {
  carry[0] = d->xpos[3 * em->body[ANT_TORSO]];
}

static double ant_reward(const struct env_model *em, const mjData *d, const double *ctrl,
                         const double *before, const double *after) {
  (void)d;
  double forward = (after[0] - before[0]) / em->dt;
  return forward + 1.0 - 0.5 * ctrl_sq_sum(em->m, ctrl);
}

static int ant_healthy_z(double z) { return z >= 0.2 && z <= 1.0; }

static int ant_terminated(const struct env_model *em, const mjData *d) {
  const mjModel *m = em->m;
  for (int i = 0; i < m->nq; i++)
    if (!isfinite(d->qpos[i])) return 1;
  for (int i = 0; i < m->nv; i++)
    if (!isfinite(d->qvel[i])) return 1;
  return !ant_healthy_z(d->qpos[2]);
}

static void ant_observe(const struct env_model *em, const mjData *d, float *obs) {
  (void)em;
  copy_to_float(obs, d->qpos + 2, 13);
  copy_to_float(obs + 13, d->qvel, 14);
}

static float ant_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)obs;
  return (float)(next_obs[13] + 1.0 - 0.5 * action_sq_sum(act, 8, 1.0));
}
static int ant_obs_terminated(const float *o) { return !(all_finite(o, 27) && ant_healthy_z(o[0])); }

/* ---- humanoid: Gym Humanoid-v3 (= v2), with contact forces computed ---- */

enum {
  HUMANOID_NBODY = 14,
  HUMANOID_OBS_QVEL = 22,                                 /* qpos[2:] is 22 wide */
  HUMANOID_OBS_CFRC = 22 + 23 + 14 * 10 + 14 * 6 + 23,    /* = 292: start of cfrc_ext */
  HUMANOID_OBS_DIM = HUMANOID_OBS_CFRC + 14 * 6,          /* = 376 */
};

static void humanoid_reset(const struct env_model *em, mjData *d, rng_t *rng) {
  qpos_uniform_noise(em->m, d, rng, 1e-2);
  qvel_uniform_noise(em->m, d, rng, 1e-2);
}

/* MuJoCo >= 2.0 fills cfrc_ext only on request; MuJoCo 1.5, under which Gym's humanoid was
 * defined, always did. Ask for it so the observation and contact cost are the intended ones. */
static void humanoid_after_forward(const struct env_model *em, mjData *d) { mj_rnePostConstraint(em->m, d); }

static void humanoid_carry(const struct env_model *em, const mjData *d, double *carry) {
  const mjModel *m = em->m;
  double x = 0;
  for (int b = 0; b < m->nbody; b++) x += m->body_mass[b] * d->xipos[3 * b];
  carry[0] = x / em->total_mass;
}

static double humanoid_contact_cost(double sum_sq) {
  double cost = 5e-7 * sum_sq;
  return cost < 10.0 ? cost : 10.0;
}

static double humanoid_reward(const struct env_model *em, const mjData *d, const double *ctrl,
                              const double *before, const double *after) {
  const mjModel *m = em->m;
  double forward = 1.25 * (after[0] - before[0]) / em->dt;
  double contact_sq = 0;
  for (int i = 0; i < 6 * m->nbody; i++) contact_sq += d->cfrc_ext[i] * d->cfrc_ext[i];
  return forward + 5.0 - 0.1 * ctrl_sq_sum(m, ctrl) - humanoid_contact_cost(contact_sq);
}

static int humanoid_healthy_z(double z) { return z > 1.0 && z < 2.0; }
static int humanoid_terminated(const struct env_model *em, const mjData *d) {
  (void)em;
  return !humanoid_healthy_z(d->qpos[2]);
}

static void humanoid_observe(const struct env_model *em, const mjData *d, float *obs) {
  const mjModel *m = em->m;
  float *o = obs;
  copy_to_float(o, d->qpos + 2, m->nq - 2), o += m->nq - 2;
  copy_to_float(o, d->qvel, m->nv), o += m->nv;
  copy_to_float(o, d->cinert, 10 * m->nbody), o += 10 * m->nbody;
  copy_to_float(o, d->cvel, 6 * m->nbody), o += 6 * m->nbody;
  copy_to_float(o, d->qfrc_actuator, m->nv), o += m->nv;
  copy_to_float(o, d->cfrc_ext, 6 * m->nbody);
}

static float humanoid_obs_reward(const float *obs, const float *act, const float *next_obs) {
  (void)obs;
  double contact_sq = 0;
  for (int i = HUMANOID_OBS_CFRC; i < HUMANOID_OBS_DIM; i++)
    contact_sq += (double)next_obs[i] * next_obs[i];
  return (float)(1.25 * next_obs[HUMANOID_OBS_QVEL] + 5.0 - 0.1 * action_sq_sum(act, 17, 0.4) -
                 humanoid_contact_cost(contact_sq));
}
static int humanoid_obs_terminated(const float *o) { return !humanoid_healthy_z(o[0]); }

/* ---- the table ---- */

static const env_task_def TASKS[] = {
    {.spec = {.name = "pendulum", .reference = "Gym Pendulum-v1 (g = 10)", .obs_dim = 3,
              .act_dim = 1, .max_episode_steps = 200, .frame_skip = 1, .dt = 0.05,
              .reward_exact = 1, .terminated_exact = 1},
     .model_file = "pendulum.xml", .nq = 1, .nv = 1, .nu = 1, .nbody = 2, .ctrl_half = 2.0,
     .reset = pendulum_reset, .after_step = pendulum_after_step, .carry = pendulum_carry,
     .reward = pendulum_reward, .terminated = terminated_never, .observe = pendulum_observe,
     .obs_reward = pendulum_obs_reward, .obs_terminated = obs_terminated_never},
    {.spec = {.name = "reacher", .reference = "Gym Reacher-v2", .obs_dim = 11, .act_dim = 2,
              .max_episode_steps = 50, .frame_skip = 2, .dt = 0.02, .reward_exact = 1,
              .terminated_exact = 1},
     .model_file = "reacher.xml", .nq = 4, .nv = 4, .nu = 2, .nbody = 5, .ctrl_half = 1.0,
     .bodies = {"fingertip", "target"}, .reset = reacher_reset, .carry = reacher_carry,
     .reward = reacher_reward, .terminated = terminated_never, .observe = reacher_observe,
     .obs_reward = reacher_obs_reward, .obs_terminated = obs_terminated_never},
    {.spec = {.name = "reacher7dof",
              .reference = "PETS Reacher3D (MBRLReacher3D-v0), VMBPO's Reacher7DoF; horizon 150",
              .obs_dim = R7_OBS_DIM, .act_dim = 7, .max_episode_steps = 150, .frame_skip = 2,
              .dt = 0.02, .reward_exact = 1, .terminated_exact = 1},
     .model_file = "reacher7dof.xml", .nq = 10, .nv = 10, .nu = 7, .nbody = 16, .ctrl_half = 20.0,
     .reset = reacher7dof_reset, .carry = carry_nothing, .reward = reacher7dof_reward,
     .terminated = terminated_never, .observe = reacher7dof_observe,
     .obs_reward = reacher7dof_obs_reward, .obs_terminated = obs_terminated_never},
    {.spec = {.name = "half_cheetah", .reference = "Gym HalfCheetah-v3 (= v2)", .obs_dim = 17,
              .act_dim = 6, .max_episode_steps = 1000, .frame_skip = 5, .dt = 0.05,
              .reward_exact = 0, .terminated_exact = 1},
     .model_file = "half_cheetah.xml", .nq = 9, .nv = 9, .nu = 6, .nbody = 8, .ctrl_half = 1.0,
     .reset = half_cheetah_reset, .carry = carry_root_x, .reward = half_cheetah_reward,
     .terminated = terminated_never, .observe = half_cheetah_observe,
     .obs_reward = half_cheetah_obs_reward, .obs_terminated = obs_terminated_never},
    {.spec = {.name = "hopper", .reference = "Gym Hopper-v3 (= v2)", .obs_dim = 11, .act_dim = 3,
              .max_episode_steps = 1000, .frame_skip = 4, .dt = 0.008, .reward_exact = 0,
              .terminated_exact = 0 /* approximate: hopper_obs_terminated */},
     .model_file = "hopper.xml", .nq = 6, .nv = 6, .nu = 3, .nbody = 5, .ctrl_half = 1.0,
     .reset = hopper_walker_reset, .carry = carry_root_x, .reward = hopper_walker_reward,
     .terminated = hopper_terminated, .observe = hopper_walker_observe,
     .obs_reward = hopper_obs_reward, .obs_terminated = hopper_obs_terminated},
    {.spec = {.name = "walker2d", .reference = "Gym Walker2d-v3 (= v2)", .obs_dim = 17,
              .act_dim = 6, .max_episode_steps = 1000, .frame_skip = 4, .dt = 0.008,
              .reward_exact = 0, .terminated_exact = 1},
     .model_file = "walker2d.xml", .nq = 9, .nv = 9, .nu = 6, .nbody = 8, .ctrl_half = 1.0,
     .reset = hopper_walker_reset, .carry = carry_root_x, .reward = hopper_walker_reward,
     .terminated = walker2d_terminated, .observe = hopper_walker_observe,
     .obs_reward = walker2d_obs_reward, .obs_terminated = walker2d_obs_terminated},
    {.spec = {.name = "ant", .reference = "Gym Ant-v3 minus contact forces (= Gymnasium Ant-v4)",
              .obs_dim = 27, .act_dim = 8, .max_episode_steps = 1000, .frame_skip = 5,
              .dt = 0.05, .reward_exact = 0, .terminated_exact = 1},
     .model_file = "ant.xml", .nq = 15, .nv = 14, .nu = 8, .nbody = 14, .ctrl_half = 1.0,
     .bodies = {"torso"}, .reset = ant_reset, .carry = ant_carry, .reward = ant_reward,
     .terminated = ant_terminated, .observe = ant_observe, .obs_reward = ant_obs_reward,
     .obs_terminated = ant_obs_terminated},
    {.spec = {.name = "humanoid", .reference = "Gym Humanoid-v3 (= v2), contact forces computed",
              .obs_dim = HUMANOID_OBS_DIM, .act_dim = 17, .max_episode_steps = 1000,
              .frame_skip = 5, .dt = 0.015, .reward_exact = 0, .terminated_exact = 1},
     .model_file = "humanoid.xml", .nq = 24, .nv = 23, .nu = 17, .nbody = HUMANOID_NBODY,
     .ctrl_half = 0.4, .reset = humanoid_reset, .after_forward = humanoid_after_forward,
     .carry = humanoid_carry, .reward = humanoid_reward, .terminated = humanoid_terminated,
     .observe = humanoid_observe, .obs_reward = humanoid_obs_reward,
     .obs_terminated = humanoid_obs_terminated},
};

enum { N_TASKS = sizeof TASKS / sizeof TASKS[0] };

int env_task_def_count(void) { return N_TASKS; }
const env_task_def *env_task_def_at(int i) { return i >= 0 && i < N_TASKS ? &TASKS[i] : NULL; }

/* ---- env_task.h ---- */

int env_spec_count(void) { return N_TASKS; }

const env_spec *env_spec_at(int i) { return i >= 0 && i < N_TASKS ? &TASKS[i].spec : NULL; }

int env_spec_find(const char *name, const env_spec **out, ember_err *err) {
  for (int i = 0; i < N_TASKS; i++) {
    if (name && strcmp(name, TASKS[i].spec.name) == 0) {
      *out = &TASKS[i].spec;
      return EMBER_OK;
    }
  }
  char known[256] = "";
  size_t used = 0;
  for (int i = 0; i < N_TASKS && used < sizeof known; i++)
    used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "", TASKS[i].spec.name);
  return ember_fail(err, EMBER_ENOENT, "unknown task '%s' (known tasks: %s)", name ? name : "(null)", known);
}

/* Specs handed out point into TASKS; anything else is a programmer error. */
static const env_task_def *def_of(const env_spec *spec) {
  for (int i = 0; i < N_TASKS; i++)
    if (&TASKS[i].spec == spec) return &TASKS[i];
  return NULL;
}

void env_spec_reward(const env_spec *spec, int n, const float *obs, const float *act,
                     const float *next_obs, float *reward_out) {
  const env_task_def *t = def_of(spec);
  assert(t && "env_spec_reward: spec does not come from env_spec_find/env_spec_at");
  int od = spec->obs_dim, ad = spec->act_dim;
  for (int b = 0; b < n; b++)
    reward_out[b] = t->obs_reward(obs + (size_t)b * od, act + (size_t)b * ad, next_obs + (size_t)b * od);
}

void env_spec_terminated(const env_spec *spec, int n, const float *next_obs, uint8_t *terminated_out) {
  const env_task_def *t = def_of(spec);
  assert(t && "env_spec_terminated: spec does not come from env_spec_find/env_spec_at");
  for (int b = 0; b < n; b++) terminated_out[b] = (uint8_t)t->obs_terminated(next_obs + (size_t)b * spec->obs_dim);
}

/* env tasks: every model loads; unknown tasks, missing, malformed, uncompilable and mismatched model
 * files give errors naming them (never MuJoCo's error handler); a MuJoCo error ends the process with a
 * log event and ENV_EXIT_MUJOCO_ERROR; the model directory is resolved in the documented order; the
 * humanoid's joint ranges are Gym's and reacher7dof's model is PETS's; and the learner-side reward
 * and termination functions give hand-computed values on hand-built observations. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mujoco/mujoco.h>

#include "env.h"
#include "log.h"

static char models_dir[4096];

static void setup(void) {
  const char *src = getenv("EMBER_SOURCE_DIR");
  ck_assert_msg(src != NULL, "EMBER_SOURCE_DIR must be set (ctest sets it)");
  snprintf(models_dir, sizeof models_dir, "%s/common/env/models", src);
  unsetenv("EMBER_MODEL_DIR");
}

static const env_spec *spec_of(const char *name) {
  const env_spec *s = NULL;
  ember_err err = {0};
  ck_assert_int_eq(env_spec_find(name, &s, &err), EMBER_OK);
  return s;
}

/* ---- loading ---- */

START_TEST(every_model_loads_with_its_layout) {
  ck_assert_int_eq(env_spec_count(), 8);
  const char *expected[] = {"pendulum", "reacher",  "reacher7dof", "half_cheetah",
                            "hopper",   "walker2d", "ant",         "humanoid"};
  const int obs_dims[] = {3, 11, 17, 17, 11, 17, 27, 376};
  const int act_dims[] = {1, 2, 7, 6, 3, 6, 8, 17};
  const int horizons[] = {200, 50, 150, 1000, 1000, 1000, 1000, 1000};
  for (int i = 0; i < env_spec_count(); i++) {
    const env_spec *s = env_spec_at(i);
    ck_assert_str_eq(s->name, expected[i]);
    ck_assert_int_eq(s->obs_dim, obs_dims[i]);
    ck_assert_int_eq(s->act_dim, act_dims[i]);
    ck_assert_int_eq(s->max_episode_steps, horizons[i]);
    env_model_t *m = NULL;
    ember_err err = {0};
    int rc = env_model_load(s->name, NULL, &m, &err);
    ck_assert_msg(rc == EMBER_OK, "%s: %s", s->name, err.msg);
    ck_assert_ptr_eq(env_model_spec(m), s);
    ck_assert_int_eq(env_model_mj(m)->nu, s->act_dim);
    ck_assert_double_eq_tol(env_model_mj(m)->opt.timestep * s->frame_skip, s->dt, 1e-12);
    /* the observation is finite right after a reset */
    env_vec_t *v = NULL;
    env_vec_config cfg = {.n_envs = 1, .seed = 1};
    ck_assert_int_eq(env_vec_new(m, &cfg, &v, &err), EMBER_OK);
    for (int k = 0; k < s->obs_dim; k++) ck_assert(isfinite(env_vec_obs(v)[k]));
    env_vec_destroy(&v);
    ck_assert_ptr_null(v);
    env_model_destroy(&m);
    ck_assert_ptr_null(m);
  }
  env_model_destroy(NULL); /* harmless */
}
END_TEST

/* Every hinge range of the humanoid is Gym's (gym/envs/mujoco/assets/humanoid.xml since openai/gym
 * PR #932, merged 2019-03-01, the file behind Humanoid-v3): in particular left_hip_y is -110..20
 * degrees like right_hip_y, not the -120..20 of the file before that fix. */
START_TEST(humanoid_joint_ranges_are_gyms) {
  static const struct {
    const char *joint;
    double lo_deg, hi_deg;
  } gym[] = {{"abdomen_z", -45, 45},      {"abdomen_y", -75, 30},       {"abdomen_x", -35, 35},
             {"right_hip_x", -25, 5},     {"right_hip_z", -60, 35},     {"right_hip_y", -110, 20},
             {"right_knee", -160, -2},    {"left_hip_x", -25, 5},       {"left_hip_z", -60, 35},
             {"left_hip_y", -110, 20},    {"left_knee", -160, -2},      {"right_shoulder1", -85, 60},
             {"right_shoulder2", -85, 60}, {"right_elbow", -90, 50},    {"left_shoulder1", -60, 85},
             {"left_shoulder2", -60, 85}, {"left_elbow", -90, 50}};
  env_model_t *em = NULL;
  ember_err err = {0};
  ck_assert_msg(env_model_load("humanoid", NULL, &em, &err) == EMBER_OK, "%s", err.msg);
  const mjModel *m = env_model_mj(em);
  ck_assert_int_eq(m->njnt, 1 + (int)(sizeof gym / sizeof gym[0])); /* the free root and 17 hinges */
  for (size_t k = 0; k < sizeof gym / sizeof gym[0]; k++) {
    int j = mj_name2id(m, mjOBJ_JOINT, gym[k].joint);
    ck_assert_msg(j >= 0, "no joint %s", gym[k].joint);
    ck_assert_msg(m->jnt_limited[j], "%s is not limited", gym[k].joint);
    const mjtNum *r = m->jnt_range + 2 * j;
    ck_assert_msg(fabs(r[0] - gym[k].lo_deg * mjPI / 180) < 1e-12 && fabs(r[1] - gym[k].hi_deg * mjPI / 180) < 1e-12,
                  "%s: range %g..%g deg, Gym's is %g..%g", gym[k].joint, r[0] * 180 / mjPI, r[1] * 180 / mjPI,
                  gym[k].lo_deg, gym[k].hi_deg);
  }
  env_model_destroy(&em);
}
END_TEST

/* reacher7dof's model is PETS's dmbrl/env/assets/reacher3d.xml (kchua/handful-of-trials): its
 * joints, the motors, zero gravity, and the masses that file compiles to under MuJoCo 2.2.2. */
START_TEST(reacher7dof_model_is_pets) {
  static const struct {
    const char *joint;
    int limited;
    double lo, hi, damping;
  } pets[] = {{"r_shoulder_pan_joint", 1, -2.2854, 1.714602, 10},  {"r_shoulder_lift_joint", 1, -0.5236, 1.3963, 10},
              {"r_upper_arm_roll_joint", 1, -3.9, 0.8, 0.1},       {"r_elbow_flex_joint", 1, -2.3213, 0, 1},
              {"r_forearm_roll_joint", 0, 0, 0, 0.1},              {"r_wrist_flex_joint", 1, -2.094, 0, 0.1},
              {"r_wrist_roll_joint", 0, 0, 0, 0.1}};
  env_model_t *em = NULL;
  ember_err err = {0};
  ck_assert_msg(env_model_load("reacher7dof", NULL, &em, &err) == EMBER_OK, "%s", err.msg);
  const mjModel *m = env_model_mj(em);
  for (int k = 0; k < 7; k++) {
    int j = mj_name2id(m, mjOBJ_JOINT, pets[k].joint);
    ck_assert_msg(j == k, "%s is joint %d, PETS's observation has it at %d", pets[k].joint, j, k);
    ck_assert_int_eq(m->jnt_limited[j], pets[k].limited);
    if (pets[k].limited) {
      ck_assert_double_eq_tol(m->jnt_range[2 * j], pets[k].lo, 1e-12);
      ck_assert_double_eq_tol(m->jnt_range[2 * j + 1], pets[k].hi, 1e-12);
    }
    ck_assert_double_eq(m->dof_damping[j], pets[k].damping);
    ck_assert_double_eq(m->dof_armature[j], 0.04);
    ck_assert_double_eq(m->qpos0[j], 0.0);
    ck_assert_int_eq(m->actuator_trnid[2 * k], j); /* motor k drives joint k, gear 1, +-20 */
    ck_assert_double_eq(m->actuator_gear[6 * k], 1.0);
    ck_assert_double_eq(m->actuator_ctrlrange[2 * k + 1], 20.0);
  }
  /* the goal: three free, undamped slides whose qpos are world coordinates, at rest at (0, 0.25, 0) */
  const char *goal[3] = {"goal_x", "goal_y", "goal_z"};
  for (int k = 0; k < 3; k++) {
    int j = mj_name2id(m, mjOBJ_JOINT, goal[k]);
    ck_assert_int_eq(j, 7 + k);
    ck_assert_int_eq(m->jnt_limited[j], 0);
    ck_assert_double_eq(m->dof_damping[j], 0.0);
    ck_assert_double_eq(m->qpos0[j], k == 1 ? 0.25 : 0.0);
  }
  for (int k = 0; k < 3; k++) ck_assert_double_eq(m->opt.gravity[k], 0.0);
  ck_assert_int_eq(m->opt.integrator, mjINT_RK4);
  ck_assert_int_eq(m->opt.iterations, 20);
  double mass = 0;
  for (int b = 0; b < m->nbody; b++) mass += m->body_mass[b];
  ck_assert_double_eq_tol(mass, 46.366477, 1e-6); /* reacher3d.xml compiled by MuJoCo 2.2.2 */
  ck_assert_double_eq_tol(m->body_mass[mj_name2id(m, mjOBJ_BODY, "r_shoulder_pan_link")], 24.311738, 1e-6);
  for (int g = 0; g < m->ngeom; g++) ck_assert(m->geom_contype[g] == 0 && m->geom_conaffinity[g] == 0);
  env_model_destroy(&em);
}
END_TEST

START_TEST(unknown_task_is_named) {
  env_model_t *m = NULL;
  ember_err err = {0};
  ck_assert_int_eq(env_model_load("hoppr", NULL, &m, &err), EMBER_ENOENT);
  ck_assert_ptr_null(m);
  ck_assert_ptr_nonnull(strstr(err.msg, "'hoppr'"));
  ck_assert_ptr_nonnull(strstr(err.msg, "hopper")); /* lists the known ones */
  const env_spec *s = NULL;
  ck_assert_int_eq(env_spec_find("Humanoid", &s, &err), EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "'Humanoid'"));
  ck_assert_int_eq(env_model_load_file("nope", "/dev/null", &m, &err), EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "'nope'"));
}
END_TEST

START_TEST(missing_model_file_is_named) {
  env_model_t *m = NULL;
  ember_err err = {0};
  ck_assert_int_eq(env_model_load_file("hopper", "/nonexistent/ember/hopper.xml", &m, &err), EMBER_ENOENT);
  ck_assert_ptr_null(m);
  ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/ember/hopper.xml"));
  ck_assert_ptr_nonnull(strstr(err.msg, "hopper"));
}
END_TEST

START_TEST(malformed_model_file_is_named_with_mujoco_text) {
  char path[] = "/tmp/ember_env_malformed_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *bad = "<mujoco>\n  <worldbody>\n    <body name=\"a\">\n  </worldbody>\n</mujoco>\n";
  ck_assert_int_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
  close(fd);
  env_model_t *m = NULL;
  ember_err err = {0};
  ck_assert_int_eq(env_model_load_file("walker2d", path, &m, &err), EMBER_EINVAL);
  ck_assert_ptr_null(m);
  ck_assert_ptr_nonnull(strstr(err.msg, path));
  /* MuJoCo's own parser text follows our prefix */
  const char *tail = strstr(err.msg, "not a valid MuJoCo model: ");
  ck_assert_ptr_nonnull(tail);
  ck_assert_int_gt(strlen(tail + strlen("not a valid MuJoCo model: ")), 5);
  ck_assert_ptr_nonnull(strstr(tail, "XML"));
  unlink(path);
}
END_TEST

/* Well-formed XML that the MuJoCo compiler refuses (a mesh file that is not there): the compiler's
 * text comes back through mj_loadXML's buffer, with our handlers installed, and this process lives. */
START_TEST(model_that_does_not_compile_is_named_and_the_process_survives) {
  char path[] = "/tmp/ember_env_nocompile_XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *bad = "<mujoco>\n  <asset><mesh name=\"m\" file=\"/nonexistent/ember/missing.stl\"/></asset>\n"
                    "  <worldbody><geom type=\"mesh\" mesh=\"m\"/></worldbody>\n</mujoco>\n";
  ck_assert_int_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
  close(fd);
  env_model_t *m = NULL;
  ember_err err = {0};
  ck_assert_int_eq(env_model_load_file("pendulum", path, &m, &err), EMBER_EINVAL);
  unlink(path);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(err.msg, path), "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "missing.stl"), "%s", err.msg); /* MuJoCo's text names the mesh file */
  ck_assert(mju_user_error != NULL); /* the load installed ember's handlers */
  /* and the next load works */
  char good[4200];
  snprintf(good, sizeof good, "%s/pendulum.xml", models_dir);
  ck_assert_msg(env_model_load_file("pendulum", good, &m, &err) == EMBER_OK, "%s", err.msg);
  env_model_destroy(&m);
}
END_TEST

/* mju_error must not return: ember's handler logs what MuJoCo said and exits with its own status
 * (MuJoCo's default prints to stdout, appends to MUJOCO_LOG.TXT and exits 1). */
START_TEST(mujoco_error_is_logged_and_ends_the_process_with_its_code) {
  env_install_mujoco_handlers();
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    FILE *out = fdopen(fds[1], "w");
    log_set_output(out);
    log_set_format(LOG_FORMAT_JSON);
    log_set_level(LOG_INFO);
    mju_error("ember test: provoked MuJoCo error");
    _exit(99); /* the handler returned */
  }
  close(fds[1]);
  static char text[8192];
  size_t n = 0;
  ssize_t r;
  while (n < sizeof text - 1 && (r = read(fds[0], text + n, sizeof text - 1 - n)) > 0) n += (size_t)r;
  text[n] = 0;
  close(fds[0]);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status), "the child did not exit (status %d)", status);
  ck_assert_int_eq(WEXITSTATUS(status), ENV_EXIT_MUJOCO_ERROR);
  ck_assert_msg(strstr(text, "\"msg\":\"mujoco_error\""), "log: %s", text);
  ck_assert_msg(strstr(text, "\"component\":\"env\""), "log: %s", text);
  ck_assert_msg(strstr(text, "ember test: provoked MuJoCo error"), "log: %s", text);
}
END_TEST

START_TEST(model_of_another_task_is_refused) {
  char path[4200];
  snprintf(path, sizeof path, "%s/reacher.xml", models_dir);
  env_model_t *m = NULL;
  ember_err err = {0};
  ck_assert_int_eq(env_model_load_file("hopper", path, &m, &err), EMBER_ESHAPE);
  ck_assert_ptr_null(m);
  ck_assert_ptr_nonnull(strstr(err.msg, path));
  ck_assert_ptr_nonnull(strstr(err.msg, "nq=4"));
}
END_TEST

START_TEST(model_directory_resolution_order) {
  env_model_t *m = NULL;
  ember_err err = {0};
  /* 1: an explicit directory is authoritative */
  ck_assert_int_eq(env_model_load("ant", "/nonexistent/models", &m, &err), EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/models/ant.xml"));
  ck_assert_ptr_nonnull(strstr(err.msg, "env.model_dir"));
  /* 2: EMBER_MODEL_DIR, also authoritative */
  setenv("EMBER_MODEL_DIR", "/nonexistent/env-var-models", 1);
  ck_assert_int_eq(env_model_load("ant", NULL, &m, &err), EMBER_ENOENT);
  ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/env-var-models/ant.xml"));
  ck_assert_ptr_nonnull(strstr(err.msg, "EMBER_MODEL_DIR"));
  /* the explicit directory wins over the environment variable */
  ck_assert_int_eq(env_model_load("ant", models_dir, &m, &err), EMBER_OK);
  env_model_destroy(&m);
  setenv("EMBER_MODEL_DIR", models_dir, 1);
  ck_assert_int_eq(env_model_load("ant", NULL, &m, &err), EMBER_OK);
  char expect[4200];
  snprintf(expect, sizeof expect, "%s/ant.xml", models_dir);
  ck_assert_str_eq(env_model_path(m), expect);
  env_model_destroy(&m);
  /* 3: with neither, the compiled-in source directory (this run is from the build tree) */
  unsetenv("EMBER_MODEL_DIR");
  ck_assert_int_eq(env_model_load("ant", "", &m, &err), EMBER_OK);
  ck_assert_ptr_nonnull(strstr(env_model_path(m), "common/env/models/ant.xml"));
  env_model_destroy(&m);
}
END_TEST

/* ---- pure reward and termination functions on hand-built observations ---- */

START_TEST(pendulum_pure_reward) {
  const env_spec *s = spec_of("pendulum");
  ck_assert(s->reward_exact && s->terminated_exact);
  /* theta = pi/2, thetadot = 1, action 0.5 -> torque 1; theta = -3pi/4 (as atan2 gives it),
   * thetadot = -2, action 3 -> clipped to 1 -> torque 2 */
  float obs[6] = {0.0f, 1.0f, 1.0f, (float)cos(-0.75 * M_PI), (float)sin(-0.75 * M_PI), -2.0f};
  float act[2] = {0.5f, 3.0f};
  float r[2];
  env_spec_reward(s, 2, obs, act, obs, r);
  ck_assert_double_eq_tol(r[0], -(M_PI * M_PI / 4 + 0.1 + 0.001), 1e-5);
  ck_assert_double_eq_tol(r[1], -(9 * M_PI * M_PI / 16 + 0.4 + 0.004), 1e-5);
  uint8_t t[2] = {9, 9};
  env_spec_terminated(s, 2, obs, t);
  ck_assert_int_eq(t[0], 0);
  ck_assert_int_eq(t[1], 0);
}
END_TEST

START_TEST(reacher_pure_reward) {
  const env_spec *s = spec_of("reacher");
  ck_assert(s->reward_exact);
  float obs[11] = {0};
  obs[8] = 0.3f, obs[9] = 0.4f, obs[10] = 0.0f; /* fingertip - target: distance 0.5 */
  float act[2] = {0.5f, -1.0f};
  float next[11] = {0};
  float r;
  env_spec_reward(s, 1, obs, act, next, &r);
  ck_assert_double_eq_tol(r, -0.5 - 1.25, 1e-6);
}
END_TEST

/* PETS's reward, -|ee(next angles) - goal|^2 - 0.01 |ctrl|^2 with ctrl = 20 * clip(a), on poses
 * whose end effector is easy by hand: the arm straight along x reaches (0.98928, -0.188, 0)
 * (shoulder at y = -0.188, lift joint 0.1 out, then 0.4 + 0.321 + 0.16828). */
START_TEST(reacher7dof_pure_reward_follows_pets) {
  const env_spec *s = spec_of("reacher7dof");
  ck_assert(s->reward_exact && s->terminated_exact);
  ck_assert_int_eq(s->obs_dim, 17);
  enum { N = 5 };
  static float obs[N][17], next[N][17], act[N][7];
  double expect_ee[N][3] = {
      {0.98928, -0.188, 0},               /* straight */
      {0, -0.188 + 0.98928, 0},           /* pan +90 deg: straight along y */
      {0.5, -0.188, 0.321 + 0.16828},     /* elbow flexed -90 deg: forearm and hand point up */
      {0.5 + 0.16828, -0.188, 0.321},     /* elbow -90, wrist +90 (beyond its limit): hand along x again */
      {0.5 - 0.16828, -0.188, -0.321},    /* elbow +90 (beyond its limit), wrist -90: PETS's formula mirrors
                                             the hand to -x, where the joints would put it at +x */
  };
  next[1][0] = (float)(M_PI / 2);
  next[2][3] = (float)(-M_PI / 2);
  next[3][3] = (float)(-M_PI / 2), next[3][5] = (float)(M_PI / 2);
  next[4][3] = (float)(M_PI / 2), next[4][5] = (float)(-M_PI / 2);
  const double goal[3] = {0.1, 0.3, -0.2};
  for (int b = 0; b < N; b++) {
    for (int k = 0; k < 3; k++) next[b][7 + k] = (float)goal[k];
    next[b][6] = 1.0f; /* the wrist roll turns the hand about its own axis: no effect */
    next[b][10] = 5.0f; /* velocities do not count */
  }
  /* act: 0.5 -> ctrl 10, -1 -> -20, 2 -> clipped to 1 -> 20: 100 + 400 + 400, times 0.01 */
  act[0][0] = 0.5f, act[0][1] = -1.0f, act[0][6] = 2.0f;
  float r[N];
  env_spec_reward(s, N, &obs[0][0], &act[0][0], &next[0][0], r);
  for (int b = 0; b < N; b++) {
    double d2 = 0;
    for (int k = 0; k < 3; k++) d2 += (expect_ee[b][k] - goal[k]) * (expect_ee[b][k] - goal[k]);
    double expect = -d2 - (b == 0 ? 9.0 : 0.0);
    ck_assert_msg(fabs(r[b] - expect) < 1e-5, "pose %d: reward %g, expected %g", b, r[b], expect);
  }
  uint8_t t[N];
  memset(t, 9, sizeof t);
  env_spec_terminated(s, N, &next[0][0], t);
  for (int b = 0; b < N; b++) ck_assert_int_eq(t[b], 0);
}
END_TEST

START_TEST(half_cheetah_pure_reward) {
  const env_spec *s = spec_of("half_cheetah");
  ck_assert(!s->reward_exact && s->terminated_exact);
  float obs[17] = {0}, next[17] = {0}, act[6];
  for (int i = 0; i < 6; i++) act[i] = 0.5f;
  next[8] = 2.0f; /* root x velocity */
  float r;
  env_spec_reward(s, 1, obs, act, next, &r);
  ck_assert_double_eq_tol(r, 2.0 - 0.1 * 6 * 0.25, 1e-6);
  uint8_t t;
  next[0] = -50.0f; /* upside down and under the floor: the cheetah never terminates */
  env_spec_terminated(s, 1, next, &t);
  ck_assert_int_eq(t, 0);
}
END_TEST

START_TEST(hopper_pure_reward_and_termination) {
  const env_spec *s = spec_of("hopper");
  ck_assert(!s->reward_exact && !s->terminated_exact);
  float obs[11] = {0}, next[11] = {0}, act[3] = {1.0f, -1.0f, 2.0f};
  next[0] = 1.25f;
  next[5] = 1.5f;
  float r;
  env_spec_reward(s, 1, obs, act, next, &r);
  ck_assert_double_eq_tol(r, 1.5 + 1.0 - 3e-3, 1e-6);
  /* healthy, low, tilted, a joint beyond 100, a NaN */
  float o[5][11] = {{1.25f}, {0.6f}, {1.25f, 0.25f}, {1.25f, 0, 0, 150.0f}, {1.25f, 0, 0, 0, 0, 0, 0, NAN}};
  uint8_t t[5];
  env_spec_terminated(s, 5, &o[0][0], t);
  ck_assert_int_eq(t[0], 0);
  ck_assert_int_eq(t[1], 1);
  ck_assert_int_eq(t[2], 1);
  ck_assert_int_eq(t[3], 1);
  ck_assert_int_eq(t[4], 1);
}
END_TEST

START_TEST(walker2d_pure_reward_and_termination) {
  const env_spec *s = spec_of("walker2d");
  ck_assert(!s->reward_exact && s->terminated_exact);
  float obs[17] = {0}, next[17] = {0}, act[6] = {0};
  next[0] = 1.25f;
  next[8] = -1.0f;
  float r;
  env_spec_reward(s, 1, obs, act, next, &r);
  ck_assert_double_eq_tol(r, 0.0, 1e-6);
  float o[4][17] = {{1.2f, 0.5f}, {2.1f}, {1.2f, -1.1f}, {0.79f}};
  uint8_t t[4];
  env_spec_terminated(s, 4, &o[0][0], t);
  ck_assert_int_eq(t[0], 0);
  ck_assert_int_eq(t[1], 1);
  ck_assert_int_eq(t[2], 1);
  ck_assert_int_eq(t[3], 1);
}
END_TEST

START_TEST(ant_pure_reward_and_termination) {
  const env_spec *s = spec_of("ant");
  ck_assert(!s->reward_exact && s->terminated_exact);
  float obs[27] = {0}, next[27] = {0}, act[8];
  for (int i = 0; i < 8; i++) act[i] = 1.0f;
  next[0] = 0.55f;
  next[13] = 0.5f;
  float r;
  env_spec_reward(s, 1, obs, act, next, &r);
  ck_assert_double_eq_tol(r, 0.5 + 1.0 - 0.5 * 8, 1e-6);
  float o[4][27] = {{0.55f}, {1.1f}, {0.2f}, {0.5f, NAN}};
  uint8_t t[4];
  env_spec_terminated(s, 4, &o[0][0], t);
  ck_assert_int_eq(t[0], 0);
  ck_assert_int_eq(t[1], 1);
  ck_assert_int_eq(t[2], 0); /* the healthy range is closed */
  ck_assert_int_eq(t[3], 1);
}
END_TEST

START_TEST(humanoid_pure_reward_and_termination) {
  const env_spec *s = spec_of("humanoid");
  ck_assert(!s->reward_exact && s->terminated_exact);
  static float obs[2 * 376], next[2 * 376], act[2 * 17];
  for (int i = 0; i < 2 * 17; i++) act[i] = 1.0f; /* ctrl 0.4 each: cost 0.1 * 17 * 0.16 = 0.272 */
  next[22] = 1.0f;                                 /* root x velocity */
  next[292] = 1000.0f;                             /* one contact force: cost 5e-7 * 1e6 = 0.5 */
  next[376 + 22] = 1.0f;
  next[376 + 300] = 10000.0f; /* cost 50, capped at 10 */
  float r[2];
  env_spec_reward(s, 2, obs, act, next, r);
  ck_assert_double_eq_tol(r[0], 1.25 + 5.0 - 0.272 - 0.5, 1e-5);
  ck_assert_double_eq_tol(r[1], 1.25 + 5.0 - 0.272 - 10.0, 1e-5);
  float z[3][376] = {{1.4f}, {1.0f}, {2.0f}};
  uint8_t t[3];
  env_spec_terminated(s, 3, &z[0][0], t);
  ck_assert_int_eq(t[0], 0);
  ck_assert_int_eq(t[1], 1); /* the healthy range is open */
  ck_assert_int_eq(t[2], 1);
}
END_TEST

int main(void) {
  Suite *s = suite_create("env_tasks");
  TCase *load = tcase_create("load");
  tcase_add_checked_fixture(load, setup, NULL);
  tcase_set_timeout(load, 60);
  tcase_add_test(load, every_model_loads_with_its_layout);
  tcase_add_test(load, humanoid_joint_ranges_are_gyms);
  tcase_add_test(load, reacher7dof_model_is_pets);
  tcase_add_test(load, unknown_task_is_named);
  tcase_add_test(load, missing_model_file_is_named);
  tcase_add_test(load, malformed_model_file_is_named_with_mujoco_text);
  tcase_add_test(load, model_that_does_not_compile_is_named_and_the_process_survives);
  tcase_add_test(load, mujoco_error_is_logged_and_ends_the_process_with_its_code);
  tcase_add_test(load, model_of_another_task_is_refused);
  tcase_add_test(load, model_directory_resolution_order);
  suite_add_tcase(s, load);
  TCase *pure = tcase_create("pure");
  tcase_add_test(pure, pendulum_pure_reward);
  tcase_add_test(pure, reacher_pure_reward);
  tcase_add_test(pure, reacher7dof_pure_reward_follows_pets);
  tcase_add_test(pure, half_cheetah_pure_reward);
  tcase_add_test(pure, hopper_pure_reward_and_termination);
  tcase_add_test(pure, walker2d_pure_reward_and_termination);
  tcase_add_test(pure, ant_pure_reward_and_termination);
  tcase_add_test(pure, humanoid_pure_reward_and_termination);
  suite_add_tcase(s, pure);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}

/* bench_actor: env steps per second of the whole actor loop with a 2x256 policy in it, against bare
 * environment stepping with random actions, same K, measured in the same run.
 *
 * For each task:
 *   actor  the real actor (actor_run on its own thread) with K envs, fed a 2x256 ReLU tanh-Gaussian
 *          policy through its ParamsRequest by a fake learner, streaming every transition to a fake
 *          replay that acks at once (both on this thread, over inproc://). Everything the loop does
 *          is in the figure: the learner-socket polls, one batched forward (a GEMM per layer over
 *          the K rows), the K env steps, the columnar copies, the insert client.
 *   bare   env_vec_step over K envs of the same task with uniform random actions, nothing else.
 * Times are the CPU time of the thread doing the work (the actor's own thread for the actor), so
 * other work on a shared machine does not count against either. Each is measured in several
 * alternating rounds; the best round of each is kept. OpenBLAS runs single-threaded, as in
 * ember-actor.
 * Prints BENCH actor_<task>_steps_per_s, actor_<task>_bare_env_steps_per_s,
 * actor_<task>_vs_bare_env and actor_<task>_policy_us_per_step (the forward alone, per loop step).
 * Usage: bench_actor [seconds per round, default 0.25] [K, default 16] [task ...]
 */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "actor.h"
#include "env.h"
#include "log.h"
#include "net.h"
#include "policy.h"
#include "rng.h"

enum { ROUNDS = 5, HIDDEN = 256 };

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const ember_err *err) {
  fprintf(stderr, "bench_actor: %s: %s\n", what, err ? err->msg : "");
  exit(1);
}

/* ---- the policy: 2x256 ReLU, PyTorch's default init, as SAC would export it ---- */

typedef struct {
  Ember__Params params;
  Ember__Tensor tensors[6];
  Ember__Tensor *ptrs[6];
  char names[6][16];
  uint32_t shapes[6][2];
} bench_params;

/* explore = 0: a freshly initialised policy (what SAC exports before training: mean near 0, log-std
 * at the middle of its bounds, so std = e^-1.5: nearly the same action for the same state).
 * explore = 1: the same network with its output layer set so that actions are tanh(N(0, 1)), spread
 * over [-1, 1] like the bare loop's uniform ones (the GEMMs are the same size and cost). */
static void build_params(bench_params *bp, const env_spec *spec, int explore) {
  memset(bp, 0, sizeof *bp);
  ember__params__init(&bp->params);
  bp->params.version = 1;
  bp->params.algorithm = "bench";
  bp->params.task = (char *)spec->name;
  bp->params.obs_dim = (uint32_t)spec->obs_dim;
  bp->params.act_dim = (uint32_t)spec->act_dim;
  bp->params.policy_kind = POLICY_KIND_TANH_GAUSSIAN_MLP;
  bp->params.policy_activation = "relu";
  bp->params.log_std_min = -5.0f;
  bp->params.log_std_max = 2.0f;
  bp->params.tensors = bp->ptrs;
  bp->params.n_tensors = 6;
  rng_t r;
  rng_seed(&r, 7, RNG_STREAM_TEST);
  int dims[4] = {spec->obs_dim, HIDDEN, HIDDEN, 2 * spec->act_dim};
  for (int l = 0; l < 3; l++) {
    float bound = 1.0f / sqrtf((float)dims[l]);
    for (int wb = 0; wb < 2; wb++) {
      Ember__Tensor *t = &bp->tensors[2 * l + wb];
      ember__tensor__init(t);
      snprintf(bp->names[2 * l + wb], sizeof bp->names[0], "pi/l%d/%c", l, wb ? 'b' : 'w');
      t->name = bp->names[2 * l + wb];
      bp->shapes[2 * l + wb][0] = (uint32_t)dims[l + 1];
      bp->shapes[2 * l + wb][1] = (uint32_t)dims[l];
      t->shape = bp->shapes[2 * l + wb];
      t->n_shape = wb ? 1 : 2;
      t->n_data = (size_t)dims[l + 1] * (wb ? 1 : (size_t)dims[l]);
      t->data = malloc(t->n_data * sizeof(float));
      if (!t->data) die("out of memory", NULL);
      for (size_t i = 0; i < t->n_data; i++) t->data[i] = bound * (2.0f * rng_uniform_f(&r) - 1.0f);
      if (explore && l == 2) {
        /* mean 0; raw log-std with bound(raw) = 0: tanh(raw) = -lo / ((hi - lo) / 2) - 1 */
        float lo = bp->params.log_std_min, hi = bp->params.log_std_max;
        float raw = atanhf(-lo / (0.5f * (hi - lo)) - 1.0f);
        for (size_t i = 0; i < t->n_data; i++) t->data[i] = 0.0f;
        if (wb)
          for (int j = spec->act_dim; j < 2 * spec->act_dim; j++) t->data[j] = raw;
      }
      bp->ptrs[2 * l + wb] = t;
    }
  }
}

static void free_params(bench_params *bp) {
  for (int i = 0; i < 6; i++) free(bp->tensors[i].data);
}

/* ---- bare stepping ---- */

static double bare_round(env_vec_t *vec, rng_t *g, float *actions, const env_step_out *out, long steps) {
  const env_spec *spec = env_vec_spec(vec);
  int n = env_vec_size(vec) * spec->act_dim;
  ember_err err = {0};
  double t0 = thread_cpu_s();
  for (long s = 0; s < steps; s++) {
    for (int i = 0; i < n; i++) actions[i] = 2.0f * rng_uniform_f(g) - 1.0f;
    if (env_vec_step(vec, actions, out, &err)) die("env_vec_step", &err);
  }
  return thread_cpu_s() - t0;
}

/* ---- the actor, on its own thread, timed by that thread ---- */

typedef struct {
  actor_t *actor;
  double cpu_s;
  int rc;
  atomic_int done;
} actor_run_ctx;

static void *actor_thread(void *arg) {
  actor_run_ctx *c = arg;
  ember_err err = {0};
  double t0 = thread_cpu_s();
  c->rc = actor_run(c->actor, &err);
  c->cpu_s = thread_cpu_s() - t0;
  if (c->rc) fprintf(stderr, "bench_actor: actor_run: %s\n", err.msg);
  atomic_store(&c->done, 1);
  return NULL;
}

/* Serves the fake replay (ack everything) and learner (answer ParamsRequest) until the actor is done. */
static void serve(void *replay, void *control, const Ember__Params *params, actor_run_ctx *c) {
  zmq_pollitem_t items[2] = {{replay, 0, ZMQ_POLLIN, 0}, {control, 0, ZMQ_POLLIN, 0}};
  while (!atomic_load(&c->done)) {
    if (zmq_poll(items, 2, 5) <= 0) continue;
    Ember__Envelope *env;
    net_route route;
    ember_err err = {0};
    while (net_recv(replay, &env, &route, ZMQ_DONTWAIT, &err) == 0) {
      if (env->body_case == EMBER__ENVELOPE__BODY_TRANSITION_BATCH) {
        Ember__InsertAck ack = EMBER__INSERT_ACK__INIT;
        ack.actor_id = env->transition_batch->actor_id;
        ack.sequence = env->transition_batch->sequence;
        ack.accepted = env->transition_batch->count;
        net_send_body(replay, EMBER__ENVELOPE__BODY_INSERT_ACK, &ack, &route, 0, &err);
      }
      net_envelope_free(env);
    }
    while (net_recv(control, &env, &route, ZMQ_DONTWAIT, &err) == 0) {
      if (params && env->body_case == EMBER__ENVELOPE__BODY_PARAMS_REQUEST && env->params_request->have_version == 0)
        net_send_body(control, EMBER__ENVELOPE__BODY_PARAMS, (void *)params, &route, 0, &err);
      net_envelope_free(env);
    }
  }
}

/* One actor run of `steps` env steps (transitions); returns the actor thread's CPU seconds. */
static double actor_round(void *ctx, const char *task, int K, long steps, const Ember__Params *params, int round,
                          uint64_t *policy_version) {
  actor_config cfg;
  config_binding b = {&actor_config_section, &cfg, NULL};
  ember_err err = {0};
  if (config_defaults(&b, 1, &err)) die("actor defaults", &err);
  snprintf(cfg.task, sizeof cfg.task, "%s", task);
  cfg.num_envs = K;
  cfg.max_env_steps = steps;
  cfg.log_interval_s = 0;
  cfg.queue_batches = 4096; /* the fake replay shares the machine: never drop, never wait */
  cfg.id = 1 + round;
  cfg.seed = (int64_t)round;
  snprintf(cfg.params_endpoint, CONFIG_STRING_MAX, "inproc://bench-params-%d", round);
  snprintf(cfg.control_endpoint, CONFIG_STRING_MAX, "inproc://bench-control-%d", round);
  snprintf(cfg.replay_endpoint, CONFIG_STRING_MAX, "inproc://bench-replay-%d", round);
  net_socket_opts o = {.linger_ms = 0};
  void *replay = net_socket(ctx, ZMQ_ROUTER, cfg.replay_endpoint, true, &o, &err);
  void *control = replay ? net_socket(ctx, ZMQ_ROUTER, cfg.control_endpoint, true, &o, &err) : NULL;
  if (!control) die("fake replay/learner sockets", &err);
  actor_run_ctx c = {0};
  c.actor = actor_new(&cfg, ctx, NULL, &err);
  if (!c.actor) die("actor_new", &err);
  pthread_t tid;
  if (pthread_create(&tid, NULL, actor_thread, &c) != 0) die("pthread_create", NULL);
  serve(replay, control, params, &c);
  pthread_join(tid, NULL);
  actor_stats st;
  actor_get_stats(c.actor, &st);
  *policy_version = st.policy_version;
  if (st.transitions_dropped) fprintf(stderr, "bench_actor: %s: %llu transitions dropped\n", task,
                                      (unsigned long long)st.transitions_dropped);
  actor_destroy(&c.actor);
  zmq_close(replay);
  zmq_close(control);
  return c.cpu_s;
}

/* The policy forward alone over K rows, per call (microseconds). */
static double policy_us(const Ember__Params *params, const env_spec *spec, int K, double seconds) {
  policy_config pc = {spec->name, spec->obs_dim, spec->act_dim, K};
  ember_err err = {0};
  policy_t *pol = policy_new(params, &pc, &err);
  if (!pol) die("policy_new", &err);
  float *obs = calloc((size_t)K * spec->obs_dim, sizeof(float));
  float *act = calloc((size_t)K * spec->act_dim, sizeof(float));
  float *lp = calloc((size_t)K, sizeof(float));
  rng_t r;
  rng_seed(&r, 3, RNG_STREAM_TEST);
  for (int i = 0; i < K * spec->obs_dim; i++) obs[i] = (float)rng_normal(&r);
  double best = INFINITY;
  for (int round = 0; round < ROUNDS; round++) {
    long calls = 0;
    double t0 = thread_cpu_s(), t = t0;
    while (t - t0 < seconds / ROUNDS) {
      for (int i = 0; i < 50; i++) policy_act(pol, obs, K, false, &r, act, lp, &err);
      calls += 50;
      t = thread_cpu_s();
    }
    double us = 1e6 * (t - t0) / (double)calls;
    if (us < best) best = us;
  }
  free(obs);
  free(act);
  free(lp);
  policy_destroy(&pol);
  return best;
}

static void bench_task(void *ctx, const char *task, int K, double seconds) {
  ember_err err = {0};
  env_model_t *model = NULL;
  if (env_model_load(task, NULL, &model, &err)) die(task, &err);
  const env_spec *spec = env_model_spec(model);
  env_vec_config vc = {.n_envs = K, .seed = 1, .first_env_id = 0, .max_episode_steps = 0};
  env_vec_t *vec = NULL;
  if (env_vec_new(model, &vc, &vec, &err)) die("env_vec_new", &err);
  float *actions = calloc((size_t)K * spec->act_dim, sizeof(float));
  float *next_obs = calloc((size_t)K * spec->obs_dim, sizeof(float));
  float *reward = calloc((size_t)K, sizeof(float));
  uint8_t *term = calloc((size_t)K, 1), *trunc = calloc((size_t)K, 1);
  env_step_out out = {next_obs, reward, term, trunc, NULL, NULL};
  rng_t g;
  rng_seed(&g, 5, RNG_STREAM_TEST);
  bench_params explore, init;
  build_params(&explore, spec, 1);
  build_params(&init, spec, 0);

  /* calibrate: loop steps (all K envs) per round so that a bare round takes about `seconds` */
  double probe = bare_round(vec, &g, actions, &out, 20);
  long steps = (long)(seconds / (probe / 20.0));
  if (steps < 50) steps = 50;

  double best_bare = INFINITY, best_actor = INFINITY, best_init = INFINITY;
  uint64_t version = 0;
  for (int round = 0; round < ROUNDS; round++) {
    double bare = bare_round(vec, &g, actions, &out, steps) / (double)(steps * K);
    double act = actor_round(ctx, task, K, steps * K, &explore.params, 2 * round, &version) / (double)(steps * K);
    if (version != 1) fprintf(stderr, "bench_actor: %s: the policy never reached the actor\n", task);
    double act_init = actor_round(ctx, task, K, steps * K, &init.params, 2 * round + 1, &version) / (double)(steps * K);
    if (version != 1) fprintf(stderr, "bench_actor: %s: the policy never reached the actor\n", task);
    if (bare < best_bare) best_bare = bare;
    if (act < best_actor) best_actor = act;
    if (act_init < best_init) best_init = act_init;
  }
  double pol = policy_us(&explore.params, spec, K, seconds);
  printf("BENCH actor_%s_steps_per_s %.0f steps/s\n", task, 1.0 / best_actor);
  printf("BENCH actor_%s_bare_env_steps_per_s %.0f steps/s\n", task, 1.0 / best_bare);
  printf("BENCH actor_%s_vs_bare_env %.3f ratio\n", task, best_bare / best_actor);
  printf("BENCH actor_%s_init_policy_vs_bare_env %.3f ratio (other trajectories: other physics cost)\n", task,
         best_bare / best_init);
  printf("BENCH actor_%s_policy_us_per_step %.1f us (K=%d, 2x%d)\n", task, pol, K, HIDDEN);
  fflush(stdout);
  free_params(&explore);
  free_params(&init);
  free(actions);
  free(next_obs);
  free(reward);
  free(term);
  free(trunc);
  env_vec_destroy(&vec);
  env_model_destroy(&model);
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 0.25;
  int K = argc > 2 ? atoi(argv[2]) : 16;
  if (seconds <= 0 || K < 1) {
    fprintf(stderr, "usage: bench_actor [seconds per round] [K] [task ...]\n");
    return 2;
  }
  openblas_set_num_threads(1);
  log_set_level(LOG_WARN);
  void *ctx = zmq_ctx_new();
  static const char *default_tasks[] = {"half_cheetah", "hopper", "pendulum"};
  const char *const *tasks = argc > 3 ? (const char *const *)argv + 3 : default_tasks;
  int ntasks = argc > 3 ? argc - 3 : 3;
  printf("# bench_actor: K=%d envs, 2x%d ReLU policy, OpenBLAS 1 thread, best of %d rounds of ~%.2f s\n", K,
         HIDDEN, ROUNDS, seconds);
  for (int i = 0; i < ntasks; i++) bench_task(ctx, tasks[i], K, seconds);
  zmq_ctx_term(ctx);
  return 0;
}

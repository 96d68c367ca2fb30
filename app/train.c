/* train.c: `ember train`: replay, learner and N actors as threads of one process over inproc://,
 * the same code the separate programs run. The main thread prints a progress line and stops
 * everything when the learner is done (run.steps env steps) or on SIGINT/SIGTERM. */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "app.h"
#include "evaluation.h"
#include "http.h"
#include "settings.h"

extern char **environ;

/* the final evaluation's start states: a seed of their own (see final_evaluation) */
#define FINAL_EVAL_SALT 0x66696e616c657661ULL

/* An actor of `ember train` holds its envs for replay's rate limiter as long as the learner needs
 * (an update of a large model, a checkpoint): everything it makes is learned from, nothing is dropped
 * for pacing. Params, heartbeats and a stop still go on while it is held (the evaluator, with no replay,
 * is never held). */
#define TRAIN_REPLAY_WAIT_MS 3600000

static atomic_int g_interrupted, g_interrupted_once; /* once: the run was interrupted at some point */
static void on_signal(int sig) {
  (void)sig;
  atomic_store(&g_interrupted, 1);
  atomic_store(&g_interrupted_once, 1);
}

typedef struct {
  actor_t *actor;
  int rc;
  ember_err err;
  pthread_t thread;
  bool started;
  atomic_bool finished;
} actor_slot;

static void *actor_thread(void *arg) {
  actor_slot *s = arg;
  s->rc = actor_run(s->actor, &s->err);
  if (s->rc) log_event(LOG_ERROR, "train", "actor_failed", LF_STR("error", s->err.msg));
  atomic_store(&s->finished, true);
  return NULL;
}

typedef struct {
  learner_t *learner;
  int rc;
  ember_err err;
} learner_slot;

static void *learner_thread(void *arg) {
  learner_slot *s = arg;
  s->rc = learner_run(s->learner, &s->err);
  return NULL;
}

static void *replay_thread(void *arg) {
  replay_server_run(arg);
  return NULL;
}

/* The final evaluation: a run that reached run.steps ends on an evaluation of its last published
 * policy (the one its final checkpoint holds and `ember eval` plays), so that every curve reaches the
 * budget whatever eval_every_steps is. Played here, after the learner's thread has returned, with
 * the evaluator's settings; its start states come from env streams of their own (those of actor id
 * N + 2), and it is recorded like the evaluator's (evals.csv, curves' latest evaluation). When the
 * evaluator has already reported that version, there is nothing to add. */
static void final_evaluation(const app_settings *s, learner_t *l, int64_t id) {
  const Ember__Params *p = learner_last_params(l);
  learner_progress lp;
  learner_get_progress(l, &lp);
  if (!p || lp.eval_version >= p->version) return; /* the evaluator already reported that version */
  ember_err err = {0};
  env_model_t *model = NULL;
  evaluation_t *ev = NULL;
  int rc = env_model_load(s->run.task, s->actor.model_dir[0] ? s->actor.model_dir : NULL, &model, &err);
  if (!rc) {
    evaluation_config ec = {.episodes = (int)s->actor.eval_episodes, .seed = (uint64_t)s->run.seed ^ FINAL_EVAL_SALT,
                            .first_env_id = (uint64_t)id * (uint64_t)s->actor.eval_episodes,
                            .max_episode_steps = (int)s->actor.max_episode_steps,
                            .ctrl_noise_std = s->actor.ctrl_noise_std};
    ev = evaluation_new(model, &ec, &err);
    rc = ev ? evaluation_start(ev, p, &err) : err.code;
  }
  if (!rc) rc = evaluation_run(ev, &err) == 1 ? 0 : err.code;
  evaluation_result r;
  if (!rc) {
    evaluation_get_result(ev, &r);
    rc = learner_report_evaluation(l, (uint64_t)id, r.version, r.env_steps, r.episodes, r.returns, r.lengths,
                                   r.ended_by_task, &err);
  }
  if (rc)
    fprintf(stderr, "ember train: the final evaluation failed: %s\n", err.msg);
  else
    printf("ember train: final evaluation of version %llu (published at %llu env steps): %.1f +- %.1f over %d "
           "episodes\n",
           (unsigned long long)r.version, (unsigned long long)r.env_steps, r.mean, r.std, r.episodes);
  evaluation_destroy(&ev);
  env_model_destroy(&model);
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: ember train [--task T] [--algo A] [--steps N] [--seed S] [--actors N] [--run-dir DIR]\n"
          "                   [--stop-at-return R] [--deterministic] [--config FILE] [--set section.key=value ...]\n"
          "Trains an agent with replay, learner and N actors as threads of this process (inproc://).\n"
          "Every setting is listed by `ember config`. The run directory (default runs/<task>-<algo>-<time>)\n"
          "receives config.yaml (the settings really used), curves.csv, tb/ (TensorBoard), checkpoints/\n"
          "and the final learner state. Run again with the same --run-dir to resume from its newest\n"
          "checkpoint (learner.resume). Ctrl-C or SIGTERM stops cleanly with a final checkpoint.\n"
          "Evaluations: an evaluator thread plays actor.eval_episodes (10) complete episodes of the\n"
          "deterministic policy every actor.eval_every_steps (5000) env steps, one row each in evals.csv.\n"
          "--stop-at-return R: stop as soon as an evaluation's mean return reaches R.\n"
          "--deterministic: one actor and the replay table in lock-step with the learner in one thread;\n"
          "the run is a function of the seed, and a stopped run resumed with the same settings ends\n"
          "bit-identical to an uninterrupted one (learner.max_updates stops it early for tests).\n");
}

/* The embedded run: every endpoint inproc, the run section copied into each component. */
static void embed(app_settings *s) {
  snprintf(s->replay.insert_endpoint, CONFIG_STRING_MAX, "inproc://ember-replay-insert");
  snprintf(s->replay.sample_endpoint, CONFIG_STRING_MAX, "inproc://ember-replay-sample");
  snprintf(s->learner.params_endpoint, CONFIG_STRING_MAX, "inproc://ember-learner-params");
  snprintf(s->learner.control_endpoint, CONFIG_STRING_MAX, "inproc://ember-learner-control");
  snprintf(s->learner.replay_endpoint, CONFIG_STRING_MAX, "%s", s->replay.sample_endpoint);
  snprintf(s->actor.params_endpoint, CONFIG_STRING_MAX, "%s", s->learner.params_endpoint);
  snprintf(s->actor.control_endpoint, CONFIG_STRING_MAX, "%s", s->learner.control_endpoint);
  snprintf(s->actor.replay_endpoint, CONFIG_STRING_MAX, "%s", s->replay.insert_endpoint);
  snprintf(s->actor.task, CONFIG_STRING_MAX, "%s", s->run.task);
  snprintf(s->replay.task, CONFIG_STRING_MAX, "%s", s->run.task);
  s->actor.seed = s->replay.seed = s->run.seed;
  s->replay.snapshot_dir[0] = 0; /* the embedded table lives and dies with the run */
  if (strcmp(s->replay.sampler, "prioritized") == 0) s->learner.send_priorities = true;
  /* The update-to-data ratio: replay's rate limiter counts sampled transitions per inserted one.
   * Each key below takes train's value only when the file, a variable or a flag left it unset. */
  const bool limiter_set = app_setting_is_set(s, "replay.samples_per_insert");
  if (s->train.updates_per_step > 0 && !limiter_set) {
    s->replay.samples_per_insert = s->train.updates_per_step * (double)s->learner.batch_size;
    double buffer = s->replay.samples_per_insert * (double)s->train.lead_steps;
    double floor_ = 2.0 * (double)s->learner.batch_size * (double)(s->learner.prefetch + 1);
    if (!app_setting_is_set(s, "replay.error_buffer")) s->replay.error_buffer = buffer > floor_ ? buffer : floor_;
  }
  /* With the limiter on, replay holds inserts back while the learner catches up: the actors then
   * wait for acks (paced, instead of stepping envs only to drop what they make), and over inproc
   * nothing is lost, so a held-back batch is not written off as unconfirmed after 5 s. */
  if (s->replay.samples_per_insert > 0) {
    if (!app_setting_is_set(s, "actor.replay_wait_ms")) s->actor.replay_wait_ms = TRAIN_REPLAY_WAIT_MS;
    if (!app_setting_is_set(s, "actor.ack_timeout_ms")) s->actor.ack_timeout_ms = 600000;
    /* Short queues: what an actor holds unsent is made by an older policy than the learner's, and
     * the defaults (64 batches of 64, 8 in flight) let each actor run ~4,600 transitions ahead of
     * what the learner had seen. So: a batch per env step, 2 in flight, 1 waiting. */
    if (!app_setting_is_set(s, "actor.transitions_per_batch")) s->actor.transitions_per_batch = s->actor.num_envs;
    if (!app_setting_is_set(s, "actor.max_in_flight")) s->actor.max_in_flight = 2;
    if (!app_setting_is_set(s, "actor.queue_batches")) s->actor.queue_batches = 1;
  }
  if (s->replay.min_size_to_sample < s->learner.batch_size) s->replay.min_size_to_sample = s->learner.batch_size;
}

static void default_run_dir(app_settings *s) {
  if (s->run.run_dir[0]) return;
  char stamp[32];
  time_t t = time(NULL);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  snprintf(s->run.run_dir, CONFIG_STRING_MAX, "runs/%.64s-%.32s-%s", s->run.task, s->run.algo, stamp);
}

static int write_config(app_settings *s, ember_err *err) {
  char cmd_dir[CONFIG_STRING_MAX];
  snprintf(cmd_dir, sizeof cmd_dir, "%s", s->run.run_dir);
  /* create run_dir (parents included) */
  for (char *p = cmd_dir + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(cmd_dir, 0755);
      *p = '/';
    }
  mkdir(cmd_dir, 0755);
  char path[CONFIG_STRING_MAX + 32];
  snprintf(path, sizeof path, "%s/config.yaml", s->run.run_dir);
  FILE *f = fopen(path, "w");
  if (!f) return ember_fail(err, EMBER_EIO, "cannot write %s", path);
  int rc = config_write_yaml(s->bindings, s->n_bindings, f);
  if (fclose(f) != 0 || rc != 0) return ember_fail(err, EMBER_EIO, "cannot write %s", path);
  return 0;
}

static void fmt_return(char *buf, size_t n, double r) {
  if (isnan(r)) snprintf(buf, n, "   --  ");
  else snprintf(buf, n, "%7.1f", r);
}

/* The latest complete evaluation: "mean +- std (n ep, v<version> at <steps>)". */
static void fmt_eval(char *buf, size_t n, const learner_progress *p) {
  if (!p->eval_version) {
    snprintf(buf, n, "   --  ");
    return;
  }
  snprintf(buf, n, "%7.1f +- %.1f (%u ep, v%llu at %.0f steps)", p->eval_return, p->eval_std, p->eval_n,
           (unsigned long long)p->eval_version, p->eval_env_steps);
}

static void print_progress(const learner_progress *p, uint64_t steps, double wall) {
  char tr[32], ev[128], eta[32] = "--";
  fmt_return(tr, sizeof tr, p->train_return);
  fmt_eval(ev, sizeof ev, p);
  if (steps > 0 && p->env_steps_per_s > 0 && p->env_steps < steps) {
    double s = (double)(steps - p->env_steps) / p->env_steps_per_s;
    snprintf(eta, sizeof eta, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
  } else if (p->env_steps >= steps && steps > 0) {
    snprintf(eta, sizeof eta, "0s");
  }
  printf("[%6.0fs] env steps %7llu/%llu (%3.0f%%)  train return %s  eval return %s  updates %7llu "
         "(%5.0f/s)  ETA %s\n",
         wall, (unsigned long long)p->env_steps, (unsigned long long)steps,
         steps ? 100.0 * (double)p->env_steps / (double)steps : 0.0, tr, ev, (unsigned long long)p->updates,
         p->updates_per_s, eta);
  fflush(stdout);
}

int app_train(int argc, char **argv) {
  app_settings s;
  app_flags flags;
  ember_err err = {0};
  bool help = false, deterministic = false;
  int rc = 1;
  for (int i = 2; i < argc; i++) /* our own flag; the shared parser must not see it */
    if (strcmp(argv[i], "--deterministic") == 0) {
      deterministic = true;
      for (int j = i; j + 1 <= argc; j++) argv[j] = argv[j + 1];
      argc--;
      break;
    }
  if (app_settings_init(&s, &err) != 0) {
    fprintf(stderr, "ember train: %s\n", err.msg);
    return 2;
  }
  if (app_flags_parse(argc, argv, 2, &flags, &help, &err) != 0 || help) {
    if (!help) fprintf(stderr, "ember train: %s\n", err.msg);
    usage(help ? stdout : stderr);
    app_flags_free(&flags);
    app_settings_free(&s);
    return help ? 0 : 2;
  }
  if (app_settings_load(&s, &flags, environ, &err) != 0) {
    fprintf(stderr, "ember train: %s\n", err.msg);
    app_flags_free(&flags);
    app_settings_free(&s);
    return 2;
  }
  log_level level = LOG_WARN;
  if (log_parse_level(s.train.log_level, &level) != 0) {
    fprintf(stderr, "ember train: train.log_level '%s' is not debug, info, warn, error or off\n", s.train.log_level);
    goto out_flags;
  }
  app_setup_logging(level);
  embed(&s);
  default_run_dir(&s);
  if (replay_config_validate(&s.replay, &err) != 0 || write_config(&s, &err) != 0) {
    fprintf(stderr, "ember train: %s\n", err.msg);
    goto out_flags;
  }

  void *zmq = zmq_ctx_new();
  metrics_registry *metrics = metrics_new();
  http_server *http = NULL;
  replay_server *replay = NULL;
  det_source *det = NULL;
  learner_slot ls = {0};
  if (deterministic) s.train.actors = 0; /* the one actor lives in the learner's thread */
  /* the training actors, ids 1..N (actor.id 0), then the evaluator (id N + 1): an actor of role eval
   * with envs of its own, so evaluations neither slow the training actors nor change their data */
  const int64_t n_threads = s.train.actors + (!deterministic && s.train.evaluator ? 1 : 0);
  actor_slot *actors = calloc((size_t)n_threads + 1, sizeof *actors);
  pthread_t replay_tid, learner_tid;
  bool replay_started = false, learner_started = false;
  if (!zmq || !metrics || !actors) {
    fprintf(stderr, "ember train: out of memory\n");
    goto out;
  }
  if (!deterministic && !(replay = replay_server_new(&s.replay, zmq, metrics, &err))) {
    fprintf(stderr, "ember train: replay: %s\n", err.msg);
    goto out;
  }
  if (!(ls.learner = learner_new(&s.run, &s.learner, app_algo_settings(&s), zmq, metrics, &err))) {
    fprintf(stderr, "ember train: learner: %s\n", err.msg);
    goto out;
  }
  if (deterministic) {
    learner_source src;
    if (!(det = det_source_new(&s, ls.learner, &err))) {
      fprintf(stderr, "ember train: --deterministic: %s\n", err.msg);
      goto out;
    }
    det_source_attach(det, &src);
    if (learner_set_source(ls.learner, &src, &err) != 0) {
      fprintf(stderr, "ember train: %s\n", err.msg);
      goto out;
    }
  }
  /* resume before anything runs, so a checkpoint this run cannot take stops it at once */
  int resumed = 0;
  if (learner_resume(ls.learner, &resumed, &err) != 0) {
    fprintf(stderr, "ember train: learner: %s\n", err.msg);
    goto out;
  }
  if (resumed) {
    learner_progress rp;
    learner_get_progress(ls.learner, &rp);
    printf("ember train: resumed: parameter version %llu, %llu updates, %llu env steps (checkpoints in %s)\n",
           (unsigned long long)rp.version, (unsigned long long)rp.updates, (unsigned long long)rp.env_steps,
           s.learner.checkpoint_dir[0] ? s.learner.checkpoint_dir : "run_dir/checkpoints");
  }
  for (int64_t i = 0; i < n_threads; i++) {
    actor_config ac = s.actor;
    ac.id = (s.actor.id ? s.actor.id : 1) + i; /* actor.id 0 = ids 1..N here */
    snprintf(ac.role, sizeof ac.role, "%s", i < s.train.actors ? "train" : "eval");
    if (!(actors[i].actor = actor_new(&ac, zmq, metrics, &err))) {
      fprintf(stderr, "ember train: %s %lld: %s\n", i < s.train.actors ? "actor" : "evaluator", (long long)ac.id,
              err.msg);
      goto out;
    }
  }
  char evaluations[160] = "no evaluations";
  if (s.train.evaluator)
    snprintf(evaluations, sizeof evaluations, "evaluations of %lld episodes every %lld steps",
             (long long)s.actor.eval_episodes, (long long)s.actor.eval_every_steps);
  char noise[96] = "";
  if (s.actor.ctrl_noise_std > 0)
    snprintf(noise, sizeof noise, " with control noise sd %g half ranges", s.actor.ctrl_noise_std);
  printf("ember train: %s on %s%s, %lld env steps, %lld actors x %lld envs%s, batch %lld, %s; run dir %s\n",
         s.run.algo, s.run.task, noise, (long long)s.run.steps, deterministic ? 1 : (long long)s.train.actors,
         (long long)s.actor.num_envs, deterministic ? " (deterministic, one thread)" : "",
         (long long)s.learner.batch_size, evaluations, s.run.run_dir);
  fflush(stdout);

  if (s.metrics.train_port >= 0) { /* every component's metrics, one endpoint */
    if (!(http = http_server_start(metrics, s.metrics.address, (int)s.metrics.train_port, &err))) {
      fprintf(stderr, "ember train: metrics endpoint: %s\n", err.msg);
      goto out;
    }
    printf("ember train: metrics at http://%s:%d/metrics\n", s.metrics.address, http_server_port(http));
  }

  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  replay_started = !deterministic && pthread_create(&replay_tid, NULL, replay_thread, replay) == 0;
  learner_started = (replay_started || deterministic) && pthread_create(&learner_tid, NULL, learner_thread, &ls) == 0;
  for (int64_t i = 0; learner_started && i < n_threads; i++)
    actors[i].started = pthread_create(&actors[i].thread, NULL, actor_thread, &actors[i]) == 0;

  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  double last_print = 0, stopping_at = 0;
  learner_progress p = {0};
  while (learner_started) {
    usleep(100 * 1000);
    learner_get_progress(ls.learner, &p);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    double wall = (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec);
    if (p.done) break;
    /* Every actor stopped by itself (actor.max_env_steps): nothing more will be stored, so the
     * learner may wait forever for run.steps; stop it once it has seen the last inserts. */
    bool all_finished = s.train.actors > 0;
    for (int64_t i = 0; i < s.train.actors; i++) all_finished = all_finished && atomic_load(&actors[i].finished);
    if (all_finished && !stopping_at) stopping_at = wall + 2.0 * s.learner.stats_interval_s + 0.5;
    if (stopping_at && wall >= stopping_at) learner_stop(ls.learner);
    if (atomic_load(&g_interrupted)) {
      printf("ember train: interrupted; stopping\n");
      learner_stop(ls.learner);
      atomic_store(&g_interrupted, 0);
    }
    if (s.train.progress_interval_s > 0 && wall - last_print >= s.train.progress_interval_s) {
      print_progress(&p, (uint64_t)s.run.steps, wall);
      last_print = wall;
    }
  }
  rc = 0;
out:
  if (learner_started) {
    learner_stop(ls.learner);
    pthread_join(learner_tid, NULL);
    if (ls.rc) {
      fprintf(stderr, "ember train: learner: %s\n", ls.err.msg);
      rc = 1;
    }
  }
  for (int64_t i = 0; actors && i < n_threads; i++)
    if (actors[i].started) actor_stop(actors[i].actor);
  for (int64_t i = 0; actors && i < n_threads; i++)
    if (actors[i].started) pthread_join(actors[i].thread, NULL);
  if (replay_started) {
    replay_server_stop(replay);
    pthread_join(replay_tid, NULL);
  }
  if (learner_started && !ls.rc && s.train.evaluator && !deterministic && s.run.steps > 0) {
    learner_get_progress(ls.learner, &p);
    if (p.env_steps >= (uint64_t)s.run.steps && !p.stopped_at_return && !atomic_load(&g_interrupted_once))
      final_evaluation(&s, ls.learner, (s.actor.id ? s.actor.id : 1) + s.train.actors + 1);
  }
  if (learner_started) {
    learner_get_progress(ls.learner, &p);
    print_progress(&p, (uint64_t)s.run.steps, p.wall_s);
    char ev[128];
    fmt_eval(ev, sizeof ev, &p);
    if (p.stopped_at_return)
      printf("ember train: stopped: an evaluation reached learner.stop_at_return %g\n", s.learner.stop_at_return);
    printf("ember train: done: %llu env steps, %llu updates, %llu parameter versions, %llu evaluations, latest %s; "
           "curves in %s/curves.csv and %s/evals.csv\n",
           (unsigned long long)p.env_steps, (unsigned long long)p.updates, (unsigned long long)p.version,
           (unsigned long long)p.evaluations, ev, s.run.run_dir, s.run.run_dir);
  }
  http_server_stop(&http);
  for (int64_t i = 0; actors && i < n_threads; i++) actor_destroy(&actors[i].actor);
  free(actors);
  learner_destroy(&ls.learner);
  det_source_destroy(&det);
  replay_server_destroy(&replay);
  metrics_destroy(&metrics);
  if (zmq) zmq_ctx_term(zmq);
out_flags:
  app_flags_free(&flags);
  app_settings_free(&s);
  return rc;
}

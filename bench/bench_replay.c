/* bench_replay: what the replay server costs over plain ZeroMQ, on tcp loopback.
 *
 *   1. zmq_raw: 4 processes PUSH the same encoded 64-transition HalfCheetah batches (obs 17, act 6)
 *      to one PULL that only counts them: the ceiling.
 *   2. replay: 4 processes insert the same batches through replay_insert_client (credits, acks)
 *      into a replay server (a thread of this process, tcp loopback) while a fifth process samples
 *      batches of 256 with prefetch, all at the same time.
 *   3. memory: bytes the table allocates for 1M HalfCheetah transitions vs the raw bytes.
 *
 * Prints `BENCH <name> <value> <unit>` lines and asserts nothing about time.
 * Usage: bench_replay [seconds per phase, 2] [all|raw|replay] [learner pace, transitions/s, 1.25e6] [rounds, 3]
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "metrics.h"
#include "net.h"
#include "replay_client.h"
#include "replay_server.h"
#include "replay_snapshot.h"
#include "replay_table.h"
#include "rng.h"

#define OBS 17
#define ACT 6
#define BATCH 64
#define SAMPLE_BATCH 256
#define INSERTERS 4

static volatile sig_atomic_t stop_flag;
static void on_term(int sig) { (void)sig, stop_flag = 1; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
  nanosleep(&ts, NULL);
}

/* A free loopback port (bound and released; the server binds it right after). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    perror("free_port");
    exit(1);
  }
  close(fd);
  return ntohs(a.sin_port);
}

/* One HalfCheetah-sized batch with plausible values. The arrays are static: one per process. */
static float obs[BATCH * OBS], next_obs[BATCH * OBS], act[BATCH * ACT], rew[BATCH], logp[BATCH];
static protobuf_c_boolean term[BATCH], trunc_[BATCH];
static void make_batch(Ember__TransitionBatch *b, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST);
  rng_normal_fill(&r, obs, BATCH * OBS);
  rng_normal_fill(&r, next_obs, BATCH * OBS);
  rng_normal_fill(&r, act, BATCH * ACT);
  for (int i = 0; i < BATCH * ACT; i++) act[i] = tanhf(act[i]); /* the policy's scale: the server refuses others */
  rng_normal_fill(&r, rew, BATCH);
  rng_normal_fill(&r, logp, BATCH);
  for (int i = 0; i < BATCH; i++) term[i] = 0, trunc_[i] = i == BATCH - 1;
  ember__transition_batch__init(b);
  b->task = "half_cheetah";
  b->obs_dim = OBS, b->act_dim = ACT, b->count = BATCH, b->policy_version = 1;
  b->n_obs = b->n_next_obs = BATCH * OBS, b->obs = obs, b->next_obs = next_obs;
  b->n_action = BATCH * ACT, b->action = act;
  b->n_reward = b->n_behaviour_log_prob = b->n_terminated = b->n_truncated = BATCH;
  b->reward = rew, b->behaviour_log_prob = logp, b->terminated = term, b->truncated = trunc_;
}

/* The load generators (PUSH processes, insert clients, the sampling learner) run at this nice value
 * in both phases, the server side (the PULL receiver, the replay server's threads) at 0. In a
 * deployment actors and learner have cores of their own; on a 2-core host they share the server's,
 * and CFS would give each of their ~10 threads the same share as each server thread. Nice 5 stands
 * for "the server is not starved by its own clients" without starving them: the raw ceiling does not
 * fall with it (docs/benchmarks.md). EMBER_BENCH_CLIENT_NICE overrides; 0 = all equal. */
static int client_nice = 5;

static pid_t spawn(int (*fn)(const char *, int), const char *endpoint, int id) {
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGTERM, on_term);
    if (client_nice != 0 && setpriority(PRIO_PROCESS, 0, client_nice) != 0) perror("bench_replay: setpriority");
    _exit(fn(endpoint, id));
  }
  return pid;
}

static void stop_all(pid_t *pids, int n) {
  for (int i = 0; i < n; i++) kill(pids[i], SIGTERM);
  for (int i = 0; i < n; i++) waitpid(pids[i], NULL, 0);
}

/* ---- phase 1: raw ZeroMQ --------------------------------------------------------------------- */

static int raw_pusher(const char *endpoint, int id) {
  void *ctx = zmq_ctx_new();
  void *push = zmq_socket(ctx, ZMQ_PUSH);
  int zero = 0;
  zmq_setsockopt(push, ZMQ_LINGER, &zero, sizeof zero);
  zmq_connect(push, endpoint);
  Ember__TransitionBatch b;
  make_batch(&b, (uint64_t)id);
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.schema_version = EMBER_SCHEMA_VERSION;
  env.body_case = EMBER__ENVELOPE__BODY_TRANSITION_BATCH;
  env.transition_batch = &b;
  size_t n = ember__envelope__get_packed_size(&env);
  uint8_t *buf = malloc(n);
  ember__envelope__pack(&env, buf);
  while (!stop_flag) zmq_send(push, buf, n, 0);
  free(buf);
  zmq_close(push);
  zmq_ctx_term(ctx);
  return 0;
}

static double bench_raw(double seconds, size_t *msg_bytes) {
  char ep[64];
  snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", free_port());
  void *ctx = zmq_ctx_new();
  void *pull = zmq_socket(ctx, ZMQ_PULL);
  zmq_bind(pull, ep);
  pid_t pids[INSERTERS];
  for (int i = 0; i < INSERTERS; i++) pids[i] = spawn(raw_pusher, ep, i + 1);
  zmq_msg_t m;
  zmq_msg_init(&m);
  double warm_end = now_s() + 0.5, t0 = 0, t1;
  long count = 0;
  for (;;) {
    if (zmq_msg_recv(&m, pull, 0) < 0) continue;
    *msg_bytes = zmq_msg_size(&m);
    double t = now_s();
    if (t0 == 0) {
      if (t >= warm_end) t0 = t;
      continue;
    }
    count++;
    if (t - t0 >= seconds) {
      t1 = t;
      break;
    }
  }
  zmq_msg_close(&m);
  stop_all(pids, INSERTERS);
  zmq_close(pull);
  zmq_ctx_term(ctx);
  return (double)count * BATCH / (t1 - t0);
}

/* ---- phase 2: the replay server -------------------------------------------------------------- */

static int inserter(const char *endpoint, int id) {
  void *ctx = zmq_ctx_new();
  ember_err err = {0};
  replay_insert_opts o = {.endpoint = endpoint, .actor_id = (uint64_t)id, .max_in_flight = 64};
  replay_insert_client *c = replay_insert_client_new(ctx, &o, &err);
  if (!c) return 1;
  Ember__TransitionBatch b;
  make_batch(&b, (uint64_t)id);
  replay_insert_stats st;
  /* An actor never waits on the socket: it sends when it has credit and otherwise gets on with its
   * environments (here: a short nap), reading the acks that arrived meanwhile in one go. */
  while (!stop_flag) {
    replay_insert_client_stats(c, &st);
    if (st.queued == 0) {
      replay_insert_client_send(c, &b, &err); /* only with credit: no drops */
    } else {
      sleep_s(0.0002);
      replay_insert_client_poll(c, 0);
    }
  }
  replay_insert_client_destroy(&c);
  zmq_ctx_term(ctx);
  return 0;
}

static double sample_target; /* transitions/s the sampler paces itself to (0 = as fast as it can) */

/* The learner: batches of 256 with prefetch. A real learner computes between batches; here it is
 * paced to sample_target so the figure says what the server serves *while* inserting at full speed,
 * rather than letting an infinitely fast learner take all the CPU. */
static int sampler(const char *endpoint, int id) {
  (void)id;
  void *ctx = zmq_ctx_new();
  ember_err err = {0};
  replay_sample_opts o = {.endpoint = endpoint, .batch_size = SAMPLE_BATCH, .prefetch = 8};
  replay_sample_client *c = replay_sample_client_new(ctx, &o, &err);
  if (!c) return 1;
  double checksum = 0, got = 0, t0 = now_s();
  while (!stop_flag) {
    const Ember__SampleBatch *b = NULL;
    if (sample_target > 0 && got > (now_s() - t0) * sample_target) {
      sleep_s(0.0002);
      continue;
    }
    if (replay_sample_client_next(c, 100, &b, &err) == 0) {
      checksum += b->transitions->reward[0];
      got += b->transitions->count;
    }
  }
  replay_sample_client_destroy(&c);
  zmq_ctx_term(ctx);
  return isfinite(checksum) ? 0 : 2;
}

typedef struct {
  replay_server *server;
  pid_t tid;
} server_arg;

/* The scheduler's view of a thread: seconds on a CPU and seconds runnable but waiting for one. */
static void sched_s(pid_t tid, double *on_cpu_s, double *waiting_s) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)tid);
  FILE *f = fopen(path, "r");
  unsigned long long on_cpu = 0, waiting = 0;
  if (f) {
    if (fscanf(f, "%llu %llu", &on_cpu, &waiting) != 2) on_cpu = waiting = 0;
    fclose(f);
  }
  *on_cpu_s = (double)on_cpu * 1e-9;
  *waiting_s = (double)waiting * 1e-9;
}

/* The server's sample thread (named "replay-sample" by the server), or 0. */
static pid_t find_thread(const char *name) {
  char path[300], comm[32];
  for (int tries = 0; tries < 100; tries++) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
      FILE *f = fopen(path, "r");
      if (!f) continue;
      int ok = fgets(comm, sizeof comm, f) != NULL;
      fclose(f);
      comm[strcspn(comm, "\n")] = 0;
      if (ok && strcmp(comm, name) == 0) {
        pid_t tid = (pid_t)atoi(e->d_name);
        closedir(d);
        return tid;
      }
    }
    if (d) closedir(d);
    sleep_s(0.01);
  }
  return 0;
}

static void *server_thread(void *arg) {
  server_arg *a = arg;
  a->tid = gettid();
  replay_server_run(a->server);
  return NULL;
}

static double server_cpu_share;  /* the server threads' CPU time / wall time in the last window */
static double server_wait_share; /* their time runnable but waiting for a CPU / wall time */

static void bench_replay(double seconds, double *insert_rate, double *sample_rate) {
  const int inserters = INSERTERS;
  char iep[64], sep[64];
  snprintf(iep, sizeof iep, "tcp://127.0.0.1:%d", free_port());
  snprintf(sep, sizeof sep, "tcp://127.0.0.1:%d", free_port());
  pid_t pids[INSERTERS + 1];
  for (int i = 0; i < inserters; i++) pids[i] = spawn(inserter, iep, i + 1);
  pids[inserters] = spawn(sampler, sep, 0);

  replay_config cfg;
  config_binding bind = {&replay_config_section, &cfg, NULL};
  config_defaults(&bind, 1, NULL);
  snprintf(cfg.insert_endpoint, sizeof cfg.insert_endpoint, "%s", iep);
  snprintf(cfg.sample_endpoint, sizeof cfg.sample_endpoint, "%s", sep);
  cfg.capacity = 1000000;
  cfg.min_size_to_sample = 1000;
  cfg.log_interval_s = 0;
  void *ctx = zmq_ctx_new();
  metrics_registry *reg = metrics_new();
  ember_err err = {0};
  server_arg a = {replay_server_new(&cfg, ctx, reg, &err), 0};
  if (!a.server) {
    fprintf(stderr, "bench_replay: %s\n", err.msg);
    exit(1);
  }
  pthread_t th;
  pthread_create(&th, NULL, server_thread, &a);
  metric *ins = metrics_counter(reg, "replay_inserted_transitions_total", NULL, NULL);
  metric *smp = metrics_counter(reg, "replay_sampled_transitions_total", NULL, NULL);
  sleep_s(0.5);
  pid_t sample_tid = find_thread("replay-sample");
  double ic0, iw0, sc0, sw0, ic1, iw1, sc1, sw1;
  sched_s(a.tid, &ic0, &iw0);
  sched_s(sample_tid, &sc0, &sw0);
  double i0 = metric_value(ins), s0 = metric_value(smp), t0 = now_s();
  sleep_s(seconds);
  double i1 = metric_value(ins), s1 = metric_value(smp), t1 = now_s();
  sched_s(a.tid, &ic1, &iw1);
  sched_s(sample_tid, &sc1, &sw1);
  /* both server threads together (insert + sample): CPU and run-queue wait per wall second */
  server_cpu_share = (ic1 - ic0 + sc1 - sc0) / (t1 - t0);
  server_wait_share = (iw1 - iw0 + sw1 - sw0) / (t1 - t0);
  *insert_rate = (i1 - i0) / (t1 - t0);
  *sample_rate = (s1 - s0) / (t1 - t0);
  stop_all(pids, inserters + 1);
  replay_server_stop(a.server);
  pthread_join(th, NULL);
  replay_server_destroy(&a.server);
  metrics_destroy(&reg);
  zmq_ctx_term(ctx);
}

/* ---- phase 3: memory ------------------------------------------------------------------------- */

static double memory_ratio(replay_sampler sampler_kind) {
  replay_spec spec = {.task = "half_cheetah", .obs_dim = OBS, .act_dim = ACT};
  replay_table_opts o = {.capacity = 1000000, .sampler = sampler_kind, .alpha = 0.6, .beta = 0.4, .spec = &spec};
  replay_table *t = replay_table_new(&o, NULL);
  double raw = 1e6 * (double)replay_table_raw_bytes_per_item(t);
  double ratio = (double)replay_table_memory_bytes(t) / raw;
  replay_table_destroy(&t);
  return ratio;
}

/* ---- phase 4: snapshot write and restore of a full 1M-transition table ---------------------- */

static void bench_snapshot(double *write_s, double *load_s, double *mb, double *ratio) {
  replay_spec spec = {.task = "half_cheetah", .obs_dim = OBS, .act_dim = ACT};
  replay_table_opts o = {.capacity = 1000000, .sampler = REPLAY_SAMPLER_PRIORITIZED, .alpha = 0.6, .beta = 0.4,
                         .spec = &spec};
  replay_table *t = replay_table_new(&o, NULL), *u = replay_table_new(&o, NULL);
  Ember__TransitionBatch b;
  for (int i = 0; i < 1000000 / BATCH + 1; i++) {
    make_batch(&b, (uint64_t)i); /* random rows: a fair test for the compressor */
    replay_table_insert(t, &b, NULL);
  }
  char dir[] = "/tmp/ember-bench-replay-XXXXXX", path[4096], cmd[128];
  if (!mkdtemp(dir)) return;
  replay_snapshot_meta meta = {.sequence = 1};
  ember_err err = {0};
  double t0 = now_s();
  if (replay_snapshot_write(dir, t, &meta, 1, path, sizeof path, &err) != 0) fprintf(stderr, "%s\n", err.msg);
  double t1 = now_s();
  replay_snapshot_info info = {0};
  if (replay_snapshot_load(path, u, &info, &err) != 0) fprintf(stderr, "%s\n", err.msg);
  double t2 = now_s();
  *write_s = t1 - t0, *load_s = t2 - t1;
  *mb = (double)info.payload_bytes / 1e6;
  *ratio = info.payload_bytes ? (double)info.compressed_bytes / (double)info.payload_bytes : 0;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  replay_table_destroy(&t);
  replay_table_destroy(&u);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#define MAX_REPS 9

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 2.0;
  if (!(seconds > 0)) seconds = 2.0;
  const char *only = argc > 2 ? argv[2] : "all"; /* "raw" or "replay": one phase (for profiling) */
  double target = argc > 3 ? atof(argv[3]) : 1.25e6;
  int reps = argc > 4 ? atoi(argv[4]) : 3;
  if (reps < 1) reps = 1;
  if (reps > MAX_REPS) reps = MAX_REPS;
  log_set_level(LOG_WARN);
  if (getenv("EMBER_BENCH_CLIENT_NICE")) client_nice = atoi(getenv("EMBER_BENCH_CLIENT_NICE"));
  size_t msg_bytes = 0;
  /* The phases alternate and repeat, and the figures are medians: on a shared host the load drifts,
   * and a ratio of two numbers measured minutes apart would measure the drift. */
  double raw[MAX_REPS] = {0}, ins[MAX_REPS] = {0}, smp[MAX_REPS] = {0}, ratio[MAX_REPS] = {0};
  double ins_free[MAX_REPS] = {0}, smp_free[MAX_REPS] = {0}, cpu[MAX_REPS] = {0}, per_cpu[MAX_REPS] = {0};
  double wait[MAX_REPS] = {0};
  for (int r = 0; r < reps; r++) {
    if (strcmp(only, "replay") != 0) raw[r] = bench_raw(seconds, &msg_bytes);
    if (strcmp(only, "raw") != 0) {
      sample_target = target;
      bench_replay(seconds, &ins[r], &smp[r]);
      cpu[r] = server_cpu_share;
      wait[r] = server_wait_share;
      per_cpu[r] = cpu[r] > 0 ? (ins[r] + smp[r]) / cpu[r] : 0;
      sample_target = 0;
      bench_replay(seconds, &ins_free[r], &smp_free[r]);
    }
    ratio[r] = raw[r] > 0 ? ins[r] / raw[r] : 0;
  }
  FILE *la = fopen("/proc/loadavg", "r");
  double load = 0;
  if (la && fscanf(la, "%lf", &load) != 1) load = 0;
  if (la) fclose(la);
  printf("BENCH zmq_raw_transitions_per_s %.0f transitions/s (%d PUSH processes, %zu-byte messages of %d; median of %d; "
         "clients at nice %d)\n", median(raw, reps), INSERTERS, msg_bytes, BATCH, reps, client_nice);
  printf("BENCH replay_insert_transitions_per_s %.0f transitions/s (%d insert clients, %d per batch, acked)\n",
         median(ins, reps), INSERTERS, BATCH);
  printf("BENCH replay_sample_transitions_per_s %.0f transitions/s (batch %d, prefetch 8, learner paced at %.0f/s, "
         "concurrent with the inserts above)\n", median(smp, reps), SAMPLE_BATCH, target);
  printf("BENCH replay_insert_vs_raw_zmq %.3f ratio (median of the per-round ratios)\n", median(ratio, reps));
  printf("BENCH replay_sample_unpaced_transitions_per_s %.0f transitions/s (learner as fast as it can; inserts "
         "meanwhile %.0f/s)\n", median(smp_free, reps), median(ins_free, reps));
  printf("BENCH replay_server_threads_cpu_share %.2f cores (insert + sample threads' CPU time / wall time, paced "
         "run)\n", median(cpu, reps));
  printf("BENCH replay_server_threads_runqueue_wait_share %.2f (time they were runnable but had no CPU / wall "
         "time, paced run)\n", median(wait, reps));
  printf("BENCH replay_server_transitions_per_cpu_s %.0f transitions (inserted + sampled per second of server-thread "
         "CPU: what one dedicated core would serve)\n", median(per_cpu, reps));
  printf("BENCH host_load_average %.2f (1-minute, %ld cores online)\n", load, sysconf(_SC_NPROCESSORS_ONLN));
  printf("BENCH replay_memory_vs_raw_uniform %.4f ratio (1M transitions, obs %d act %d)\n",
         memory_ratio(REPLAY_SAMPLER_UNIFORM), OBS, ACT);
  printf("BENCH replay_memory_vs_raw_prioritized %.4f ratio\n", memory_ratio(REPLAY_SAMPLER_PRIORITIZED));
  if (strcmp(only, "all") == 0) {
    double ws = 0, ls = 0, mb = 0, cr = 0;
    bench_snapshot(&ws, &ls, &mb, &cr);
    printf("BENCH replay_snapshot_write_s %.2f s (1M HalfCheetah transitions, %.0f MB, zstd level 1, "
           "compressed to %.2f; verify + load: %.2f s)\n", ws, mb, cr, ls);
  }
  return 0;
}

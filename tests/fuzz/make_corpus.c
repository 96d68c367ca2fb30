/* make_corpus.c: writes the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/), every file made
 * by ember's own code, so the fuzzer starts from inputs that pass each decoder and reach the checks
 * behind it instead of spending its time discovering the format.
 *
 *   make_corpus OUT_DIR      (tests/fuzz/run.sh --corpus runs it; the result is committed)
 *
 * A few small files per target (a few KB at most): valid messages of each body, a few near misses
 * (another schema version, a length that does not match), a config.yaml, snapshots of a small
 * table (uniform, prioritized and wrapped, empty), a learner checkpoint of a tiny SAC run on pendulum
 * (the file, and its uncompressed payload for fuzz_checkpoint's payload path), Params of a small
 * policy. The output is the same on every run (fixed seeds), apart from the snapshots' and the
 * checkpoint's wall-clock fields. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>
#include <zstd.h>

#include "learner.h"
#include "log.h"
#include "net.h"
#include "policy_params_fixture.h"
#include "replay_snapshot.h"
#include "replay_table.h"
#include "rng.h"
#include "settings.h"

static const char *out_root;

static void die(const char *what, const char *why) {
  fprintf(stderr, "make_corpus: %s: %s\n", what, why);
  exit(1);
}

static void write_file(const char *target, const char *name, const void *data, size_t len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", out_root, target);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) die(path, strerror(errno));
  snprintf(path, sizeof path, "%s/%s/%s", out_root, target, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) die(path, strerror(errno));
  printf("%s/%s (%zu bytes)\n", target, name, len);
}

/* An Envelope of body_case around body, encoded with schema_version (0: the current one). */
static void write_envelope(const char *target, const char *name, Ember__Envelope__BodyCase body_case, void *body,
                           uint32_t schema_version) {
  Ember__Envelope env = EMBER__ENVELOPE__INIT;
  env.body_case = body_case;
  switch (body_case) {
    case EMBER__ENVELOPE__BODY_TRANSITION_BATCH: env.transition_batch = body; break;
    case EMBER__ENVELOPE__BODY_INSERT_ACK: env.insert_ack = body; break;
    case EMBER__ENVELOPE__BODY_PARAMS: env.params = body; break;
    case EMBER__ENVELOPE__BODY_PARAMS_REQUEST: env.params_request = body; break;
    case EMBER__ENVELOPE__BODY_SAMPLE_REQUEST: env.sample_request = body; break;
    case EMBER__ENVELOPE__BODY_SAMPLE_BATCH: env.sample_batch = body; break;
    case EMBER__ENVELOPE__BODY_PRIORITY_UPDATE: env.priority_update = body; break;
    case EMBER__ENVELOPE__BODY_HELLO: env.hello = body; break;
    case EMBER__ENVELOPE__BODY_HEARTBEAT: env.heartbeat = body; break;
    case EMBER__ENVELOPE__BODY_STATS_REQUEST: env.stats_request = body; break;
    case EMBER__ENVELOPE__BODY_STATS: env.stats = body; break;
    case EMBER__ENVELOPE__BODY_EPISODE: env.episode = body; break;
    case EMBER__ENVELOPE__BODY_ERROR: env.error = body; break;
    case EMBER__ENVELOPE__BODY_EVALUATION: env.evaluation = body; break;
    default: die(name, "unknown body");
  }
  uint8_t *buf;
  size_t len;
  ember_err err = {0};
  if (net_encode(&env, &buf, &len, &err) != 0) die(name, err.msg);
  if (schema_version) { /* net_encode stamps the current version: re-pack with the one asked for */
    free(buf);
    env.schema_version = schema_version;
    len = ember__envelope__get_packed_size(&env);
    if (!(buf = malloc(len))) die(name, "out of memory");
    ember__envelope__pack(&env, buf);
  }
  write_file(target, name, buf, len);
  free(buf);
}

/* ---- the replay server's messages ------------------------------------------------------------- */

typedef struct {
  Ember__TransitionBatch b;
  float obs[64], next_obs[64], action[32], reward[16], logp[16];
  protobuf_c_boolean terminated[16], truncated[16];
} batch_buf;

/* count rows of obs_dim x act_dim, values drawn from seed, actions in [-1, 1]. */
static void make_batch(batch_buf *x, const char *task, uint32_t obs_dim, uint32_t act_dim, uint32_t count,
                       uint64_t policy_version, uint64_t seed) {
  memset(x, 0, sizeof *x);
  ember__transition_batch__init(&x->b);
  rng_t r;
  rng_seed(&r, seed, RNG_STREAM_TEST);
  Ember__TransitionBatch *b = &x->b;
  b->task = (char *)task, b->obs_dim = obs_dim, b->act_dim = act_dim, b->count = count;
  b->actor_id = 3, b->sequence = 1 + seed, b->policy_version = policy_version;
  b->n_obs = b->n_next_obs = count * obs_dim, b->obs = x->obs, b->next_obs = x->next_obs;
  b->n_action = count * act_dim, b->action = x->action;
  b->n_reward = b->n_terminated = b->n_truncated = count;
  b->reward = x->reward, b->terminated = x->terminated, b->truncated = x->truncated;
  for (size_t i = 0; i < b->n_obs; i++) x->obs[i] = 4 * rng_uniform_f(&r) - 2, x->next_obs[i] = 4 * rng_uniform_f(&r) - 2;
  for (size_t i = 0; i < b->n_action; i++) x->action[i] = 2 * rng_uniform_f(&r) - 1;
  for (uint32_t i = 0; i < count; i++) x->reward[i] = -rng_uniform_f(&r), x->logp[i] = -rng_uniform_f(&r);
  if (policy_version) b->n_behaviour_log_prob = count, b->behaviour_log_prob = x->logp;
  if (count > 2) x->terminated[count - 1] = 1;
  if (count > 3) x->truncated[count - 2] = 1;
}

static void transition_batches(void) {
  batch_buf x;
  make_batch(&x, "pendulum", 3, 1, 4, 7, 1);
  write_envelope("transition_batch", "pendulum_policy", EMBER__ENVELOPE__BODY_TRANSITION_BATCH, &x.b, 0);
  make_batch(&x, "", 2, 2, 6, 0, 2);
  write_envelope("transition_batch", "random_actions_no_log_prob", EMBER__ENVELOPE__BODY_TRANSITION_BATCH, &x.b, 0);
  make_batch(&x, "pendulum", 3, 1, 2, 7, 3);
  write_envelope("transition_batch", "schema_version_2", EMBER__ENVELOPE__BODY_TRANSITION_BATCH, &x.b, 2);
  make_batch(&x, "pendulum", 3, 1, 3, 7, 4);
  x.b.n_reward = 2; /* a length that does not match count */
  write_envelope("transition_batch", "short_reward", EMBER__ENVELOPE__BODY_TRANSITION_BATCH, &x.b, 0);
}

static void sample_requests(void) {
  Ember__SampleRequest r = EMBER__SAMPLE_REQUEST__INIT;
  r.request_id = 42, r.batch_size = 8;
  write_envelope("sample_request", "batch_8", EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &r, 0);
  r.request_id = 43, r.batch_size = 0;
  write_envelope("sample_request", "batch_0", EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &r, 0);
  r.request_id = 44, r.batch_size = 1u << 20;
  write_envelope("sample_request", "batch_too_large", EMBER__ENVELOPE__BODY_SAMPLE_REQUEST, &r, 0);
}

static void priority_updates(void) {
  uint64_t keys[6] = {8, 9, 15, 23, 3, 100};
  float prios[6] = {0.5f, 2.0f, 0.0f, 1e-3f, 1.0f, 4.0f};
  Ember__PriorityUpdate u = EMBER__PRIORITY_UPDATE__INIT;
  u.n_keys = u.n_priorities = 6, u.keys = keys, u.priorities = prios;
  write_envelope("priority_update", "held_and_stale_keys", EMBER__ENVELOPE__BODY_PRIORITY_UPDATE, &u, 0);
  u.n_priorities = 5;
  write_envelope("priority_update", "fewer_priorities", EMBER__ENVELOPE__BODY_PRIORITY_UPDATE, &u, 0);
}

static void hellos(void) {
  Ember__Hello h = EMBER__HELLO__INIT;
  h.role = "actor", h.id = 5, h.task = "pendulum", h.obs_dim = 3, h.act_dim = 1;
  h.software_version = "0.1.0", h.hostname = "host-\"1\"\n", h.pid = 1234;
  write_envelope("hello", "actor_pendulum", EMBER__ENVELOPE__BODY_HELLO, &h, 0);
  Ember__Hello cli = EMBER__HELLO__INIT;
  cli.role = "cli";
  write_envelope("hello", "cli_no_task", EMBER__ENVELOPE__BODY_HELLO, &cli, 0);
  h.task = "hopper", h.obs_dim = 11, h.act_dim = 3;
  write_envelope("hello", "actor_hopper", EMBER__ENVELOPE__BODY_HELLO, &h, 0);
}

/* ---- the learner's and the actors' messages ---------------------------------------------------- */

static void evaluation_reports(void) {
  double returns[3] = {-150.5, -140.25, -162.0};
  uint32_t lengths[3] = {200, 200, 200};
  protobuf_c_boolean term[3] = {0, 0, 1};
  Ember__EvaluationReport r = EMBER__EVALUATION_REPORT__INIT;
  r.actor_id = 9, r.policy_version = 12, r.env_steps = 3000;
  r.n_returns = r.n_lengths = r.n_terminated = 3;
  r.returns = returns, r.lengths = lengths, r.terminated = term;
  write_envelope("evaluation_report", "three_episodes", EMBER__ENVELOPE__BODY_EVALUATION, &r, 0);
  r.n_lengths = 2;
  write_envelope("evaluation_report", "missing_length", EMBER__ENVELOPE__BODY_EVALUATION, &r, 0);
}

/* Every other body once, for fuzz_envelope. */
static void envelopes(void) {
  Ember__StatsRequest sr = EMBER__STATS_REQUEST__INIT;
  write_envelope("envelope", "stats_request", EMBER__ENVELOPE__BODY_STATS_REQUEST, &sr, 0);
  Ember__Heartbeat hb = EMBER__HEARTBEAT__INIT;
  hb.role = "actor", hb.id = 2, hb.unix_ms = 1796000000000ull, hb.policy_version = 5;
  write_envelope("envelope", "heartbeat", EMBER__ENVELOPE__BODY_HEARTBEAT, &hb, 0);
  Ember__ParamsRequest pr = EMBER__PARAMS_REQUEST__INIT;
  pr.actor_id = 2, pr.have_version = 4;
  write_envelope("envelope", "params_request", EMBER__ENVELOPE__BODY_PARAMS_REQUEST, &pr, 0);
  Ember__EpisodeReport ep = EMBER__EPISODE_REPORT__INIT;
  ep.actor_id = 2, ep.policy_version = 5, ep.episode_return = -1234.5, ep.length = 200, ep.terminated = 1;
  write_envelope("envelope", "episode", EMBER__ENVELOPE__BODY_EPISODE, &ep, 0);
  Ember__InsertAck ack = EMBER__INSERT_ACK__INIT;
  ack.actor_id = 2, ack.sequence = 9, ack.first_sequence = 7, ack.accepted = 300;
  write_envelope("envelope", "insert_ack", EMBER__ENVELOPE__BODY_INSERT_ACK, &ack, 0);
  Ember__ErrorReply er = EMBER__ERROR_REPLY__INIT;
  er.code = 9, er.message = "too_big: message of 70000000 bytes", er.request_id = 44;
  write_envelope("envelope", "error", EMBER__ENVELOPE__BODY_ERROR, &er, 0);
  Ember__Metric m[2] = {EMBER__METRIC__INIT, EMBER__METRIC__INIT};
  Ember__Metric *mp[2] = {&m[0], &m[1]};
  m[0].name = "replay_size", m[0].value = 1000;
  m[1].name = "replay_rejected_total", m[1].value = 3, m[1].labels = "reason=\"nonfinite\"";
  Ember__Stats st = EMBER__STATS__INIT;
  st.role = "replay", st.n_metrics = 2, st.metrics = mp;
  write_envelope("envelope", "stats", EMBER__ENVELOPE__BODY_STATS, &st, 0);
  batch_buf x;
  make_batch(&x, "pendulum", 3, 1, 2, 0, 5);
  x.b.policy_version = x.b.actor_id = 0;
  uint64_t keys[2] = {10, 11}, pv[2] = {4, 5}, aid[2] = {2, 3};
  float w[2] = {1.0f, 0.5f};
  Ember__SampleBatch sb = EMBER__SAMPLE_BATCH__INIT;
  sb.request_id = 42, sb.transitions = &x.b, sb.table_size = 100;
  sb.n_keys = sb.n_weights = sb.n_policy_versions = sb.n_actor_ids = 2;
  sb.keys = keys, sb.weights = w, sb.policy_versions = pv, sb.actor_ids = aid;
  write_envelope("envelope", "sample_batch", EMBER__ENVELOPE__BODY_SAMPLE_BATCH, &sb, 0);
  /* packed by hand: no schema version (net_encode would stamp one), and a version but no body */
  Ember__Envelope bare = EMBER__ENVELOPE__INIT;
  uint8_t buf[16];
  bare.body_case = EMBER__ENVELOPE__BODY_STATS_REQUEST, bare.stats_request = &sr;
  write_file("envelope", "schema_version_0", buf, ember__envelope__pack(&bare, buf));
  bare.body_case = EMBER__ENVELOPE__BODY__NOT_SET, bare.stats_request = NULL, bare.schema_version = 1;
  write_file("envelope", "no_body", buf, ember__envelope__pack(&bare, buf));
}

/* Params of a small policy: as an Envelope (fuzz_params) and alone (fuzz_policy_import). */
static void params(void) {
  static const struct {
    const char *name, *activation;
    int hidden[2], hidden_count;
  } shapes[] = {{"relu_1x8", "relu", {8, 0}, 1}, {"tanh_2x4", "tanh", {4, 4}, 2}, {"elu_linear", "elu", {0, 0}, 0}};
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    params_fixture f;
    fixture_build(&f, "pendulum", 3, 1, shapes[i].hidden, shapes[i].hidden_count, shapes[i].activation, 1 + i,
                  10 + i, 0.5f);
    write_envelope("params", shapes[i].name, EMBER__ENVELOPE__BODY_PARAMS, &f.params, 0);
    size_t len = ember__params__get_packed_size(&f.params);
    uint8_t *buf = malloc(len);
    if (!buf) die("params", "out of memory");
    ember__params__pack(&f.params, buf);
    write_file("policy_import", shapes[i].name, buf, len);
    free(buf);
    fixture_free(&f);
  }
}

/* ---- files -------------------------------------------------------------------------------------- */

static void configs(void) {
  static const char small[] =
      "# a user's file: a few keys of a few sections\n"
      "run:\n  task: pendulum\n  algo: sac\n  steps: 20000\n  seed: 3\n"
      "replay:\n  capacity: 100000\n  sampler: prioritized\n  alpha: 0.6\n  snapshot_dir: \"/tmp/x y\"\n"
      "learner:\n  batch_size: 128\n  publish_every: 50\n"
      "actor:\n  num_envs: 2\n"
      "sac:\n  hidden_size: 64\n";
  write_file("config", "small.yaml", small, sizeof small - 1);
  static const char flow[] = "{run: {task: hopper, algo: vmbpo}, train: {actors: 4, evaluator: false}}\n";
  write_file("config", "flow_style.yaml", flow, sizeof flow - 1);
  static const char bad[] = "replay:\n  capacity: -5\n";
  write_file("config", "out_of_range.yaml", bad, sizeof bad - 1);
  /* every key, as `ember train` writes a run's config.yaml */
  app_settings s;
  ember_err err = {0};
  if (app_settings_init(&s, &err) != 0) die("app_settings_init", err.msg);
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  if (!out || config_write_yaml(s.bindings, s.n_bindings, out) != 0 || fclose(out) != 0)
    die("config_write_yaml", "failed");
  write_file("config", "every_key.yaml", text, len);
  free(text);
  app_settings_free(&s);
}

/* A learner checkpoint's payload (behind its 64-byte header, zstd) rewritten as format 1, which the
 * learner still reads: the identity (its format field set to 1), the counters, the algorithm's state
 * and the Params, without format 2's publication rings (64 KB of zeros that would make the seed 20
 * times larger). fuzz_checkpoint compresses it behind a valid header, so its mutations reach the
 * record reader; the formats' later records are read by the same checkpoint_get. */
static void write_format1_payload(const char *path, const uint8_t *file, size_t len, const char *target,
                                  const char *name) {
  static uint8_t payload[1 << 20], out[1 << 20];
  size_t n = ZSTD_decompress(payload, sizeof payload, file + 64, len - 64), used = 0;
  if (ZSTD_isError(n)) die(path, ZSTD_getErrorName(n));
  static const char *const dropped[] = {"eval_env_steps", "pub_version", "pub_steps", "evaluation", "evaluations",
                                        "evals_bytes"};
  for (size_t at = 0; at < n;) { /* records: u16 name length, name, u64 byte count, bytes */
    uint16_t nl;
    uint64_t bytes;
    memcpy(&nl, payload + at, 2);
    memcpy(&bytes, payload + at + 2 + nl, 8);
    size_t record = 2 + nl + 8 + (size_t)bytes;
    if (at + record > n) die(path, "malformed payload");
    int keep = 1;
    for (size_t i = 0; i < sizeof dropped / sizeof *dropped; i++)
      if (strlen(dropped[i]) == nl && memcmp(payload + at + 2, dropped[i], nl) == 0) keep = 0;
    if (keep) {
      memcpy(out + used, payload + at, record);
      if (nl == 8 && memcmp(payload + at + 2, "identity", 8) == 0) { /* "EMBRLRNR", then u32 format */
        uint32_t one = 1;
        memcpy(out + used + 2 + nl + 8 + 8, &one, 4);
      }
      used += record;
    }
    at += record;
  }
  char pname[256];
  snprintf(pname, sizeof pname, "%s.format1.payload", name);
  write_file(target, pname, out, used);
}

/* Copies the file in dir whose name ends with suffix into the corpus (a checkpoint: also its
 * payload), then removes dir and what is in it. */
static void harvest(const char *dir, const char *suffix, const char *target, const char *name, int payload_too) {
  DIR *d = opendir(dir);
  if (!d) die(dir, strerror(errno));
  char path[4096] = "";
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name), sl = strlen(suffix);
    if (e->d_name[0] != '.' && n > sl && strcmp(e->d_name + n - sl, suffix) == 0)
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
  }
  if (!path[0]) die(dir, "no file written");
  static uint8_t buf[1 << 20];
  FILE *f = fopen(path, "rb");
  if (!f) die(path, strerror(errno));
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  write_file(target, name, buf, len);
  if (payload_too) write_format1_payload(path, buf, len, target, name);
  rewinddir(d);
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

static void snapshot_of(const char *name, replay_sampler sampler, size_t capacity, uint32_t count) {
  char dir[] = "/tmp/ember-corpus-snap-XXXXXX";
  if (!mkdtemp(dir)) die("mkdtemp", strerror(errno));
  replay_spec spec = {.task = "pendulum", .obs_dim = 3, .act_dim = 1};
  replay_table_opts opts = {.capacity = capacity, .sampler = sampler, .alpha = 0.6, .beta = 0.4, .spec = &spec};
  ember_err err = {0};
  replay_table *t = replay_table_new(&opts, &err);
  if (!t) die(name, err.msg);
  if (count) {
    batch_buf x;
    make_batch(&x, "pendulum", 3, 1, count, 7, 6);
    replay_table_insert(t, &x.b, NULL);
    if (sampler == REPLAY_SAMPLER_PRIORITIZED) replay_table_update_priority(t, replay_table_inserts(t) - 1, 3.0f);
  }
  replay_snapshot_meta meta = {.sequence = 1, .created_unix_ms = 1796000000000ull, .samples = 10, .sample_batches = 2,
                               .insert_batches = 1};
  if (replay_snapshot_write(dir, t, &meta, 3, NULL, 0, &err) != 0) die(name, err.msg);
  replay_table_destroy(&t);
  harvest(dir, ".snap", "snapshot", name, 0);
}

/* ---- a learner checkpoint: a tiny SAC on pendulum, two updates from a local source ---------------- */

typedef struct {
  batch_buf x;
  float term[16], trunc[16];
  algo_batch batch;
  uint64_t steps;
} tiny_source;

static int tiny_next(void *ctx, const algo_batch **batch, uint64_t *env_steps, ember_err *err) {
  (void)err;
  tiny_source *s = ctx;
  s->steps += 8;
  *env_steps = s->steps;
  *batch = &s->batch;
  return 0;
}

static void checkpoint(void) {
  char dir[] = "/tmp/ember-corpus-ckpt-XXXXXX";
  if (!mkdtemp(dir)) die("mkdtemp", strerror(errno));
  app_settings s;
  ember_err err = {0};
  if (app_settings_init(&s, &err) != 0) die("app_settings_init", err.msg);
  char ckdir[512];
  snprintf(ckdir, sizeof ckdir, "learner.checkpoint_dir=%s", dir);
  const char *sets[] = {"run.task=pendulum", "run.algo=sac", "run.steps=0", "sac.hidden_size=4",
                        "learner.batch_size=8", "learner.publish_every=1", "learner.max_updates=2",
                        "learner.params_endpoint=inproc://corpus-params", "learner.control_endpoint=inproc://corpus-control",
                        "learner.replay_endpoint=inproc://corpus-replay", "learner.checkpoint_keep=1",
                        "learner.log_interval_s=0", "learner.csv_interval_s=0", ckdir};
  for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
    const char *eq = strchr(sets[i], '=');
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
    if (config_set(s.bindings, s.n_bindings, key, eq + 1, "make_corpus", &err) != 0) die(sets[i], err.msg);
  }
  void *zmq = zmq_ctx_new();
  learner_t *l = learner_new(&s.run, &s.learner, app_algo_settings(&s), zmq, NULL, &err);
  if (!l) die("learner_new", err.msg);
  static tiny_source src;
  make_batch(&src.x, "pendulum", 3, 1, 8, 0, 7);
  for (int i = 0; i < 8; i++) src.term[i] = src.x.terminated[i], src.trunc[i] = src.x.truncated[i];
  src.batch = (algo_batch){.size = 8, .obs_dim = 3, .act_dim = 1, .obs = src.x.obs, .action = src.x.action,
                           .reward = src.x.reward, .next_obs = src.x.next_obs, .terminated = src.term,
                           .truncated = src.trunc};
  learner_source ls = {.ctx = &src, .next = tiny_next};
  if (learner_set_source(l, &ls, &err) != 0 || learner_run(l, &err) != 0) die("learner", err.msg);
  learner_destroy(&l);
  zmq_ctx_term(zmq);
  app_settings_free(&s);
  harvest(dir, ".ckpt", "checkpoint", "sac_pendulum_2_updates.ckpt", 1);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: make_corpus OUT_DIR\n");
    return 2;
  }
  out_root = argv[1];
  if (mkdir(out_root, 0755) != 0 && errno != EEXIST) die(out_root, strerror(errno));
  log_set_level(LOG_OFF);
  transition_batches();
  sample_requests();
  priority_updates();
  hellos();
  evaluation_reports();
  envelopes();
  params();
  configs();
  snapshot_of("uniform_3_items.snap", REPLAY_SAMPLER_UNIFORM, 8, 3);
  snapshot_of("prioritized_wrapped.snap", REPLAY_SAMPLER_PRIORITIZED, 4, 6);
  snapshot_of("empty.snap", REPLAY_SAMPLER_UNIFORM, 8, 0);
  checkpoint();
  return 0;
}

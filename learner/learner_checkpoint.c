/* learner_checkpoint.c: the learner's checkpoints (learner.h, "Checkpoints and exact resume"): writing
 * them, resuming from the newest that verifies, and reading a checkpoint's policy alone. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "checkpoint.h"
#include "learner_internal.h"
#include "log.h"
#include "net.h"


#define CKPT_PREFIX "learner"
#define CKPT_FORMAT 3u /* 2: the publications (eval_env_steps across a resume); 3: the latest evaluation, evals.csv */
#define CKPT_FORMAT_OLDEST 1u

typedef struct {
  char magic[8];                 /* "EMBRLRNR" */
  uint32_t format, has_source;
  uint32_t obs_dim, act_dim;
  char algo[64], task[64];
} ckpt_identity;

typedef struct {
  uint64_t updates, version, env_steps, env_base, episodes, eval_episodes, batches_refused;
  uint64_t eval_version, eval_count, stat_rows, csv_bytes;
  double eval_sum, wall_s;
  double train_returns[TRAIN_WINDOW];
  int32_t train_n, train_next;
  double stat_sum[ALGO_MAX_STATS];
  algo_stats stats;
} ckpt_counters;

/* Where each recent version was published, so that evaluations finishing after a resume are still
 * placed at their policy's env steps (curves.csv's eval_env_steps). */
typedef struct {
  double eval_env_steps;
  uint64_t pub_version[PUB_RING], pub_steps[PUB_RING];
  /* format 3 on: the latest complete evaluation (its standard deviation), the evaluations received
   * and evals.csv's length (format 2's evaluation is rebuilt from the counters, std unknown) */
  learner_eval_summary eval;
  uint64_t evaluations, evals_bytes;
} ckpt_publications;

static void identity_of(const learner_t *l, ckpt_identity *id) {
  memset(id, 0, sizeof *id);
  memcpy(id->magic, "EMBRLRNR", 8);
  id->format = CKPT_FORMAT;
  id->has_source = l->has_src;
  id->obs_dim = (uint32_t)l->spec->obs_dim;
  id->act_dim = (uint32_t)l->spec->act_dim;
  snprintf(id->algo, sizeof id->algo, "%.63s", l->ops->name);
  snprintf(id->task, sizeof id->task, "%.63s", l->run.task);
}

/* A variable-length record: its length, then its bytes. */
static int put_blob(FILE *out, const char *name, const void *data, uint64_t n, ember_err *err) {
  char len_name[64];
  snprintf(len_name, sizeof len_name, "%s_bytes", name);
  int rc = checkpoint_put(out, len_name, &n, sizeof n, err);
  return rc ? rc : checkpoint_put(out, name, data, n, err);
}

/* Bytes left to read in a stream of known length (a verified payload, fmemopen'd); -1 if unknown. */
static long bytes_left(FILE *in) {
  long at = ftell(in);
  if (at < 0 || fseek(in, 0, SEEK_END) != 0) return -1;
  long end = ftell(in);
  if (fseek(in, at, SEEK_SET) != 0 || end < at) return -1;
  return end - at;
}

/* Reads a blob into a malloc'd buffer (*data, the caller frees). Its length is checked against what
 * the payload still holds before anything is allocated: a corrupt or crafted record could claim
 * gigabytes (found by tests/fuzz/fuzz_checkpoint: a 3 KB payload claiming 4 GB). */
static int get_blob(FILE *in, const char *name, void **data, uint64_t *n, ember_err *err) {
  char len_name[64];
  snprintf(len_name, sizeof len_name, "%s_bytes", name);
  int rc = checkpoint_get(in, len_name, n, sizeof *n, err);
  if (rc) return rc;
  long left = bytes_left(in);
  if (*n > ((uint64_t)1 << 34) || (left >= 0 && *n > (uint64_t)left))
    return ember_fail(err, EMBER_ECORRUPT, "checkpoint record '%s' claims %llu bytes, the checkpoint holds %ld more",
                      name, (unsigned long long)*n, left);
  if (!(*data = malloc(*n ? *n : 1))) return ember_fail(err, EMBER_ENOMEM, "out of memory reading '%s'", name);
  rc = checkpoint_get(in, name, *data, *n, err);
  if (rc) {
    free(*data);
    *data = NULL;
  }
  return rc;
}

static int ckpt_write(void *ctx, FILE *out, ember_err *err) {
  learner_t *l = ctx;
  ckpt_identity id;
  identity_of(l, &id);
  ckpt_counters c;
  memset(&c, 0, sizeof c);
  c.updates = l->updates, c.version = l->version, c.env_steps = l->env_steps, c.env_base = l->env_base;
  c.episodes = l->episodes, c.eval_episodes = l->eval_episodes, c.batches_refused = l->batches_refused;
  /* the format-2 fields of the latest evaluation, kept so their layout stays the same */
  c.eval_version = l->eval.version, c.eval_count = l->eval.episodes, c.eval_sum = l->eval.mean * l->eval.episodes;
  c.stat_rows = l->stat_rows;
  c.wall_s = learner_now_s() - l->t0;
  memcpy(c.train_returns, l->train_returns, sizeof c.train_returns);
  c.train_n = l->train_n, c.train_next = l->train_next;
  memcpy(c.stat_sum, l->stat_sum, sizeof c.stat_sum);
  c.stats = l->stats;
  if (l->csv) {
    fflush(l->csv);
    struct stat st;
    if (fstat(fileno(l->csv), &st) == 0) c.csv_bytes = (uint64_t)st.st_size;
  }
  uint64_t evals_bytes = 0;
  if (l->evals_csv) {
    fflush(l->evals_csv);
    struct stat st;
    if (fstat(fileno(l->evals_csv), &st) == 0) evals_bytes = (uint64_t)st.st_size;
  }
  int rc = checkpoint_put(out, "identity", &id, sizeof id, err);
  if (!rc) rc = checkpoint_put(out, "counters", &c, sizeof c, err);
  /* the publications (read back into a ckpt_publications) */
  if (!rc) rc = checkpoint_put(out, "eval_env_steps", &l->eval.env_steps, sizeof l->eval.env_steps, err);
  if (!rc) rc = checkpoint_put(out, "pub_version", l->pub_version, sizeof l->pub_version, err);
  if (!rc) rc = checkpoint_put(out, "pub_steps", l->pub_steps, sizeof l->pub_steps, err);
  if (!rc) rc = checkpoint_put(out, "evaluation", &l->eval, sizeof l->eval, err);
  if (!rc) rc = checkpoint_put(out, "evaluations", &l->evaluations, sizeof l->evaluations, err);
  if (!rc) rc = checkpoint_put(out, "evals_bytes", &evals_bytes, sizeof evals_bytes, err);
  if (rc) return rc;

  char *buf = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&buf, &len);
  if (!mem) return ember_fail(err, EMBER_ENOMEM, "checkpoint: no memory for the algorithm state");
  rc = l->ops->save(l->algo, mem, err);
  if (fclose(mem) != 0 && !rc) rc = ember_fail(err, EMBER_EIO, "checkpoint: writing the algorithm state failed");
  if (!rc) rc = put_blob(out, "algo", buf, len, err);
  free(buf);
  if (rc) return rc;

  size_t plen = l->version ? ember__params__get_packed_size(&l->current) : 0;
  uint8_t *pbuf = malloc(plen ? plen : 1);
  if (!pbuf) return ember_fail(err, EMBER_ENOMEM, "checkpoint: no memory for the Params");
  if (plen) ember__params__pack(&l->current, pbuf);
  rc = put_blob(out, "params", pbuf, plen, err);
  free(pbuf);
  if (!rc && l->has_src && l->src.save) rc = l->src.save(l->src.ctx, out, err);
  return rc;
}

static char *dup_str(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* A deep copy of p in the form algo_params_free releases (what export_params makes). */
static int params_copy(const Ember__Params *p, Ember__Params *out) {
  ember__params__init(out);
  out->version = p->version;
  out->learner_updates = p->learner_updates;
  out->env_steps = p->env_steps;
  out->log_std_min = p->log_std_min;
  out->log_std_max = p->log_std_max;
  out->obs_dim = p->obs_dim;
  out->act_dim = p->act_dim;
  out->algorithm = dup_str(p->algorithm);
  out->task = dup_str(p->task);
  out->policy_kind = dup_str(p->policy_kind);
  out->policy_activation = dup_str(p->policy_activation);
  out->tensors = calloc(p->n_tensors ? p->n_tensors : 1, sizeof *out->tensors);
  if (!out->tensors) return EMBER_ENOMEM;
  out->n_tensors = p->n_tensors;
  for (size_t i = 0; i < p->n_tensors; i++) {
    const Ember__Tensor *t = p->tensors[i];
    Ember__Tensor *c = malloc(sizeof *c);
    if (!c) return EMBER_ENOMEM;
    ember__tensor__init(c);
    out->tensors[i] = c;
    c->name = dup_str(t->name);
    c->n_shape = t->n_shape;
    c->shape = malloc((t->n_shape ? t->n_shape : 1) * sizeof *c->shape);
    c->n_data = t->n_data;
    c->data = malloc((t->n_data ? t->n_data : 1) * sizeof *c->data);
    if (!c->shape || !c->data) return EMBER_ENOMEM;
    memcpy(c->shape, t->shape, t->n_shape * sizeof *c->shape);
    memcpy(c->data, t->data, t->n_data * sizeof *c->data);
  }
  return 0;
}

/* The algorithm state, the last Params and (--deterministic) the source's state. */
static int ckpt_read_rest(learner_t *l, FILE *in, ember_err *err) {
  int rc;
  void *buf = NULL;
  uint64_t n = 0;
  if ((rc = get_blob(in, "algo", &buf, &n, err)) != 0) return rc;
  FILE *mem = fmemopen(buf, n ? n : 1, "rb");
  if (!mem) rc = ember_fail(err, EMBER_ENOMEM, "checkpoint: cannot read the algorithm state");
  else rc = l->ops->load(l->algo, mem, err);
  if (mem) fclose(mem);
  free(buf);
  if (rc) return rc;
  if ((rc = get_blob(in, "params", &buf, &n, err)) != 0) return rc;
  algo_params_free(&l->current);
  if (n) {
    Ember__Params *p = ember__params__unpack(NULL, n, buf);
    if (!p) rc = ember_fail(err, EMBER_ECORRUPT, "checkpoint: its Params do not decode");
    else if (params_copy(p, &l->current) != 0) rc = ember_fail(err, EMBER_ENOMEM, "checkpoint: out of memory");
    if (p) ember__params__free_unpacked(p, NULL);
  }
  free(buf);
  if (rc) return rc;
  if (l->has_src && l->src.load && (rc = l->src.load(l->src.ctx, in, err)) != 0) return rc;
  return 0;
}

/* The counters of a checkpoint read whole (pub: NULL for format 1). */
static void ckpt_apply(learner_t *l, const ckpt_counters *c, const ckpt_publications *pub) {
  l->updates = c->updates, l->version = c->version, l->env_steps = c->env_steps, l->env_base = c->env_base;
  l->episodes = c->episodes, l->eval_episodes = c->eval_episodes, l->batches_refused = c->batches_refused;
  l->eval = (learner_eval_summary){.version = c->eval_version, .env_steps = NAN, .std = NAN,
                                   .mean = c->eval_count ? c->eval_sum / (double)c->eval_count : NAN,
                                   .episodes = (uint32_t)c->eval_count};
  l->stat_rows = c->stat_rows;
  l->wall_offset = c->wall_s;
  memcpy(l->train_returns, c->train_returns, sizeof c->train_returns);
  l->train_n = c->train_n < 0 || c->train_n > TRAIN_WINDOW ? 0 : c->train_n;
  l->train_next = c->train_next < 0 || c->train_next >= TRAIN_WINDOW ? 0 : c->train_next;
  memcpy(l->stat_sum, c->stat_sum, sizeof c->stat_sum);
  l->stats = c->stats;
  if (pub) {
    l->eval.env_steps = pub->eval_env_steps;
    memcpy(l->pub_version, pub->pub_version, sizeof l->pub_version);
    memcpy(l->pub_steps, pub->pub_steps, sizeof l->pub_steps);
  }
  uint64_t evals_bytes = 0;
  if (pub && pub->evals_bytes != UINT64_MAX) { /* format 3 */
    l->eval = pub->eval;
    l->evaluations = pub->evaluations;
    evals_bytes = pub->evals_bytes;
  }
  learner_csv_reset(l, c->csv_bytes, evals_bytes);
}

/* The identity record, checked to be a learner checkpoint of a format this build reads. */
static int ckpt_read_identity(FILE *in, ckpt_identity *id, ember_err *err) {
  int rc = checkpoint_get(in, "identity", id, sizeof *id, err);
  if (rc) return rc;
  id->algo[sizeof id->algo - 1] = id->task[sizeof id->task - 1] = 0;
  if (memcmp(id->magic, "EMBRLRNR", 8) != 0 || id->format < CKPT_FORMAT_OLDEST || id->format > CKPT_FORMAT)
    return ember_fail(err, EMBER_ESCHEMA, "not a learner checkpoint of formats %u to %u", CKPT_FORMAT_OLDEST,
                      CKPT_FORMAT);
  return 0;
}

/* The counters and (format 2 on; *pub stays NULL for format 1, where eval_env_steps reads nan until
 * the next evaluation) the publications, in a malloc'd record the caller frees. */
static int ckpt_read_counters(FILE *in, const ckpt_identity *id, ckpt_counters *c, ckpt_publications **pub,
                              ember_err *err) {
  *pub = NULL;
  int rc = checkpoint_get(in, "counters", c, sizeof *c, err);
  if (rc || id->format < 2) return rc;
  ckpt_publications *p = malloc(sizeof *p);
  if (!p) return ember_fail(err, EMBER_ENOMEM, "checkpoint: out of memory");
  rc = checkpoint_get(in, "eval_env_steps", &p->eval_env_steps, sizeof p->eval_env_steps, err);
  if (!rc) rc = checkpoint_get(in, "pub_version", p->pub_version, sizeof p->pub_version, err);
  if (!rc) rc = checkpoint_get(in, "pub_steps", p->pub_steps, sizeof p->pub_steps, err);
  p->evals_bytes = UINT64_MAX; /* format 2: no evaluation record */
  if (!rc && id->format >= 3) {
    rc = checkpoint_get(in, "evaluation", &p->eval, sizeof p->eval, err);
    if (!rc) rc = checkpoint_get(in, "evaluations", &p->evaluations, sizeof p->evaluations, err);
    if (!rc) rc = checkpoint_get(in, "evals_bytes", &p->evals_bytes, sizeof p->evals_bytes, err);
  }
  if (rc) free(p);
  else *pub = p;
  return rc;
}

static int ckpt_read(void *ctx, FILE *in, ember_err *err) {
  learner_t *l = ctx;
  ckpt_identity id, mine;
  identity_of(l, &mine);
  int rc = ckpt_read_identity(in, &id, err);
  if (rc) return rc;
  if (strcmp(id.algo, mine.algo) != 0 || strcmp(id.task, mine.task) != 0 || id.obs_dim != mine.obs_dim ||
      id.act_dim != mine.act_dim)
    return ember_fail(err, EMBER_ESHAPE,
                      "the checkpoint is of algorithm %s on task %s (obs %u, act %u), this learner runs %s on %s "
                      "(obs %u, act %u): use another checkpoint_dir or run_dir, or learner.resume=false",
                      id.algo, id.task, id.obs_dim, id.act_dim, mine.algo, mine.task, mine.obs_dim, mine.act_dim);
  if (id.has_source != mine.has_source)
    return ember_fail(err, EMBER_ESHAPE,
                      "the checkpoint was written %s `ember train --deterministic` (its actor and replay state), "
                      "this learner runs %s it",
                      id.has_source ? "by" : "without", mine.has_source ? "with" : "without");
  ckpt_counters c;
  ckpt_publications *pub;
  if ((rc = ckpt_read_counters(in, &id, &c, &pub, err)) != 0) return rc;
  rc = ckpt_read_rest(l, in, err);
  if (!rc) ckpt_apply(l, &c, pub);
  free(pub);
  return rc;
}

int learner_checkpoint(learner_t *l, ember_err *err) {
  if (!l->cfg.checkpoints || !l->ckpt_dir[0]) return 0;
  int rc = checkpoint_save(l->ckpt_dir, CKPT_PREFIX, l->updates, (int)l->cfg.checkpoint_keep, ckpt_write, l, err);
  if (rc) return ember_err_prefix(err, "checkpoint in %s: ", l->ckpt_dir);
  log_event(LOG_INFO, "learner", "checkpoint", LF_STR("dir", l->ckpt_dir), LF_U64("updates", l->updates),
            LF_U64("version", l->version), LF_U64("env_steps", l->env_steps));
  return 0;
}

int learner_resume(learner_t *l, int *resumed, ember_err *err) {
  if (resumed) *resumed = 0;
  if (l->resume_done) return 0;
  l->resume_done = true;
  if (!l->cfg.resume || !l->ckpt_dir[0]) {
    learner_csv_reset(l, 0, 0);
    return 0;
  }
  int found = 0;
  uint64_t step = 0;
  int rc = checkpoint_load_newest(l->ckpt_dir, CKPT_PREFIX, ckpt_read, l, &found, &step, err);
  if (rc) return ember_err_prefix(err, "resuming from %s: ", l->ckpt_dir);
  if (!found) {
    learner_csv_reset(l, 0, 0);
    return 0;
  }
  metric_set(l->m_version, (double)l->version);
  metric_set(l->m_env_steps, (double)l->env_steps);
  if (l->version > 0) {
    /* actors that kept running get the restored policy again; a fresh one asks for it */
    if (net_send_body(l->pub, EMBER__ENVELOPE__BODY_PARAMS, &l->current, NULL, ZMQ_DONTWAIT, NULL) == 0)
      metric_inc(l->m_params_sent);
    if (l->has_src && l->src.published && (rc = l->src.published(l->src.ctx, &l->current, true, err)) != 0)
      return rc;
  }
  char path[CONFIG_STRING_MAX + 64];
  snprintf(path, sizeof path, "%s/%s-%020llu.ckpt", l->ckpt_dir, CKPT_PREFIX, (unsigned long long)step);
  log_event(LOG_INFO, "learner", "resumed", LF_STR("checkpoint", path), LF_U64("version", l->version),
            LF_U64("updates", l->updates), LF_U64("env_steps", l->env_steps), LF_F64("wall_s", l->wall_offset));
  pthread_mutex_lock(&l->progress_mu);
  l->progress.env_steps = l->env_steps, l->progress.updates = l->updates, l->progress.version = l->version;
  l->progress.wall_s = l->wall_offset;
  pthread_mutex_unlock(&l->progress_mu);
  if (resumed) *resumed = 1;
  l->resumed_from_checkpoint = true;
  return 0;
}

/* ---- a checkpoint's policy alone (ember eval) ---- */

typedef struct {
  Ember__Params *params;
  learner_ckpt_info info;
} params_reader;

static int ckpt_read_params(void *ctx, FILE *in, ember_err *err) {
  params_reader *r = ctx;
  ckpt_identity id;
  ckpt_counters c;
  ckpt_publications *pub;
  int rc = ckpt_read_identity(in, &id, err);
  if (!rc) rc = ckpt_read_counters(in, &id, &c, &pub, err);
  if (rc) return rc;
  free(pub);
  void *buf = NULL;
  uint64_t n = 0;
  if ((rc = get_blob(in, "algo", &buf, &n, err)) != 0) return rc; /* the algorithm's state: not needed */
  free(buf);
  if ((rc = get_blob(in, "params", &buf, &n, err)) != 0) return rc;
  if (n == 0) rc = ember_fail(err, EMBER_ESTATE, "the checkpoint of %s on %s was written before the first "
                              "publication (%llu updates): it holds no policy yet", id.algo, id.task,
                              (unsigned long long)c.updates);
  else if (!(r->params = ember__params__unpack(NULL, n, buf)))
    rc = ember_fail(err, EMBER_ECORRUPT, "checkpoint: its Params do not decode");
  free(buf);
  if (rc) return rc;
  snprintf(r->info.algo, sizeof r->info.algo, "%s", id.algo);
  snprintf(r->info.task, sizeof r->info.task, "%s", id.task);
  r->info.updates = c.updates, r->info.version = c.version, r->info.env_steps = c.env_steps;
  return 0;
}

int learner_checkpoint_params(const char *path, Ember__Params **params, learner_ckpt_info *info, ember_err *err) {
  *params = NULL;
  params_reader r;
  memset(&r, 0, sizeof r);
  struct stat st;
  if (stat(path, &st) != 0) return ember_fail(err, EMBER_ENOENT, "%s: %s", path, strerror(errno));
  int rc = 0;
  if (S_ISDIR(st.st_mode)) {
    int found = 0;
    uint64_t step = 0;
    rc = checkpoint_load_newest(path, CKPT_PREFIX, ckpt_read_params, &r, &found, &step, err);
    if (!rc && !found) rc = ember_fail(err, EMBER_ENOENT, "%s holds no learner checkpoint that verifies", path);
    else if (!rc)
      snprintf(r.info.path, sizeof r.info.path, "%.*s/%s-%020llu.ckpt", CONFIG_STRING_MAX - 1, path, CKPT_PREFIX,
               (unsigned long long)step);
  } else {
    rc = checkpoint_load_file(path, ckpt_read_params, &r, NULL, err);
    if (!rc) snprintf(r.info.path, sizeof r.info.path, "%.*s", (int)sizeof r.info.path - 1, path);
  }
  if (rc) {
    if (r.params) ember__params__free_unpacked(r.params, NULL);
    return rc;
  }
  *params = r.params;
  if (info) *info = r.info;
  return 0;
}

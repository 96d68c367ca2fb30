/* learner_report.c: what the learner reports (learner_internal.h): training episodes, complete
 * evaluations (evals.csv, the stop criterion), curves.csv, TensorBoard and the progress log line. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "learner_internal.h"
#include "log.h"
#include "net.h"

/* An evaluation of more episodes than this is refused (the actor's own limit is 1000). */
#define MAX_EVAL_EPISODES LEARNER_MAX_EVAL_EPISODES

#define EVALS_HEADER "version,env_steps,wall_s,updates,episodes,mean,std,min,max,mean_length,terminated,actor_id"

/* ---- the files ------------------------------------------------------------------------------------ */

static FILE *open_append(const char *path, ember_err *err) {
  FILE *f = fopen(path, "a");
  if (!f) ember_fail(err, EMBER_EIO, "cannot write %s: %s", path, strerror(errno));
  return f;
}

int learner_open_csv(learner_t *l, ember_err *err) {
  if (!l->run.run_dir[0]) return 0;
  int rc = learner_mkdir_p(l->run.run_dir, err);
  if (rc) return rc;
  snprintf(l->csv_path, sizeof l->csv_path, "%s/curves.csv", l->run.run_dir);
  snprintf(l->evals_path, sizeof l->evals_path, "%s/evals.csv", l->run.run_dir);
  /* append mode: a resumed run continues the files (learner_resume cuts them back to the
   * checkpoint's lengths); a fresh run empties them there and writes the headers */
  if (!(l->csv = open_append(l->csv_path, err)) || !(l->evals_csv = open_append(l->evals_path, err))) return err->code;
  return 0;
}

/* The header line of curves.csv (without the newline). */
static void csv_header(const learner_t *l, char *buf, size_t n) {
  size_t used = (size_t)snprintf(
      buf, n, "env_steps,wall_s,updates,train_return,eval_return,eval_env_steps,eval_version,eval_std,eval_episodes");
  for (int i = 0; l->ops->stat_names[i] && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, ",%s", l->ops->stat_names[i]);
}

/* A resumed run whose file has another header (written by another version of ember, or for another
 * algorithm) keeps that file beside it as NAME.N.csv, and a fresh one starts. Returns true then. */
static bool keep_if_other_header(FILE **f, const char *path, const char *want) {
  char have[4096] = "";
  FILE *r = fopen(path, "r");
  if (!r) return false;
  if (!fgets(have, sizeof have, r)) have[0] = 0;
  fclose(r);
  have[strcspn(have, "\r\n")] = 0;
  if (strcmp(have, want) == 0) return false;
  char kept[CONFIG_STRING_MAX + 80];
  for (int i = 1; i < 1000; i++) {
    snprintf(kept, sizeof kept, "%.*s.%d.csv", (int)strlen(path) - 4, path, i);
    struct stat st;
    if (stat(kept, &st) != 0) break;
  }
  fclose(*f);
  *f = NULL;
  if (rename(path, kept) != 0)
    log_event(LOG_WARN, "learner", "csv_keep_failed", LF_STR("path", path), LF_STR("error", strerror(errno)));
  else
    log_event(LOG_WARN, "learner", "csv_header_changed", LF_STR("kept_as", kept),
              LF_STR("reason", "the file's columns changed; a fresh file starts"));
  if (!(*f = fopen(path, "a")))
    log_event(LOG_ERROR, "learner", "csv_open_failed", LF_STR("path", path), LF_STR("error", strerror(errno)));
  return true;
}

/* Cuts one file to `bytes` (0: a fresh file with its header). */
static void reset_file(FILE **f, const char *path, uint64_t bytes, const char *header) {
  if (!*f) return;
  if (bytes > 0 && keep_if_other_header(f, path, header)) bytes = 0;
  if (!*f) return; /* the fresh file could not be opened (logged) */
  fflush(*f);
  struct stat st;
  if (fstat(fileno(*f), &st) == 0 && (uint64_t)st.st_size > bytes && ftruncate(fileno(*f), (off_t)bytes) != 0)
    log_event(LOG_WARN, "learner", "csv_truncate_failed", LF_STR("path", path), LF_STR("error", strerror(errno)));
  if (fstat(fileno(*f), &st) == 0 && st.st_size == 0) {
    fprintf(*f, "%s\n", header);
    fflush(*f);
  }
}

void learner_csv_reset(learner_t *l, uint64_t curves_bytes, uint64_t evals_bytes) {
  char header[4096];
  csv_header(l, header, sizeof header);
  reset_file(&l->csv, l->csv_path, curves_bytes, header);
  reset_file(&l->evals_csv, l->evals_path, evals_bytes, EVALS_HEADER);
  l->csv_ready = true;
}

/* ---- episodes and evaluations --------------------------------------------------------------------- */

void learner_report_episode(learner_t *l, uint64_t actor_id, uint64_t policy_version, double episode_return,
                            bool evaluation) {
  (void)policy_version;
  learner_note_actor(l, actor_id, 0, false);
  if (!isfinite(episode_return)) {
    metric_inc(l->m_msgs_refused);
    return;
  }
  if (evaluation) {
    /* An actor from before EvaluationReport, reporting evaluation episodes one at a time: counted,
     * and left out of the evaluation figures, which are made of complete evaluations only. */
    l->eval_episodes++;
    metric_inc(l->m_eval_episodes);
    return;
  }
  l->episodes++;
  metric_inc(l->m_episodes);
  l->train_returns[l->train_next] = episode_return;
  l->train_next = (l->train_next + 1) % TRAIN_WINDOW;
  if (l->train_n < TRAIN_WINDOW) l->train_n++;
}

/* Records one complete evaluation: the latest one (if it is of the newest version seen), a row of
 * evals.csv, the metrics, a TensorBoard point at its publication's env steps, a log line, and the
 * stop criterion. */
static void record_evaluation(learner_t *l, uint64_t actor_id, uint64_t version, uint64_t reported_steps, size_t n,
                              const double *returns, double mean_length, uint32_t terminated) {
  double sum = 0, lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    sum += returns[i];
    lo = returns[i] < lo ? returns[i] : lo;
    hi = returns[i] > hi ? returns[i] : hi;
  }
  const double mean = sum / (double)n;
  double ss = 0;
  for (size_t i = 0; i < n; i++) ss += (returns[i] - mean) * (returns[i] - mean);
  const double std = n > 1 ? sqrt(ss / (double)(n - 1)) : NAN;
  /* where the version was published: the learner's own record, else what the actor read in Params */
  const size_t slot = version % PUB_RING;
  const double steps = l->pub_version[slot] == version ? (double)l->pub_steps[slot] : (double)reported_steps;
  const double wall = learner_now_s() - l->t0;
  l->evaluations++;
  l->eval_episodes += n;
  metric_inc(l->m_evaluations);
  metric_add(l->m_eval_episodes, (double)n);
  if (version >= l->eval.version) {
    l->eval = (learner_eval_summary){.version = version, .env_steps = steps, .mean = mean, .std = std,
                                     .episodes = (uint32_t)n};
    metric_set(l->m_eval_return, mean);
    metric_set(l->m_eval_std, std);
    metric_set(l->m_eval_n, (double)n);
    metric_set(l->m_eval_steps, steps);
    metric_set(l->m_eval_version, (double)version);
  }
  pthread_mutex_lock(&l->progress_mu); /* at once: also after learner_run returned (a final evaluation) */
  l->progress.evaluations = l->evaluations;
  l->progress.eval_episodes = l->eval_episodes;
  if (l->eval.version == version) {
    l->progress.eval_return = mean, l->progress.eval_std = std, l->progress.eval_env_steps = steps;
    l->progress.eval_n = (uint32_t)n, l->progress.eval_version = version;
  }
  pthread_mutex_unlock(&l->progress_mu);
  if (l->evals_csv) {
    fprintf(l->evals_csv, "%llu,%.0f,%.3f,%llu,%zu,%.6g,%.6g,%.6g,%.6g,%.6g,%u,%llu\n", (unsigned long long)version,
            steps, wall, (unsigned long long)l->updates, n, mean, std, lo, hi, mean_length, terminated,
            (unsigned long long)actor_id);
    fflush(l->evals_csv);
  }
  if (l->tb && isfinite(steps)) {
    ember_err e = {0};
    int rc = tb_scalar(l->tb, "eval/return_mean", (int64_t)steps, mean, &e);
    if (!rc && isfinite(std)) rc = tb_scalar(l->tb, "eval/return_std", (int64_t)steps, std, &e);
    if (rc) log_event(LOG_WARN, "learner", "tensorboard_failed", LF_STR("error", e.msg));
  }
  log_event(LOG_INFO, "learner", "evaluation", LF_U64("version", version), LF_F64("env_steps", steps),
            LF_F64("mean", mean), LF_F64("std", std), LF_U64("episodes", n), LF_F64("min", lo), LF_F64("max", hi),
            LF_F64("mean_length", mean_length), LF_U64("actor", actor_id), LF_U64("updates", l->updates));
  if (l->cfg.stop_on_return && mean >= l->cfg.stop_at_return && !atomic_load(&l->stop)) {
    l->stopped_at_return = true;
    log_event(LOG_INFO, "learner", "stop_at_return", LF_U64("version", version), LF_F64("env_steps", steps),
              LF_F64("mean", mean), LF_F64("threshold", l->cfg.stop_at_return));
    atomic_store(&l->stop, true);
  }
}

int learner_report_evaluation(learner_t *l, uint64_t actor_id, uint64_t version, uint64_t env_steps, int n,
                              const double *returns, const int32_t *lengths, const uint8_t *terminated,
                              ember_err *err) {
  if (n < 1 || n > MAX_EVAL_EPISODES)
    return ember_fail(err, EMBER_EINVAL, "an evaluation of %d episodes (1 to %d)", n, MAX_EVAL_EPISODES);
  double len = 0;
  uint32_t term = 0;
  for (int i = 0; i < n; i++) {
    if (!isfinite(returns[i]))
      return ember_fail(err, EMBER_ENONFINITE, "evaluation of version %llu: episode %d's return is %g",
                        (unsigned long long)version, i, returns[i]);
    len += lengths ? lengths[i] : 0;
    term += terminated && terminated[i];
  }
  learner_note_actor(l, actor_id, 0, false);
  record_evaluation(l, actor_id, version, env_steps, (size_t)n, returns, len / n, term);
  return 0;
}

int learner_check_evaluation(const Ember__EvaluationReport *r, char *why, size_t cap) {
  const size_t n = r->n_returns;
  if (n < 1 || n > MAX_EVAL_EPISODES || r->n_lengths != n || r->n_terminated != n || r->policy_version == 0) {
    snprintf(why, cap,
             "EvaluationReport refused: %zu returns, %zu lengths, %zu terminated flags, version %llu (wanted 1 to %d "
             "episodes, as many of each, version >= 1)",
             n, r->n_lengths, r->n_terminated, (unsigned long long)r->policy_version, MAX_EVAL_EPISODES);
    return EMBER_ESHAPE;
  }
  for (size_t i = 0; i < n; i++)
    if (!isfinite(r->returns[i])) {
      snprintf(why, cap, "EvaluationReport refused: version %llu, episode %zu's return is %g",
               (unsigned long long)r->policy_version, i, r->returns[i]);
      return EMBER_ENONFINITE;
    }
  return 0;
}

void learner_take_evaluation(learner_t *l, const Ember__EvaluationReport *r, const net_route *route) {
  char why[256];
  int rc = learner_check_evaluation(r, why, sizeof why);
  if (rc != 0) {
    learner_refuse_message(l, route, rc, why);
    return;
  }
  const size_t n = r->n_returns;
  double len = 0;
  uint32_t term = 0;
  for (size_t i = 0; i < n; i++) {
    len += r->lengths[i];
    term += r->terminated[i] != 0;
  }
  learner_note_actor(l, r->actor_id, 0, false);
  record_evaluation(l, r->actor_id, r->policy_version, r->env_steps, n, r->returns, len / (double)n, term);
}

double learner_train_return(const learner_t *l) {
  if (l->train_n == 0) return NAN;
  double s = 0;
  for (int i = 0; i < l->train_n; i++) s += l->train_returns[i];
  return s / l->train_n;
}

/* ---- curves.csv, TensorBoard, the log line -------------------------------------------------------- */

void learner_write_csv_row(learner_t *l, double t) {
  if (!l->csv) return;
  /* the latest complete evaluation, placed where its policy was published (eval_env_steps): curves
   * of equal steps plot eval_return against it */
  const learner_eval_summary *e = &l->eval;
  const bool have = e->version > 0;
  fprintf(l->csv, "%llu,%.3f,%llu,%.6g,%.6g,%.0f,%llu,%.6g,%u", (unsigned long long)l->env_steps, t - l->t0,
          (unsigned long long)l->updates, learner_train_return(l), have ? e->mean : NAN, have ? e->env_steps : NAN,
          (unsigned long long)e->version, have ? e->std : NAN, e->episodes);
  for (int i = 0; l->ops->stat_names[i]; i++)
    fprintf(l->csv, ",%.6g", l->stat_rows ? l->stat_sum[i] / (double)l->stat_rows : NAN);
  fprintf(l->csv, "\n");
  fflush(l->csv);
  memset(l->stat_sum, 0, sizeof l->stat_sum);
  l->stat_rows = 0;
}

/* The CSV row's scalars as TensorBoard events (step = env steps, the plots' x axis), written just
 * before learner_write_csv_row resets the averages. Evaluations are their own points (eval/...),
 * written as they arrive, at their publication's env steps. */
void learner_write_tb(learner_t *l) {
  if (!l->tb) return;
  ember_err e = {0};
  int64_t step = (int64_t)l->env_steps;
  double tr = learner_train_return(l);
  int rc = 0;
  if (!isnan(tr)) rc |= tb_scalar(l->tb, "return/train", step, tr, &e);
  rc |= tb_scalar(l->tb, "progress/updates", step, (double)l->updates, &e);
  rc |= tb_scalar(l->tb, "progress/version", step, (double)l->version, &e);
  rc |= tb_scalar(l->tb, "rate/updates_per_s", step, l->rate_updates, &e);
  rc |= tb_scalar(l->tb, "rate/env_steps_per_s", step, l->rate_steps, &e);
  for (int i = 0; l->stat_rows && l->ops->stat_names[i]; i++) {
    char tag[160];
    snprintf(tag, sizeof tag, "loss/%s", l->ops->stat_names[i]);
    rc |= tb_scalar(l->tb, tag, step, l->stat_sum[i] / (double)l->stat_rows, &e);
  }
  if (rc) log_event(LOG_WARN, "learner", "tensorboard_failed", LF_STR("error", e.msg));
}

void learner_log_progress(learner_t *l) {
  log_field f[10 + ALGO_MAX_STATS + 1];
  int n = 0;
  f[n++] = LF_U64("env_steps", l->env_steps);
  f[n++] = LF_U64("updates", l->updates);
  f[n++] = LF_F64("updates_per_s", l->rate_updates);
  f[n++] = LF_F64("env_steps_per_s", l->rate_steps);
  f[n++] = LF_F64("train_return", learner_train_return(l));
  f[n++] = LF_F64("eval_return", l->eval.version ? l->eval.mean : NAN);
  f[n++] = LF_F64("eval_std", l->eval.version ? l->eval.std : NAN);
  f[n++] = LF_U64("eval_version", l->eval.version);
  f[n++] = LF_U64("version", l->version);
  for (int i = 0; l->ops->stat_names[i] && i < l->stats.count; i++)
    f[n++] = LF_F64(l->ops->stat_names[i], l->stats.values[i]);
  f[n] = LF_END;
  log_event_fields(LOG_INFO, "learner", "progress", f);
}

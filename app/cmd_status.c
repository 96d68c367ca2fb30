/* cmd_status.c: `ember status ENDPOINT...`: a one-screen summary of a running cluster.
 *
 * Each ENDPOINT (tcp://host:port, ipc://path, or host:port for tcp) is a server socket that answers
 * StatsRequest: replay's insert or sample endpoint, the learner's control endpoint. Every server is
 * asked twice, --interval seconds apart, so counters become rates; the Stats role says which kind of
 * server answered, and the summary is printed per server. A server that does not answer within
 * --timeout-ms is reported by name and makes the exit code 1 (the others are still printed).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "app.h"
#include "auth.h"
#include "net.h"
#include "replay_client.h"

static void usage(FILE *out) {
  fprintf(out, "usage: ember status [--timeout-ms N] [--interval S] [--key FILE --server-key FILE] ENDPOINT...\n"
               "Asks each server for its Stats and prints a summary: replay (size, inserts/s, samples,\n"
               "rejections by reason, rate limiter) and the learner (parameter version, updates, updates/s,\n"
               "env steps, returns, losses, and every actor it knows with its policy version, staleness and\n"
               "last message). ENDPOINT: tcp://HOST:PORT, ipc://PATH or HOST:PORT; give replay's sample or\n"
               "insert endpoint and the learner's control endpoint. Each is asked twice, --interval seconds\n"
               "apart (default 1; 0 = once, no rates); --timeout-ms (default 2000) bounds each wait.\n"
               "Servers that require CurveZMQ: --key a key pair they admit (NAME.key), --server-key their\n"
               "public key (.pub). Exit code 0 when every server answered, 1 otherwise, 2 on bad usage.\n");
}

typedef struct {
  char endpoint[512];
  Ember__Envelope *a, *b; /* first and second Stats (b NULL with --interval 0) */
  ember_err err;
  int rc;
} target;

static double get(const Ember__Stats *s, const char *name, const char *labels) {
  return s ? replay_stats_get(s, name, labels) : NAN;
}

static void fmt(char *buf, size_t n, double v, const char *f) {
  if (isnan(v)) snprintf(buf, n, "--");
  else snprintf(buf, n, f, v);
}

/* (b - a) / dt for a counter, NAN without two samples. */
static double rate(const target *t, const char *name, double dt) {
  if (!t->b || dt <= 0) return NAN;
  return (get(t->b->stats, name, NULL) - get(t->a->stats, name, NULL)) / dt;
}

static const Ember__Stats *latest(const target *t) { return (t->b ? t->b : t->a)->stats; }

static void print_replay(const target *t, double dt) {
  const Ember__Stats *s = latest(t);
  char rate_s[32], sr[32];
  fmt(rate_s, sizeof rate_s, rate(t, "replay_inserted_transitions_total", dt), "%.1f/s");
  fmt(sr, sizeof sr, rate(t, "replay_sampled_transitions_total", dt), "%.1f/s");
  printf("replay   %s\n", t->endpoint);
  printf("  size        %.0f / %.0f transitions (%.0f evicted)\n", get(s, "replay_size", NULL),
         get(s, "replay_capacity", NULL), get(s, "replay_evicted_transitions_total", NULL));
  printf("  inserted    %.0f transitions in %.0f batches (%s)\n", get(s, "replay_inserted_transitions_total", NULL),
         get(s, "replay_insert_batches_total", NULL), rate_s);
  printf("  sampled     %.0f transitions in %.0f batches (%s)\n", get(s, "replay_sampled_transitions_total", NULL),
         get(s, "replay_sample_batches_total", NULL), sr);
  printf("  rejected   ");
  double total = 0;
  int shown = 0;
  for (size_t i = 0; i < s->n_metrics; i++) {
    const Ember__Metric *m = s->metrics[i];
    if (strcmp(m->name, "replay_rejected_total") != 0) continue;
    total += m->value;
    if (m->value > 0) printf(" %s %.0f", m->labels && m->labels[0] ? m->labels : "(no reason)", m->value), shown++;
  }
  printf(shown ? "  (total %.0f)\n" : " none (%.0f)\n", total);
  printf("  limiter     sample waits %.0f, insert waits %.0f, pending sample requests %.0f\n",
         get(s, "replay_rate_limiter_sample_waits_total", NULL), get(s, "replay_rate_limiter_insert_waits_total", NULL),
         get(s, "replay_pending_sample_requests", NULL));
}

static void print_learner(const target *t) {
  const Ember__Stats *s = latest(t);
  double version = get(s, "learner_params_version", NULL);
  char tr[32], ev[32], ups[32], eps[32];
  fmt(tr, sizeof tr, get(s, "learner_episodes_total", "kind=\"train\"") > 0 ? get(s, "learner_train_return", NULL) : NAN,
      "%.1f");
  fmt(ev, sizeof ev, get(s, "learner_episodes_total", "kind=\"eval\"") > 0 ? get(s, "learner_eval_return", NULL) : NAN,
      "%.1f");
  fmt(ups, sizeof ups, get(s, "learner_updates_per_second", NULL), "%.1f/s");
  fmt(eps, sizeof eps, get(s, "learner_env_steps_per_second", NULL), "%.1f/s");
  printf("learner  %s\n", t->endpoint);
  printf("  version     %.0f   updates %.0f (%s)   env steps %.0f (%s)\n", version,
         get(s, "learner_updates_total", NULL), ups, get(s, "learner_env_steps", NULL), eps);
  printf("  returns     train %s   eval %s   episodes %.0f train, %.0f eval\n", tr, ev,
         get(s, "learner_episodes_total", "kind=\"train\""), get(s, "learner_episodes_total", "kind=\"eval\""));
  printf("  refused     %.0f batches, %.0f messages\n", get(s, "learner_batches_refused_total", NULL),
         get(s, "learner_messages_refused_total", NULL));
  int any = 0;
  for (size_t i = 0; i < s->n_metrics; i++) {
    const Ember__Metric *m = s->metrics[i];
    if (strcmp(m->name, "learner_algo_stat") != 0 || !m->labels) continue;
    const char *q = strchr(m->labels, '"');
    printf("%s %.*s %.4g", any++ ? "," : "  losses     ", q ? (int)strcspn(q + 1, "\"") : 0, q ? q + 1 : "",
           m->value);
  }
  if (any) printf("\n");
  printf("  actors      %.0f live (heard from in the last 30 s), largest lag %.0f versions\n",
         get(s, "learner_actors", NULL), get(s, "learner_actor_policy_lag_max", NULL));
  for (size_t i = 0; i < s->n_metrics; i++) {
    const Ember__Metric *m = s->metrics[i];
    if (strcmp(m->name, "learner_actor_policy_version") != 0 || !m->labels) continue;
    const char *q = strchr(m->labels, '"');
    double age = get(s, "learner_actor_last_seen_seconds", m->labels);
    char age_s[32];
    fmt(age_s, sizeof age_s, age, "%.1f s ago");
    printf("    actor %-6.*s version %-6.0f staleness %-4.0f last heard %s%s\n",
           q ? (int)strcspn(q + 1, "\"") : 0, q ? q + 1 : "", m->value,
           isnan(version) || m->value > version ? 0 : version - m->value, age_s, age > 30 ? "  (gone?)" : "");
  }
}

int app_status(int argc, char **argv) {
  int timeout_ms = 2000;
  double interval = 1.0;
  target *t = calloc((size_t)argc, sizeof *t);
  if (!t) return 1;
  int n = 0, rc = 0;
  const char *key_file = NULL, *server_key_file = NULL;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "--key") == 0 || strcmp(a, "--server-key") == 0)) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ember status: %s needs a file\n", a);
        free(t);
        return 2;
      }
      *(a[2] == 'k' ? &key_file : &server_key_file) = argv[++i];
      continue;
    }
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      free(t);
      return 0;
    }
    if (strcmp(a, "--timeout-ms") == 0 || strcmp(a, "--interval") == 0) {
      char *end = NULL;
      double v = i + 1 < argc ? strtod(argv[i + 1], &end) : NAN;
      if (isnan(v) || !end || *end || v < 0 || v > 3600e3 || (a[2] == 't' && v < 1)) {
        fprintf(stderr, "ember status: %s needs a number (%s)\n", a,
                a[2] == 't' ? "milliseconds, at least 1" : "seconds, 0 or more");
        free(t);
        return 2;
      }
      if (a[2] == 't') timeout_ms = (int)v;
      else interval = v;
      i++;
      continue;
    }
    if (a[0] == '-') {
      fprintf(stderr, "ember status: unknown option '%s'\n", a);
      usage(stderr);
      free(t);
      return 2;
    }
    if (strstr(a, "://")) snprintf(t[n].endpoint, sizeof t[n].endpoint, "%s", a);
    else if (strchr(a, ':')) snprintf(t[n].endpoint, sizeof t[n].endpoint, "tcp://%s", a);
    else {
      fprintf(stderr, "ember status: '%s' is not an endpoint (tcp://HOST:PORT, ipc://PATH or HOST:PORT)\n", a);
      free(t);
      return 2;
    }
    n++;
  }
  if (!key_file != !server_key_file) {
    fprintf(stderr, "ember status: --key and --server-key go together\n");
    free(t);
    return 2;
  }
  if (key_file) { /* every socket below then speaks CURVE (net.h) */
    net_security keys;
    memset(&keys, 0, sizeof keys);
    ember_err kerr = {0};
    if (auth_load_keys(key_file, keys.public_key, keys.secret_key, &kerr) ||
        auth_load_keys(server_key_file, keys.server_key, NULL, &kerr)) {
      fprintf(stderr, "ember status: %s\n", kerr.msg);
      free(t);
      return 2;
    }
    net_set_default_security(&keys);
  }
  if (n == 0) {
    fprintf(stderr, "ember status: no endpoint given\n");
    usage(stderr);
    free(t);
    return 2;
  }
  void *zmq = zmq_ctx_new();
  for (int i = 0; i < n; i++) t[i].rc = replay_client_stats(zmq, t[i].endpoint, timeout_ms, &t[i].a, &t[i].err);
  double dt = 0;
  int answered = 0;
  for (int i = 0; i < n; i++) answered += t[i].rc == 0;
  if (interval > 0 && answered > 0) {
    usleep((useconds_t)(interval * 1e6));
    dt = interval;
    for (int i = 0; i < n; i++)
      if (t[i].rc == 0 && replay_client_stats(zmq, t[i].endpoint, timeout_ms, &t[i].b, &t[i].err) != 0) t[i].b = NULL;
  }
  for (int i = 0; i < n; i++) {
    if (t[i].rc != 0 || !t[i].a->stats) {
      printf("%-8s %s\n  not answering: %s\n", "?", t[i].endpoint,
             t[i].rc ? t[i].err.msg : "the reply carried no Stats");
      rc = 1;
      continue;
    }
    const char *role = t[i].a->stats->role ? t[i].a->stats->role : "";
    if (strcmp(role, "replay") == 0) print_replay(&t[i], dt);
    else if (strcmp(role, "learner") == 0) print_learner(&t[i]);
    else {
      printf("%-8s %s\n", role[0] ? role : "?", t[i].endpoint);
      for (size_t k = 0; k < t[i].a->stats->n_metrics; k++)
        printf("  %s{%s} %g\n", t[i].a->stats->metrics[k]->name, t[i].a->stats->metrics[k]->labels,
               t[i].a->stats->metrics[k]->value);
    }
  }
  for (int i = 0; i < n; i++) {
    if (t[i].a) net_envelope_free(t[i].a);
    if (t[i].b) net_envelope_free(t[i].b);
  }
  free(t);
  zmq_ctx_term(zmq);
  return rc;
}

/* metrics.h: a registry of counters and gauges, rendered in Prometheus text format (the
 * operations layer serves it over HTTP) and copied into Stats messages.
 *
 * Registration (metrics_counter, metrics_gauge) takes a lock and may allocate: do it at start-up.
 * Updates (metric_add, metric_set) are lock-free atomics, safe from any thread, and never allocate.
 * The registry owns every metric; metric pointers stay valid until metrics_destroy.
 */
#ifndef EMBER_METRICS_H
#define EMBER_METRICS_H

#include <stddef.h>

typedef struct metrics_registry metrics_registry;
typedef struct metric metric;

typedef enum { METRIC_COUNTER, METRIC_GAUGE } metric_kind;

metrics_registry *metrics_new(void);
void metrics_destroy(metrics_registry **self_p);

/* Returns the metric with this name and labels, creating it on first use. labels is Prometheus label
 * text without braces (`reason="nan"`) or NULL. name must match [a-zA-Z_:][a-zA-Z0-9_:]*; the
 * same name registered as another kind returns NULL. help may be NULL. */
metric *metrics_counter(metrics_registry *reg, const char *name, const char *labels, const char *help);
metric *metrics_gauge(metrics_registry *reg, const char *name, const char *labels, const char *help);

void metric_add(metric *m, double delta); /* counters: delta >= 0 */
static inline void metric_inc(metric *m) { metric_add(m, 1.0); }
void metric_set(metric *m, double value); /* gauges */
double metric_value(const metric *m);

/* Renders every metric as Prometheus text exposition format 0.0.4 into a malloc'd,
 * NUL-terminated buffer the caller frees. Returns 0 or EMBER_ENOMEM. */
int metrics_render(metrics_registry *reg, char **out, size_t *len);

/* Calls fn for each metric, in registration order, under the registry lock. */
typedef void (*metrics_visit_fn)(void *ctx, const char *name, const char *labels, metric_kind kind, double value);
void metrics_foreach(metrics_registry *reg, metrics_visit_fn fn, void *ctx);

#endif

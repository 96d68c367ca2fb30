/* log.h: ember's logging: one line per event, JSON lines (the default, for machines and
 * `docker compose logs`) or a human format, with levels.
 *
 *   log_event(LOG_INFO, "learner", "progress", LF_U64("env_steps", n), LF_F64("return", r));
 *   log_msg(LOG_WARN, "replay", "rejected batch from actor %llu: %s", id, why);
 *
 * Owns: a process-wide sink (stderr by default) behind a mutex; each line is formatted into a
 * stack buffer and written with one fwrite, so lines from threads never interleave. Thread-safe.
 * Strings passed in are copied into the line; the caller keeps ownership.
 */
#ifndef EMBER_LOG_H
#define EMBER_LOG_H

#include <stdint.h>
#include <stdio.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 } log_level;
typedef enum { LOG_FORMAT_JSON = 0, LOG_FORMAT_HUMAN = 1 } log_format;

typedef enum { LF_TYPE_END = 0, LF_TYPE_I64, LF_TYPE_U64, LF_TYPE_F64, LF_TYPE_STR, LF_TYPE_BOOL } log_field_type;
typedef struct {
  const char *key;
  log_field_type type;
  union {
    int64_t i;
    uint64_t u;
    double f;
    const char *s;
  } v;
} log_field;

#define LF_I64(k, x) ((log_field){.key = (k), .type = LF_TYPE_I64, .v.i = (int64_t)(x)})
#define LF_U64(k, x) ((log_field){.key = (k), .type = LF_TYPE_U64, .v.u = (uint64_t)(x)})
#define LF_F64(k, x) ((log_field){.key = (k), .type = LF_TYPE_F64, .v.f = (double)(x)})
#define LF_STR(k, x) ((log_field){.key = (k), .type = LF_TYPE_STR, .v.s = (x)})
#define LF_BOOL(k, x) ((log_field){.key = (k), .type = LF_TYPE_BOOL, .v.i = !!(x)})
#define LF_END ((log_field){.key = 0, .type = LF_TYPE_END})

/* Configure the sink. out == NULL means stderr. The stream stays owned by the caller. */
void log_set_output(FILE *out);
void log_set_level(log_level level);
void log_set_format(log_format format);
log_level log_get_level(void);
/* Parses "debug|info|warn|error|off" and "json|human"; return 0 or EMBER_EINVAL. */
int log_parse_level(const char *s, log_level *out);
int log_parse_format(const char *s, log_format *out);

/* One event with typed fields; the list ends with LF_END (the macro adds it). */
void log_event_fields(log_level level, const char *component, const char *event, const log_field *fields);
#define log_event(level, component, event, ...) \
  log_event_fields((level), (component), (event), (const log_field[]){__VA_ARGS__ __VA_OPT__(,) LF_END})

/* A free-text message (printf format). */
void log_msg(log_level level, const char *component, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes s as the body of a JSON string (escaping quotes, backslashes, control bytes) into buf;
 * returns bytes written (never more than cap - 1, always NUL-terminated when cap > 0). */
size_t log_json_escape(char *buf, size_t cap, const char *s);

#endif

/* replay_server_checks.c: what the replay server can tell from one message alone (replay_server_impl.h):
 * who a message says it is (decoded, or scanned from bytes too big to decode) and whether its body
 * passes the checks that need nothing but the table's spec, capacity and rate limiter. No socket, no
 * lock, no server state: the paths (insert, sample, control) call these and then act, and the fuzz
 * targets (tests/fuzz/) call the very same functions on arbitrary bytes. Any thread. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "replay_server_impl.h"

/* ---- identity -------------------------------------------------------------------------------- */

const srv_identity SRV_NOBODY = {.body = EMBER__ENVELOPE__BODY__NOT_SET};

srv_identity srv_identity_of(const Ember__Envelope *env) {
  srv_identity id = SRV_NOBODY;
  if (env && env->body_case == EMBER__ENVELOPE__BODY_TRANSITION_BATCH && env->transition_batch) {
    const Ember__TransitionBatch *b = env->transition_batch;
    id = (srv_identity){.body = env->body_case, .actor_id = b->actor_id, .sequence = b->sequence,
                        .dropped_before = b->dropped_before, .count = b->count};
  } else if (env && env->body_case == EMBER__ENVELOPE__BODY_SAMPLE_REQUEST && env->sample_request) {
    id = (srv_identity){.body = env->body_case, .request_id = env->sample_request->request_id};
  }
  return id;
}

/* ---- reading identity fields without decoding ------------------------------------------------ */
/* For a message too big to decode (only seen on inproc://, where libzmq applies no limit): the
 * protobuf wire format is walked field by field, skipping length-delimited fields by their length, to
 * read the few identity fields and nothing else. Strict: a malformed field anywhere in the Envelope
 * or in the body's field framing means nothing is known. Costs a few bytes of reading per field. */

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t c = *(*p)++;
    x |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *v = x;
      return true;
    }
  }
  return false;
}

typedef struct {
  uint32_t number, wire_type;
  uint64_t varint;           /* wire type 0 */
  const uint8_t *bytes;      /* wire type 2 */
  size_t len;
} wire_field;

/* The next field in [*p, end): 1, 0 at the end, -1 when malformed. */
static int next_field(const uint8_t **p, const uint8_t *end, wire_field *f) {
  if (*p == end) return 0;
  uint64_t tag, n;
  if (!read_varint(p, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return -1;
  *f = (wire_field){.number = (uint32_t)(tag >> 3), .wire_type = (uint32_t)(tag & 7)};
  switch (f->wire_type) {
    case 0: return read_varint(p, end, &f->varint) ? 1 : -1;
    case 1: if (end - *p < 8) return -1; *p += 8; return 1;
    case 5: if (end - *p < 4) return -1; *p += 4; return 1;
    case 2:
      if (!read_varint(p, end, &n) || n > (uint64_t)(end - *p)) return -1;
      f->bytes = *p, f->len = (size_t)n, *p += n;
      return 1;
    default: return -1; /* groups and reserved wire types: not in ember's schema */
  }
}

/* Reads the identity fields (varints) of a TransitionBatch or SampleRequest body. */
static bool scan_body(const wire_field *body, srv_identity *id) {
  const uint8_t *p = body->bytes, *end = p + body->len;
  wire_field f;
  int r;
  *id = (srv_identity){.body = body->number == 10 ? EMBER__ENVELOPE__BODY_TRANSITION_BATCH
                                                   : EMBER__ENVELOPE__BODY_SAMPLE_REQUEST};
  while ((r = next_field(&p, end, &f)) == 1) {
    bool is_batch = id->body == EMBER__ENVELOPE__BODY_TRANSITION_BATCH;
    bool wanted = is_batch ? (f.number == 4 || f.number == 5 || f.number == 6 || f.number == 15) : f.number == 1;
    if (!wanted) continue;
    if (f.wire_type != 0) return false;
    if (!is_batch) id->request_id = f.varint;
    else if (f.number == 4) {
      if (f.varint > UINT32_MAX) return false;
      id->count = (uint32_t)f.varint;
    } else if (f.number == 5) id->actor_id = f.varint;
    else if (f.number == 6) id->sequence = f.varint;
    else id->dropped_before = f.varint;
  }
  return r == 0;
}

srv_identity srv_scan_identity(const void *data, size_t len) {
  const uint8_t *p = data, *end = p + len;
  wire_field f, body = {.number = 0};
  int r;
  while ((r = next_field(&p, end, &f)) == 1)
    if (f.wire_type == 2 && (f.number == 10 || f.number == 14)) body = f; /* oneof: the last one wins */
    else if (f.number >= 10) body.number = 0; /* another body (all are fields >= 10) replaced it */
  srv_identity id = SRV_NOBODY;
  if (r != 0 || body.number == 0 || !scan_body(&body, &id)) return SRV_NOBODY;
  return id;
}

/* ---- TransitionBatch ------------------------------------------------------------------------- */

static int refusal(reject_reason *reason, reject_reason r) {
  *reason = r;
  return srv_reason_codes[r];
}

/* Whether any action is outside [-1, 1] (the policy's scale; NaN was refused before). Branch-free
 * over the whole column so it vectorises: it runs on every transition inserted; the loop in
 * check_values runs only to name the culprit. */
static bool any_action_out_of_range(const float *v, size_t n) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) bad |= (v[i] < -1.0f) | (v[i] > 1.0f);
  return bad != 0;
}

/* What the protocol says of values beyond their types: actions in [-1, 1], and a row is ended by the
 * task (terminated) or by the time limit (truncated), never both: the two mean opposite things to
 * the learner (no bootstrap / bootstrap), so such a row has no right target. */
static int check_values(const Ember__TransitionBatch *b, reject_reason *reason, char *why, size_t cap) {
  size_t ad = b->act_dim;
  if (any_action_out_of_range(b->action, b->n_action)) {
    for (size_t i = 0; i < b->n_action; i++)
      if (b->action[i] < -1.0f || b->action[i] > 1.0f) {
        snprintf(why, cap, "TransitionBatch.action[%zu] (transition %zu, action dimension %zu) is %g, outside [-1, 1]",
                 i, i / ad, i % ad, (double)b->action[i]);
        return refusal(reason, R_ACTION_OUT_OF_RANGE);
      }
  }
  for (size_t i = 0; i < b->count; i++)
    if (b->terminated[i] && b->truncated[i]) {
      snprintf(why, cap,
               "TransitionBatch.terminated[%zu] and .truncated[%zu] are both set (transition %zu): a transition "
               "ends by the task or by the time limit, not both",
               i, i, i);
      return refusal(reason, R_TERMINATED_AND_TRUNCATED);
    }
  return 0;
}

int srv_check_batch(const Ember__TransitionBatch *b, const replay_spec *spec, reject_reason *reason, char *why,
                    size_t cap) {
  if (b->count == 0) {
    snprintf(why, cap, "TransitionBatch has count 0");
    return refusal(reason, R_EMPTY_BATCH);
  }
  const char *task = b->task ? b->task : "";
  if (strlen(task) >= REPLAY_TASK_MAX) {
    snprintf(why, cap, "task name too long");
    return refusal(reason, R_TASK_MISMATCH);
  }
  if (spec) {
    if (spec->task[0] && task[0] && strcmp(spec->task, task) != 0) {
      snprintf(why, cap, "batch is for task '%s', the table holds '%s'", task, spec->task);
      return refusal(reason, R_TASK_MISMATCH);
    }
    if (b->obs_dim != spec->obs_dim || b->act_dim != spec->act_dim) {
      snprintf(why, cap, "batch has obs_dim %u act_dim %u, the table holds obs_dim %u act_dim %u", b->obs_dim,
               b->act_dim, spec->obs_dim, spec->act_dim);
      return refusal(reason, R_DIMS_MISMATCH);
    }
  } else if (b->obs_dim == 0 || b->act_dim == 0) {
    snprintf(why, cap, "batch has obs_dim %u act_dim %u (both must be > 0)", b->obs_dim, b->act_dim);
    return refusal(reason, R_DIMS_MISMATCH);
  }
  ember_err err = {0};
  int rc = net_check_transitions(b, b->obs_dim, b->act_dim, &err);
  if (rc != 0) {
    snprintf(why, cap, "%s", err.msg);
    return refusal(reason, rc == EMBER_ENONFINITE ? R_NONFINITE : R_INCONSISTENT_LENGTHS);
  }
  /* An empty behaviour_log_prob means uniform random actions, and is stored as their density
   * (replay_table_insert); a batch that says a policy chose its actions must carry their log-probs,
   * or an off-policy correction would read the uniform density for them. */
  if (b->n_behaviour_log_prob == 0 && b->policy_version != 0) {
    snprintf(why, cap,
             "behaviour_log_prob is empty but policy_version is %" PRIu64
             "; only uniform random actions (policy_version 0) may leave it out",
             b->policy_version);
    return refusal(reason, R_MISSING_LOG_PROB);
  }
  return check_values(b, reason, why, cap);
}

/* ---- the sample socket ----------------------------------------------------------------------- */

int srv_check_sample_request(const Ember__SampleRequest *r, size_t capacity, const rate_limiter *rl,
                             reject_reason *reason, char *why, size_t cap) {
  if (r->batch_size == 0) {
    snprintf(why, cap, "SampleRequest.batch_size is 0");
    return refusal(reason, R_BAD_BATCH_SIZE);
  }
  if (r->batch_size > capacity) {
    snprintf(why, cap, "batch_size %u is more than the table can hold (capacity %zu)", r->batch_size, capacity);
    return refusal(reason, R_BATCH_TOO_LARGE);
  }
  if (!rate_limiter_sample_feasible(rl, r->batch_size)) {
    snprintf(why, cap, "batch_size %u is more than 2 x error_buffer (%g): the rate limiter could never allow it",
             r->batch_size, rl->max_diff - rl->min_diff);
    return refusal(reason, R_BATCH_EXCEEDS_RATE_LIMITER);
  }
  return 0;
}

int srv_check_priority_update(const Ember__PriorityUpdate *u, reject_reason *reason, char *why, size_t cap) {
  if (u->n_keys != u->n_priorities) {
    snprintf(why, cap, "PriorityUpdate has %zu keys and %zu priorities", u->n_keys, u->n_priorities);
    return refusal(reason, R_INCONSISTENT_LENGTHS);
  }
  for (size_t i = 0; i < u->n_priorities; i++) {
    float p = u->priorities[i];
    if (!isfinite(p) || p < 0) {
      snprintf(why, cap, "priority[%zu] (key %" PRIu64 ") is %g; priorities must be finite and >= 0", i, u->keys[i],
               (double)p);
      return refusal(reason, R_BAD_PRIORITY);
    }
  }
  return 0;
}

/* ---- Hello ----------------------------------------------------------------------------------- */

int srv_check_hello(const Ember__Hello *h, const replay_spec *spec, reject_reason *reason, char *why, size_t cap) {
  if (!spec) return 0;
  const char *task = h->task ? h->task : "";
  if (spec->task[0] && task[0] && strcmp(spec->task, task) != 0) {
    snprintf(why, cap, "peer announces task '%s', the table holds '%s'", task, spec->task);
    return refusal(reason, R_TASK_MISMATCH);
  }
  if ((h->obs_dim && h->obs_dim != spec->obs_dim) || (h->act_dim && h->act_dim != spec->act_dim)) {
    snprintf(why, cap, "peer announces obs_dim %u act_dim %u, the table holds obs_dim %u act_dim %u", h->obs_dim,
             h->act_dim, spec->obs_dim, spec->act_dim);
    return refusal(reason, R_DIMS_MISMATCH);
  }
  return 0;
}

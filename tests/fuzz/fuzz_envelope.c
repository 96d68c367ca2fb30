/* fuzz_envelope: any Envelope, through the decode every receiver runs first; and the bodies whose
 * receivers check nothing beyond it: StatsRequest (no fields: the replay server and the learner
 * answer it with Stats), Heartbeat and ParamsRequest (ids and versions, any value valid) and
 * EpisodeReport (the learner counts a non-finite return as refused, isfinite alone).
 *
 * The path (common/net.c): net_decode (malloc, as net_recv) and net_decode_with through an arena (as
 * the replay server), net_body_name for the refusal's log line, and net_encode of what was decoded.
 *
 * Properties: both decoders agree on the outcome, the code and the body; a refusal says why; an
 * Envelope refused for its schema version or for having no body is still handed back (the caller
 * names what it refuses) and one that is not protobuf is not; what decodes re-encodes to bytes that
 * decode to the same body and re-encode to the very same bytes (protobuf-c keeps unknown fields,
 * so nothing a newer peer adds is lost in a relay), except for bytes with a field numbered 0 (below).
 */
#include <stdbool.h>
#include <string.h>

#include "arena.h"
#include "fuzz.h"
#include "net.h"

/* Whether m, or a message inside it, keeps an unknown field numbered 0. Field 0 is invalid in
 * protobuf, and protobuf-c 1.4 refuses its tag when written in one byte, but accepts it written in
 * more than one (its check looks at the first byte only) and keeps it as an unknown field, which it
 * then writes back in one byte: the re-encoding does not decode (found by this target, the 7 bytes
 * in tests/fuzz/regressions/envelope/). Harmless to ember, which never relays what it receives (and
 * whose identity scanner refuses field 0), so the round trip is not asked of such messages. */
static bool has_field_zero(const ProtobufCMessage *m) {
  for (unsigned i = 0; i < m->n_unknown_fields; i++)
    if (m->unknown_fields[i].tag == 0) return true;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)(base + f->offset);
      for (size_t k = 0; k < n; k++)
        if (items[k] && has_field_zero(items[k])) return true;
      continue;
    }
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *)(base + f->quantifier_offset) != f->id) continue;
    const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
    if (sub && has_field_zero(sub)) return true;
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static arena ar;
  static int ready;
  fuzz_quiet();
  if (!ready) arena_init(&ar, 1 << 12), ready = 1;
  Ember__Envelope *plain = NULL, *in_arena = NULL;
  ember_err e1 = {0}, e2 = {0};
  int rc1 = net_decode(data, size, 0, &plain, &e1);
  int rc2 = net_decode_with(data, size, 0, arena_allocator(&ar), &in_arena, &e2);
  FUZZ_ASSERT(rc1 == rc2 || ar.failed, "net_decode %d ('%s'), net_decode_with %d ('%s')", rc1, e1.msg, rc2, e2.msg);
  FUZZ_ASSERT(rc1 == 0 || e1.msg[0], "refusal %d without a message", rc1);
  FUZZ_ASSERT((rc1 == 0) == (plain != NULL), "net_decode returned %d with an Envelope %s", rc1, plain ? "set" : "unset");
  if (rc2 == EMBER_ESCHEMA) FUZZ_ASSERT(in_arena != NULL, "an Envelope of another version was not handed back");
  if (rc2 == EMBER_EDECODE && in_arena)
    FUZZ_ASSERT(in_arena->body_case == EMBER__ENVELOPE__BODY__NOT_SET, "EDECODE with body %d", (int)in_arena->body_case);
  if (rc1 == 0) {
    FUZZ_ASSERT(in_arena && in_arena->body_case == plain->body_case, "the two decoders read different bodies");
    FUZZ_ASSERT(strcmp(net_body_name(plain->body_case), "none") != 0, "body %d has no name", (int)plain->body_case);
  }
  if (rc1 == 0 && !has_field_zero(&plain->base)) {
    uint8_t *once = NULL, *twice = NULL;
    size_t once_len = 0, twice_len = 0;
    FUZZ_ASSERT(net_encode(plain, &once, &once_len, &e1) == 0, "net_encode: %s", e1.msg);
    Ember__Envelope *back = NULL;
    FUZZ_ASSERT(net_decode(once, once_len, 0, &back, &e1) == 0, "re-encoded Envelope does not decode: %s", e1.msg);
    FUZZ_ASSERT(back->body_case == plain->body_case, "body %d came back as %d", (int)plain->body_case,
                (int)back->body_case);
    FUZZ_ASSERT(net_encode(back, &twice, &twice_len, &e1) == 0, "net_encode: %s", e1.msg);
    FUZZ_ASSERT(once_len == twice_len && memcmp(once, twice, once_len) == 0, "encoding is not stable (%zu, %zu bytes)",
                once_len, twice_len);
    free(once), free(twice);
    net_envelope_free(back);
  }
  net_envelope_free(plain);
  arena_reset(&ar);
  return 0;
}

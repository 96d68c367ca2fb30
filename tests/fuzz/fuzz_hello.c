/* fuzz_hello: an Envelope with the Hello a peer sends on connecting, as the replay server meets it on
 * either socket.
 *
 * The path (replay/replay_server_receive.c, replay_server_control.c srv_handle_hello): net_decode_with
 * through an arena, then the server's check (srv_check_hello) before any spec is set and against a
 * table of task "pendulum" (obs 3, act 1), and the log line it writes for an accepted Hello (at a
 * level that formats it, into /dev/null: the strings are the peer's). The learner's own check of a
 * Hello is a comparison of its task name with run.task.
 *
 * Properties: with no spec every Hello is accepted; against the spec, an accepted Hello names that
 * task or none, and dims that match or are 0; a refusal says why. */
#include <string.h>

#include "arena.h"
#include "fuzz.h"
#include "log.h"
#include "net.h"
#include "replay_server_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static arena ar;
  static int ready;
  if (!ready) {
    arena_init(&ar, 1 << 12);
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) log_set_output(devnull), log_set_level(LOG_INFO); /* format every line, show none */
    else fuzz_quiet();
    ready = 1;
  }
  Ember__Envelope *env = NULL;
  ember_err err = {0};
  int rc = net_decode_with(data, size, 64u << 20, arena_allocator(&ar), &env, &err);
  if (rc == 0 && env->body_case == EMBER__ENVELOPE__BODY_HELLO) {
    const Ember__Hello *h = env->hello;
    char why[256] = "";
    reject_reason reason = R_COUNT;
    FUZZ_ASSERT(srv_check_hello(h, NULL, &reason, why, sizeof why) == 0, "refused with no spec: %s", why);
    static const replay_spec pendulum = {.task = "pendulum", .obs_dim = 3, .act_dim = 1};
    if (srv_check_hello(h, &pendulum, &reason, why, sizeof why) == 0) {
      FUZZ_ASSERT(!h->task[0] || strcmp(h->task, "pendulum") == 0, "accepted task '%s'", h->task);
      FUZZ_ASSERT((h->obs_dim == 0 || h->obs_dim == 3) && (h->act_dim == 0 || h->act_dim == 1), "accepted dims %u, %u",
                  h->obs_dim, h->act_dim);
      log_event(LOG_INFO, "replay", "hello", LF_STR("role", h->role), LF_U64("id", h->id), LF_STR("task", h->task),
                LF_STR("host", h->hostname), LF_U64("pid", h->pid), LF_STR("version", h->software_version));
    } else {
      FUZZ_ASSERT(reason < R_COUNT && why[0], "a refusal without a reason");
    }
  }
  arena_reset(&ar);
  return 0;
}

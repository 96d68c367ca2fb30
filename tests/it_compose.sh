#!/usr/bin/env bash
# The docker-compose cluster for real: build the image (seeding its base image from Debian's archive
# where no registry is reachable), bring up replay + learner + 3 actors + the evaluator on a private network, see
# parameter versions advance on every actor, kill the learner container, see it restart and resume
# from its checkpoint with the version continuing, and `down -v` at the end.
# Exit 77 (skipped, with the reason printed) where no Docker engine can be used.
set -uo pipefail
src=${EMBER_SOURCE_DIR:?EMBER_SOURCE_DIR is not set (ctest sets it)}
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "SKIP: no usable Docker engine here (docker info failed)"; exit 77
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "SKIP: docker-compose is not installed"; exit 77
fi

project="embertest$$"
compose() { docker-compose -p "$project" -f "$src/deploy/docker-compose.yml" "$@"; }
fail() { echo "FAIL: $*"; compose logs --no-color --tail=40 >&2 || true; exit 1; }
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== building the image (cached after the first time)"
"$src/deploy/seed-base-image.sh" || fail "could not seed the base image"
docker build -q -f "$src/deploy/Dockerfile" -t ember:test "$src" >/dev/null || fail "docker build failed"
export EMBER_IMAGE=ember:test EMBER_RUN_TASK=pendulum EMBER_RUN_ALGO=sac

echo "== up: replay, learner, 3 actors, the evaluator"
compose up -d --scale actor=3 replay learner actor evaluator >/dev/null || fail "compose up failed"

# GET /metrics inside a service's container (no tools needed but bash).
metrics() { # service port [index]
  docker exec "$(compose ps -q "$1" | sed -n "${3:-1}p")" bash -c \
    "exec 3<>/dev/tcp/127.0.0.1/$2 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null
}
# the value of the first series of a metric family (labels or not)
value() { awk -v s="$1" '$1 == s || index($1, s "{") == 1 {print $2; exit}'; }
wait_for() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"; sleep 2; done
}

versions_on_actors() {
  local n=0 v
  for i in 1 2 3; do
    v=$(metrics actor 9103 "$i" | value actor_policy_version)
    [ -n "$v" ] && awk -v v="$v" 'BEGIN{exit !(v >= 2)}' && n=$((n + 1))
  done
  [ "$n" -eq 3 ]
}
wait_for 240 "parameter versions >= 2 on all three actors" versions_on_actors
echo "   every actor acts with published parameters"
# the refusal counter exists with Curve off too (the dashboard's CurveZMQ panel reads 0, not "no data")
[ "$(metrics replay 9101 | value auth_refused_total)" = 0 ] || fail "replay serves no auth_refused_total 0 on plain tcp"
[ "$(metrics learner 9102 | value auth_refused_total)" = 0 ] || fail "learner serves no auth_refused_total 0 on plain tcp"

# the evaluator service's complete evaluations reach the learner (pendulum: every 1,000 env steps)
evaluated() { local v; v=$(metrics learner 9102 | value learner_evaluations_total); [ -n "$v" ] && awk -v v="$v" 'BEGIN{exit !(v >= 1)}'; }
wait_for 240 "a complete evaluation from the evaluator service" evaluated
echo "   the evaluator service's evaluations reach the learner"

learner_version() { metrics learner 9102 | value learner_params_version; }
has_checkpoint() { docker exec "$(compose ps -q learner)" bash -c 'ls /var/lib/ember/run/checkpoints/*.ckpt' >/dev/null 2>&1; }
wait_for 120 "a learner checkpoint" has_checkpoint
before=$(learner_version)
[ -n "$before" ] || fail "no learner_params_version before the kill"
learner_id=$(compose ps -q learner)
restarts_before=$(docker inspect -f '{{.RestartCount}}' "$learner_id")
echo "== kill the learner (version $before)"
# SIGKILL the learner's process from outside, as a crash or the OOM killer would: Docker counts
# `docker kill` as a deliberate stop and would not apply the restart policy.
kill -9 "$(docker inspect -f '{{.State.Pid}}' "$learner_id")" || fail "could not kill the learner process"
restarted() { [ "$(docker inspect -f '{{.RestartCount}}' "$learner_id")" -gt "$restarts_before" ] &&
              [ "$(docker inspect -f '{{.State.Running}}' "$learner_id")" = true ]; }
wait_for 60 "the learner container to restart" restarted
resumed() { docker logs "$learner_id" 2>&1 | grep '"msg":"resumed"' > /dev/null; }  # not -q: under pipefail an early exit would SIGPIPE docker logs
wait_for 60 "the learner to log that it resumed" resumed
version_continues() { local v; v=$(learner_version); [ -n "$v" ] && awk -v a="$v" -v b="$before" 'BEGIN{exit !(a > b)}'; }
wait_for 120 "the parameter version to continue past $before" version_continues
after=$(learner_version)
# a resumed learner never goes back: its first version after the restart is above the checkpoint's
first_after=$(docker logs "$learner_id" 2>&1 | grep '"msg":"resumed"' | tail -1 | sed -E 's/.*"version":([0-9]+).*/\1/')
echo "   resumed at version $first_after (killed at $before), now $after"
[ -n "$first_after" ] && [ "$first_after" -gt 0 ] || fail "the resumed line names no version"
versions_on_actors || fail "actors lost the parameters after the learner restart"
# versions never go back for the actors: the resumed learner numbers its publications past theirs
for i in 1 2 3; do
  v=$(metrics actor 9103 "$i" | value actor_policy_version)
  awk -v v="$v" -v b="$before" 'BEGIN{exit !(v > b)}' || fail "actor $i acts with version $v, not past $before"
done
echo "== down -v"
compose down -v --remove-orphans >/dev/null || fail "compose down failed"
trap - EXIT
echo "compose test passed"

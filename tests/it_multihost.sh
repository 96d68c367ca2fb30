#!/usr/bin/env bash
# Actors on two hosts, replay + learner on a third, and a pulled cable, with network namespaces
# (tests/lib/netns.sh): three namespaces on one bridge, link-local 169.254.x addresses that exist
# only inside them.
#   phase 1  both actor hosts store transitions and act with Params from the learner
#   phase 2  host A's link is taken down for CUT_S seconds: A keeps stepping; what it cannot deliver
#            is accounted (in flight, written off as unconfirmed after actor.ack_timeout_ms, queued,
#            dropped when its queue is full); B keeps storing, the learner keeps updating; nobody exits
#   phase 3  the link comes back: A's stored count grows again and it acts with a newer version
#   phase 4  SIGTERM to everyone: each exits 0, each actor's final "stopped" line accounts every env
#            step (env_steps = stored + rejected + dropped + unconfirmed + in_flight), and what replay
#            inserted lies between what the actors saw acknowledged and what they sent
# Replay's rate limiter is on (one learner update per env step, replay.samples_per_insert = batch
# size) and the actors pace to it as docs/operations.md recommends (actor.replay_wait_ms 200,
# actor.ack_timeout_ms 10 minutes): cut off, actor A fills its queue, then, with batches in flight and
# a full queue, waits 200 ms per step for an ack, so it goes on stepping slowly, buffering and dropping
# its oldest queued batches. ACK_MS=2000 runs the same test with a short ack timeout (in-flight batches
# written off as unconfirmed during the cut, taken back by late acks; the final check stays exact).
# Observed through the programs' own interfaces: each actor's /metrics (on 127.0.0.1 inside its
# namespace, scraped with bash /dev/tcp), `ember status` against replay and learner from the server
# namespace, and the actors' JSON log lines. Needs root (CAP_NET_ADMIN): otherwise SKIP, exit 77.
set -euo pipefail
src=${EMBER_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
bin=${EMBER_BINARY_DIR:?EMBER_BINARY_DIR is not set (ctest sets it)}
# shellcheck source=lib/netns.sh
. "$src/tests/lib/netns.sh"

if ! netns_available; then
  if [ "$(id -u)" -ne 0 ]; then echo "SKIP: network namespaces need root (CAP_NET_ADMIN); running as uid $(id -u)"
  elif ! command -v ip > /dev/null; then echo "SKIP: iproute2 (ip) is not installed"
  else echo "SKIP: this machine does not allow creating network namespaces (ip netns add failed)"; fi
  exit 77
fi
for p in ember ember-replay ember-learner ember-actor; do
  [ -x "$bin/app/$p" ] || { echo "FAIL: $bin/app/$p is not built" >&2; exit 1; }
done

CUT_S=${CUT_S:-8}
ACK_MS=${ACK_MS:-600000}
dir=$(mktemp -d /tmp/ember-it-multihost.XXXXXX)
# a unique tag: its last 4 characters name the veth pairs in the root namespace, so retry on a clash
for _ in 1 2 3 4 5 6 7 8; do
  tag="emh$(printf '%04x' $((RANDOM % 65536)))"
  ip netns list | grep -q "^${tag}-" || ip link show "e1h${tag: -4}" > /dev/null 2>&1 || break
done
pids=()
cleanup() {
  local rc=$? p
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null; done
  for _ in $(seq 1 30); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2> /dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null; wait "$p" 2> /dev/null; done
  netns_down "$tag"
  [ -n "${KEEP:-}" ] && echo "logs kept in $dir" || rm -rf "$dir"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  for f in "$dir"/*.log; do echo "== $f (last 8 lines)"; tail -8 "$f"; done >&2
  exit 1
}
say() { printf '[%5.1fs] %s\n' "$(awk -v s="$t0" -v n="$(date +%s.%N)" 'BEGIN{print n - s}')" "$*"; }
t0=$(date +%s.%N)

netns_up "$tag" srv a b
SRV=$(netns_ip "$tag" srv)
say "namespaces ${tag}-{srv,a,b} up; servers at $SRV"

# Started with `ip netns exec` itself (not the netns_exec function, which `&` would run in a subshell):
# ip execs the program, so $! is the program's own PID, the one SIGTERM must reach.
export EMBER_LOG_LEVEL=info OPENBLAS_NUM_THREADS=1
common=(--set sac.hidden_size=32 --set learner.batch_size=64 --set metrics.address=127.0.0.1
        --set metrics.replay_port=-1 --set metrics.learner_port=-1)

wait_file() { for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.1; done; fail "no $1"; }

ip netns exec "${tag}-srv" "$bin/app/ember-replay" "${common[@]}" --set replay.task=pendulum \
  --set replay.insert_endpoint="tcp://$SRV:5560" --set replay.sample_endpoint="tcp://$SRV:5561" \
  --set replay.min_size_to_sample=500 --set replay.samples_per_insert=64 --set replay.error_buffer=64000 \
  --set replay.log_interval_s=2 --ready-file "$dir/replay.ready" > "$dir/replay.log" 2>&1 &
replay_pid=$!
pids+=("$replay_pid")
ip netns exec "${tag}-srv" "$bin/app/ember-learner" "${common[@]}" --task pendulum --steps 0 --seed 3 \
  --run-dir "$dir/run" --set learner.params_endpoint="tcp://$SRV:5562" \
  --set learner.control_endpoint="tcp://$SRV:5563" --set learner.replay_endpoint="tcp://$SRV:5561" \
  --set learner.publish_every=250 --set learner.log_interval_s=2 --set learner.checkpoints=false \
  --set learner.tensorboard=false --ready-file "$dir/learner.ready" > "$dir/learner.log" 2>&1 &
learner_pid=$!
pids+=("$learner_pid")
wait_file "$dir/replay.ready"
wait_file "$dir/learner.ready"

start_actor() { # HOST ID
  ip netns exec "${tag}-$1" "$bin/app/ember-actor" "${common[@]}" --set actor.id="$2" --set actor.seed=11 \
    --set actor.task=pendulum --set actor.num_envs=2 --set metrics.actor_port=9100 \
    --set actor.replay_endpoint="tcp://$SRV:5560" --set actor.params_endpoint="tcp://$SRV:5562" \
    --set actor.control_endpoint="tcp://$SRV:5563" --set actor.replay_wait_ms=200 \
    --set actor.ack_timeout_ms="$ACK_MS" --set actor.heartbeat_ms=200 --set actor.params_request_ms=1000 \
    --set actor.log_interval_s=1 --set actor.drain_ms=3000 \
    > "$dir/actor-$1.log" 2>&1 &
  pids+=($!)
  eval "actor_$1_pid=$!"
}
start_actor a 1
start_actor b 2
say "replay $replay_pid, learner $learner_pid, actor a $actor_a_pid, actor b $actor_b_pid"

all_alive() {
  local p
  for p in "$replay_pid" "$learner_pid" "$actor_a_pid" "$actor_b_pid"; do
    if ! kill -0 "$p" 2> /dev/null; then
      local rc=0
      wait "$p" || rc=$?
      fail "process $p exited during $1 with code $rc (replay $replay_pid, learner $learner_pid, actors $actor_a_pid $actor_b_pid)"
    fi
  done
}
# one actor's counters from its /metrics: "made stored rejected dropped unconfirmed pending version"
scrape() { # HOST -> prints the seven numbers (integers)
  netns_exec "$tag" "$1" timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9100 &&
    printf "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && cat <&3' 2> /dev/null |
    awk 'function v(n) { return (n in m) ? m[n] : "x" }
         /^actor_/ { name = $1; sub(/\{.*/, "", name); m[name] = sprintf("%.0f", $2) }
         END { print v("actor_transitions_made_total"), v("actor_transitions_stored_total"),
                     v("actor_transitions_rejected_total"), v("actor_transitions_dropped_total"),
                     v("actor_transitions_unconfirmed_total"), v("actor_transitions_pending"),
                     v("actor_policy_version") }'
}
read_actor() { # HOST PREFIX: sets PREFIX_made, _stored, _rejected, _dropped, _unconfirmed, _pending, _version
  local line="" try
  for try in $(seq 1 20); do      # the endpoint comes up a moment after the actor starts
    line=$(scrape "$1" || true)
    case "$line" in *x*|"") sleep 0.2;; *) break;; esac
  done
  case "$line" in *x*|"") fail "actor on $1: /metrics unreadable ('$line')";; esac
  read -r "${2}_made" "${2}_stored" "${2}_rejected" "${2}_dropped" "${2}_unconfirmed" "${2}_pending" \
    "${2}_version" <<< "$line"
}
learner_updates() { # prints "version updates" from `ember status` against the learner
  netns_exec "$tag" srv "$bin/app/ember" status --timeout-ms 2000 "tcp://$SRV:5563" 2> /dev/null |
    sed -n 's/^  version *\([0-9]*\) *updates \([0-9]*\).*/\1 \2/p' || true
}

# ---- phase 1: both hosts store transitions and act with Params --------------------------------
ok=0
for _ in $(seq 1 90); do
  all_alive "phase 1"
  read_actor a A; read_actor b B
  if [ "$A_stored" -ge 1000 ] && [ "$B_stored" -ge 1000 ] && [ "$A_version" -ge 2 ] && [ "$B_version" -ge 2 ]; then
    ok=1; break
  fi
  sleep 0.5
done
[ $ok = 1 ] || fail "phase 1: A stored $A_stored v$A_version, B stored $B_stored v$B_version (want >= 1000 and v >= 2 each)"
for p in "$replay_pid" "$learner_pid" "$actor_a_pid" "$actor_b_pid"; do  # $! is the program itself
  case "$(readlink "/proc/$p/exe")" in */ember-*) ;; *) fail "PID $p is $(readlink "/proc/$p/exe"), not an ember program";; esac
done
say "phase 1: A made $A_made stored $A_stored v$A_version; B made $B_made stored $B_stored v$B_version"
netns_exec "$tag" srv "$bin/app/ember" status --timeout-ms 2000 "tcp://$SRV:5561" "tcp://$SRV:5563" \
  > "$dir/status-phase1.txt" || fail "ember status: $(cat "$dir/status-phase1.txt")"
grep -q "actor 1 .*version [1-9]" "$dir/status-phase1.txt" && grep -q "actor 2 .*version [1-9]" "$dir/status-phase1.txt" ||
  fail "the learner does not list both actors with a version: $(cat "$dir/status-phase1.txt")"

# ---- phase 2: host A's cable pulled ------------------------------------------------------------
read -r L0_version L0_updates <<< "$(learner_updates)"
[ -n "${L0_updates:-}" ] || fail "ember status did not answer for the learner"
netns_cut "$tag" a
say "phase 2: A's link down (learner at v$L0_version, $L0_updates updates)"
sleep 1
read_actor a C1; read_actor b D1        # one second into the cut: nothing in transit any more
sleep $((CUT_S - 1))
all_alive "the cut"
read_actor a C2; read_actor b D2
read -r L1_version L1_updates <<< "$(learner_updates)"
say "phase 2: A made $C1_made -> $C2_made, stored $C1_stored -> $C2_stored, dropped $C2_dropped, unconfirmed $C2_unconfirmed, pending $C2_pending, v$C2_version; B stored $D1_stored -> $D2_stored; learner v$L1_version, $L1_updates updates"
# paced: with its queue full and batches in flight, A takes one step per replay_wait_ms (200 ms)
[ "$C2_made" -ge $((C1_made + 2 * (CUT_S - 1))) ] || fail "A stopped stepping while cut off: made $C1_made -> $C2_made"
[ "$C2_stored" = "$C1_stored" ] || fail "A's stored count grew while its link was down: $C1_stored -> $C2_stored"
[ $((C2_dropped + C2_unconfirmed + C2_pending)) -gt 0 ] || fail "nothing undelivered after a ${CUT_S}s cut"
# made = stored + rejected + dropped + unconfirmed + pending holds live (one metrics sync of slack)
undelivered=$((C2_dropped + C2_unconfirmed + C2_pending))
miss=$((C2_made - C2_stored - C2_rejected - undelivered))
[ "${miss#-}" -le 256 ] || fail "A's live accounting is off by $miss: made $C2_made, stored $C2_stored, rejected $C2_rejected, dropped $C2_dropped, unconfirmed $C2_unconfirmed, pending $C2_pending"
[ "$D2_stored" -gt $((D1_stored + 200)) ] || fail "B stopped storing while A was cut off: $D1_stored -> $D2_stored"
[ "$L1_updates" -gt "$L0_updates" ] && [ "$L1_version" -gt "$L0_version" ] ||
  fail "training stopped while A was cut off: v$L0_version/$L0_updates -> v$L1_version/$L1_updates updates"
[ "$D2_version" -gt "$L0_version" ] || fail "B acts with v$D2_version, not newer than v$L0_version from before the cut"

# ---- phase 3: the cable back -------------------------------------------------------------------
netns_restore "$tag" a
say "phase 3: A's link up"
ok=0
for _ in $(seq 1 60); do          # TCP retransmission backoff after a cut of 8 s: up to ~7 s
  all_alive "phase 3"
  read_actor a R
  if [ "$R_stored" -gt $((C2_stored + 500)) ] && [ "$R_version" -gt "$L1_version" ]; then ok=1; break; fi
  sleep 0.5
done
[ $ok = 1 ] || fail "after the restore A stored $C2_stored -> $R_stored and acts with v$R_version (learner was at v$L1_version)"
say "phase 3: A stored $C2_stored -> $R_stored, acts with v$R_version (> v$L1_version), unconfirmed $R_unconfirmed, dropped $R_dropped"
sleep 1
read_actor b B3
netns_exec "$tag" srv "$bin/app/ember" status --timeout-ms 2000 "tcp://$SRV:5561" "tcp://$SRV:5563" \
  > "$dir/status-phase3.txt" || fail "ember status after the restore: $(cat "$dir/status-phase3.txt")"

# ---- phase 4: SIGTERM, exit codes, exact accounting ---------------------------------------------
kill -TERM "$actor_a_pid" "$actor_b_pid"
for h in a b; do
  eval "p=\$actor_${h}_pid"
  rc=0; wait "$p" || rc=$?
  [ $rc = 0 ] || fail "actor on $h exited $rc after SIGTERM"
done
netns_exec "$tag" srv "$bin/app/ember" status --timeout-ms 2000 "tcp://$SRV:5561" > "$dir/status-replay.txt" ||
  fail "replay status: $(cat "$dir/status-replay.txt")"
inserted=$(sed -n 's/^  inserted *\([0-9]*\) transitions.*/\1/p' "$dir/status-replay.txt")
for p in "$learner_pid" "$replay_pid"; do
  kill -TERM "$p"
  rc=0; wait "$p" || rc=$?
  [ $rc = 0 ] || fail "process $p (learner $learner_pid, replay $replay_pid) exited $rc after SIGTERM"
done
pids=()
field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<< "$2"; }
sum_stored=0; sum_sent_max=0
for h in a b; do
  line=$(grep '"msg":"stopped"' "$dir/actor-$h.log" | tail -1)
  [ -n "$line" ] || fail "actor on $h logged no stopped line"
  es=$(field env_steps "$line"); st=$(field stored "$line"); rj=$(field rejected "$line")
  dr=$(field dropped "$line"); un=$(field unconfirmed "$line"); fl=$(field in_flight "$line")
  say "actor $h stopped: env_steps $es = stored $st + rejected $rj + dropped $dr + unconfirmed $un + in_flight $fl"
  [ "$es" = $((st + rj + dr + un + fl)) ] || fail "actor on $h: accounting off by $((es - st - rj - dr - un - fl)): $line"
  [ "$rj" = 0 ] || fail "actor on $h: replay rejected $rj transitions: $line"
  grep -q '"msg":"progress"' "$dir/actor-$h.log" || fail "actor on $h logged no progress line"
  sum_stored=$((sum_stored + st)); sum_sent_max=$((sum_sent_max + st + un + fl))
done
[ -n "$inserted" ] && [ "$inserted" -ge "$sum_stored" ] && [ "$inserted" -le "$sum_sent_max" ] ||
  fail "replay inserted ${inserted:-?}; the actors saw $sum_stored acknowledged and sent at most $sum_sent_max"
say "replay inserted $inserted (actors: $sum_stored acknowledged, at most $sum_sent_max sent)"
for f in "$dir"/*.log; do
  ! grep -q '"level":"error"' "$f" || fail "an error was logged in $f: $(grep '"level":"error"' "$f" | head -3)"
done
echo PASS

#!/usr/bin/env bash
# The operator commands end to end: `ember status` against replay, learner and an actor running as
# three processes on 127.0.0.1 (ephemeral ports), the learner stopped with SIGTERM and restarted
# from its checkpoint (the version continues, curves.csv is appended), `ember plot` on its run
# directory, `ember keygen`; and each command's refusals (bad usage exit 2, an unreachable server
# named within the timeout, exit 1).
set -euo pipefail
bin=$1
ember=$bin/app/ember
dir=$(mktemp -d /tmp/ember-it-ops.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$dir"/*.log; do echo "== $f"; tail -5 "$f"; done >&2; exit 1; }
wait_file() { for _ in $(seq 1 200); do [ -s "$1" ] && return 0; sleep 0.05; done; fail "no $1"; }
export EMBER_LOG_LEVEL=info OPENBLAS_NUM_THREADS=1

common=(--task pendulum --seed 5 --set sac.hidden_size=16 --set learner.batch_size=32
        --set metrics.replay_port=-1 --set metrics.learner_port=-1 --set metrics.actor_port=-1)
"$bin/app/ember-replay" "${common[@]}" --set replay.insert_endpoint='tcp://127.0.0.1:*' \
  --set replay.sample_endpoint='tcp://127.0.0.1:*' --set replay.min_size_to_sample=200 \
  --set replay.samples_per_insert=32 --set replay.error_buffer=32000 \
  --ready-file "$dir/replay.ready" > "$dir/replay.log" 2>&1 &
pids+=($!)
wait_file "$dir/replay.ready"
insert_ep=$(sed -n 1p "$dir/replay.ready"); sample_ep=$(sed -n 2p "$dir/replay.ready")

start_learner() {
  "$bin/app/ember-learner" "${common[@]}" --steps 0 --run-dir "$dir/run" \
    --set learner.params_endpoint='tcp://127.0.0.1:*' --set learner.control_endpoint="$1" \
    --set learner.replay_endpoint="$sample_ep" --set learner.publish_every=20 --set learner.csv_interval_s=0.2 \
    --set learner.checkpoint_interval_s=0.5 --ready-file "$dir/learner.ready" >> "$dir/learner.log" 2>&1 &
  learner_pid=$!
  pids+=($learner_pid)
  wait_file "$dir/learner.ready"
}
start_learner 'tcp://127.0.0.1:*'
params_ep=$(sed -n 1p "$dir/learner.ready"); control_ep=$(sed -n 2p "$dir/learner.ready")

"$bin/app/ember-actor" "${common[@]}" --set actor.task=pendulum --set actor.num_envs=1 --set actor.id=7 \
  --set actor.replay_endpoint="$insert_ep" --set actor.params_endpoint="$params_ep" \
  --set actor.control_endpoint="$control_ep" --set actor.heartbeat_ms=100 --set actor.params_request_ms=200 \
  --set actor.replay_wait_ms=200 --set actor.ack_timeout_ms=600000 > "$dir/actor.log" 2>&1 &
pids+=($!)

# status: both servers answer; the learner knows actor 7 with its version
ok=0
for _ in $(seq 1 60); do
  "$ember" status --interval 0.5 "$sample_ep" "${control_ep#tcp://}" > "$dir/status.txt" 2>&1 || true
  if grep -q "actor 7 .*version [1-9]" "$dir/status.txt" && grep -q "updates [1-9][0-9]* ([1-9]" "$dir/status.txt" &&
     grep -Eq "train -?[0-9]" "$dir/status.txt" && grep -Eq "critic_loss [1-9-]" "$dir/status.txt"; then ok=1; break; fi
  sleep 0.5
done
cat "$dir/status.txt"
[ $ok = 1 ] || fail "status never showed actor 7 acting with Params, learner updates/s, a train return and losses"
grep -q "^replay " "$dir/status.txt" || fail "no replay section"
grep -Eq "inserted +[1-9][0-9]* transitions .*[0-9.]+/s" "$dir/status.txt" || fail "no insert rate"
grep -q "rejected" "$dir/status.txt" || fail "no rejections line"
grep -q "losses .*critic_loss" "$dir/status.txt" || fail "no losses"
grep -Eq "staleness +[0-9]+ +last heard [0-9.]+ s ago" "$dir/status.txt" || fail "no staleness / heartbeat age"

# the learner stopped by SIGTERM writes a final checkpoint; restarted, it resumes with the version going on
sleep 1
kill -TERM "$learner_pid"; wait "$learner_pid" || fail "learner exit code $? after SIGTERM"
ls "$dir/run/checkpoints"/learner-*.ckpt > /dev/null || fail "no checkpoint after SIGTERM"
v1=$(grep '"msg":"done"' "$dir/learner.log" | tail -1 | sed 's/.*"version":\([0-9]*\).*/\1/')
rows1=$(wc -l < "$dir/run/curves.csv")
[ "${v1:-0}" -ge 1 ] || fail "first learner published nothing (version '$v1')"
rm -f "$dir/learner.ready"
start_learner "$control_ep"
grep -q '"msg":"resumed"' "$dir/learner.log" || { sleep 1; grep -q '"msg":"resumed"' "$dir/learner.log"; } \
  || fail "the restarted learner did not log a resume"
resumed_v=$(grep '"msg":"resumed"' "$dir/learner.log" | tail -1 | sed 's/.*"version":\([0-9]*\).*/\1/')
[ "$resumed_v" = "$v1" ] || fail "resumed version $resumed_v, the stopped learner was at $v1"
ok=0
for _ in $(seq 1 60); do
  "$ember" status --interval 0 "$control_ep" > "$dir/status2.txt" 2>&1 || true
  v2=$(sed -n 's/^  version *\([0-9]*\).*/\1/p' "$dir/status2.txt")
  if [ "${v2:-0}" -gt "$v1" ] && grep -q "actor 7 .*version [1-9]" "$dir/status2.txt"; then ok=1; break; fi
  sleep 0.5
done
[ $ok = 1 ] || fail "after the resume the version did not go on from $v1 (status: $(cat "$dir/status2.txt"))"
kill -TERM "$learner_pid"; wait "$learner_pid" || true
[ "$(grep -c '^env_steps,' "$dir/run/curves.csv")" = 1 ] || fail "curves.csv has more than one header"
[ "$(wc -l < "$dir/run/curves.csv")" -gt "$rows1" ] || fail "curves.csv was not appended to"
awk -F, 'NR > 2 && $3 < prev { bad = 1 } NR > 1 { prev = $3 } END { exit bad }' "$dir/run/curves.csv" \
  || fail "updates go backwards in curves.csv"
ls "$dir/run/tb"/events.out.tfevents.* > /dev/null || fail "no TensorBoard events"

# status: an unreachable server is named within the timeout; bad usage exits 2
set +e
start=$(date +%s%N)
"$ember" status --timeout-ms 300 "$control_ep" > "$dir/down.txt" 2>&1; rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ $rc = 1 ] && grep -q "not answering.*${control_ep}" "$dir/down.txt" || fail "status of a stopped learner: rc $rc, $(cat "$dir/down.txt")"
[ $ms -lt 3000 ] || fail "status took $ms ms for a 300 ms timeout"
"$ember" status > /dev/null 2>&1; [ $? = 2 ] || fail "status without endpoints"
"$ember" status --timeout-ms x 127.0.0.1:1 > /dev/null 2>&1; [ $? = 2 ] || fail "status --timeout-ms x"
"$ember" status notanendpoint 2> "$dir/e.txt"; [ $? = 2 ] && grep -q notanendpoint "$dir/e.txt" || fail "bad endpoint"
"$ember" status --help | grep -q "usage: ember status" || fail "status --help"

# plot: PNGs of the run; a directory without curves.csv is named
"$ember" plot "$dir/run" > "$dir/plot.txt" || fail "plot: $(cat "$dir/plot.txt")"
for f in returns losses; do
  head -c 4 "$dir/run/plots/$f.png" | od -An -c | grep -q "P   N   G" || fail "plot: $f.png is not a PNG"
done
"$ember" plot "$dir/run" "$dir/run" --out "$dir/plots2" > /dev/null || fail "plot --out"
test -s "$dir/plots2/returns.png" || fail "plot --out wrote no returns.png"
"$ember" plot "$dir/nothing" 2> "$dir/e.txt"; [ $? = 1 ] && grep -q "nothing" "$dir/e.txt" || fail "plot of a missing run"
"$ember" plot 2> /dev/null; [ $? = 2 ] || fail "plot without a run"
"$ember" plot --help | grep -q "usage: ember plot" || fail "plot --help"

# keygen: a key pair, the secret one 0600; never overwritten; bad usage
"$ember" keygen "$dir/keys/x" node1 > /dev/null || fail "keygen"
grep -q 'secret-key = "' "$dir/keys/x/node1.key" || fail "keygen: no secret key"
grep -q 'public-key = "' "$dir/keys/x/node1.pub" || fail "keygen: no public key"
! grep -q secret "$dir/keys/x/node1.pub" || fail "keygen: the .pub holds a secret"
[ "$(stat -c %a "$dir/keys/x/node1.key")" = 600 ] || fail "keygen: .key is not 0600"
"$ember" keygen "$dir/keys/x" node1 2> "$dir/e.txt"; [ $? = 1 ] && grep -q "node1.key" "$dir/e.txt" || fail "keygen overwrite"
"$ember" keygen "$dir/keys" 2> /dev/null; [ $? = 2 ] || fail "keygen without NAME"
"$ember" keygen "$dir/keys" a/b 2> /dev/null; [ $? = 2 ] || fail "keygen NAME with a slash"
"$ember" keygen --help | grep -q "usage: ember keygen" || fail "keygen --help"
set -e
echo PASS

#!/usr/bin/env bash
# `ember train` end to end in one process, small and quick (also under ASan): it runs to run.steps,
# writes config.yaml, curves.csv and the learner state, and refuses bad command lines.
set -euo pipefail
ember=$1
dir=$(mktemp -d /tmp/ember-it-smoke.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$ember" train --task pendulum --steps 1500 --seed 3 --actors 2 --run-dir "$dir/run" \
  --set sac.hidden_size=16 --set learner.batch_size=32 --set replay.min_size_to_sample=200 \
  --set learner.csv_interval_s=0.5 --set train.progress_interval_s=1 --set train.log_level=info \
  > "$dir/out.txt" 2> "$dir/log.txt"
cat "$dir/out.txt"
grep -q "ember train: done" "$dir/out.txt" || fail "no final line"
grep -q "env steps" "$dir/out.txt" || fail "no progress line"
test -s "$dir/run/config.yaml" || fail "no config.yaml"
grep -q "hidden_size: 16" "$dir/run/config.yaml" || fail "config.yaml lacks the --set value"
grep -q "inproc://" "$dir/run/config.yaml" || fail "config.yaml does not show the inproc endpoints used"
test -s "$dir/run/learner_state.bin" || fail "no learner state"
head -1 "$dir/run/curves.csv" | grep -q "^env_steps,wall_s,updates,train_return,eval_return,eval_env_steps,eval_version,eval_std,eval_episodes,critic_loss" \
  || fail "curves.csv header: $(head -1 "$dir/run/curves.csv")"
# the evaluator: one evaluation of 10 whole episodes (pendulum: 200 steps each) at 1,000 env steps
head -1 "$dir/run/evals.csv" | grep -q "^version,env_steps,wall_s,updates,episodes,mean,std" || fail "evals.csv header"
awk -F, 'NR > 1 { n++; if ($2 < 1000 || $5 != 10 || $10 != 200) bad = 1 } END { exit bad || n < 1 }' "$dir/run/evals.csv" \
  || fail "evals.csv: $(cat "$dir/run/evals.csv")"
# the run ends on a final evaluation of its last published policy (actor id N + 2 = 4), printed too
grep -q "ember train: final evaluation of version" "$dir/out.txt" || fail "no final evaluation line"
tail -1 "$dir/run/evals.csv" | awk -F, '{ exit !($12 == 4 && $5 == 10 && $2 > 1000) }' \
  || fail "the last row of evals.csv is not the final evaluation: $(tail -1 "$dir/run/evals.csv")"
# and the evaluator's own stopped line counts one evaluation, nothing skipped or abandoned
grep -q '"msg":"evaluator_stopped","actor_id":3,"evaluations":1,"eval_episodes":10,"evaluations_skipped":0,"evaluations_abandoned":0' \
  "$dir/log.txt" || fail "evaluator: $(grep evaluator_stopped "$dir/log.txt")"
rows=$(($(wc -l < "$dir/run/curves.csv") - 1))
[ "$rows" -ge 2 ] || fail "curves.csv has $rows rows"
# the run stops at run.steps stored transitions (give or take what arrives between two checks)
tail -1 "$dir/run/curves.csv" | awk -F, '{ exit !($1 >= 1500 && $1 <= 2500 && $3 > 0) }' \
  || fail "last row: $(tail -1 "$dir/run/curves.csv")"

# the actors wait for replay's rate limiter, they do not run ahead and drop: nothing made is dropped,
# and what they made beyond what replay took is at most their short queues (3 one-step batches each)
awk '/"component":"actor","msg":"stopped"/ { n++; match($0, /"env_steps":[0-9]+/); made += substr($0, RSTART + 12, RLENGTH - 12)
       if ($0 !~ /"dropped":0,/) bad = bad " dropped" }
     /"component":"replay","msg":"stopped"/ { match($0, /"inserts":[0-9]+/); ins = substr($0, RSTART + 10, RLENGTH - 10) }
     END { if (n != 2 || ins == "" || bad != "" || made - ins > 6 || made < ins) { print n, made, ins, bad; exit 1 } }' \
  "$dir/log.txt" || fail "actors ran ahead of replay or dropped: $(grep '"stopped"' "$dir/log.txt")"

# the run can be repeated from its own config file; a key given a value, even its built-in default's,
# keeps it (train's short actor queues apply only to keys nobody set)
"$ember" train --config "$dir/run/config.yaml" --steps 600 --run-dir "$dir/run2" --set train.progress_interval_s=0 \
  --set actor.queue_batches=64 --set actor.max_in_flight=8 > /dev/null || fail "rerun from config.yaml"
test -s "$dir/run2/curves.csv" || fail "rerun wrote no curves"
grep -q "^  queue_batches: 64$" "$dir/run2/config.yaml" && grep -q "^  max_in_flight: 8$" "$dir/run2/config.yaml" \
  || fail "train replaced actor keys that were set: $(grep -E 'queue_batches|max_in_flight' "$dir/run2/config.yaml")"
grep -q "^  queue_batches: 1$" "$dir/run/config.yaml" || fail "train's short queue is not in the first run's config"
# a config.yaml written by an older ember (its actor.eval_every_versions key) still loads
grep -v '^  eval_every_versions:' "$dir/run/config.yaml" | sed 's/^  eval_every_steps: .*/  eval_every_versions: 10/' > "$dir/old.yaml"
grep -q "eval_every_versions: 10" "$dir/old.yaml" || fail "the test could not make an old config.yaml"
"$ember" train --config "$dir/old.yaml" --steps 300 --run-dir "$dir/run3" --set train.progress_interval_s=0 \
  > /dev/null || fail "a config.yaml of an older ember (actor.eval_every_versions) no longer loads"

# bad command lines: exit 2 with a message naming the problem
set +e
"$ember" train --bogus 2> "$dir/err.txt"; rc=$?
[ $rc -eq 2 ] && grep -q "bogus" "$dir/err.txt" || fail "unknown flag: rc $rc"
"$ember" train --set sac.hidden_size=0 2> "$dir/err.txt"; rc=$?
[ $rc -eq 2 ] && grep -q "sac.hidden_size" "$dir/err.txt" || fail "out-of-range value: rc $rc"
"$ember" train --algo nope --run-dir "$dir/bad" 2> "$dir/err.txt"; rc=$?
[ $rc -ne 0 ] && grep -q "nope" "$dir/err.txt" || fail "unknown algorithm: rc $rc"
"$ember" train --task nope --run-dir "$dir/bad" 2> "$dir/err.txt"; rc=$?
[ $rc -ne 0 ] && grep -q "nope" "$dir/err.txt" || fail "unknown task: rc $rc"
"$ember" frobnicate 2> /dev/null; rc=$?
[ $rc -eq 2 ] || fail "unknown command: rc $rc"
set -e
"$ember" config > "$dir/config.txt"
grep -q "sac.hidden_size" "$dir/config.txt" || fail "ember config lacks sac.hidden_size"
"$ember" config --markdown > "$dir/config.md"
grep -q "| \`learner.publish_every\`" "$dir/config.md" || fail "ember config --markdown"
echo PASS

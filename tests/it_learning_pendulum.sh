#!/usr/bin/env bash
# Learning test: `ember train` (replay, learner, two actors; SAC) on pendulum, seed fixed, must reach
# an average evaluation return better than -400 within 15,000 environment steps, and still be there
# at the end of the run. Evaluation = the actors' deterministic-policy episodes (3 per evaluation),
# averaged by the learner per evaluated policy version into curves.csv's eval_return column.
set -euo pipefail
ember=$1
dir=$(mktemp -d /tmp/ember-it-learning.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$ember" train --task pendulum --algo sac --steps 15000 --seed 1 --actors 2 --run-dir "$dir/run" \
  --set train.progress_interval_s=10
csv=$dir/run/curves.csv
test -s "$csv"
# first row whose eval_return beats -400 (env_steps at that time), and the last row's eval_return
read -r first_steps last_eval last_steps < <(awk -F, '
  NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "eval_return") e = i; if ($i == "env_steps") s = i }; next }
  $e != "nan" && $e + 0 > -400 && first == "" { first = $s }
  { last = $e; laststeps = $s }
  END { print (first == "" ? "never" : first), last, laststeps }' "$csv")
echo "eval return first better than -400 at env step $first_steps; final eval return $last_eval at $last_steps steps"
if [ "$first_steps" = never ]; then echo "FAIL: evaluation return never better than -400" >&2; exit 1; fi
if [ "$first_steps" -gt 15000 ]; then echo "FAIL: better than -400 only after $first_steps env steps" >&2; exit 1; fi
awk -v v="$last_eval" 'BEGIN { exit !(v != "nan" && v + 0 > -400) }' || { echo "FAIL: final eval return $last_eval" >&2; exit 1; }
echo "PASS"

#!/usr/bin/env bash
# Learning test: `ember train --task pendulum --algo ALGO` (replay, learner, two actors and the
# evaluator in one process), seed 1, must reach a mean evaluation return better than -400 by 15,000
# environment steps. An evaluation is 10 complete episodes of the deterministic policy of one
# version, the first version published at or after every 1,000 env steps (pendulum's preset), one row
# of evals.csv. The run stops as soon as one evaluation's mean passes -400 (--stop-at-return), so the
# test takes only as long as learning does. Settings: the task's presets for ALGO (app/settings.c)
# unless extra arguments override them.
# Usage: it_learning.sh EMBER ALGO [--set k=v ...]   (extra arguments go to `ember train`)
set -euo pipefail
ember=$1
algo=$2
shift 2
threshold=-400
budget=15000
dir=$(mktemp -d /tmp/ember-it-learning.XXXXXX)
trap 'rm -rf "$dir"' EXIT
start=$(date +%s)
"$ember" train --task pendulum --algo "$algo" --steps $budget --seed 1 --actors 2 --run-dir "$dir/run" \
  --stop-at-return $threshold --set train.progress_interval_s=30 "$@"
evals=$dir/run/evals.csv
test -s "$evals" || { echo "FAIL: no evals.csv" >&2; exit 1; }
echo "evaluations (version, env steps at publication, mean, std, episodes):"
awk -F, 'NR > 1 { printf "  v%s at %s: %s +- %s (%s episodes)\n", $1, $2, $6, $7, $5 }' "$evals"
read -r first_steps first_mean < <(awk -F, -v t=$threshold '
  NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "mean") m = i; if ($i == "env_steps") s = i; if ($i == "episodes") n = i }; next }
  $n != 10 { print "bad", $0; exit }
  $m + 0 >= t && first == "" { first = $s; mean = $m }
  END { print (first == "" ? "never" : first), (mean == "" ? "nan" : mean) }' "$evals")
echo "$algo pendulum: first evaluation at or above $threshold: $first_mean at env step $first_steps ($(( $(date +%s) - start )) s)"
if [ "$first_steps" = bad ]; then echo "FAIL: an evaluation of other than 10 episodes" >&2; exit 1; fi
if [ "$first_steps" = never ]; then echo "FAIL: no evaluation at or above $threshold" >&2; exit 1; fi
if [ "$first_steps" -gt $budget ]; then echo "FAIL: at or above $threshold only after $first_steps env steps" >&2; exit 1; fi
echo PASS

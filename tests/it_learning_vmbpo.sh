#!/usr/bin/env bash
# Learning test for VMBPO: `ember train --algo vmbpo` on pendulum (replay, learner, two actors in one
# process), seed fixed, must reach an average evaluation return better than -400 within 15,000
# environment steps. Evaluation = the actors' deterministic-policy episodes, averaged by the learner
# per evaluated policy version into curves.csv's eval_return column. The settings are the
# pendulum+vmbpo preset of app/settings.c unless extra arguments override them.
# Usage: it_learning_vmbpo.sh EMBER [ALGO [--set k=v ...]]  (extra arguments go to `ember train`)
set -euo pipefail
ember=$1
algo=${2:-vmbpo}
shift $(( $# < 2 ? $# : 2 ))
dir=$(mktemp -d /tmp/ember-it-vmbpo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$ember" train --task pendulum --algo "$algo" --steps 15000 --seed 1 --actors 2 --run-dir "$dir/run" \
  --set train.progress_interval_s=30 "$@"
csv=$dir/run/curves.csv
test -s "$csv"
read -r first_steps best_eval last_eval < <(awk -F, '
  NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "eval_return") e = i; if ($i == "env_steps") s = i }; next }
  $e != "nan" && $e + 0 > -400 && first == "" { first = $s }
  $e != "nan" && (best == "" || $e + 0 > best) { best = $e + 0 }
  { last = $e }
  END { print (first == "" ? "never" : first), (best == "" ? "nan" : best), last }' "$csv")
echo "$algo pendulum: eval return first better than -400 at env step $first_steps; best $best_eval; final $last_eval"
if [ "$first_steps" = never ]; then echo "FAIL: evaluation return never better than -400" >&2; exit 1; fi
# The run is stopped at 15,000 steps; `ember train` ends at the first actor batch past it, so the
# last evaluation row may read up to one batch (a few dozen steps) more. Allow that, nothing else.
if [ "$first_steps" -gt 15100 ]; then echo "FAIL: better than -400 only after $first_steps env steps" >&2; exit 1; fi
echo PASS

#!/usr/bin/env bash
# bench/eval_checkpoints.sh EMBER RUN_DIR [EPISODES [SEED]]: every checkpoint a run kept, played with
# `ember eval` for EPISODES (default 10) complete episodes of its deterministic policy: the evaluation
# curve the run's policies really had, measured after the fact. Beside it, for each checkpoint, what
# the run's own curves.csv said at that point (its eval_return in the last row at or before the
# checkpoint's env steps), so the two can be compared on the same policies: this is how
# docs/benchmarks.md compares the evaluation of older embers (a running mean of whichever episodes
# had arrived) with whole evaluations. Keep many checkpoints for this (learner.checkpoint_keep,
# learner.checkpoint_interval_s). Prints CSV on stdout:
#   env_steps,version,eval_mean,eval_std,episodes,curves_eval_return
# and, at the end, `BENCH eval_checkpoints_mean_gap <mean of eval_mean - curves_eval_return> return`.
set -euo pipefail
ember=$1 run=$2 episodes=${3:-10} seed=${4:-1}
[ -d "$run/checkpoints" ] || { echo "eval_checkpoints.sh: $run has no checkpoints/" >&2; exit 1; }
echo "env_steps,version,eval_mean,eval_std,episodes,curves_eval_return"
gaps=()
for ckpt in "$run"/checkpoints/learner-*.ckpt; do
  out=$("$ember" eval "$run" --checkpoint "$ckpt" --episodes "$episodes" --seed "$seed" 2>&1) || {
    echo "# $ckpt: $(tail -1 <<< "$out")" >&2
    continue
  }
  steps=$(sed -n 's/.*updates, \([0-9]*\) env steps).*/\1/p' <<< "$out" | head -1)
  version=$(sed -n 's/.*(policy version \([0-9]*\),.*/\1/p' <<< "$out" | head -1)
  read -r mean std < <(awk '/return  mean/ { for (i = 1; i <= NF; i++) { if ($i == "mean") m = $(i + 1); if ($i == "std") s = $(i + 1) } print m, s }' <<< "$out")
  curve=$(awk -F, -v s="$steps" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "eval_return") e = i; next }
    $1 + 0 <= s + 0 { v = $e } END { print (v == "" ? "nan" : v) }' "$run/curves.csv")
  echo "$steps,$version,$mean,$std,$episodes,$curve"
  [ "$curve" != nan ] && gaps+=("$(awk -v a="$mean" -v b="$curve" 'BEGIN { print a - b }')")
done
if [ ${#gaps[@]} -gt 0 ]; then
  printf '%s\n' "${gaps[@]}" | awk '{ s += $1; n++ } END { printf "BENCH eval_checkpoints_mean_gap %.1f return\n", s / n }'
fi

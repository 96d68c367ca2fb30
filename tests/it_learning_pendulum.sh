#!/usr/bin/env bash
# Learning test: `ember train` (replay, learner, two actors; SAC with the pendulum preset: 2 x 128
# networks, batch 128, Params every 100 updates, 5 evaluation episodes every 5 versions), seed fixed,
# must reach an average evaluation return better than -400 within 15,000 environment steps.
# An evaluation = 5 episodes of the deterministic policy of one parameter version, played by an actor
# and reported to the learner, which logs each one ("evaluation" events: version, return, and the
# env steps stored so far). The average is over the 5 episodes of a version; the test takes the
# first version whose 5 reports arrived with the mean better than -400, and requires that to happen
# at or before env step 15,000.
set -euo pipefail
ember=$1
dir=$(mktemp -d /tmp/ember-it-learning.XXXXXX)
trap 'rm -rf "$dir"' EXIT
EMBER_LOG_LEVEL=info EMBER_LOG_FORMAT=json "$ember" train --task pendulum --algo sac --steps 15000 --seed 1 \
  --actors 2 --run-dir "$dir/run" --set train.progress_interval_s=5 \
  2> "$dir/log.jsonl"
grep '"component":"learner","msg":"evaluation"' "$dir/log.jsonl" | awk '
  function num(key,   m) { if (match($0, "\"" key "\":-?[0-9.e+-]+")) return substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0; return "" }
  { v = num("version"); r = num("return"); s = num("env_steps");
    n[v]++; sum[v] += r; if (s > at[v]) at[v] = s;
    if (n[v] == 5) { mean = sum[v] / 5; printf "evaluation of version %d: mean return %.1f (reported by env step %d)\n", v, mean, at[v];
                     if (mean > -400 && first == "") { first = at[v]; firstv = v } ; last = mean } }
  END { if (first == "") { print "FAIL: no evaluation better than -400" > "/dev/stderr"; exit 1 }
        printf "first evaluation better than -400: version %d by env step %d; last evaluation %.1f\n", firstv, first, last
        if (first > 15000) { print "FAIL: only after 15,000 env steps" > "/dev/stderr"; exit 1 }
        print "PASS" }'

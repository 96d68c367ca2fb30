#!/usr/bin/env bash
# `ember eval RUN_DIR`: plays the newest checkpoint's policy for N episodes and summarises them; the
# figure depends on the checkpoint and --seed, not on --envs; a better-trained policy scores better;
# every bad input (no run, no config, no checkpoint, a corrupt one, one without a policy, a task or
# key that does not fit, bad numbers) is refused with a message naming it.
set -euo pipefail
ember=$1
dir=$(mktemp -d /tmp/ember-it-eval.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
small=(--set sac.hidden_size=32 --set learner.batch_size=64 --set train.progress_interval_s=0)

# two short SAC runs on pendulum: 600 steps (barely trained) and 10,000 with the task's preset
# (swinging up from most starts)
"$ember" train --task pendulum --steps 600 --seed 2 --actors 1 --run-dir "$dir/short" "${small[@]}" \
  --set replay.min_size_to_sample=200 > /dev/null
"$ember" train --task pendulum --steps 10000 --seed 2 --actors 1 --run-dir "$dir/long" \
  --set train.progress_interval_s=0 --set learner.checkpoint_interval_s=1 > /dev/null

"$ember" eval "$dir/long" --episodes 40 --csv "$dir/long.csv" > "$dir/out.txt"
cat "$dir/out.txt"
grep -q "^ember eval: sac on pendulum, $dir/long/checkpoints/learner-[0-9]*\.ckpt (policy version [1-9]" \
  "$dir/out.txt" || fail "first line"
grep -q "40 episodes, deterministic policy, seed 1" "$dir/out.txt" || fail "episodes line"
grep -q "length  mean 200.0  terminated 0 of 40" "$dir/out.txt" || fail "lengths line"
[ "$(head -1 "$dir/long.csv")" = "episode,return,length,terminated" ] || fail "csv header"
[ "$(($(wc -l < "$dir/long.csv") - 1))" = 40 ] || fail "csv rows"
# the printed mean is the mean of the CSV's returns
mean=$(awk '/return  mean/ { print $3 }' "$dir/out.txt")
awk -F, -v m="$mean" 'NR > 1 { s += $2; n++ } END { d = s / n - m; exit !(d < 0.006 && d > -0.006) }' \
  "$dir/long.csv" || fail "printed mean $mean is not the CSV's"

# the deterministic figure depends on the seed, not on how many envs play side by side
a=$("$ember" eval "$dir/long" --episodes 40 --envs 40 | grep "return  mean")
b=$("$ember" eval "$dir/long" --episodes 40 --envs 3 | grep "return  mean")
c=$("$ember" eval "$dir/long" --episodes 40 --seed 9 | grep "return  mean")
[ "$a" = "$b" ] || fail "--envs changed the result: '$a' against '$b'"
[ "$a" != "$c" ] || fail "--seed did not change the start states"
grep -q "$a" "$dir/out.txt" || fail "a repeated evaluation differs"
"$ember" eval "$dir/long" --episodes 10 --stochastic | grep "stochastic policy" > /dev/null || fail "--stochastic"

# more training, a better return (pendulum's untrained returns are about -1200, a swing-up about -200)
short=$("$ember" eval "$dir/short" --episodes 40 | awk '/return  mean/ { print $3 }')
echo "mean return after 600 steps $short, after 10000 steps $mean"
awk -v s="$short" -v l="$mean" 'BEGIN { exit !(l > s + 300) }' || fail "10000 steps ($mean) not better than 600 ($short)"

# refusals, each naming what was wrong (exit 2: the command line; 1: the files)
expect() { # expect RC PATTERN ARGS...
  local want=$1 pat=$2
  shift 2
  set +e
  "$ember" eval "$@" > "$dir/o.txt" 2> "$dir/e.txt"
  local rc=$?
  set -e
  [ "$rc" = "$want" ] || fail "ember eval $*: exit $rc, wanted $want ($(cat "$dir/e.txt"))"
  grep -q -- "$pat" "$dir/e.txt" || fail "ember eval $*: message '$(cat "$dir/e.txt")' lacks '$pat'"
}
expect 2 "no run directory given"
expect 2 "$dir/nothing is not a directory" "$dir/nothing"
mkdir "$dir/bare"
expect 2 "$dir/bare has no config.yaml" "$dir/bare"
expect 2 "episodes needs an integer in \[1, 10000000\], got '0'" "$dir/long" --episodes 0
expect 2 "envs needs an integer" "$dir/long" --envs many
expect 2 "unknown option '--bogus'" "$dir/long" --bogus
expect 2 "one run directory only" "$dir/long" "$dir/short"
expect 2 "unknown key 'learner.bogus'" "$dir/long" --set learner.bogus=1
expect 2 "unknown key 'learner.bogus'" "$dir/long" --set=learner.bogus=1
expect 1 "is of task pendulum, the settings say run.task hopper" "$dir/long" --set run.task=hopper
cp "$dir/long/config.yaml" "$dir/bare/config.yaml"
expect 1 "$dir/bare/checkpoints: No such file or directory" "$dir/bare"
# a corrupt newest checkpoint is skipped for the next older one; with none left, refused
mkdir "$dir/bare/checkpoints"
newest=$(ls "$dir/long/checkpoints" | tail -1)
head -c 100 "$dir/long/checkpoints/$newest" > "$dir/bare/checkpoints/$newest"
expect 1 "holds no learner checkpoint that verifies" "$dir/bare"
older=$(ls "$dir/long/checkpoints" | head -1)
[ "$older" != "$newest" ] || fail "the long run wrote one checkpoint only"
cp "$dir/long/checkpoints/$older" "$dir/bare/checkpoints/"
"$ember" eval "$dir/bare" --episodes 3 2> "$dir/e.txt" | grep "checkpoints/$older" > /dev/null \
  || fail "a truncated newest checkpoint was not skipped for $older"
grep -q "skipping checkpoint" "$dir/e.txt" || fail "no log line for the skipped checkpoint"
rm "$dir/bare/checkpoints/$older"
# --checkpoint: one file (an older one is read as it is), or a directory; a file that does not verify
# is refused, not replaced by another
"$ember" eval "$dir/long" --episodes 5 --checkpoint "$dir/long/checkpoints/$older" | grep "checkpoints/$older" > /dev/null \
  || fail "--checkpoint FILE did not read that file"
"$ember" eval "$dir/long" --episodes 5 --checkpoint "$dir/long/checkpoints" | grep "checkpoints/$newest" > /dev/null \
  || fail "--checkpoint DIR did not read the newest"
expect 1 "the header promises" "$dir/long" --checkpoint "$dir/bare/checkpoints/$newest"
expect 1 "$dir/none.ckpt: No such file" "$dir/long" --checkpoint "$dir/none.ckpt"
expect 1 "not a checkpoint" "$dir/long" --checkpoint "$dir/long/config.yaml"
# a checkpoint written before the first publication holds no policy
"$ember" train --task pendulum --steps 400 --seed 2 --actors 1 --run-dir "$dir/nopub" "${small[@]}" \
  --set replay.min_size_to_sample=200 --set learner.publish_every=1000000 > /dev/null
expect 1 "written before the first publication" "$dir/nopub"
# the task's model is looked up where the settings say
expect 1 "task pendulum" "$dir/long" --set actor.model_dir="$dir/bare"
echo PASS

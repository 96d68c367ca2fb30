#!/usr/bin/env bash
# actor.ctrl_noise_std (docs/tasks.md, "Stochastic dynamics: noise on the applied controls") reaches
# the envs of `ember train --deterministic` and of `ember eval`, in a few seconds of pendulum:
#   - --deterministic: the training envs and the evaluation envs each take the noise (the learning
#     rates are 1e-30, so the policy is the same in every run and differences come from the envs);
#     the same seed gives the same run; a stop + resume ends bit-identical to an uninterrupted run
#     (the env snapshots in the checkpoint carry the noise streams);
#   - ember eval: a run is evaluated in its own config.yaml's noise unless --set says otherwise; the
#     figure does not depend on --envs (episode j draws its noise from env stream j);
#   - a negative or non-finite value is refused naming the key, from --set and from config.yaml.
set -euo pipefail
ember=$1
dir=$(mktemp -d /tmp/ember-it-ctrl-noise.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
args=(train --deterministic --task pendulum --seed 11 --steps 600 --set sac.hidden_size=32
      --set learner.batch_size=32 --set replay.min_size_to_sample=200 --set learner.publish_every=50
      --set train.progress_interval_s=0 --set actor.eval_every_steps=200 --set actor.eval_episodes=2
      --set sac.actor_lr=1e-30 --set sac.critic_lr=1e-30 --set sac.alpha_lr=1e-30)
noisy=(--set actor.ctrl_noise_std=0.3)

"$ember" "${args[@]}" --run-dir "$dir/quiet" > "$dir/quiet.txt" || fail "run without noise"
"$ember" "${args[@]}" "${noisy[@]}" --run-dir "$dir/noisy" > "$dir/noisy.txt" || fail "run with noise"
"$ember" "${args[@]}" "${noisy[@]}" --run-dir "$dir/again" > /dev/null || fail "second run with noise"
grep -q "on pendulum with control noise sd 0.3 half ranges" "$dir/noisy.txt" || fail "start line: $(head -1 "$dir/noisy.txt")"
grep -q "on pendulum, " "$dir/quiet.txt" || fail "start line without noise: $(head -1 "$dir/quiet.txt")"
grep -q "^  ctrl_noise_std: 0.29999" "$dir/noisy/config.yaml" || fail "config.yaml does not record the noise"

# evals.csv without its wall time column
cols() { cut -d, -f1,2,4- "$1"; }
# the same seed and settings: the same run
cmp "$dir/noisy/learner_state.bin" "$dir/again/learner_state.bin" || fail "two noisy runs of one seed differ"
cmp <(cols "$dir/noisy/evals.csv") <(cols "$dir/again/evals.csv") || fail "two noisy runs of one seed differ (evals.csv)"

# the evaluation envs: each evaluation's mean return moved (the policies are the same)
[ "$(wc -l < "$dir/quiet/evals.csv")" -ge 3 ] || fail "too few evaluations: $(cat "$dir/quiet/evals.csv")"
paste -d, <(cut -d, -f1,6 "$dir/quiet/evals.csv") <(cut -d, -f1,6 "$dir/noisy/evals.csv") |
  awk -F, 'NR > 1 { d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d < 1) { print "row " NR ": " $0; bad = 1 } } END { exit bad }' \
  || fail "the evaluation envs did not take the noise"
# the training envs: the training return of the last row moved
train_return() { awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "train_return") c = i; next } { r = $c } END { print r }' "$1"; }
q=$(train_return "$dir/quiet/curves.csv") n=$(train_return "$dir/noisy/curves.csv")
awk -v q="$q" -v n="$n" 'BEGIN { d = q - n; if (d < 0) d = -d; exit !(q != "nan" && d > 1) }' \
  || fail "the training envs did not take the noise (train return $q without, $n with)"

# stop at 200 updates and resume: the end is the uninterrupted run's, byte for byte
"$ember" "${args[@]}" "${noisy[@]}" --run-dir "$dir/resumed" --set learner.max_updates=200 > /dev/null || fail "first half"
"$ember" "${args[@]}" "${noisy[@]}" --run-dir "$dir/resumed" > "$dir/resumed.txt" || fail "second half"
grep -q "resumed" "$dir/resumed.txt" || fail "no resume: $(head -3 "$dir/resumed.txt")"
cmp "$dir/noisy/learner_state.bin" "$dir/resumed/learner_state.bin" || fail "stopped + resumed != uninterrupted under noise"
cmp <(cols "$dir/noisy/evals.csv") <(cols "$dir/resumed/evals.csv") || fail "evals.csv after the resume differs"

# ember eval: the run's own noise by default, --set over it, config.yaml read
mean() { awk '/return  mean/ { print $3 }' "$1"; }
"$ember" eval "$dir/noisy" --episodes 6 > "$dir/e_own.txt"
grep -q "6 episodes, deterministic policy, seed 1, control noise sd 0.3 half ranges (actor.ctrl_noise_std)" \
  "$dir/e_own.txt" || fail "ember eval does not say the noise: $(cat "$dir/e_own.txt")"
"$ember" eval "$dir/noisy" --episodes 6 --set actor.ctrl_noise_std=0 > "$dir/e_zero.txt"
grep -q "control noise" "$dir/e_zero.txt" && fail "noise mentioned at 0: $(cat "$dir/e_zero.txt")"
[ "$(mean "$dir/e_own.txt")" != "$(mean "$dir/e_zero.txt")" ] || fail "ember eval ignored the run's noise"
"$ember" eval "$dir/noisy" --episodes 6 --envs 2 > "$dir/e_envs.txt"
[ "$(mean "$dir/e_own.txt")" = "$(mean "$dir/e_envs.txt")" ] || fail "--envs changed a noisy evaluation"
"$ember" eval "$dir/noisy" --episodes 6 --set actor.ctrl_noise_std=0.3 > "$dir/e_set.txt"
[ "$(mean "$dir/e_own.txt")" = "$(mean "$dir/e_set.txt")" ] || fail "config.yaml's 0.3 and --set 0.3 differ"
mkdir "$dir/edited"
cp -r "$dir/noisy/checkpoints" "$dir/edited/"
sed 's/^  ctrl_noise_std: .*/  ctrl_noise_std: 0/' "$dir/noisy/config.yaml" > "$dir/edited/config.yaml"
"$ember" eval "$dir/edited" --episodes 6 > "$dir/e_edited.txt"
[ "$(mean "$dir/e_edited.txt")" = "$(mean "$dir/e_zero.txt")" ] || fail "ember eval did not read config.yaml's noise"

# refusals, naming the key
expect() { # expect PATTERN COMMAND...
  local pat=$1
  shift
  set +e
  "$@" > "$dir/o.txt" 2> "$dir/e.txt"
  local rc=$?
  set -e
  [ "$rc" != 0 ] || fail "$*: accepted"
  grep -q -- "$pat" "$dir/e.txt" || fail "$*: message '$(cat "$dir/e.txt")' lacks '$pat'"
}
for v in -0.1 nan inf -inf; do
  expect "actor.ctrl_noise_std" "$ember" eval "$dir/noisy" --episodes 2 --set actor.ctrl_noise_std=$v
  expect "actor.ctrl_noise_std" "$ember" "${args[@]}" --run-dir "$dir/refused" --set actor.ctrl_noise_std=$v
done
sed 's/^  ctrl_noise_std: .*/  ctrl_noise_std: -0.5/' "$dir/noisy/config.yaml" > "$dir/edited/config.yaml"
expect "actor.ctrl_noise_std = -0.5 is out of range" "$ember" eval "$dir/edited" --episodes 2
for v in nan inf; do
  sed "s/^  ctrl_noise_std: .*/  ctrl_noise_std: $v/" "$dir/noisy/config.yaml" > "$dir/edited/config.yaml"
  expect "actor.ctrl_noise_std" "$ember" eval "$dir/edited" --episodes 2
done
# YAML's own spelling is refused by the YAML reader, which names the field and its section
sed 's/^  ctrl_noise_std: .*/  ctrl_noise_std: .nan/' "$dir/noisy/config.yaml" > "$dir/edited/config.yaml"
expect "field 'ctrl_noise_std'.*field 'actor'" "$ember" eval "$dir/edited" --episodes 2
echo PASS

#!/usr/bin/env bash
# The task presets of `ember train` (app/settings.c): each task+algorithm pair gets its preset's values
# in the config.yaml it writes, another algorithm does not, and a key the user sets keeps their value.
set -euo pipefail
ember=$1
dir=$(mktemp -d /tmp/ember-it-presets.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
n=0
# expect TASK ALGO SECTION.KEY VALUE [--set k=v ...]
expect() {
  local task=$1 algo=$2 key=$3 want=$4
  shift 4
  n=$((n + 1))
  "$ember" train --task "$task" --algo "$algo" --steps 1 --run-dir "$dir/r$n" --set train.progress_interval_s=0 "$@" \
    > "$dir/r$n.log" 2>&1 || fail "$task $algo: ember train failed: $(tail -2 "$dir/r$n.log")"
  local got
  got=$(awk -v sec="${key%%.*}:" -v k="${key#*.}:" '/^[a-z_]+:/ { s = $1 } s == sec && $1 == k { print $2; exit }' \
    "$dir/r$n/config.yaml")
  [ "$got" = "$want" ] || fail "$task $algo $*: $key is '$got', want '$want'"
}
expect pendulum vmbpo vmbpo.model_samples_per_real 8
expect pendulum vmbpo vmbpo.critics 2
expect pendulum vmbpo vmbpo.critics 1 --set vmbpo.critics=1
expect pendulum sac vmbpo.critics 1
expect reacher vmbpo vmbpo.real_ratio 0.25
expect hopper vmbpo vmbpo.critics 2
expect half_cheetah vmbpo vmbpo.nu_max 1
expect half_cheetah vmbpo-mfe vmbpo.nu_max 10
expect pendulum virel virel.hidden_size 128
expect pendulum virel-soft virel_soft.hidden_size 128
expect pendulum sac virel.hidden_size 256
expect pendulum mpo mpo.hidden_size 128
expect pendulum sac mpo.hidden_size 256
echo PASS

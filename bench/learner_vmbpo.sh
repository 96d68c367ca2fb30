#!/usr/bin/env bash
# bench/learner_vmbpo.sh BUILD_DIR: ember's VMBPO learner updates/s against PyTorch's VMBPO update at
# the same sizes (obs 17, act 6, every network 2x256 ReLU, batch 256, one model sample per real
# sample), measured in the same run on the same cores:
#   BENCH learner_vmbpo_updates_per_s, BENCH torch_vmbpo_updates_per_s, BENCH learner_vmbpo_vs_torch
# with every core (nproc threads each, the goal's figures), then the same three with one thread each
# (suffix _1thread), as bench/learner.sh does for SAC. Called by bench/learner.sh (make
# bench-learner) and by `bench/run.sh BUILD learner_vmbpo`. BENCH_SECONDS (default 10),
# BENCH_THREADS (default nproc) as in bench/learner.sh.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
seconds=${BENCH_SECONDS:-10}
threads=${BENCH_THREADS:-$(nproc 2>/dev/null || echo 2)}
ref=$here/../../shared/anchors/torch_learner_ref.py

ref_ok=1
if [ ! -f "$ref" ]; then echo "# no PyTorch reference at $ref: ratio not measured" >&2; ref_ok=0
elif ! /usr/bin/python3 -c 'import torch' 2> /dev/null; then
  echo "# /usr/bin/python3 has no torch (deploy/install-deps.sh --bench installs python3-torch): ratio not measured" >&2
  ref_ok=0
fi

# measure THREADS SUFFIX: one pair of figures and their ratio
measure() {
  local n=$1 suffix=$2 ours theirs mine torch
  ours=$(OPENBLAS_NUM_THREADS=$n "$build/bench/bench_learner" "$seconds" vmbpo vmbpo.pi_equals_qc=false)
  grep '^#' <<< "$ours" || true
  mine=$(awk '/^BENCH learner_vmbpo_updates_per_s/ { print $3 }' <<< "$ours")
  echo "# ember: OpenBLAS threads $n"
  echo "BENCH learner_vmbpo_updates_per_s$suffix $mine updates/s"
  [ $ref_ok = 1 ] || return 0
  theirs=$(/usr/bin/python3 "$ref" --algo vmbpo --seconds "$seconds" --threads "$n")
  grep '^#' <<< "$theirs" || true
  torch=$(awk '/^BENCH torch_vmbpo_updates_per_s/ { print $3 }' <<< "$theirs")
  echo "BENCH torch_vmbpo_updates_per_s$suffix $torch updates/s"
  awk -v a="$mine" -v b="$torch" -v s="$suffix" 'BEGIN { printf "BENCH learner_vmbpo_vs_torch%s %.2f x\n", s, a / b }'
}

measure "$threads" ""
[ "$threads" = 1 ] || measure 1 _1thread
exit 0

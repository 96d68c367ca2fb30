#!/usr/bin/env bash
# bench/learner_vmbpo.sh BUILD_DIR: ember's VMBPO learner updates/s against PyTorch's VMBPO update at
# the same sizes (obs 17, act 6, every network 2x256 ReLU, batch 256, one model sample per real
# sample), measured in the same run on the same cores:
#   BENCH learner_vmbpo_updates_per_s, BENCH torch_vmbpo_updates_per_s, BENCH learner_vmbpo_vs_torch
# Run by `bench/run.sh BUILD learner_vmbpo`, and meant to be called from bench/learner.sh (make
# bench-learner). BENCH_SECONDS (default 10), BENCH_THREADS (default nproc) as in bench/learner.sh.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
seconds=${BENCH_SECONDS:-10}
threads=${BENCH_THREADS:-$(nproc 2>/dev/null || echo 2)}
ref=$here/../../shared/anchors/torch_learner_ref.py

ours=$(OPENBLAS_NUM_THREADS=$threads "$build/bench/bench_learner" "$seconds" vmbpo vmbpo.pi_equals_qc=false)
echo "$ours"
mine=$(awk '/^BENCH learner_vmbpo_updates_per_s/ { print $3 }' <<< "$ours")
if [ ! -f "$ref" ]; then echo "# no PyTorch reference at $ref: ratio not measured" >&2; exit 0; fi
if ! /usr/bin/python3 -c 'import torch' 2> /dev/null; then
  echo "# /usr/bin/python3 has no torch (deploy/install-deps.sh --bench installs python3-torch): ratio not measured" >&2
  exit 0
fi
theirs=$(/usr/bin/python3 "$ref" --algo vmbpo --seconds "$seconds" --threads "$threads")
echo "$theirs"
torch=$(awk '/^BENCH torch_vmbpo_updates_per_s/ { print $3 }' <<< "$theirs")
awk -v a="$mine" -v b="$torch" 'BEGIN { printf "BENCH learner_vmbpo_vs_torch %.2f x\n", a / b }'

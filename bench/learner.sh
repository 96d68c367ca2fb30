#!/usr/bin/env bash
# bench/learner.sh BUILD_DIR: ember's SAC learner updates/s against PyTorch's at the same sizes
# (obs 17, act 6, 2x256 MLPs, batch 256), measured in the same run on the same cores.
#   BENCH learner_sac_updates_per_s, BENCH torch_sac_updates_per_s, BENCH learner_sac_vs_torch
# BENCH_SECONDS (default 10) sets each measurement's length. PyTorch is Debian's python3-torch under
# Debian's interpreter (/usr/bin/python3), installed by deploy/install-deps.sh --bench.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
seconds=${BENCH_SECONDS:-10}
threads=${BENCH_THREADS:-$(nproc 2>/dev/null || echo 2)}
ref=$here/../../shared/anchors/torch_learner_ref.py

ours=$(OPENBLAS_NUM_THREADS=$threads "$build/bench/bench_learner" "$seconds")
echo "$ours"
mine=$(awk '/^BENCH learner_sac_updates_per_s/ { print $3 }' <<< "$ours")

if [ ! -f "$ref" ]; then echo "# no PyTorch reference at $ref: ratio not measured" >&2; exit 0; fi
if ! /usr/bin/python3 -c 'import torch' 2> /dev/null; then
  echo "# /usr/bin/python3 has no torch (deploy/install-deps.sh --bench installs python3-torch): ratio not measured" >&2
  exit 0
fi
theirs=$(/usr/bin/python3 "$ref" --algo sac --seconds "$seconds" --threads "$threads")
echo "$theirs"
torch=$(awk '/^BENCH torch_sac_updates_per_s/ { print $3 }' <<< "$theirs")
awk -v a="$mine" -v b="$torch" 'BEGIN { printf "BENCH learner_sac_vs_torch %.2f x\n", a / b }'

#!/usr/bin/env bash
# bench/learner_vmbpo.sh BUILD_DIR: ember's VMBPO learner updates/s against PyTorch's VMBPO update at
# the same sizes (obs 17, act 6, every network 2x256 ReLU, batch 256, one model sample per real
# sample), measured in the same run on the same cores:
#   BENCH learner_vmbpo_updates_per_s, BENCH torch_vmbpo_updates_per_s, BENCH learner_vmbpo_vs_torch
# with every core (nproc threads each, the goal's figures), then the same three with one thread each
# (suffix _1thread), and BENCH learner_vmbpo_vs_torch_best (best against best), as bench/learner.sh
# does for SAC. Called by bench/learner.sh (make
# bench-learner) and by `bench/run.sh BUILD learner_vmbpo`. BENCH_SECONDS (default 10),
# BENCH_THREADS (default nproc) as in bench/learner.sh.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
seconds=${BENCH_SECONDS:-10}
threads=${BENCH_THREADS:-$(nproc 2>/dev/null || echo 2)}
ref=$here/../../shared/anchors/torch_learner_ref.py

. "$here/learner_vs_torch.sh"
measure_vs_torch vmbpo "$threads" "" vmbpo vmbpo.pi_equals_qc=false
[ "$threads" = 1 ] || measure_vs_torch vmbpo 1 _1thread vmbpo vmbpo.pi_equals_qc=false
print_best_vs_torch vmbpo
exit 0

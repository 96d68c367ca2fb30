#!/usr/bin/env bash
# bench/learner.sh BUILD_DIR: ember's SAC learner updates/s against PyTorch's at the same sizes
# (obs 17, act 6, 2x256 MLPs, batch 256), measured in the same run on the same cores.
#   BENCH learner_sac_updates_per_s, BENCH torch_sac_updates_per_s, BENCH learner_sac_vs_torch
# with every core (nproc threads each, the goal's figures), then the same three with one thread each
# (suffix _1thread): on a machine shared with other work, PyTorch's OpenMP threads can collapse
# (spinning against the other load) while one thread each stays comparable; and
#   BENCH learner_sac_vs_torch_best: each side's best thread count against the other's, the figure
# a comparison should quote.
# BENCH_SECONDS (default 10) sets each measurement's length. PyTorch is Debian's python3-torch under
# Debian's interpreter (/usr/bin/python3), installed by deploy/install-deps.sh --bench.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
seconds=${BENCH_SECONDS:-10}
threads=${BENCH_THREADS:-$(nproc 2>/dev/null || echo 2)}
ref=$here/../../shared/anchors/torch_learner_ref.py

. "$here/learner_vs_torch.sh"
measure_vs_torch sac "$threads" ""
[ "$threads" = 1 ] || measure_vs_torch sac 1 _1thread
print_best_vs_torch sac

# VMBPO beside its PyTorch twin (same sizes, one model sample per real sample)
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$here/learner_vmbpo.sh" ] && "$here/learner_vmbpo.sh" "$build"
exit 0

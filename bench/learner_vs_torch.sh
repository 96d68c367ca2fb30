# bench/learner_vs_torch.sh: sourced by bench/learner.sh and bench/learner_vmbpo.sh. Defines
#   measure_vs_torch ALGO THREADS SUFFIX [bench_learner settings...]
# which runs ember's bench_learner for ALGO with THREADS OpenBLAS threads, then (when Debian's
# /usr/bin/python3 has torch and ../shared/anchors/torch_learner_ref.py exists) the PyTorch reference
# with as many threads, and prints
#   BENCH learner_<algo>_updates_per_s<SUFFIX>, BENCH torch_<algo>_updates_per_s<SUFFIX>,
#   BENCH learner_<algo>_vs_torch<SUFFIX>
# and remembers each side's best figure over the thread counts measured, so that
#   print_best_vs_torch ALGO
# prints BENCH learner_<algo>_vs_torch_best: ember's best configuration against PyTorch's best, the
# fair ratio (PyTorch's two-thread figure can collapse on a shared 2-core machine, and a ratio against
# a collapsed peer says nothing), with which thread counts won.
# The caller sets build, seconds and ref (the reference's path).
declare -A best_mine best_torch best_mine_n best_torch_n
measure_vs_torch() {
  local algo=$1 n=$2 suffix=$3 ours theirs mine torch
  shift 3
  ours=$(OPENBLAS_NUM_THREADS=$n "$build/bench/bench_learner" "$seconds" "$@")
  grep '^#' <<< "$ours" || true
  mine=$(awk -v k="BENCH learner_${algo}_updates_per_s" '$1 " " $2 == k { print $3 }' <<< "$ours")
  echo "# ember: OpenBLAS threads $n"
  echo "BENCH learner_${algo}_updates_per_s$suffix $mine updates/s"
  if [ -n "$mine" ] && awk -v a="$mine" -v b="${best_mine[$algo]:-0}" 'BEGIN { exit !(a > b) }'; then
    best_mine[$algo]=$mine best_mine_n[$algo]=$n
  fi
  if [ ! -f "$ref" ]; then echo "# no PyTorch reference at $ref: ratio not measured" >&2; return 0; fi
  if ! /usr/bin/python3 -c 'import torch' 2> /dev/null; then
    echo "# /usr/bin/python3 has no torch (deploy/install-deps.sh --bench installs python3-torch): ratio not measured" >&2
    return 0
  fi
  theirs=$(/usr/bin/python3 "$ref" --algo "$algo" --seconds "$seconds" --threads "$n")
  grep '^#' <<< "$theirs" || true
  torch=$(awk -v k="BENCH torch_${algo}_updates_per_s" '$1 " " $2 == k { print $3 }' <<< "$theirs")
  echo "BENCH torch_${algo}_updates_per_s$suffix $torch updates/s"
  if [ -n "$torch" ] && awk -v a="$torch" -v b="${best_torch[$algo]:-0}" 'BEGIN { exit !(a > b) }'; then
    best_torch[$algo]=$torch best_torch_n[$algo]=$n
  fi
  awk -v a="$mine" -v b="$torch" -v n="learner_${algo}_vs_torch$suffix" 'BEGIN { printf "BENCH %s %.2f x\n", n, a / b }'
}

print_best_vs_torch() {
  local algo=$1
  [ -n "${best_mine[$algo]:-}" ] && [ -n "${best_torch[$algo]:-}" ] || return 0
  echo "# best configurations: ember ${best_mine[$algo]} updates/s with ${best_mine_n[$algo]} thread(s), PyTorch ${best_torch[$algo]} with ${best_torch_n[$algo]}"
  awk -v a="${best_mine[$algo]}" -v b="${best_torch[$algo]}" -v n="learner_${algo}_vs_torch_best" 'BEGIN { printf "BENCH %s %.2f x\n", n, a / b }'
}

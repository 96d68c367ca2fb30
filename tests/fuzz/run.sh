#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after another, and prints per target
#   BENCH fuzz_<target>_execs <n> execs
#   BENCH fuzz_<target>_crashes <n> crashes
#   BENCH fuzz_<target>_seconds <s> seconds
# (docs/reliability.md, "Fuzzing"). Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
#
# BUILD_DIR is configured with clang and EMBER_FUZZ=ON (libFuzzer, ASan, UBSan) and only the fuzz
# programs are built in it (-j1 unless JOBS says otherwise). Each target starts from the committed
# seeds (tests/fuzz/corpus/<target>/) and regressions (tests/fuzz/regressions/<target>/), and keeps
# what it finds in BUILD_DIR/fuzz-corpus/<target>/ (the committed corpus is never written to), so a
# later run continues from there. A crash (or leak, timeout, out-of-memory) is written to
# BUILD_DIR/fuzz-artifacts/<target>/, then minimised (-minimize_crash) into
# tests/fuzz/regressions/<target>/, which `make test` replays: the script says which file to look at
# and commit with the fix. Exits 1 when anything crashed.
set -uo pipefail

build=${1:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD_DIR SECONDS [TARGET...]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
all_targets=(transition_batch sample_request priority_update hello envelope params evaluation_report
             policy_import config snapshot checkpoint)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! command -v clang >/dev/null 2>&1; then
  echo "run.sh: clang is not installed (deploy/install-deps.sh --fuzz)" >&2
  exit 2
fi
# -Werror off: a warning clang gives and gcc (the project's compiler, -Werror in CI) does not should
# not stop a search for crashes.
CC=clang cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBER_FUZZ=ON -DEMBER_WERROR=OFF >/dev/null ||
  exit 2
names=()
for t in "${targets[@]}"; do names+=("fuzz_$t"); done
nice cmake --build "$build" -j "${JOBS:-1}" --target "${names[@]}" >"$build/fuzz-build.log" 2>&1 || {
  tail -n 30 "$build/fuzz-build.log" >&2
  echo "run.sh: building the fuzz targets failed (log: $build/fuzz-build.log)" >&2
  exit 2
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OPENBLAS_NUM_THREADS=1
total_crashes=0
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz_$t"
  work="$build/fuzz-corpus/$t"
  artifacts="$build/fuzz-artifacts/$t"
  regressions="$src/tests/fuzz/regressions/$t"
  log="$build/fuzz-$t.log"
  mkdir -p "$work" "$artifacts"
  ls "$artifacts" | sort >"$log.before"
  start=$(date +%s)
  seeds=("$src/tests/fuzz/corpus/$t")
  [ -d "$regressions" ] && seeds+=("$regressions") # libFuzzer refuses a corpus directory that is missing
  # -timeout: an input that takes this long is a hang, and counted; -rss_limit_mb: libFuzzer's default.
  nice "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" "$work" "${seeds[@]}" >"$log" 2>&1
  elapsed=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
  new_artifacts=()
  while IFS= read -r f; do [ -n "$f" ] && new_artifacts+=("$f"); done < <(ls "$artifacts" | sort | comm -13 "$log.before" -)
  crashes=${#new_artifacts[@]}
  echo "BENCH fuzz_${t}_execs ${execs:-0} execs"
  echo "BENCH fuzz_${t}_crashes $crashes crashes"
  echo "BENCH fuzz_${t}_seconds $elapsed seconds"
  for a in "${new_artifacts[@]}"; do
    mkdir -p "$regressions"
    out="$regressions/$a"
    case "$a" in
      crash-*|leak-*|timeout-*)
        nice "$bin" -minimize_crash=1 -max_total_time=60 -timeout=10 -exact_artifact_path="$out" \
          "$artifacts/$a" >"$log.minimize" 2>&1
        [ -s "$out" ] || cp "$artifacts/$a" "$out" ;;
      *) cp "$artifacts/$a" "$out" ;; # out-of-memory and others: kept as found
    esac
    echo "run.sh: fuzz_$t crashed: $artifacts/$a, minimised into $out (log: $log)." \
         "Fix the code, keep the input there as a regression test, and commit both." >&2
    grep -m 3 -E 'ERROR: |fuzz property failed|runtime error' "$log" | sed 's/^/  /' >&2
  done
  total_crashes=$((total_crashes + crashes))
done
[ "$total_crashes" -eq 0 ]

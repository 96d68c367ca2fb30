#!/usr/bin/env bash
# tests/mutate_vmbpo.sh: mutation testing of VMBPO's network code (`make mutate-vmbpo`; not part of
# `make test`). Each mutant flips the sign of, or drops, one term of eqs. 19, 21, 23, 24, 25 or 27
# in learner/vmbpo_*.c (the forward and, where it is separate, the backward pass), or flips the sign
# of a backward pass alone. The VMBPO unit suites (ctest names matching ^test_vmbpo_, never the
# learning tests) must fail on every mutant: a mutant is killed when a suite fails or the build
# fails; it survives when every suite passes.
#
# Nothing in the worktree is edited: its files (`git ls-files`, tracked and untracked-not-ignored,
# so work in progress is tested as it stands) are copied to a temporary directory, each mutant is a
# literal edit of that copy, restored after the mutant, and one out-of-tree build directory is
# reused across mutants so that only the mutated file recompiles. An interrupted run leaves nothing
# behind (the temporary directory is removed on exit, also on INT or TERM, once the build or suite
# step running at that moment returns).
#
# Every edit's text must occur exactly once in its file: the whole list is checked against the
# pristine copy before anything is built, and the script stops (exit 2) on a stale pattern rather
# than count it as killed. A mutant that does not compile is counted apart (a bad mutation, to be
# fixed here); the mutant build turns -Werror off so that a mutation that only leaves a variable
# unused still compiles.
#
# Output: one line per mutant, then
#   BENCH vmbpo_mutations_total N mutants
#   BENCH vmbpo_mutations_killed K mutants
#   BENCH vmbpo_mutations_survived M mutants   (goal 0; each survivor named below it)
#   BENCH vmbpo_mutations_build_failures F mutants
# Exit 0 when every mutant was killed by a failing test, 1 when any survived or failed to build,
# 2 on a setup error (stale pattern, baseline failing).
#
# Environment:
#   MUTATE_ONLY   names (comma-separated) of the mutants to run; default all
#   MUTATE_TESTS  ctest regex of the suites to run; default ^test_vmbpo_ (e.g. ^test_vmbpo_closed_form$
#                 to measure what one suite kills on its own)
#   MUTATE_DIR    a directory to keep the copy and the build in between runs (default: a temporary
#                 one, removed at exit); the files of the list are re-copied and rebuilt every run
#   MUTATE_LIST=1 check the list against the sources and print it, build nothing
#   JOBS          build parallelism (default 1: the machine is shared)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
tests_re=${MUTATE_TESTS:-^test_vmbpo_}
jobs=${JOBS:-1}

# ---- the mutants ------------------------------------------------------------------------------------
# mutant NAME FILE OLD NEW [OLD NEW ...]: every OLD is literal text that must occur exactly once in
# FILE, replaced by NEW. Several pairs make one mutant (a term changed in its forward and backward).
names=()
files=()
declare -A old new nedits
mutant() {
  local name=$1 file=$2 i=${#names[@]} j=0
  shift 2
  names+=("$name") files+=("$file")
  while [ $# -gt 0 ]; do
    old[$i,$j]=$1 new[$i,$j]=$2
    j=$((j + 1))
    shift 2
  done
  nedits[$i]=$j
}

M=learner/vmbpo_model.c E=learner/vmbpo_estep.c P=learner/vmbpo_mstep.c

# eq. 19 (step 1): w_i = exp(min(t (1-d_i) V'(x'_i) - log Z_i, log w_max)),
# log Z_i = log mean_k exp(t (1-d^_ik) V'(x^_ik)); L_d = -(1/B) sum_i w_i log q_d(x'_i | x_i, a_i).
W19='const double d = (double)temperature * (1.0 - terminated[i]) * v_next[i] - log_z;'
mutant e19_vnext_sign "$M" "$W19" 'const double d = -(double)temperature * (1.0 - terminated[i]) * v_next[i] - log_z;'
mutant e19_vnext_drop "$M" "$W19" 'const double d = -log_z;'
mutant e19_logz_sign "$M" "$W19" 'const double d = (double)temperature * (1.0 - terminated[i]) * v_next[i] + log_z;'
mutant e19_logz_drop "$M" "$W19" 'const double d = (double)temperature * (1.0 - terminated[i]) * v_next[i];'
mutant e19_mask_drop "$M" "$W19" 'const double d = (double)temperature * v_next[i] - log_z;'
mutant e19_model_mask_drop "$M" \
  'acc += exp((double)temperature * (1.0 - d_model[(size_t)k * n + i]) * v_model[(size_t)k * n + i] - zmax);' \
  'acc += exp((double)temperature * v_model[(size_t)k * n + i] - zmax);'
mutant e19_logz_sum_not_mean "$M" 'const double log_z = zmax + log(acc / K);' 'const double log_z = zmax + log(acc);'
mutant e19_weight_drop "$M" 'loss += (double)v->w[i] * nll;' 'loss += nll;' \
  'const float s = v->w[i] / (float)B;' 'const float s = 1.0f / (float)B;'
mutant e19_backward_sign "$M" 'const float s = v->w[i] / (float)B;' 'const float s = -v->w[i] / (float)B;'
# eq. 19 with qd_weight_norm: batch, delta = (1-d) V'(x') - (Q'(x,a) - eta r)/gamma
B19='double d = (1.0 - terminated[i]) * v_next[i] - ((double)q[i] - (double)eta * reward[i]) / gamma;'
mutant e19_batch_q_sign "$M" "$B19" 'double d = (1.0 - terminated[i]) * v_next[i] - (-(double)q[i] - (double)eta * reward[i]) / gamma;'
mutant e19_batch_reward_sign "$M" "$B19" 'double d = (1.0 - terminated[i]) * v_next[i] - ((double)q[i] + (double)eta * reward[i]) / gamma;'

# eq. 21 (step 2): L_nu = -mean_{ik} nu(model) + mean_i exp nu(real); backward separate.
L21='return -sum_model / n_model + sum_real / n_real;'
G21M='if (d_model) d_model[j] = c ? 0.0f : -1.0f / (float)n_model;'
G21R='if (d_real) d_real[i] = c ? 0.0f : (float)(e / n_real);'
mutant e21_model_sign "$E" "$L21" 'return sum_model / n_model + sum_real / n_real;' \
  "$G21M" 'if (d_model) d_model[j] = c ? 0.0f : 1.0f / (float)n_model;'
mutant e21_model_drop "$E" "$L21" 'return sum_real / n_real;' "$G21M" 'if (d_model) d_model[j] = 0.0f;'
mutant e21_real_sign "$E" "$L21" 'return -sum_model / n_model - sum_real / n_real;' \
  "$G21R" 'if (d_real) d_real[i] = c ? 0.0f : (float)(-e / n_real);'
mutant e21_real_drop "$E" "$L21" 'return -sum_model / n_model;' "$G21R" 'if (d_real) d_real[i] = 0.0f;'
mutant e21_model_backward_sign "$E" "$G21M" 'if (d_model) d_model[j] = c ? 0.0f : 1.0f / (float)n_model;'
mutant e21_real_backward_sign "$E" "$G21R" 'if (d_real) d_real[i] = c ? 0.0f : (float)(-e / n_real);'

# eq. 23 (step 3): y_Q = eta r^ + gamma ((1 - d^) V'(x^) - nu(x, a, x^)); L_Q = mean (Q - y_Q)^2.
Y23='v->y_q[r] = v->eta * rew + v->gamma * ((1.0f - done) * vt[r] - v->nu_s[r]);'
mutant e23_reward_sign "$E" "$Y23" 'v->y_q[r] = -v->eta * rew + v->gamma * ((1.0f - done) * vt[r] - v->nu_s[r]);'
mutant e23_reward_drop "$E" "$Y23" 'v->y_q[r] = v->gamma * ((1.0f - done) * vt[r] - v->nu_s[r]);'
mutant e23_vnext_sign "$E" "$Y23" 'v->y_q[r] = v->eta * rew + v->gamma * (-(1.0f - done) * vt[r] - v->nu_s[r]);'
mutant e23_vnext_drop "$E" "$Y23" 'v->y_q[r] = v->eta * rew + v->gamma * (-v->nu_s[r]);'
mutant e23_nu_sign "$E" "$Y23" 'v->y_q[r] = v->eta * rew + v->gamma * ((1.0f - done) * vt[r] + v->nu_s[r]);'
mutant e23_nu_drop "$E" "$Y23" 'v->y_q[r] = v->eta * rew + v->gamma * ((1.0f - done) * vt[r]);'
mutant e23_mask_drop "$E" "$Y23" 'v->y_q[r] = v->eta * rew + v->gamma * (vt[r] - v->nu_s[r]);'
mutant e23_backward_sign "$E" 'v->d_q[(size_t)r * C + m] = (float)(2.0 * wr * d);' \
  'v->d_q[(size_t)r * C + m] = (float)(-2.0 * wr * d);'

# eq. 24 (step 3): y_V = Q(x, a) - log q_c(a|x) + log pi(a|x); L_V = mean (V - y_V)^2.
Y24='v->y_v[r] = qv[r] - v->log_qc[r] + v->log_pi[r];'
mutant e24_q_sign "$E" "$Y24" 'v->y_v[r] = -qv[r] - v->log_qc[r] + v->log_pi[r];'
mutant e24_q_drop "$E" "$Y24" 'v->y_v[r] = -v->log_qc[r] + v->log_pi[r];'
mutant e24_logqc_sign "$E" "$Y24" 'v->y_v[r] = qv[r] + v->log_qc[r] + v->log_pi[r];'
mutant e24_logqc_drop "$E" "$Y24" 'v->y_v[r] = qv[r] + v->log_pi[r];'
mutant e24_logpi_sign "$E" "$Y24" 'v->y_v[r] = qv[r] - v->log_qc[r] - v->log_pi[r];'
mutant e24_logpi_drop "$E" "$Y24" 'v->y_v[r] = qv[r] - v->log_qc[r];'
mutant e24_backward_sign "$E" 'v->d_v[i] += 2.0f * d / (float)N;' 'v->d_v[i] -= 2.0f * d / (float)N;'

# eq. 25 (step 4): L_c = mean_i log q_c(a_i|x_i) - Q(x_i, a_i) - log pi(a_i|x_i); the backward is
# the three dL/d(term) constants below, each taken through the reparameterised action.
L25='loss += (double)v->log_qc[i] - qv[i] - v->log_pi[i];'
G25Q='v->d_q[(size_t)i * C + v->q_arg[i]] = -1.0f / (float)B;'
G25P='v->d_out1[i] = -1.0f / (float)B;'
G25C='v->d_logp[i] = 1.0f / (float)B;'
mutant e25_logqc_sign "$E" "$L25" 'loss += -(double)v->log_qc[i] - qv[i] - v->log_pi[i];' "$G25C" 'v->d_logp[i] = -1.0f / (float)B;'
mutant e25_logqc_drop "$E" "$L25" 'loss += -(double)qv[i] - v->log_pi[i];' "$G25C" 'v->d_logp[i] = 0.0f;'
mutant e25_q_sign "$E" "$L25" 'loss += (double)v->log_qc[i] + qv[i] - v->log_pi[i];' \
  "$G25Q" 'v->d_q[(size_t)i * C + v->q_arg[i]] = 1.0f / (float)B;'
mutant e25_q_drop "$E" "$L25" 'loss += (double)v->log_qc[i] - v->log_pi[i];' \
  "$G25Q" 'v->d_q[(size_t)i * C + v->q_arg[i]] = 0.0f;'
mutant e25_logpi_sign "$E" "$L25" 'loss += (double)v->log_qc[i] - qv[i] + v->log_pi[i];' "$G25P" 'v->d_out1[i] = 1.0f / (float)B;'
mutant e25_logpi_drop "$E" "$L25" 'loss += (double)v->log_qc[i] - qv[i];' "$G25P" 'v->d_out1[i] = 0.0f;'
mutant e25_logqc_backward_sign "$E" "$G25C" 'v->d_logp[i] = -1.0f / (float)B;'
mutant e25_q_backward_sign "$E" "$G25Q" 'v->d_q[(size_t)i * C + v->q_arg[i]] = 1.0f / (float)B;'
mutant e25_logpi_backward_sign "$E" "$G25P" 'v->d_out1[i] = 1.0f / (float)B;'

# eq. 27 (M-step): L_pi = -mean_{ik} log pi(a_ik|x_i) + lambda mean_i KL(pi_old || pi).
N27='nll -= v->log_pi[r];'
L27='const double loss = nll + lambda * kl;'
G27N='v->d_out1[r] = -1.0f / (float)N;'
G27K='v->d_logp[i] = lambda / (float)B;'
mutant e27_loglik_sign "$P" "$N27" 'nll += v->log_pi[r];' "$G27N" 'v->d_out1[r] = 1.0f / (float)N;'
mutant e27_loglik_drop "$P" "$L27" 'const double loss = lambda * kl;' "$G27N" 'v->d_out1[r] = 0.0f;'
mutant e27_kl_sign "$P" "$L27" 'const double loss = nll - lambda * kl;' "$G27K" 'v->d_logp[i] = -lambda / (float)B;'
mutant e27_kl_drop "$P" "$L27" 'const double loss = nll;' "$G27K" 'v->d_logp[i] = 0.0f;'
mutant e27_loglik_backward_sign "$P" "$G27N" 'v->d_out1[r] = 1.0f / (float)N;'
mutant e27_kl_backward_sign "$P" "$G27K" 'v->d_logp[i] = -lambda / (float)B;'

# ---- helpers ----------------------------------------------------------------------------------------

die() { echo "mutate_vmbpo: $*" >&2; exit 2; }

# count_in FILE TEXT: occurrences of literal TEXT in FILE
count_in() { TEXT=$2 perl -0777 -ne '$n = () = /\Q$ENV{TEXT}\E/g; print $n' "$1"; }

# apply DIR i: makes mutant i's edits in DIR's copy (each must match exactly once)
apply() {
  local i=$2 j
  local f=$1/${files[$2]}
  for ((j = 0; j < ${nedits[$i]}; j++)); do
    local n
    n=$(count_in "$f" "${old[$i,$j]}")
    [ "$n" = 1 ] || die "mutant ${names[$i]}: edit $j matches $n times in ${files[$i]} (want 1): ${old[$i,$j]}"
    OLD=${old[$i,$j]} NEW=${new[$i,$j]} perl -0777 -pi -e 's/\Q$ENV{OLD}\E/$ENV{NEW}/' "$f"
  done
}

selected() {
  [ -z "${MUTATE_ONLY:-}" ] && return 0
  case ",$MUTATE_ONLY," in *",$1,"*) return 0 ;; esac
  return 1
}

# ---- the list, checked against the worktree's sources -----------------------------------------------

total=0
for i in "${!names[@]}"; do
  for ((j = 0; j < ${nedits[$i]}; j++)); do
    n=$(count_in "$root/${files[$i]}" "${old[$i,$j]}")
    [ "$n" = 1 ] || die "mutant ${names[$i]}: edit $j matches $n times in ${files[$i]} (want 1), stale pattern: ${old[$i,$j]}"
    [ "${old[$i,$j]}" != "${new[$i,$j]}" ] || die "mutant ${names[$i]}: edit $j changes nothing"
  done
  selected "${names[$i]}" && total=$((total + 1))
done
if [ -n "${MUTATE_ONLY:-}" ]; then
  for want in ${MUTATE_ONLY//,/ }; do
    printf '%s\n' "${names[@]}" | grep -qx -- "$want" || die "MUTATE_ONLY names an unknown mutant: $want"
  done
fi
if [ "${MUTATE_LIST:-0}" = 1 ]; then
  for i in "${!names[@]}"; do selected "${names[$i]}" && printf '%-28s %s (%d edit(s))\n' "${names[$i]}" "${files[$i]}" "${nedits[$i]}"; done
  echo "$total mutants; every pattern matches exactly once"
  exit 0
fi

# ---- the copy and the build -------------------------------------------------------------------------

if [ -n "${MUTATE_DIR:-}" ]; then
  work=$MUTATE_DIR
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/ember-mutate-vmbpo.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM # so that an interrupted run removes it too
fi
src=$work/src build=$work/build pristine=$work/pristine
mkdir -p "$src" "$pristine"
# cp -p keeps the worktree's times, so a kept MUTATE_DIR only rebuilds what changed ...
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
  xargs -0 cp -p --parents -t "$src")
# ... except the mutated files: a kept build may hold an object compiled from a mutant, so they are
# touched to be rebuilt from the pristine text; their pristine copies restore them after each mutant.
for f in $(printf '%s\n' "${files[@]}" | sort -u); do
  mkdir -p "$pristine/$(dirname "$f")"
  cp "$src/$f" "$pristine/$f"
  touch "$src/$f"
done

echo "mutate_vmbpo: copy and build in $work"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEMBER_WERROR=OFF >"$work/configure.log" 2>&1 ||
  { tail -20 "$work/configure.log" >&2; die "configure failed (log above)"; }
mapfile -t targets < <(cd "$build" && ctest -N -R "$tests_re" | sed -n 's/^ *Test *#[0-9]*: *\([^ ]*\)$/\1/p')
[ ${#targets[@]} -gt 0 ] || die "no ctest name matches $tests_re"
for t in "${targets[@]}"; do
  case $t in it_*) die "$t is a learning/integration test; MUTATE_TESTS must select unit suites only" ;; esac
done
echo "mutate_vmbpo: suites: ${targets[*]}"

build_targets() { cmake --build "$build" -j "$jobs" --target "${targets[@]}" >"$1" 2>&1; }

# run_suites LOG: 0 when every suite passes; else $failed names the failing suites and, in brackets,
# the Check test cases that failed (lines "file:line:F:tcase:test:iter: message", E for an error)
run_suites() {
  failed=""
  if ! (cd "$build" && OPENBLAS_NUM_THREADS=1 ctest -R "$tests_re" --timeout 300 --output-on-failure >"$1" 2>&1); then
    failed=$(sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) (.*/\1/p' "$1" | paste -sd, -)
    [ -n "$failed" ] || failed="ctest"
    local cases
    cases=$(grep -o ':[FE]:[^:]*:[^:]*:' "$1" | cut -d: -f4 | sort -u | paste -sd, - || true)
    [ -z "$cases" ] || failed="$failed [$cases]"
    return 1
  fi
}

# The object of FILE must be newer than FILE after a build, or the build did not see the edit.
check_rebuilt() {
  local f=$1 base obj found=0
  base=$(basename "$f")
  while IFS= read -r obj; do
    found=1
    [ "$obj" -nt "$src/$f" ] || die "$obj is older than the mutated $f: the build did not recompile it"
  done < <(find "$build" -name "$base.o" -path '*ember_learner.dir*')
  [ "$found" = 1 ] || die "no object of $f in ember_learner: the suites do not build the mutated file"
}

echo "mutate_vmbpo: baseline build"
build_targets "$work/baseline-build.log" || { tail -30 "$work/baseline-build.log" >&2; die "the unmutated tree does not build"; }
run_suites "$work/baseline-test.log" || { cat "$work/baseline-test.log" >&2; die "the unmutated tree fails $failed"; }
echo "mutate_vmbpo: baseline passes"

killed=0 survived=0 build_failed=0 survivors=() bad=()
start=$SECONDS
for i in "${!names[@]}"; do
  selected "${names[$i]}" || continue
  name=${names[$i]} f=${files[$i]}
  apply "$src" "$i"
  t0=$SECONDS
  if ! build_targets "$work/$name-build.log"; then
    build_failed=$((build_failed + 1)) bad+=("$name")
    printf '%-28s BUILD FAILED (bad mutation; %s)\n' "$name" "$(grep -m1 'error' "$work/$name-build.log" || true)"
  else
    check_rebuilt "$f"
    if run_suites "$work/$name-test.log"; then
      survived=$((survived + 1)) survivors+=("$name")
      printf '%-28s SURVIVED (%ds)\n' "$name" $((SECONDS - t0))
    else
      killed=$((killed + 1))
      printf '%-28s killed by %s (%ds)\n' "$name" "$failed" $((SECONDS - t0))
    fi
  fi
  cp "$pristine/$f" "$src/$f" # a fresh mtime: the next build recompiles the pristine text
  touch "$src/$f"
done

echo "mutate_vmbpo: $total mutants in $((SECONDS - start)) s (suites: ${targets[*]})"
echo "BENCH vmbpo_mutations_total $total mutants"
echo "BENCH vmbpo_mutations_killed $killed mutants"
echo "BENCH vmbpo_mutations_survived $survived mutants"
for s in "${survivors[@]}"; do echo "  survived: $s"; done
echo "BENCH vmbpo_mutations_build_failures $build_failed mutants"
for s in "${bad[@]}"; do echo "  build failed: $s"; done
[ "$survived" = 0 ] && [ "$build_failed" = 0 ]

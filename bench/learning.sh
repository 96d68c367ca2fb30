#!/usr/bin/env bash
# bench/learning.sh BUILD_DIR: learning curves of VMBPO, VMBPO-MFE and SAC (`make bench-learning`).
# For every algorithm x task x seed it runs `ember train` and prints, per algorithm and task,
#   BENCH learn_<algo>_<task>_return <v> return
# with v = the mean of the last 5 evaluation returns of a run, averaged over the seeds; and writes
# PNG curves (every seed overlaid, `ember plot`) to OUT/<algo>_<task>/returns.png and losses.png.
# The issue's budget (the paper's: 50,000 steps on pendulum and reacher, 3 seeds) is the default and
# takes hours on 2 cores; the knobs shrink it for a check of the script itself:
#   LEARN_ALGOS (vmbpo vmbpo-mfe sac virel virel-soft mpo)  LEARN_TASKS (pendulum reacher)  LEARN_SEEDS (1 2 3)
#   LEARN_STEPS (50000)  LEARN_OUT (bench-learning-out)  LEARN_SETS (extra --set arguments)
#   LEARN_VARIANT (the algorithm's name: a label for the runs, so that runs of one algorithm with other
#   LEARN_SETS, an ablation, sit beside each other in OUT/runs as <variant>_<task>_s<seed> and in the
#   comparison, and print BENCH lines under that label)
#   LEARN_BIN (2500: steps per point of the per-task comparison)  LEARN_COMPARE_ONLY (1: train
#   nothing, only draw OUT/compare_<task>.{csv,png} from the runs already in OUT/runs)
#   LEARN_EVAL_EPISODES (100; 0 = skip): after each run, `ember eval` plays its final checkpoint's
#   policy for that many episodes (OUT/runs/<run>.eval.csv), and per algorithm and task
#     BENCH learn_<algo>_<task>_final_return <v> return
#   gives their mean, averaged over the seeds: the same policies as the last evaluation's, measured
#   with a small enough error to compare with a published table (docs/operations.md, ember eval).
# Nothing here asserts a return: it prints figures.
set -euo pipefail
build=$1
ember=$build/app/ember
plot=$build/bench/bench_plot_runs
algos=${LEARN_ALGOS:-vmbpo vmbpo-mfe sac virel virel-soft mpo}
tasks=${LEARN_TASKS:-pendulum reacher}
seeds=${LEARN_SEEDS:-1 2 3}
steps=${LEARN_STEPS:-50000}
out=${LEARN_OUT:-bench-learning-out}
eval_episodes=${LEARN_EVAL_EPISODES:-100}
extra=()
for s in ${LEARN_SETS:-}; do extra+=(--set "$s"); done
[ -x "$ember" ] || { echo "bench/learning.sh: $ember is not built" >&2; exit 1; }
mkdir -p "$out/runs"
echo "# learning: algos [$algos] tasks [$tasks] seeds [$seeds] steps $steps, out $out, $(date -u +%F)"

# mean of the last 5 evaluations of a run: evals.csv's means (one row per complete evaluation), or for
# a run of an older ember the last 5 distinct eval_return values of its curves.csv ("nan": none)
last5() {
  local run=$1
  if [ -f "$run/evals.csv" ]; then
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "mean") m = i; next } { v[n++] = $m }
      END { if (n == 0) { print "nan"; exit } s = 0; k = n < 5 ? n : 5; for (i = n - k; i < n; i++) s += v[i]; print s / k }' "$run/evals.csv"
    return
  fi
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "eval_return") e = i; next }
    $e != "" && $e != "nan" && $e != prev_e { v[n++] = $e; prev_e = $e }
    END { if (n == 0) { print "nan"; exit } s = 0; k = n < 5 ? n : 5; for (i = n - k; i < n; i++) s += v[i]; print s / k }' "$run/curves.csv"
}

# compare TASK: every algorithm's evaluation return on TASK against env steps, averaged over its
# seeds (each seed's latest evaluation in every LEARN_BIN-step bin, steps rounded to the nearest
# multiple; the steps are eval_env_steps, where the evaluated policy was published, when the
# curves.csv has that column; a run stopped early counts only up to its last evaluation), from all runs in
# OUT/runs: OUT/compare_TASK.csv (per algorithm its mean, and the lowest and highest seed: columns
# ALGO, ALGO_min, ALGO_max) and OUT/compare_TASK.png (one line per algorithm, equal steps, with the
# band between its lowest and highest seed shaded: the seeds' spread).
compare() {
  local task=$1 csv=$out/compare_$1.csv png=$out/compare_$1.png files=()
  # evals.csv where a run has one (its env_steps and mean columns are read as eval_env_steps and
  # eval_return), else curves.csv
  for d in "$out"/runs/*_"${task}"_s*/; do
    d=${d%/}
    if [ -f "$d/evals.csv" ]; then files+=("$d/evals.csv"); elif [ -f "$d/curves.csv" ]; then files+=("$d/curves.csv"); fi
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -F, -v bin="${LEARN_BIN:-2500}" -v task="$task" '
    FNR == 1 { x = xe = 0; for (i = 1; i <= NF; i++) { if ($i == "eval_return" || $i == "mean") e = i; if ($i == "env_steps") x = i
                                                        if ($i == "eval_env_steps") xe = i }
               if (xe) x = xe  # evaluations at the publication of their policy (curves.csv of 2026-11-24 on)
               n = split(FILENAME, parts, "/"); run = parts[n - 1]; algo = run; sub("_" task "_s[0-9]+$", "", algo)
               if (!(algo in seen)) { seen[algo] = 1; order[++na] = algo }; nr[algo]++; runs[algo, nr[algo]] = run; next }
    $e != "" && $e != "nan" && $x != "nan" { b = int(($x + bin / 2) / bin) * bin; if (b < bin) b = bin; v[run, b] = $e; if (b > maxb) maxb = b
                                             if (b > rmax[run]) rmax[run] = b }
    END { printf "env_steps"; for (a = 1; a <= na; a++) printf ",%s,%s_min,%s_max", order[a], order[a], order[a]; printf "\n"
          for (b = bin; b <= maxb; b += bin) { printf "%d", b
            for (a = 1; a <= na; a++) { s = 0; k = 0
              for (r = 1; r <= nr[order[a]]; r++) { id = runs[order[a], r]
                if ((id, b) in v) last[id] = v[id, b]
                if ((id in last) && b <= rmax[id]) { y = last[id]; s += y; if (!k || y < lo) lo = y; if (!k || y > hi) hi = y; k++ } }
              if (k) printf ",%.2f,%.2f,%.2f", s / k, lo, hi; else printf ",nan,nan,nan" }
            printf "\n" } }' "${files[@]}" > "$csv"
  local groups
  groups=$(head -1 "$csv" | awk -F, '{ print (NF - 1) / 3 }')
  gnuplot <<GP || echo "# comparison plot for $task failed" >&2
set terminal pngcairo size 900,560 noenhanced
set output '$png'
set datafile separator ','
set datafile missing 'nan'
set key bottom right
set grid
set style fill transparent solid 0.15 noborder
set title 'ember: $task, evaluation return: mean over seeds, band from lowest to highest seed'
set xlabel 'env steps'
set ylabel 'evaluation return'
plot for [g=0:$groups-1] '$csv' using 1:(column(3*g+3)):(column(3*g+4)) with filledcurves linecolor g+1 notitle, \
     for [g=0:$groups-1] '$csv' using 1:(column(3*g+2)) with lines linewidth 2 linecolor g+1 title columnhead(3*g+2)
GP
  echo "# $task comparison: $csv, $png"
}

if [ -n "${LEARN_COMPARE_ONLY:-}" ]; then
  for task in $tasks; do compare "$task"; done
  exit 0
fi

for algo in $algos; do
  variant=${LEARN_VARIANT:-$algo}
  for task in $tasks; do
    runs=() values=() finals=()
    for seed in $seeds; do
      dir=$out/runs/${variant}_${task}_s$seed
      rm -rf "$dir"
      start=$(date +%s)
      "$ember" train --task "$task" --algo "$algo" --steps "$steps" --seed "$seed" --run-dir "$dir" \
        --set train.progress_interval_s=0 "${extra[@]}" > "$dir.log" 2>&1 ||
        { echo "# $variant $task seed $seed failed: $(tail -1 "$dir.log")" >&2; continue; }
      v=$(last5 "$dir")
      echo "# $variant $task seed $seed: last-5 eval return $v ($(( $(date +%s) - start )) s)"
      runs+=("$dir") values+=("$v")
      if [ "$eval_episodes" -gt 0 ] && "$ember" eval --help > /dev/null 2>&1; then
        if "$ember" eval "$dir" --episodes "$eval_episodes" --csv "$dir.eval.csv" > "$dir.eval.txt" 2>&1; then
          f=$(awk '/return  mean/ { print $3 }' "$dir.eval.txt")
          echo "# $variant $task seed $seed: final policy over $eval_episodes episodes: $(grep 'return  mean' "$dir.eval.txt" | sed 's/^ *//')"
          finals+=("$f")
        else
          echo "# $variant $task seed $seed: ember eval failed: $(tail -1 "$dir.eval.txt")" >&2
        fi
      fi
    done
    [ ${#runs[@]} -gt 0 ] || continue
    name=$(tr '-' '_' <<< "$variant")
    printf '%s\n' "${values[@]}" | awk -v n="learn_${name}_${task}_return" '
      $1 != "nan" { s += $1; k++ } END { if (k) printf "BENCH %s %.1f return\n", n, s / k; else printf "BENCH %s nan return\n", n }'
    if [ ${#finals[@]} -gt 0 ]; then
      printf '%s\n' "${finals[@]}" | awk -v n="learn_${name}_${task}_final_return" '
        { s += $1; k++ } END { printf "BENCH %s %.1f return\n", n, s / k }'
    fi
    if "$ember" plot --help > /dev/null 2>&1; then
      "$ember" plot "${runs[@]}" --out "$out/${name}_$task" > /dev/null || echo "# plot for $algo $task failed" >&2
    elif [ -x "$plot" ]; then
      "$plot" "$out/${name}_$task" "${runs[@]}" || echo "# plot for $algo $task failed" >&2
    fi
  done
done
for task in $tasks; do compare "$task"; done

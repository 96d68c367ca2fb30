#!/usr/bin/env bash
# Exact resume with `ember train --deterministic` (pendulum, small nets, a few seconds):
#   - stopped by the learner.max_updates hook, then resumed: the final learner state is byte for
#     byte the one of an uninterrupted run of the same seed and length;
#   - the same when stopped by SIGTERM at whatever update it reached;
#   - the same when the newest checkpoint is corrupt (skipped, the older one used);
#   - curves.csv keeps one header and is appended to; the version goes on; its eval_env_steps
#     places each evaluation at its policy's publication; a file with other columns is kept aside;
#   - evals.csv (one row per complete evaluation) of the resumed run is the uninterrupted run's,
#     row for row (wall time aside): cut back to the checkpoint, never a row twice or missing;
#   - a checkpoint of another task, another network shape, or of the other mode is refused with
#     both named; and a different seed gives a different state (the comparison can fail).
set -euo pipefail
ember=$1
dir=$(mktemp -d /tmp/ember-it-resume.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
args=(train --deterministic --task pendulum --seed 11 --set sac.hidden_size=32 --set learner.batch_size=32
      --set replay.min_size_to_sample=200 --set learner.publish_every=50 --set train.progress_interval_s=0
      --set actor.eval_every_steps=500 --set actor.eval_episodes=2 --set learner.csv_interval_s=0.05)
steps=4000

"$ember" "${args[@]}" --steps $steps --run-dir "$dir/full" > "$dir/full.txt" || fail "uninterrupted run"
test -s "$dir/full/learner_state.bin" || fail "no learner state"

# 1. the testing hook: stop at 1500 updates, resume to the end
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/hook" --set learner.max_updates=1500 > "$dir/hook1.txt" \
  || fail "first half"
grep -q "1500 updates" "$dir/hook1.txt" || fail "the first half did not stop at 1500 updates: $(tail -1 "$dir/hook1.txt")"
ls "$dir/hook/checkpoints"/learner-00000000000000001500.ckpt > /dev/null || fail "no checkpoint at 1500 updates"
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/hook" > "$dir/hook2.txt" || fail "second half"
grep -q "resumed: parameter version 30, 1500 updates" "$dir/hook2.txt" || fail "no resume line: $(head -2 "$dir/hook2.txt")"
cmp "$dir/full/learner_state.bin" "$dir/hook/learner_state.bin" || fail "stopped at 1500 + resumed != uninterrupted"
[ "$(grep -c '^env_steps,' "$dir/hook/curves.csv")" = 1 ] || fail "curves.csv has more than one header"
awk -F, 'NR > 2 && ($1 < s || $3 < u) { bad = 1 } NR > 1 { s = $1; u = $3 } END { exit bad }' "$dir/hook/curves.csv" \
  || fail "curves.csv goes backwards after the resume"
[ "$(tail -1 "$dir/hook/curves.csv" | cut -d, -f3)" = "$(tail -1 "$dir/full/curves.csv" | cut -d, -f3)" ] \
  || fail "last CSV rows differ in updates"

# evals.csv: the same evaluations as the uninterrupted run, every eval_every_steps (500) env steps
[ "$(grep -c '^version,' "$dir/hook/evals.csv")" = 1 ] || fail "evals.csv has more than one header"
[ "$(wc -l < "$dir/full/evals.csv")" -ge 6 ] || fail "too few evaluations: $(cat "$dir/full/evals.csv")"
cmp <(cut -d, -f1,2,4- "$dir/full/evals.csv") <(cut -d, -f1,2,4- "$dir/hook/evals.csv") \
  || fail "evals.csv after stop + resume differs from the uninterrupted run's"
awk -F, 'NR > 1 { if ($2 < prev + 500 && NR > 2) { print "row " NR ": " $0; exit 1 }; if ($5 != 2) { print "episodes: " $0; exit 1 }; prev = $2 }' \
  "$dir/full/evals.csv" || fail "evaluations not at least eval_every_steps apart, or not of 2 episodes"

# eval_env_steps: every evaluation is placed where its policy was published: in this mode the
# evaluation runs at that moment, so it equals a publication's env steps, never past the row's own
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "eval_return") e = i; if ($i == "eval_env_steps") x = i }
  if (!e || !x) { print "no eval_return or eval_env_steps column"; exit 1 }; next }
  $e != "nan" { n++; if ($x == "nan" || $x + 0 > $1 + 0 || $x + 0 < prev) { print "row " NR ": " $0; exit 1 }; prev = $x + 0 }
  END { if (n == 0) { print "no evaluation"; exit 1 } }' "$dir/full/curves.csv" || fail "eval_env_steps in curves.csv"

# ... and a resumed run still places them: the checkpoint keeps where recent versions were published
# (no row after the resume shows an evaluation without its eval_env_steps)
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "eval_return") e = i; if ($i == "eval_env_steps") x = i }; next }
  $e != "nan" && $x == "nan" { print "row " NR ": " $0; exit 1 }' "$dir/hook/curves.csv" \
  || fail "eval_env_steps lost across the resume"

# a resumed run whose curves.csv has other columns (an older ember) keeps that file as curves.1.csv
"$ember" "${args[@]}" --steps 1000 --run-dir "$dir/cols" --set learner.max_updates=300 > /dev/null || fail "cols 1"
sed -i '1s/,eval_env_steps//' "$dir/cols/curves.csv"
cp "$dir/cols/curves.csv" "$dir/cols_before.csv"
"$ember" "${args[@]}" --steps 1000 --run-dir "$dir/cols" > "$dir/cols2.txt" 2>&1 || fail "cols 2"
cmp "$dir/cols_before.csv" "$dir/cols/curves.1.csv" || fail "the file with the old columns was not kept as curves.1.csv"
head -1 "$dir/cols/curves.csv" | grep -q "eval_return,eval_env_steps," || fail "the fresh curves.csv has no new header"
grep -q "csv_header_changed" "$dir/cols2.txt" || fail "the kept file is not logged"

# 2. SIGTERM at an arbitrary moment (a longer run, so the signal lands mid-run), then resume
long=20000
"$ember" "${args[@]}" --steps $long --run-dir "$dir/full_long" > /dev/null || fail "long uninterrupted run"
"$ember" "${args[@]}" --steps $long --run-dir "$dir/term" > "$dir/term1.txt" &
pid=$!
sleep 0.4
kill -TERM $pid 2>/dev/null || true
wait $pid || fail "SIGTERM: exit code $?"
ls "$dir/term/checkpoints"/learner-*.ckpt > /dev/null || fail "no checkpoint after SIGTERM"
"$ember" "${args[@]}" --steps $long --run-dir "$dir/term" > "$dir/term2.txt" || fail "resume after SIGTERM"
grep -q "interrupted" "$dir/term1.txt" || fail "the run ended before SIGTERM came: $(tail -1 "$dir/term1.txt")"
grep -q "resumed" "$dir/term2.txt" || fail "no resume after SIGTERM"
cmp "$dir/full_long/learner_state.bin" "$dir/term/learner_state.bin" || fail "SIGTERM + resume != uninterrupted"

# 3. the newest checkpoint corrupt: skipped, the older one resumed, still bit-identical
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/corrupt" --set learner.max_updates=1000 > /dev/null
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/corrupt" --set learner.max_updates=2000 > /dev/null
newest=$(ls "$dir/corrupt/checkpoints"/learner-*.ckpt | tail -1)
case "$newest" in *2000.ckpt) ;; *) fail "newest checkpoint is $newest" ;; esac
printf 'garbage' | dd of="$newest" bs=1 seek=100 conv=notrunc 2> /dev/null
EMBER_LOG_LEVEL=info "$ember" "${args[@]}" --steps $steps --run-dir "$dir/corrupt" > "$dir/corrupt.txt" 2> "$dir/corrupt.log" \
  || fail "resume past a corrupt checkpoint"
grep -q "resumed: parameter version 20, 1000 updates" "$dir/corrupt.txt" || fail "did not fall back to 1000 updates"
grep -q "2000.ckpt" "$dir/corrupt.log" || fail "the skipped file is not named in the log"
cmp "$dir/full/learner_state.bin" "$dir/corrupt/learner_state.bin" || fail "fallback resume != uninterrupted"

# 4. refusals, both sides named; nothing is overwritten
set +e
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/hook" --task reacher 2> "$dir/e1.txt"; rc=$?
[ $rc = 1 ] && grep -q "sac on task pendulum" "$dir/e1.txt" && grep -q "runs sac on reacher" "$dir/e1.txt" \
  || fail "another task: rc $rc: $(cat "$dir/e1.txt")"
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/hook" --set sac.hidden_size=64 2> "$dir/e2.txt"; rc=$?
[ $rc = 1 ] && grep -q "hidden_size 32" "$dir/e2.txt" || fail "another shape: rc $rc: $(cat "$dir/e2.txt")"
"$ember" train --task pendulum --seed 11 --set sac.hidden_size=32 --set learner.batch_size=32 --steps $steps \
  --run-dir "$dir/hook" 2> "$dir/e3.txt" > /dev/null; rc=$?
[ $rc = 1 ] && grep -q "deterministic" "$dir/e3.txt" || fail "the other mode: rc $rc: $(cat "$dir/e3.txt")"
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/prio" --set replay.sampler=prioritized 2> "$dir/e4.txt"; rc=$?
[ $rc = 1 ] && grep -q "prioritized" "$dir/e4.txt" || fail "prioritized: rc $rc: $(cat "$dir/e4.txt")"
set -e
cmp "$dir/full/learner_state.bin" "$dir/hook/learner_state.bin" || fail "a refused resume changed the state"

# 5. the comparison can fail: another seed, another state; learner.resume=false starts afresh
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/seed" --seed 12 > /dev/null
! cmp -s "$dir/full/learner_state.bin" "$dir/seed/learner_state.bin" || fail "seed 12 gave seed 11's state"
"$ember" "${args[@]}" --steps $steps --run-dir "$dir/hook" --set learner.resume=false > "$dir/fresh.txt"
! grep -q resumed "$dir/fresh.txt" || fail "learner.resume=false resumed"
cmp "$dir/full/learner_state.bin" "$dir/hook/learner_state.bin" || fail "a fresh run of the same seed differs"
echo PASS

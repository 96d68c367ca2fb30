#!/usr/bin/env bash
# bench/run.sh BUILD_DIR NAME: runs one benchmark. Each prints `BENCH <name> <value> <unit>` lines.
set -euo pipefail
build=$1 name=$2
here=$(cd "$(dirname "$0")" && pwd)
if [ -x "$here/$name.sh" ]; then exec "$here/$name.sh" "$build"; fi
if [ -x "$build/bench/bench_$name" ]; then exec "$build/bench/bench_$name"; fi
echo "bench/run.sh: no benchmark named '$name' is built (looked for bench/$name.sh and $build/bench/bench_$name)" >&2
exit 1

#!/usr/bin/env bash
# docs/operations.md's settings table is what `ember config --markdown` prints: a key added, renamed or
# re-documented in the code without the docs (or the other way round) fails here, naming the lines.
set -euo pipefail
ember=$1 docs=$2
want=$(mktemp) have=$(mktemp)
trap 'rm -f "$want" "$have"' EXIT
"$ember" config --markdown > "$want"
awk '/^\| key \| default \| range \| meaning \|$/ { f = 1 } f && !/^\|/ { exit } f' "$docs" > "$have"
[ -s "$have" ] || { echo "FAIL: no settings table in $docs" >&2; exit 1; }
if ! diff -u "$have" "$want"; then
  echo "FAIL: $docs's settings table differs from \`ember config --markdown\` (- docs, + code): paste the latter in" >&2
  exit 1
fi
echo "PASS: $(($(wc -l < "$want") - 2)) settings, as documented"

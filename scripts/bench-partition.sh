#!/usr/bin/env bash
# Runs the partition test (tests/partition.rs, debug build as in the test suite: the
# primary's host, a network namespace, is cut off from both others while a client next to it commits as fast as it can, asynchronous
# mode) RUNS times and prints a table of what the cut-off primary acknowledged after the cut
# and when each side changed. Needs root (network namespaces).
#
#   RUNS=5 scripts/bench-partition.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
cargo test --test partition --no-run >/dev/null 2>&1
printf '%-4s %8s %10s %6s %12s %12s\n' run acked last-ms lost demoted-ms new-ms
declare -a window demoted newp
for i in $(seq 1 "$runs"); do
  line=$(CI=true cargo test --test partition -- --nocapture 2>&1 | grep '^partition (async mode)' || true)
  if [ -z "$line" ]; then
    echo "run $i: the test failed" >&2
    exit 1
  fi
  # partition (async mode): N writes ... the last Some(688.2ms) after it; L of them lost; old
  # primary not writable after Some(1.42s); new primary nX first acknowledged 2.25s after the cut
  acked=$(sed -E 's/.*: ([0-9]+) writes acknowledged.*/\1/' <<<"$line")
  last=$(sed -E 's/.*the last (Some\(([^)]*)\)|None).*/\2/' <<<"$line")
  lost=$(sed -E 's/.*; ([0-9]+) of them lost.*/\1/' <<<"$line")
  dem=$(sed -E 's/.*not writable after Some\(([^)]*)\).*/\1/' <<<"$line")
  new=$(sed -E 's/.*first acknowledged ([^ ]*) after the cut.*/\1/' <<<"$line")
  to_ms() { awk -v d="$1" 'BEGIN {
    if (d == "") { print "-"; exit }
    if (d ~ /ms$/) { sub(/ms$/, "", d); printf "%.0f", d }
    else if (d ~ /µs$/) { sub(/µs$/, "", d); printf "%.0f", d / 1000 }
    else { sub(/s$/, "", d); printf "%.0f", d * 1000 } }'; }
  w=$(to_ms "$last"); d=$(to_ms "$dem"); n=$(to_ms "$new")
  window+=("$w"); demoted+=("$d"); newp+=("$n")
  printf '%-4s %8s %10s %6s %12s %12s\n' "$i" "$acked" "$w" "$lost" "$d" "$n"
done
median() { printf '%s\n' "$@" | grep -v '^-$' | sort -n | awk '{a[NR]=$1} END {
  if (NR == 0) { print "-"; exit }
  m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.0f (%d-%d)", m, a[1], a[NR] }'; }
echo
echo "median (min-max), ms after the cut:"
echo "  last write acknowledged by the cut-off primary: $(median "${window[@]}")"
echo "  old primary no longer writable (demoted):        $(median "${demoted[@]}")"
echo "  first write acknowledged by the new primary:    $(median "${newp[@]}")"

#!/usr/bin/env bash
# ninja_times.sh BUILD [N]: where a build's time went, from BUILD/.ninja_log (the last run of each
# output): compile+link seconds summed per CMake target (CMakeFiles/<target>.dir, or the linked
# file), the N (default 8) largest, and the total. Steps overlap under -j, so the sum exceeds wall time.
set -euo pipefail
build=$1 n=${2:-8}
log=$build/.ninja_log
[[ -f $log ]] || { echo "ninja_times: $log does not exist" >&2; exit 1; }
awk -v n="$n" -v build="$build" '
  NR == 1 { next }                                   # "# ninja log v5"
  { last[$4] = ($2 - $1) / 1000.0 }                  # output -> seconds of its newest step
  END {
    for (out in last) {
      t = out
      if (match(out, /CMakeFiles\/[^\/]+\.dir/)) t = substr(out, RSTART + 11, RLENGTH - 15)
      else { sub(/.*\//, "", t); t = t " (link)" }
      sum[t] += last[out]; total += last[out]
    }
    printf "   %s: %.0f s of compile and link steps (summed over both cores), largest:\n", build, total
    cmd = "sort -t\"\t\" -k2 -rn | awk \"NR <= " n "\""
    for (t in sum) printf "%s\t%.1f\n", t, sum[t] | cmd
    close(cmd)
  }' "$log" | awk -F'\t' 'NF == 2 { printf "     %7.1f s  %s\n", $2, $1; next } { print }'

#!/usr/bin/env bash
# The whole test suite from a clean clone: install dependencies, then three builds and their tests.
#  0. build-aarch64/  the edge agent cross-built for aarch64 (run under qemu by tests in build/).
#  1. build/       g++, -Werror: every test (CTest labels unit, fleet, robustness, oracle, slow, packaging).
#  2. build-asan/  clang with AddressSanitizer + UndefinedBehaviorSanitizer: the tests where memory and
#                  undefined-behaviour errors hide - unit (in-process) and robustness (untrusted input,
#                  crashes, the threat model, with real processes) - and every libFuzzer target for
#                  FEDCAL_FUZZ_SECONDS each (default 6). Fleet tests that re-check arithmetic that the
#                  g++ build checks bit for bit, the oracle and the slow tests run once, in build/.
# The builds are cold builds: unity batches (FEDCAL_UNITY), line tables only (-g1), no benchmarks.
# The sanitizer build starts when the g++ build ends and compiles while build/'s tests run, at the
# idle scheduling class (SCHED_IDLE, `chrt --idle`): it takes only the CPU the tests leave unused (the
# fleets mostly wait on each other's lock), and any test process that wakes takes its core back.
# Set FEDCAL_SKIP_DEPS=1 to skip the apt-get step, FEDCAL_SKIP_ASAN=1 to run the first build only.
# Prints a timing line per phase as it ends, and at the end the table of phases, where each build's
# compile time went (tests/ninja_times.sh) and the slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
logs=$(mktemp -d)

suite_start=$SECONDS
phases=()
# phase NAME COMMAND...: runs COMMAND, prints and records how long it took.
phase() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name"
  "$@"
  local took=$((SECONDS - start))
  phases+=("$(printf '%-34s %5d s' "$name" "$took")")
  echo "== $name: ${took} s (suite so far $((SECONDS - suite_start)) s)"
}
# run_ctest BUILD ARGS...: ctest with its output kept for the slowest-tests table.
run_ctest() {
  local build=$1
  shift
  ctest --test-dir "$build" -j"$jobs" --output-on-failure "$@" 2>&1 | tee -a "$logs/ctest-$build.log"
}
summary() {
  echo
  echo "== timings ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
  printf '   %s\n' "${phases[@]}"
  printf '   %-34s %5d s\n' "total" $((SECONDS - suite_start))
  for build in build-aarch64 build build-asan; do
    [[ -f $build/.ninja_log ]] && tests/ninja_times.sh "$build" 6
  done
  for log in "$logs"/ctest-*.log; do
    [[ -f $log ]] || continue
    local build=${log##*/ctest-}
    echo "   slowest tests in ${build%.log}/:"
    # "  12/215 Test  #37: NAME ....   Passed   12.34 sec"
    sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: (.*[^ .]) \.+[ *]*([A-Za-z*]+[A-Za-z ]*) +([0-9.]+) sec$/\3\t\2\t\1/p' "$log" |
      sort -t$'\t' -k1 -rn | awk -F'\t' 'NR > 10 { next } { sub(/ +$/, "", $2); printf "     %7.1f s  %-8s %s\n", $1, $2, substr($3, 1, 110) }'
  done
  # Last, both builds' tests in one line ("100% tests passed, 0 tests failed out of 216" from each ctest).
  local total=0 failed=0 counts
  for log in "$logs"/ctest-*.log; do
    [[ -f $log ]] || continue
    counts=$(sed -nE 's/.* tests passed, ([0-9]+) tests? failed out of ([0-9]+)$/\1 \2/p' "$log" | tail -1)
    [[ -n $counts ]] || continue
    failed=$((failed + ${counts% *})) total=$((total + ${counts#* }))
  done
  echo "ctest: $((total - failed)) passed, $failed failed"
}

# The table also when a phase fails (the exit status stays the failing phase's; the table never
# changes it). Its pipelines read their whole input: `head` closing early makes sort die of SIGPIPE
# (exit 141 under pipefail), which once turned a green suite red.
background_build=""
trap 'status=$?; [[ -z $background_build ]] || kill -- "-$background_build" 2>/dev/null || true
      summary || echo "run_all: the timings table failed ($?)" >&2; rm -rf "$logs"; exit $status' EXIT

if [[ "${FEDCAL_SKIP_DEPS:-0}" != 1 ]]; then
  phase "deps (apt-get)" deploy/install-deps.sh
fi
# The npm test oracles (a no-op when installed; also with FEDCAL_SKIP_DEPS, which skips only apt-get).
phase "deps (npm oracles)" tests/oracles/install.sh

# What every build of the suite shares: warnings are errors, unity batches, line tables (enough for
# sanitizer reports and debuggers' backtraces).
common=(-G Ninja -DFEDCAL_WERROR=ON -DFEDCAL_UNITY=ON)
line_tables=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"
             "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG")

phase "build-aarch64/ (cross build)" deploy/cross/build-aarch64.sh build-aarch64 -DFEDCAL_UNITY=ON

phase "build/ configure" cmake -S . -B build "${common[@]}" "${line_tables[@]}" -DFEDCAL_BUILD_BENCH=OFF \
  -DFEDCAL_AARCH64_BUILD="$PWD/build-aarch64"
phase "build/ build (g++)" cmake --build build -j"$jobs"

# wait_background_build: waits for the sanitizer build started beside build/'s tests; prints its output.
wait_background_build() {
  local status=0
  wait "$background_build" || status=$?
  background_build=""
  cat "$logs/build-asan.log"
  echo "   (started $((tests_end - background_start)) s before build/'s tests ended)"
  return $status
}
if [[ "${FEDCAL_SKIP_ASAN:-0}" != 1 ]]; then
  phase "build-asan/ configure" env CC=clang CXX=clang++ cmake -S . -B build-asan "${common[@]}" "${line_tables[@]}" \
    -DFEDCAL_SANITIZE=ON -DFEDCAL_FUZZ=ON -DFEDCAL_FUZZ_SECONDS="${FEDCAL_FUZZ_SECONDS:-6}" -DFEDCAL_BUILD_BENCH=OFF \
    -DFEDCAL_SLOW_TESTS=OFF
  echo "== build-asan/ build (clang, ASan): started at the idle scheduling class beside build/'s tests"
  background_start=$SECONDS
  setsid chrt --idle 0 cmake --build build-asan -j"$jobs" > "$logs/build-asan.log" 2>&1 &  # its own group: killed whole
  background_build=$!
fi
phase "build/ tests" run_ctest build
tests_end=$SECONDS

if [[ "${FEDCAL_SKIP_ASAN:-0}" != 1 ]]; then
  phase "build-asan/ build (rest, ASan)" wait_background_build
  # Leaks inside Debian libraries on paths fedcal cannot avoid, each named with its test there.
  export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizer/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
  phase "build-asan/ tests" run_ctest build-asan -L "unit|robustness|fuzz"
fi

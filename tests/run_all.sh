#!/usr/bin/env bash
# The whole test suite from a clean clone: install dependencies, then three builds and their tests.
#  0. build-aarch64/  the edge agent cross-built for aarch64 (run under qemu by a fleet test in build/).
#  1. build/       g++, -Werror: the unit and integration tests (doctest via CTest), packaging.
#  2. build-asan/  clang with AddressSanitizer + UndefinedBehaviorSanitizer: the same tests again, plus
#                  every libFuzzer target for FEDCAL_FUZZ_SECONDS each (default 15).
# Set FEDCAL_SKIP_DEPS=1 to skip the apt-get step, FEDCAL_SKIP_ASAN=1 to run the first build only.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

if [[ "${FEDCAL_SKIP_DEPS:-0}" != 1 ]]; then
  deploy/install-deps.sh
fi
# The npm test oracles (a no-op when installed; also with FEDCAL_SKIP_DEPS, which skips only apt-get).
tests/oracles/install.sh

echo "== build-aarch64/ (cross build of the agent)"
deploy/cross/build-aarch64.sh build-aarch64

echo "== build/ (g++, warnings as errors)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDCAL_WERROR=ON -DFEDCAL_AARCH64_BUILD="$PWD/build-aarch64"
cmake --build build -j"$jobs"
ctest --test-dir build -j"$jobs" --output-on-failure

if [[ "${FEDCAL_SKIP_ASAN:-0}" != 1 ]]; then
  echo "== build-asan/ (clang, ASan + UBSan, libFuzzer targets)"
  CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDCAL_WERROR=ON \
    -DFEDCAL_SANITIZE=ON -DFEDCAL_FUZZ=ON -DFEDCAL_FUZZ_SECONDS="${FEDCAL_FUZZ_SECONDS:-15}" -DFEDCAL_BUILD_BENCH=OFF
  cmake --build build-asan -j"$jobs"
  # Tests labelled "slow" (the full held-out evaluation) run in build/ only: minutes under the sanitizers.
  ctest --test-dir build-asan -j"$jobs" --output-on-failure -LE slow
fi

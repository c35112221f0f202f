#!/usr/bin/env bash
# Cross-builds the edge agent (and fedcal-model, and the INT8 kernels' tests) for aarch64 into BUILD
# (default build-aarch64/ in the source tree):
# sysroot from arm64 Debian packages, Debian's aarch64 cross compiler, the toolchain file beside
# this script. The result runs on a Raspberry Pi 4/5 or Jetson with the same Debian packages, or
# here under qemu-aarch64-static (QEMU_LD_PREFIX=/usr/aarch64-linux-gnu and
# LD_LIBRARY_PATH=BUILD/sysroot/usr/lib/aarch64-linux-gnu:BUILD/sysroot/lib/aarch64-linux-gnu).
# Arguments after BUILD go to cmake (tests/run_all.sh adds -DFEDCAL_UNITY=ON).
#   deploy/cross/build-aarch64.sh [BUILD [CMAKE_ARGUMENTS...]]
set -euo pipefail
repo=$(realpath "$(dirname "$0")/../..")
build=$(realpath -m "${1:-$repo/build-aarch64}")  # relative to where it is run from, or absolute
shift || true
cd "$repo"
deploy/cross/make-sysroot.sh "$build/sysroot"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEDCAL_AGENT_ONLY=ON -DFEDCAL_BUILD_TESTS=OFF \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/deploy/cross/aarch64-toolchain.cmake" -DFEDCAL_SYSROOT="$build/sysroot" "$@" >/dev/null
cmake --build "$build" --target fedcal-agent fedcal-model fedcal_kernel_tests
file "$build/bin/fedcal-agent" | sed 's/, BuildID.*//' >&2

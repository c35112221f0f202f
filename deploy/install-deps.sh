#!/usr/bin/env bash
# Installs every build and test dependency of fedcal from Debian (bookworm) packages.
# Idempotent: re-running it only refreshes the package lists and installs what is missing.
#   deploy/install-deps.sh            build + test dependencies, incl. the aarch64 cross toolchain and qemu
#   deploy/install-deps.sh --train    also the Python stack that trains the project's model (not needed by CI)
# The arm64 libraries the cross build links against are NOT installed here: deploy/cross/make-sysroot.sh
# downloads and unpacks them into the build folder (installing them would remove the amd64 ones).
set -euo pipefail

packages=(
  build-essential cmake pkg-config ninja-build
  libxnnpack-dev libpthreadpool-dev libcpuinfo-dev
  libzmq3-dev cppzmq-dev
  capnproto libcapnp-dev
  libssl-dev
  libsqlitecpp-dev libsqlite3-dev
  libpqxx-dev postgresql  # the coordinator's PostgreSQL backend; its tests start a server of their own
  nginx  # the package origin and cache (deploy/nginx/); the tests run the shipped configs in an nginx of their own
  doctest-dev libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libfmt-dev
  libsentencepiece-dev
  clang libclang-rt-14-dev
  dpkg-dev file
  libfaketime util-linux
  chromium fonts-dejavu-core zlib1g-dev
  crossbuild-essential-arm64 qemu-user-static
  python3-onnx  # onnx.checker, run by the ONNX export tests
)
if [[ "${1:-}" == "--train" ]]; then
  packages+=(python3-torch python3-numpy python3-sentencepiece libopenblas0-pthread sentencepiece)
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
# arm64 package lists, for `apt-get download` of the cross build's sysroot.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then $sudo dpkg --add-architecture arm64; fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"

# The tests' independent references from npm (tests/oracles: Hugging Face's GGUF reader, ONNX Runtime). Node.js from
# Debian when the machine has none.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  $sudo apt-get install -y -qq --no-install-recommends nodejs npm
fi
"$(dirname "$0")/../tests/oracles/install.sh"

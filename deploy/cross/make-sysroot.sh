#!/usr/bin/env bash
# Fills SYSROOT with the arm64 Debian packages the edge agent builds and runs against, by
# `apt-get download` + `dpkg -x` - never installing them (Debian's libxnnpack-dev, libpthreadpool-dev
# and libcpuinfo-dev cannot be installed for amd64 and arm64 at once; installing one silently removes
# the other and breaks the native build). Needs `dpkg --add-architecture arm64` and an apt update
# (deploy/install-deps.sh does both).
#   deploy/cross/make-sysroot.sh SYSROOT
set -euo pipefail
sysroot=$(realpath -m "${1:?usage: make-sysroot.sh SYSROOT}")
packages_arm64=(
  libzmq3-dev libzmq5 libsodium23 libpgm-5.3-0 libnorm1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
  libcom-err2 libkeyutils1 libbsd0 libmd0 zlib1g
  libcapnp-dev libcapnp-0.9.2 capnproto libssl-dev libssl3
  libxnnpack-dev libxnnpack0 libpthreadpool-dev libpthreadpool0 libcpuinfo-dev libcpuinfo0
  libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libfmt-dev libfmt9
)
packages_all=(cppzmq-dev nlohmann-json3-dev libcli11-dev libtomlplusplus-dev doctest-dev)
stamp=$sysroot/.packages
wanted="${packages_arm64[*]} ${packages_all[*]}"
if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
  echo "[sysroot] $sysroot is up to date" >&2
  exit 0
fi
downloads=$(mktemp -d)
trap 'rm -rf "$downloads"' EXIT
mkdir -p "$sysroot"
specs=()
for package in "${packages_arm64[@]}"; do specs+=("$package:arm64"); done
(cd "$downloads" && apt-get download -q "${specs[@]}" "${packages_all[@]}" >/dev/null)
for deb in "$downloads"/*.deb; do dpkg -x "$deb" "$sysroot"; done
# Absolute symlinks in the packages point into the build machine's / - make them relative to the sysroot.
find "$sysroot" -type l | while read -r link; do
  target=$(readlink "$link")
  if [[ $target == /* ]]; then ln -sfn "$sysroot$target" "$link"; fi
done
echo "$wanted" > "$stamp"
echo "[sysroot] $(ls "$downloads" | wc -l) arm64 packages unpacked into $sysroot" >&2

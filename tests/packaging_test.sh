#!/usr/bin/env bash
# Builds the Debian packages with cpack into a scratch folder and checks what they install:
# binaries, hardened systemd units, documented configs (as conffiles) and the user-creating postinst;
# with a second argument (the aarch64 cross build), also its arm64 fedcal-agent package.
set -euo pipefail
build=$1
cross=${2:-}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$build" && cpack -G DEB -B "$out" >/dev/null)
check() { grep -q -- "$2" <<<"$1" || { echo "missing: $2"; exit 1; }; }
for package in coordinator agent; do
  deb=$(ls "$out"/fedcal-${package}_*.deb)
  contents=$(dpkg-deb -c "$deb")
  check "$contents" "./usr/bin/fedcal-$package"
  check "$contents" "./usr/lib/systemd/system/fedcal-$package.service"
  check "$contents" "./etc/fedcal/$package.toml"
  info=$(dpkg-deb -I "$deb")
  check "$info" "Depends: adduser"
  check "$info" "libzmq5"
  dpkg-deb -e "$deb" "$out/control-$package"
  check "$(cat "$out/control-$package/conffiles")" "/etc/fedcal/$package.toml"
  check "$(cat "$out/control-$package/postinst")" "adduser --system"
  dpkg-deb -x "$deb" "$out/root-$package"
  unit=$out/root-$package/usr/lib/systemd/system/fedcal-$package.service
  check "$(cat "$unit")" "ProtectSystem=strict"
  check "$(cat "$unit")" "NoNewPrivileges=true"
  # The packaged binary runs and the packaged config parses up to the key it needs filled in.
  "$out/root-$package/usr/bin/fedcal-$package" --help >/dev/null
done
check "$(dpkg-deb -c "$out"/fedcal-coordinator_*.deb)" "./usr/bin/fedcal-model"
if [[ -n $cross ]]; then
  (cd "$cross" && cpack -G DEB -B "$out/arm64" >/dev/null)
  arm=$(ls "$out"/arm64/fedcal-agent_*_arm64.deb)
  check "$(dpkg-deb -I "$arm")" "Architecture: arm64"
  check "$(dpkg-deb -c "$arm")" "./usr/lib/systemd/system/fedcal-agent.service"
  dpkg-deb -x "$arm" "$out/root-arm64"
  check "$(file "$out/root-arm64/usr/bin/fedcal-agent")" "ARM aarch64"
fi
echo "packages OK: $(find "$out" -name '*.deb' -printf '%f ')"

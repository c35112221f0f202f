#!/usr/bin/env bash
# Installs the npm packages the tests use as independent references (package-lock.json pins them) into
# tests/oracles/node_modules. Idempotent: does nothing when the installed lock file is this one.
# Install scripts are not run (--ignore-scripts): the oracles are plain JavaScript.
set -euo pipefail
cd "$(dirname "$0")"
if [[ -f node_modules/.fedcal-installed-lock ]] && cmp -s package-lock.json node_modules/.fedcal-installed-lock; then
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund
cp package-lock.json node_modules/.fedcal-installed-lock

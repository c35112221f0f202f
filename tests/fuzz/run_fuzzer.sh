#!/usr/bin/env bash
# run_fuzzer.sh TARGET SECONDS CORPUS_DIR SEED_DIR: fuzzes for a bounded time; fails on any crash,
# sanitizer report, leak, timeout or out-of-memory that libFuzzer finds.
set -euo pipefail
target=$1 seconds=$2 corpus=$3 seeds=$4
mkdir -p "$corpus"
exec "$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
  -artifact_prefix="$corpus/" "$corpus" "$seeds"

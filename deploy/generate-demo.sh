#!/usr/bin/env bash
# The main job for now: build fedcal-model if needed and continue a prompt with the project's own
# TinyStories model (models/tinystories-1.8m), greedily.
#   deploy/generate-demo.sh ["Once upon a time"] [extra fedcal-model generate options...]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=${1:-Once upon a time}
shift || true
if [[ ! -x build/bin/fedcal-model ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build --target fedcal-model
fi
model=models/tinystories-1.8m
exec build/bin/fedcal-model generate --model "$model/model.bin" --tokenizer "$model/tokenizer.bin" \
  --prompt "$prompt" --max-tokens 100 --temperature 0 "$@"

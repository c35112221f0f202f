#!/usr/bin/env bash
# Peak memory of a 1B-class model, measured by `fedcal-model bench` (getrusage's maximum resident set):
# the tinyllama-1.1b shape (1.1 B parameters, random weights) from a BF16 Hugging Face checkpoint run
# in FP32, from its INT8 package (per-channel W8A8, min-max scales over 8 TinyStories lines), and from
# its 4-bit package (`quantize --weight-bits 4`, non-uniform grid, plain rounding). Each line reports
# peak RSS against the weights the engine holds (packed matrices, token table, norms).
#   bench/peak_memory.sh [WORK_DIR]      (default /tmp/fedcal-peak-memory; about 4 GB of files)
# Needs a build (build/bin/fedcal-model, or $BUILD/bin) and ~10 GB of free memory for the quantization
# step (which holds the FP32 model and its statistics); the two measured runs need ~5 GB and ~1.3 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
fedcal="${BUILD:-build}/bin/fedcal-model"
work="${1:-/tmp/fedcal-peak-memory}"
mkdir -p "$work"
if [[ ! -f "$work/tinyllama-bf16/model.safetensors" ]]; then
  echo "[peak-memory] writing the BF16 checkpoint (about a minute)" >&2
  "$fedcal" synth --preset tinyllama-1.1b --format hf --dtype bf16 -o "$work/tinyllama-bf16" 2>/dev/null
fi
if [[ ! -f "$work/tinyllama-int8.pkg" ]]; then
  echo "[peak-memory] calibrating and quantizing (about a minute)" >&2
  head -8 data/tinystories/tinystories-sample.txt > "$work/calibration.txt"
  "$fedcal" calibrate -m "$work/tinyllama-bf16" --tokenizer models/tinystories-1.8m/tokenizer.model \
    --text "$work/calibration.txt" --sequences 8 --seq-len 32 -o "$work/tinyllama.stats" -q
  "$fedcal" quantize -m "$work/tinyllama-bf16" --tokenizer models/tinystories-1.8m/tokenizer.model \
    --stats "$work/tinyllama.stats" --recipe plain --per-channel --method minmax -o "$work/tinyllama-int8.pkg" >/dev/null
fi
if [[ ! -f "$work/tinyllama-4bit.pkg" ]]; then
  echo "[peak-memory] quantizing to 4 bits (about 5 minutes on 2 cores)" >&2
  "$fedcal" quantize -m "$work/tinyllama-bf16" --tokenizer models/tinystories-1.8m/tokenizer.model --weight-bits 4 \
    -o "$work/tinyllama-4bit.pkg" >/dev/null 2>&1
fi
for model in "$work/tinyllama-bf16" "$work/tinyllama-int8.pkg" "$work/tinyllama-4bit.pkg"; do
  echo "== $model"
  "$fedcal" bench -m "$model" --prompt-tokens 8 --decode-tokens 8 --repeats 1 | grep -E "^(model|peak RSS|decode):"
done

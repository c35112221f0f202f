#!/usr/bin/env bash
# The Gemma 3 270M shape (synth preset gemma3-270m: random weights, 18 layers of which 15 sliding-window,
# vocabulary 262,144, context 2,048) in FP32, static INT8 (per-channel weights, scales from a
# calibration on TinyStories text) and fine-grained INT8 (every layer's linears in groups of 32, the
# classifier static), `fedcal-model bench` in REPEATS interleaved rounds of each, printed as a markdown
# table of medians. The tokenizer is the project model's (its ids are a subset of the vocabulary:
# speed does not depend on which text). About 10 minutes on 2 cores; the machine should be idle.
#   bench/gemma3_speed.sh [REPEATS] [THREADS]   (default 2, one per core)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-2}
threads=${2:-0}
bin=build/bin/fedcal-model
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$bin synth --preset gemma3-270m --seed 1 --format hf --dtype bf16 -o "$work/model" 2>/dev/null
head -c 200000 data/tinystories/tinystories-sample.txt > "$work/calibration.txt"
$bin calibrate -m "$work/model" --tokenizer models/tinystories-1.8m/tokenizer.model --text "$work/calibration.txt" \
  --sequences 8 --seq-len 128 -o "$work/model.stats" -q
layers=()
for l in $(seq 0 17); do layers+=("layers.$l"); done
declare -A args=(
  [fp32]=""
  [int8]="--stats $work/model.stats --per-channel"
  [fine]="--stats $work/model.stats --per-channel --fine-grained ${layers[*]}"
)
for round in $(seq "$repeats"); do
  for mode in fp32 int8 fine; do
    # shellcheck disable=SC2086
    $bin bench -m "$work/model" -t "$threads" ${args[$mode]} --repeats 3 --json > "$work/$mode.$round.json"
  done
done
/usr/bin/python3 - "$work" "$repeats" <<'PY'
import json, statistics, sys
work, repeats = sys.argv[1], int(sys.argv[2])
rows = {m: [json.load(open(f"{work}/{m}.{r}.json")) for r in range(1, repeats + 1)] for m in ("fp32", "int8", "fine")}
median = lambda m, k: statistics.median(run[k] for run in rows[m])
print("| mode | prefill tok/s | decode tok/s | decode vs FP32 | weights held | KV cache |")
print("| --- | --- | --- | --- | --- | --- |")
for mode, name in (("fp32", "FP32"), ("int8", "static INT8"), ("fine", "fine-grained INT8")):
    print(f"| {name} | {median(mode, 'prefill_tokens_per_s'):.0f} | {median(mode, 'decode_tokens_per_s'):.1f} | "
          f"{median(mode, 'decode_tokens_per_s') / median('fp32', 'decode_tokens_per_s'):.2f}x | "
          f"{median(mode, 'resident_weight_bytes') / 1e6:.0f} MB | {median(mode, 'kv_cache_bytes') / 1e6:.1f} MB |")
PY

#!/usr/bin/env bash
# 4-bit vs fine-grained INT8 decode, measured in one run on the same random-weight model (default the
# smollm-135m synth shape): every linear 4-bit (`quantize --weight-bits 4`, non-uniform grid) against
# every linear fine-grained INT8 (`--weight-groups`), at 1 and 2 threads, REPEATS interleaved rounds
# (the median of each), with the 4-bit run's peak RSS against the weights the engine holds (packed
# matrices, token table, norms) and against the package's bytes.
#   bench/int4_speed.sh [PRESET] [REPEATS] [KERNEL]   (default smollm-135m, 3, the fastest kernel here;
#                                                      KERNEL e.g. avx2 to measure a box without VNNI)
# Prints a markdown table; the machine should be otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-smollm-135m}
repeats=${2:-3}
kernel=()
[[ -n ${3:-} ]] && kernel=(--int8-kernel "$3")
bin=build/bin/fedcal-model
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tokenizer=models/tinystories-1.8m/tokenizer.model
$bin synth --preset "$preset" --seed 1 -o "$work/fp32.bin" 2>/dev/null
$bin quantize -m "$work/fp32.bin" --tokenizer "$tokenizer" --weight-groups -o "$work/fine.pkg" 2>/dev/null
$bin quantize -m "$work/fp32.bin" --tokenizer "$tokenizer" --weight-bits 4 -o "$work/four.pkg" 2>/dev/null
for threads in 1 2; do
  for round in $(seq "$repeats"); do
    for variant in fine four; do
      $bin bench -m "$work/$variant.pkg" -t "$threads" "${kernel[@]}" --json > "$work/$variant-$threads-$round.json"
    done
  done
done
python3 - "$work" "$repeats" "$preset" "${3:-default}" <<'PY'
import json, statistics, sys
work, repeats, preset, kernel = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"kernel: {kernel}")
print(f"| threads | {preset}: fine-grained INT8 decode | 4-bit decode | 4-bit vs INT8 (median of {repeats}) | package bytes INT8 / 4-bit | 4-bit peak RSS | vs weights held | vs package |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for threads in (1, 2):
    runs = {v: [json.load(open(f"{work}/{v}-{threads}-{r}.json")) for r in range(1, repeats + 1)] for v in ("fine", "four")}
    decode = {v: statistics.median(r["decode_tokens_per_s"] for r in runs[v]) for v in runs}
    ratios = statistics.median(b["decode_tokens_per_s"] / a["decode_tokens_per_s"] for a, b in zip(runs["fine"], runs["four"]))
    four = runs["four"][0]
    print(f"| {threads} | {decode['fine']:.1f} tok/s | {decode['four']:.1f} tok/s | {ratios:.2f}x "
          f"| {runs['fine'][0]['model_bytes'] / 1e6:.1f} MB / {four['model_bytes'] / 1e6:.1f} MB "
          f"| {four['peak_rss_bytes'] / 1e6:.0f} MB | {four['peak_rss_vs_weights']:.2f}x of {four['resident_weight_bytes'] / 1e6:.1f} MB "
          f"| {four['peak_rss_bytes'] / four['model_bytes']:.2f}x |")
PY

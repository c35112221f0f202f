#!/usr/bin/env bash
# 4-bit weights on a model's held-out text (docs/QUANTIZATION.md, "4-bit weights"), next to the
# fine-grained INT8 mode. Calibrates on the TinyStories training split with importance sums, then
# measures against FP32 on the held-out split:
#   fine        every linear fine-grained INT8 (groups of 32, activations per block of 32)
#   plain       every linear 4-bit (`--weight-bits 4`), plain rounding (no statistics)
#   importance  the same, each group rounded to the least importance-weighted error (`--stats S`)
#   head8       importance-weighted 4-bit layers, the classifier (the tied token table) fine-grained INT8
#   bench/int4_table.sh [MODEL_DIR] [THREADS]   (default models/tinystories-1.8m, 1 thread)
# MODEL_DIR holds model.bin and tokenizer.bin. Prints a markdown table; a few minutes for a small model.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tinystories_split.sh "$@"
quiet() { "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; }; }

quiet $bin calibrate "${model[@]}" --text "$work/train.txt" --sequences 100000 --seq-len 256 --importance -o "$work/train.stats" -q -t "$threads"
quiet $bin quantize "${model[@]}" -o "$work/fp32.pkg"
fp32_bytes=$(stat -c %s "$work/fp32.pkg")
quiet $bin quantize "${model[@]}" --weight-groups -o "$work/fine.pkg"
quiet $bin quantize "${model[@]}" --weight-bits 4 -o "$work/plain.pkg"
quiet $bin quantize "${model[@]}" --weight-bits 4 --stats "$work/train.stats" -o "$work/importance.pkg"
quiet $bin quantize "${model[@]}" --weight-bits 4 --fine-grained classifier --stats "$work/train.stats" -o "$work/head8.pkg"

echo "| model | setting | ppl change | mean KL | top-1 | package bytes | decode tok/s |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for variant in fine plain importance head8; do
  case $variant in
    fine) label="fine-grained INT8, every linear" ;;
    plain) label="4-bit, every linear, plain rounding" ;;
    importance) label="4-bit, every linear, importance-weighted rounding (training split's statistics)" ;;
    head8) label="4-bit layers importance-weighted, classifier (tied table) fine-grained INT8" ;;
  esac
  eval=$($bin eval -m "$work/$variant.pkg" --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads" 2>/dev/null)
  bench=$($bin bench -m "$work/$variant.pkg" -t "$threads" --json)
  python3 - "$(basename "$model_dir")" "$label" "$eval" "$bench" "$fp32_bytes" <<'PY'
import json, sys
name, label, e, b, fp32_bytes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
print(f"| {name} | {label} | {100 * (e['perplexity'] / e['reference_perplexity'] - 1):+.3f}% | {e['mean_kl']:.5f} "
      f"| {e['top1_agreement']:.4f} | {b['model_bytes'] / 1e6:.3f} MB ({100 * b['model_bytes'] / fp32_bytes:.1f}%) "
      f"| {b['decode_tokens_per_s']:.0f} |")
PY
done

#!/usr/bin/env bash
# Builds docs/QUANTIZATION.md's table: calibrates a model on the TinyStories training split, then for
# every scale method x weight granularity x mixed-precision setting writes an INT8 package and measures
# it against FP32 on the held-out split (perplexity, KL, top-1), its size, and its speed; and the same
# INT8 weights with dynamic per-token activations, the calibration-free baseline.
#   bench/quantization_table.sh [MODEL_DIR] [THREADS]    (default models/tinystories-1.8m, 1 thread)
# Prints a markdown table; takes a few minutes for the project's model.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tinystories_split.sh "$@"

$bin calibrate "${model[@]}" --text "$work/train.txt" --sequences 100000 --seq-len 256 -o "$work/train.stats" -q -t "$threads"
$bin quantize "${model[@]}" -o "$work/fp32.pkg" 2>/dev/null
fp32_bytes=$(stat -c %s "$work/fp32.pkg")
fp32_bench=$($bin bench -m "$work/fp32.pkg" -t "$threads" --json)
fp32_eval=$($bin eval -m "$work/fp32.pkg" --text "$work/heldout.txt" --json -t "$threads")

row() {  # label, then quantize options
  local label=$1
  shift
  $bin quantize "${model[@]}" --stats "$work/train.stats" --recipe plain "$@" -o "$work/q.pkg" 2>/dev/null
  local eval bench
  eval=$($bin eval -m "$work/q.pkg" --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads")
  bench=$($bin bench -m "$work/q.pkg" -t "$threads" --json)
  print_row "$label" "$eval" "$bench"
}

print_row() {  # label, eval JSON, bench JSON
  python3 - "$1" "$2" "$3" "$fp32_bytes" <<'PY'
import json, sys
label, e, b, fp32_bytes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
print(f"| {label} | {e['reference_perplexity']:.3f} | {e['perplexity']:.3f} | {100 * (e['perplexity'] / e['reference_perplexity'] - 1):+.2f}% "
      f"| {e['mean_kl']:.5f} | {e['top1_agreement']:.4f} | {b['model_bytes'] / 1e6:.2f} MB ({100 * b['model_bytes'] / fp32_bytes:.0f}%) "
      f"| {b['decode_tokens_per_s']:.0f} | {b['prefill_tokens_per_s']:.0f} |")
PY
}

# The calibration-free baseline: the INT8 weights of a package with the same granularity, each token's
# activations quantized at run time (no statistics used).
row_dynamic() {  # label, then weight options
  local label=$1
  shift
  $bin quantize "${model[@]}" --stats "$work/train.stats" --recipe plain "$@" -o "$work/q.pkg" 2>/dev/null
  local eval bench
  eval=$($bin eval -m "$work/q.pkg" --activations dynamic --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads")
  bench=$($bin bench -m "$work/q.pkg" --activations dynamic -t "$threads" --json)
  print_row "$label" "$eval" "$bench"
}

python3 - "$fp32_eval" "$fp32_bench" <<'PY'
import json, sys
e, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("| setting | FP32 ppl | INT8 ppl | ppl change | mean KL | top-1 | package bytes | decode tok/s | prefill tok/s |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
print(f"| FP32 package | {e['perplexity']:.3f} | - | - | - | - | {b['model_bytes'] / 1e6:.2f} MB (100%) | {b['decode_tokens_per_s']:.0f} | {b['prefill_tokens_per_s']:.0f} |")
PY
row_dynamic "dynamic activations (no calibration), per-tensor"
row_dynamic "dynamic activations (no calibration), per-channel" --per-channel
for method in minmax percentile:99.9 percentile:99.99 entropy mse; do
  for granularity in per-tensor per-channel; do
    flags=(--method "$method")
    [[ $granularity == per-channel ]] && flags+=(--per-channel)
    row "$method, $granularity" "${flags[@]}"
    row "$method, $granularity, classifier FP32" "${flags[@]}" --keep-fp32 classifier
    row "$method, $granularity, auto-fp32 2" "${flags[@]}" --auto-fp32 2 --sensitivity-text "$work/sensitivity.txt"
  done
done
row "mse, per-channel, target-kl 0.001" --method mse --per-channel --target-kl 0.001 --sensitivity-text "$work/sensitivity.txt"

#!/usr/bin/env bash
# INT8 vs FP32 speed of the same model, measured in one run: the smollm-135m synth shape (random
# weights), calibrated on TinyStories text, per-tensor and per-channel INT8 packages, the same weights with
# activations quantized at run time (per token, per block of 32), the fine-grained mode and the per-channel package
# of the smoothed model (SmoothQuant: the same graph), at 1 and 2 threads.
#   bench/int8_vs_fp32.sh [PRESET] [REPEATS]      (default smollm-135m, 3)
# Prints a markdown table; the machine should be otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-smollm-135m}
repeats=${2:-3}
bin=build/bin/fedcal-model
if [[ ! -x build/bin/fedcal-membw ]]; then
  echo "int8_vs_fp32.sh: build/bin/fedcal-membw is not built (the test suite's build leaves the benchmarks out):" \
       "cmake -S . -B build -DFEDCAL_BUILD_BENCH=ON && cmake --build build" >&2
  exit 1
fi
data=data/tinystories/tinystories-sample.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sed -n '1,7003p' "$data" > "$work/train.txt"
$bin synth --preset "$preset" --seed 1 -o "$work/fp32.bin" 2>/dev/null
# Any tokenizer whose ids fit the vocabulary serves for calibrating random weights.
tokenizer=models/tinystories-1.8m/tokenizer.model
$bin calibrate -m "$work/fp32.bin" --tokenizer "$tokenizer" --text "$work/train.txt" --sequences 32 --seq-len 64 --importance -o "$work/s.stats" -q
$bin quantize -m "$work/fp32.bin" --tokenizer "$tokenizer" --stats "$work/s.stats" --recipe plain --method minmax -o "$work/pt.pkg" 2>/dev/null
$bin quantize -m "$work/fp32.bin" --tokenizer "$tokenizer" --stats "$work/s.stats" --recipe plain --method minmax --per-channel -o "$work/pc.pkg" 2>/dev/null
$bin quantize -m "$work/fp32.bin" --tokenizer "$tokenizer" --weight-groups -o "$work/fine.pkg" 2>/dev/null
# The same model smoothed (SmoothQuant folded into its weights; the error measured on ~100 tokens, which
# keeps this step near a minute), recalibrated and quantized per channel: the same graph, whose speed
# must match the unsmoothed package's.
head -c 400 "$work/train.txt" > "$work/smooth.txt"
$bin smooth -m "$work/fp32.bin" --tokenizer "$tokenizer" --stats "$work/s.stats" --text "$work/smooth.txt" -o "$work/smoothed.pkg" > /dev/null 2>&1
$bin calibrate -m "$work/smoothed.pkg" --text "$work/train.txt" --sequences 32 --seq-len 64 -o "$work/smoothed.stats" -q
$bin quantize -m "$work/smoothed.pkg" --stats "$work/smoothed.stats" --recipe plain --method minmax --per-channel -o "$work/pcs.pkg" 2>/dev/null

echo "| threads | model | prefill tok/s | decode tok/s | decode vs FP32 | prefill vs FP32 | weight bytes/token | weight GB/s | % of read bandwidth | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for threads in 1 2; do
  # The machine's read bandwidth at this thread count, measured next to the models (a shared VM's
  # bandwidth drifts over minutes, so a figure from another run would not compare).
  bandwidth=$(build/bin/fedcal-membw --mb 1024 --threads "$threads" --passes 3 | sed -n 's/.*read \([0-9.]*\) GB\/s.*/\1/p')
  fp32=$($bin bench -m "$work/fp32.bin" -t "$threads" --repeats "$repeats" --json)
  # The INT8 packages (XNNPACK, static scales), then the same per-channel weights with activations
  # quantized at run time per token and per block of 32 channels, and the fine-grained mode (weights
  # in groups of 32 too: its own package, no statistics).
  # The kernel of the layers quantized at run time (the fastest this CPU runs), and the AVX2 kernel
  # next to it where a faster one exists (what an x86 box without VNNI runs).
  kernel=$($bin bench -m "$work/fine.pkg" -t 1 --repeats 1 --prompt-tokens 1 --decode-tokens 1 --json | sed -n 's/.*"int8_kernel": "\(.*\)".*/\1/p')
  variants="fp32 pt pc pcs dynamic blocks fine"
  if [ "$kernel" != avx2 ] && $bin bench --help | grep -q "Here: .*avx2"; then variants="$variants fine-avx2"; fi
  for variant in $variants; do
    case $variant in
      fp32) result=$fp32 ;;
      pt | pc | pcs) result=$($bin bench -m "$work/$variant.pkg" -t "$threads" --repeats "$repeats" --json) ;;
      dynamic) result=$($bin bench -m "$work/pc.pkg" -t "$threads" --repeats "$repeats" --activations dynamic --json) ;;
      blocks) result=$($bin bench -m "$work/pc.pkg" -t "$threads" --repeats "$repeats" --activations dynamic-blocks --json) ;;
      fine) result=$($bin bench -m "$work/fine.pkg" -t "$threads" --repeats "$repeats" --json) ;;
      fine-avx2) result=$($bin bench -m "$work/fine.pkg" -t "$threads" --repeats "$repeats" --int8-kernel avx2 --json) ;;
    esac
    python3 - "$threads" "$variant" "$result" "$fp32" "$bandwidth" <<'PY'
import json, sys
threads, variant, r, f, bandwidth = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), float(sys.argv[5])
name = {"fp32": "FP32", "pt": "INT8 per-tensor", "pc": "INT8 per-channel", "pcs": "INT8 per-channel, smoothed (SmoothQuant)", "dynamic": "INT8 per-channel, dynamic per token",
        "blocks": "INT8 per-channel, dynamic per block of 32", "fine": "fine-grained: weight groups + activation blocks of 32",
        "fine-avx2": "fine-grained, AVX2 kernel"}[variant]
if variant in ("dynamic", "blocks", "fine"):
    name += f" ({r['int8_kernel']} kernel)"
print(f"| {threads} | {name} | {r['prefill_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.1f} "
      f"| {r['decode_tokens_per_s'] / f['decode_tokens_per_s']:.2f}x | {r['prefill_tokens_per_s'] / f['prefill_tokens_per_s']:.2f}x "
      f"| {r['decode_weight_bytes_per_token'] / 1e6:.1f} MB | {r['decode_weight_gb_per_s']:.1f} "
      f"| {100 * r['decode_weight_gb_per_s'] / bandwidth:.0f}% of {bandwidth:.1f} GB/s | {r['peak_rss_bytes'] / 1e6:.0f} MB |")
PY
  done
done

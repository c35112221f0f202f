#!/usr/bin/env bash
# Static INT8 next to the calibration-free baseline, on a model's held-out text (docs/QUANTIZATION.md,
# "Static INT8 against the dynamic baseline"). Calibrates on the TinyStories training split with
# importance sums, then measures against FP32 on the held-out split:
#   dynamic     per-channel INT8 weights, activations per token at run time (no calibration)
#   static      mse scales, per-channel weights
#   smoothed    the same after `fedcal-model smooth` (SmoothQuant from the importance sums)
#   mixed       smoothed static, with the fewest sensitive layers in the fine-grained mode that bring
#               the KL on the sensitivity text down to the dynamic baseline's KL on that text
#   fine        every linear fine-grained (weights in groups of 32, activations per block of 32)
#   plain       `quantize --recipe plain` (percentile:99.99 per-tensor: the defaults before recipes)
#   default     `quantize --stats S` with no other option (the engine's recipe without smoothing, its
#               target measured on text the FP32 model samples)
#   bench/fidelity_table.sh [MODEL_DIR] [THREADS]   (default models/tinystories-1.8m, 1 thread)
# MODEL_DIR holds model.bin and tokenizer.bin. Prints a markdown table; a few minutes for a small model.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tinystories_split.sh "$@"
training_stats_and_fp32
fp32_bench=$($bin bench -m "$work/fp32.pkg" -t "$threads" --json)

# The smoothed FP32 model, and its own statistics (its activations differ from the original's).
$bin smooth "${model[@]}" --stats "$work/train.stats" --text "$work/sensitivity.txt" -o "$work/smoothed.pkg" --json > "$work/smooth.json" 2>/dev/null
smoothed_sites=$(python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["smoothed"], "of", len(r["sites"]))' < "$work/smooth.json")
quiet $bin calibrate -m "$work/smoothed.pkg" --text "$work/train.txt" --sequences 100000 --seq-len 256 -o "$work/smoothed.stats" -q -t "$threads"

quiet $bin quantize "${model[@]}" --stats "$work/train.stats" --recipe plain --method mse --per-channel -o "$work/static.pkg"
quiet $bin quantize -m "$work/smoothed.pkg" --stats "$work/smoothed.stats" --recipe plain --method mse --per-channel -o "$work/smoothed-static.pkg"
quiet $bin quantize "${model[@]}" --weight-groups -o "$work/fine.pkg"
quiet $bin quantize "${model[@]}" --stats "$work/train.stats" --recipe plain -o "$work/plain.pkg"
default_layers=$($bin quantize "${model[@]}" --stats "$work/train.stats" -o "$work/default.pkg" 2>&1 | sed -n 's/.*\[target-kl\] \([0-9]*\) layer.*/\1/p')
# The mixed model's target: the dynamic baseline's KL (the original model's, --baseline-model) on the
# sensitivity text's first 4 windows, with a margin (--target-kl "dynamic*0.8").
target_line=$($bin quantize -m "$work/smoothed.pkg" --stats "$work/smoothed.stats" --method mse --per-channel --target-kl "dynamic*0.8" \
                --baseline-model "$work/fp32.pkg" --fallback fine-grained --sensitivity-text "$work/sensitivity.txt" -o "$work/mixed.pkg" 2>&1 |
              grep '\[target-kl\]')
mixed_layers=$(echo "$target_line" | sed -n 's/.*\[target-kl\] \([0-9]*\) layer.*/\1/p')
target=$(echo "$target_line" | sed -n 's/.* <= \([0-9.e+-]*\).*/\1/p')

echo "| model | setting | ppl change | mean KL | KL vs dynamic | top-1 | package bytes | decode tok/s | prefill tok/s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
dynamic_kl=""
for variant in dynamic plain static smoothed mixed fine default; do
  activations=()
  case $variant in
    dynamic) package=$work/static.pkg; activations=(--activations dynamic); label="dynamic per token, per-channel weights (no calibration)" ;;
    static) package=$work/static.pkg; label="static mse, per-channel" ;;
    smoothed) package=$work/smoothed-static.pkg; label="static mse, per-channel, smoothed ($smoothed_sites sites)" ;;
    mixed) package=$work/mixed.pkg; label="static mse, per-channel, smoothed, $mixed_layers sensitive layers fine-grained (target KL $(printf %.2g "$target"))" ;;
    fine) package=$work/fine.pkg; label="fine-grained, every linear" ;;
    plain) package=$work/plain.pkg; label="static percentile:99.99, per-tensor (\`quantize --recipe plain\`)" ;;
    default) package=$work/default.pkg; label="\`quantize --stats S\`, no option: mse, per-channel, $default_layers layers fine-grained (target dynamic*0.8 on sampled text)" ;;
  esac
  eval=$($bin eval -m "$package" "${activations[@]}" --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads" 2>/dev/null)
  bench=$($bin bench -m "$package" "${activations[@]}" -t "$threads" --json)
  row=$(python3 - "$(basename "$model_dir")" "$label" "$eval" "$bench" "$fp32_bytes" "$dynamic_kl" <<'PY'
import json, sys
name, label, e, b, fp32_bytes, dynamic_kl = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ratio = f"{e['mean_kl'] / float(dynamic_kl):.2f}x" if dynamic_kl else "1.00x"
print(f"| {name} | {label} | {100 * (e['perplexity'] / e['reference_perplexity'] - 1):+.3f}% | {e['mean_kl']:.6f} | {ratio} "
      f"| {e['top1_agreement']:.4f} | {b['model_bytes'] / 1e6:.2f} MB ({100 * b['model_bytes'] / fp32_bytes:.1f}%) "
      f"| {b['decode_tokens_per_s']:.0f} | {b['prefill_tokens_per_s']:.0f} |")
PY
)
  echo "$row"
  [[ $variant == dynamic ]] && dynamic_kl=$(echo "$eval" | python3 -c 'import json, sys; print(json.load(sys.stdin)["mean_kl"])')
done
echo
python3 - "$fp32_bench" <<'PY'
import json, sys
b = json.loads(sys.argv[1])
print(f"FP32: {b['model_bytes'] / 1e6:.2f} MB, decode {b['decode_tokens_per_s']:.0f} tok/s, prefill {b['prefill_tokens_per_s']:.0f} tok/s")
PY

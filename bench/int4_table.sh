#!/usr/bin/env bash
# 4-bit weights on a model's held-out text (docs/QUANTIZATION.md, "4-bit weights"), next to the
# fine-grained INT8 mode. Calibrates on the TinyStories training split with importance sums, then
# measures against FP32 on the held-out split:
#   fine        every linear fine-grained INT8 (groups of 32, activations per block of 32)
#   u-plain     every linear 4-bit on Q4_0's uniform grid, plain rounding (no statistics)
#   u-imp       the same, each group rounded to the least importance-weighted error (`--stats S`)
#   nl-plain    every linear 4-bit on the non-uniform grid (the default), plain rounding
#   nl-imp      the same, importance-weighted
#   nl-head8    nl-imp, with the classifier (the tied token table) fine-grained INT8
#   mixed       nl-imp, with the fewest layers fine-grained INT8 (by KL per weight) that bring the KL on
#               the training text's first 4 windows to 0.003 (`--target-kl 0.003 --fallback fine-grained`)
#   nl5-imp     every linear 5-bit on the non-uniform 32-level grid, importance-weighted (5.5 bits per weight)
#   u5-imp      the same on Q5_0's uniform grid
#   nl5-head8   nl5-imp with the classifier fine-grained INT8
#   mixed45     nl-imp, with the fewest layers (by KL per weight) moved to 5 bits, then on to fine-grained INT8,
#               that bring the KL on the training text's first 4 windows to 0.003 (`--fallback 5-bit`)
#   awq-*       nl-imp, nl-head8 and mixed of the model with AWQ's input-channel scaling folded in first
#               (`smooth --weight-bits 4` from the training statistics, the error measured on the
#               training text's first 4 windows), calibrated again on the training split
#   bench/int4_table.sh [MODEL_DIR] [THREADS]   (default models/tinystories-1.8m, 1 thread)
# MODEL_DIR holds model.bin and tokenizer.bin. Prints a markdown table; a few minutes for a small model.
# (Speed: bench/int4_speed.sh, on a model large enough for decode to read weights rather than wait.)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tinystories_split.sh "$@"
training_stats_and_fp32
quiet $bin quantize "${model[@]}" --weight-groups -o "$work/fine.pkg"
four=(--weight-bits 4)
quiet $bin quantize "${model[@]}" "${four[@]}" --int4-grid uniform -o "$work/u-plain.pkg"
quiet $bin quantize "${model[@]}" "${four[@]}" --int4-grid uniform --stats "$work/train.stats" -o "$work/u-imp.pkg"
quiet $bin quantize "${model[@]}" "${four[@]}" -o "$work/nl-plain.pkg"
quiet $bin quantize "${model[@]}" "${four[@]}" --stats "$work/train.stats" -o "$work/nl-imp.pkg"
quiet $bin quantize "${model[@]}" "${four[@]}" --stats "$work/train.stats" --fine-grained classifier -o "$work/nl-head8.pkg"
mixed_layers=$($bin quantize "${model[@]}" "${four[@]}" --stats "$work/train.stats" --target-kl 0.003 --fallback fine-grained \
                 --sensitivity-text "$work/train.txt" -o "$work/mixed.pkg" 2>&1 | sed -n 's/.*\[target-kl\] \([0-9]*\) layer.*/\1/p')

five=(--weight-bits 5 --stats "$work/train.stats")
quiet $bin quantize "${model[@]}" "${five[@]}" -o "$work/nl5-imp.pkg"
quiet $bin quantize "${model[@]}" "${five[@]}" --int4-grid uniform -o "$work/u5-imp.pkg"
quiet $bin quantize "${model[@]}" "${five[@]}" --fine-grained classifier -o "$work/nl5-head8.pkg"
$bin quantize "${model[@]}" "${four[@]}" --stats "$work/train.stats" --target-kl 0.003 --fallback 5-bit \
  --sensitivity-text "$work/train.txt" -o "$work/mixed45.pkg" > "$work/mixed45.log" 2>&1 || { cat "$work/mixed45.log" >&2; exit 1; }
mixed45_layers=$(sed -n 's/.*\[target-kl\] \([0-9]*\) layer.*/\1/p' "$work/mixed45.log")
mixed45_int8=$(sed -n 's/.*\[target-kl\] and \([0-9]*\) of them.*/\1/p' "$work/mixed45.log")

quiet $bin smooth "${model[@]}" --weight-bits 4 --stats "$work/train.stats" --text "$work/train.txt" --windows 4 -o "$work/awq-fp32.pkg"
awq=(-m "$work/awq-fp32.pkg" "${four[@]}" --stats "$work/awq.stats")
quiet $bin calibrate -m "$work/awq-fp32.pkg" --text "$work/train.txt" --sequences 100000 --seq-len 256 --importance -o "$work/awq.stats" -q -t "$threads"
quiet $bin quantize "${awq[@]}" -o "$work/awq-imp.pkg"
quiet $bin quantize "${awq[@]}" --fine-grained classifier -o "$work/awq-head8.pkg"
awq_mixed_layers=$($bin quantize "${awq[@]}" --target-kl 0.003 --fallback fine-grained --sensitivity-text "$work/train.txt" \
                     -o "$work/awq-mixed.pkg" 2>&1 | sed -n 's/.*\[target-kl\] \([0-9]*\) layer.*/\1/p')

echo "| model | setting | ppl change | mean KL | top-1 | package bytes |"
echo "| --- | --- | --- | --- | --- | --- |"
for variant in fine u-plain u-imp nl-plain nl-imp nl-head8 mixed nl5-imp u5-imp nl5-head8 mixed45 awq-imp awq-head8 awq-mixed; do
  case $variant in
    fine) label="fine-grained INT8, every linear" ;;
    u-plain) label="4-bit uniform (Q4_0's grid), every linear, plain rounding" ;;
    u-imp) label="4-bit uniform, every linear, importance-weighted" ;;
    nl-plain) label="4-bit non-uniform, every linear, plain rounding" ;;
    nl-imp) label="4-bit non-uniform, every linear, importance-weighted" ;;
    nl-head8) label="4-bit non-uniform importance-weighted, classifier (tied table) fine-grained INT8" ;;
    mixed) label="4-bit non-uniform importance-weighted, $mixed_layers layers fine-grained INT8 (target 0.003 on training text)" ;;
    nl5-imp) label="5-bit non-uniform, every linear, importance-weighted" ;;
    u5-imp) label="5-bit uniform (Q5_0's grid), every linear, importance-weighted" ;;
    nl5-head8) label="5-bit non-uniform importance-weighted, classifier fine-grained INT8" ;;
    mixed45) label="4-bit non-uniform importance-weighted, $mixed45_layers layers 5-bit (${mixed45_int8:-0} of them then fine-grained INT8; target 0.003 on training text)" ;;
    awq-imp) label="AWQ-scaled, 4-bit non-uniform, every linear, importance-weighted" ;;
    awq-head8) label="AWQ-scaled, 4-bit non-uniform importance-weighted, classifier fine-grained INT8" ;;
    awq-mixed) label="AWQ-scaled, 4-bit non-uniform importance-weighted, $awq_mixed_layers layers fine-grained INT8 (target 0.003 on training text)" ;;
  esac
  fidelity_row "$label" "$work/$variant.pkg"
done

#!/usr/bin/env bash
# What the fleet's data buys on a model that knows both domains (docs/QUANTIZATION.md, "Where fleet
# data matters"): models/tinystories-kjv-1.8m, trained on TinyStories and the King James Version sample.
# The coordinator's public text is TinyStories (training lines 6004-7003, what deploy/local-fleet.sh
# gives it); the fleet's text is the KJV sample's training lines 1-159 (data/kjv/README.md). Each
# recipe is calibrated on either text alone and measured against FP32 on the KJV held-out lines
# 160-199 (text neither calibration saw), and on the TinyStories held-out lines 7004-8659:
#   int8        static INT8, mse scales, per-channel weights (--recipe plain: no layer moved to INT8 groups)
#   4-bit       4-bit non-uniform, importance-weighted by the text's importance sums, classifier
#               fine-grained INT8
#   smooth      SmoothQuant factors from the text's importance sums (strength per site by the INT8 error
#               on the text's first 4 windows), calibrated again on the same text, then as int8
#   awq         AWQ's scaling for 4 bits from the text, calibrated again, then as 4-bit
# The fleet rounds that do this through real processes are bench/domain_shift.sh ... kjv.
#   bench/domain_table.sh [MODEL_DIR] [THREADS]   (default models/tinystories-kjv-1.8m, 1 thread)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tinystories_split.sh "${1:-models/tinystories-kjv-1.8m}" "${2:-1}"
kjv=data/kjv/kjv-sample.txt
sed -n '6004,7003p' "$data" > "$work/public.txt"
sed -n '1,159p' "$kjv" > "$work/fleet.txt"
sed -n '160,199p' "$kjv" > "$work/kjv-heldout.txt"
sed -n '7004,8659p' "$data" > "$work/ts-heldout.txt"
quiet $bin quantize "${model[@]}" -o "$work/fp32.pkg"
fp32_bytes=$(stat -c %s "$work/fp32.pkg")

calibrate() {  # MODEL_ARGS... -> $work/$name.stats from $work/$source.txt
  quiet $bin calibrate "$@" --text "$work/$source.txt" --sequences 100000 --seq-len 256 --importance -q -t "$threads" \
    -o "$work/$name.stats"
}
for source in public fleet; do
  name=$source calibrate "${model[@]}"
  quiet $bin quantize "${model[@]}" --stats "$work/$source.stats" --recipe plain --method mse --per-channel -o "$work/int8-$source.pkg"
  quiet $bin quantize "${model[@]}" --stats "$work/$source.stats" --weight-bits 4 --fine-grained classifier -o "$work/4-bit-$source.pkg"
  quiet $bin smooth "${model[@]}" --stats "$work/$source.stats" --text "$work/$source.txt" --windows 4 -o "$work/sq-$source-fp32.pkg"
  name=sq-$source calibrate -m "$work/sq-$source-fp32.pkg"
  quiet $bin quantize -m "$work/sq-$source-fp32.pkg" --stats "$work/sq-$source.stats" --recipe plain --method mse --per-channel -o "$work/smooth-$source.pkg"
  quiet $bin smooth "${model[@]}" --weight-bits 4 --stats "$work/$source.stats" --text "$work/$source.txt" --windows 4 \
    -o "$work/awq-$source-fp32.pkg"
  name=awq-$source calibrate -m "$work/awq-$source-fp32.pkg"
  quiet $bin quantize -m "$work/awq-$source-fp32.pkg" --stats "$work/awq-$source.stats" --weight-bits 4 --fine-grained classifier \
    -o "$work/awq-$source.pkg"
done

kl() {  # PACKAGE HELDOUT -> "KL (top-1)"
  $bin eval -m "$1" --text "$2" --reference "$work/fp32.pkg" --json -t "$threads" 2>/dev/null |
    python3 -c "import json, sys; e = json.load(sys.stdin); print(f\"{e['mean_kl']:.5f} ({e['top1_agreement']:.3f})\")"
}
echo "| recipe | KJV held-out: fleet-calibrated | public-calibrated | TinyStories held-out: fleet-calibrated | public-calibrated |"
echo "| --- | --- | --- | --- | --- |"
for recipe in int8 4-bit smooth awq; do
  echo "| $recipe | $(kl "$work/$recipe-fleet.pkg" "$work/kjv-heldout.txt") | $(kl "$work/$recipe-public.pkg" "$work/kjv-heldout.txt") |" \
       "$(kl "$work/$recipe-fleet.pkg" "$work/ts-heldout.txt") | $(kl "$work/$recipe-public.pkg" "$work/ts-heldout.txt") |"
done

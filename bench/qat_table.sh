#!/usr/bin/env bash
# 4-bit quantization-aware training against 4-bit post-training quantization (docs/QUANTIZATION.md,
# "QAT"), every linear layer in 4 bits on the non-uniform grid, measured against the FP32 model on the
# held-out split:
#   ptq-absmax   the FP32 model, absmax rounding (the rule QAT trains with), before any training
#   ptq-search   the FP32 model, each group's least-error scale (the default rounding)
#   ptq-imp      the same, importance-weighted by the training split's statistics
#   qat          models/train/qat_int4.py's fine-tuned weights (distilled from the FP32 model on the
#                training split), absmax rounding: what it trained
#   bench/qat_table.sh [MODEL_DIR] [THREADS] [QAT_DIR]
# QAT_DIR: a finished `qat_int4.py --out QAT_DIR` of MODEL_DIR to measure; without it the training runs
# here (python3-torch: deploy/install-deps.sh --train; about 25 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
qat_dir=${3:-}
source bench/tinystories_split.sh "$@"
if [[ -z $qat_dir ]]; then
  qat_dir=$work/qat
  /usr/bin/python3 models/train/qat_int4.py --model-dir "$model_dir" --out "$qat_dir" --threads "$threads" >&2
fi
training_stats_and_fp32
four=(--weight-bits 4 --int4-grid non-uniform)
quiet $bin quantize "${model[@]}" "${four[@]}" --int4-rounding absmax -o "$work/ptq-absmax.pkg"
quiet $bin quantize "${model[@]}" "${four[@]}" -o "$work/ptq-search.pkg"
quiet $bin quantize "${model[@]}" "${four[@]}" --stats "$work/train.stats" -o "$work/ptq-imp.pkg"
quiet $bin quantize -m "$qat_dir/model.bin" --tokenizer "$qat_dir/tokenizer.bin" "${four[@]}" --int4-rounding absmax -o "$work/qat.pkg"

steps=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("%d steps, %.0f min" % (m["steps_run"], m["train_minutes"]))' \
          "$qat_dir/metrics.json")
echo "| model | setting | ppl change | mean KL | top-1 | package bytes |"
echo "| --- | --- | --- | --- | --- | --- |"
fidelity_row "4-bit PTQ, absmax rounding" "$work/ptq-absmax.pkg"
fidelity_row "4-bit PTQ, least-error rounding" "$work/ptq-search.pkg"
fidelity_row "4-bit PTQ, importance-weighted rounding" "$work/ptq-imp.pkg"
fidelity_row "4-bit QAT ($steps of distillation), absmax rounding" "$work/qat.pkg"

#!/usr/bin/env bash
# The static-scale runtimes' recipe, measured where such a package runs: each candidate is exported as
# an ONNX QDQ graph (`fedcal-model export --format onnx-qdq`) and run in ONNX Runtime (the npm oracle,
# tests/oracles), against the FP32 graph in ONNX Runtime, on the held-out split (docs/QUANTIZATION.md,
# "Defaults by runtime"). Candidates:
#   plain       percentile:99.99 per-tensor (`--recipe plain`)
#   mse         mse per-channel
#   smoothed    mse per-channel on the smoothed model
#   recommended `--runtime onnx` with its recipe: smoothed, mse per-channel, the fewest layers in FP32
#               until the KL on the sensitivity text reaches the dynamic baseline's
#   margin      the same with target dynamic*0.8
#   bench/static_runtime_table.sh [MODEL_DIR] [THREADS]
# Needs node and tests/oracles/install.sh, and /usr/bin/python3 with numpy and sentencepiece (the
# held-out lines are tokenized with the model's tokenizer.model, each line one sequence of at most
# 256 tokens). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tinystories_split.sh "$@"
[[ -f tests/oracles/node_modules/.fedcal-installed-lock ]] || tests/oracles/install.sh > /dev/null
quiet() { "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; }; }
name=$(basename "$model_dir")

quiet $bin calibrate "${model[@]}" --text "$work/train.txt" --sequences 100000 --seq-len 256 --importance -o "$work/train.stats" -q -t "$threads"
quiet $bin quantize "${model[@]}" -o "$work/fp32.pkg"
$bin smooth "${model[@]}" --stats "$work/train.stats" --text "$work/sensitivity.txt" -o "$work/smoothed.pkg" > /dev/null 2>&1
quiet $bin calibrate -m "$work/smoothed.pkg" --text "$work/train.txt" --sequences 100000 --seq-len 256 -o "$work/smoothed.stats" -q -t "$threads"

quiet $bin quantize "${model[@]}" --stats "$work/train.stats" --recipe plain -o "$work/plain.pkg"
quiet $bin quantize "${model[@]}" --stats "$work/train.stats" --recipe plain --method mse --per-channel -o "$work/mse.pkg"
quiet $bin quantize -m "$work/smoothed.pkg" --stats "$work/smoothed.stats" --recipe plain --method mse --per-channel -o "$work/smoothed.pkg.q"
mv "$work/smoothed.pkg.q" "$work/smoothed-static.pkg"
for variant in recommended margin; do
  target=()
  [[ $variant == margin ]] && target=(--target-kl "dynamic*0.8")
  $bin quantize -m "$work/smoothed.pkg" --stats "$work/smoothed.stats" --runtime onnx "${target[@]}" --baseline-model "$work/fp32.pkg" \
    --sensitivity-text "$work/sensitivity.txt" -o "$work/$variant.pkg" 2> "$work/$variant.log" ||
    { cat "$work/$variant.log" >&2; exit 1; }
done

quiet $bin export -m "$work/fp32.pkg" --format onnx -o "$work/fp32.onnx"
/usr/bin/python3 - "$model_dir/tokenizer.model" "$work/heldout.txt" "$work/ids.txt" <<'PY'
import sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
with open(sys.argv[2]) as text, open(sys.argv[3], "w") as out:
    for line in text:
        line = line.strip()
        if line:
            out.write(" ".join(map(str, ([sp.bos_id()] + sp.encode(line))[:256])) + "\n")
PY
node tests/oracles/onnx_run.mjs "$work/fp32.onnx" "$work/ids.txt" "$work/fp32.f32" > /dev/null
fp32_bytes=$(stat -c %s "$work/fp32.pkg")

echo "| model | package | fedcal KL | ONNX Runtime KL | ONNX Runtime top-1 | layers in FP32 | package bytes |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for variant in plain mse smoothed recommended margin; do
  case $variant in
    plain) package=$work/plain.pkg; label="percentile:99.99 per-tensor (plain)" ;;
    mse) package=$work/mse.pkg; label="mse per-channel" ;;
    smoothed) package=$work/smoothed-static.pkg; label="mse per-channel, smoothed" ;;
    recommended) package=$work/recommended.pkg; label="--runtime onnx recipe: smoothed, mse per-channel, target dynamic, FP32 fallback" ;;
    margin) package=$work/margin.pkg; label="the same, target dynamic*0.8" ;;
  esac
  layers=0
  [[ -f $work/$variant.log ]] && layers=$(sed -n 's/.*\[target-kl\] \([0-9]*\) layer.*/\1/p' "$work/$variant.log")
  quiet $bin export -m "$package" --format onnx-qdq -o "$work/$variant.onnx"
  node tests/oracles/onnx_run.mjs "$work/$variant.onnx" "$work/ids.txt" "$work/$variant.f32" > /dev/null
  engine=$($bin eval -m "$package" --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads" 2>/dev/null)
  /usr/bin/python3 - "$work/fp32.f32" "$work/$variant.f32" "$work/ids.txt" "$engine" "$name" "$label" "$layers" \
    "$(stat -c %s "$package")" "$fp32_bytes" <<'PY'
import json, sys
import numpy as np
fp32_path, q_path, ids_path, engine, name, label, layers, size, fp32_size = sys.argv[1:]
rows = sum(len(line.split()) for line in open(ids_path) if line.strip())
p = np.fromfile(fp32_path, dtype=np.float32)
q = np.fromfile(q_path, dtype=np.float32)
p = p.reshape(rows, -1).astype(np.float64)
q = q.reshape(rows, -1).astype(np.float64)
def log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))
lp, lq = log_softmax(p), log_softmax(q)
kl = (np.exp(lp) * (lp - lq)).sum(axis=1).mean()
top1 = (p.argmax(axis=1) == q.argmax(axis=1)).mean()
e = json.loads(engine)
print(f"| {name} | {label} | {e['mean_kl']:.6f} | {kl:.6f} | {top1:.4f} | {layers} | "
      f"{int(size) / 1e6:.2f} MB ({100 * int(size) / int(fp32_size):.1f}%) |")
PY
done

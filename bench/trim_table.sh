#!/usr/bin/env bash
# What a round's trim_agents costs on honest statistics: the project model (or MODEL_DIR) calibrated on
# the training split, quantized with the static recipe (mse, per-channel; no smoothing or target, so
# the scales alone decide) and each point's histogram trimmed by a share of its values first, then
# measured against FP32 on the held-out split. A round's trim_agents K trims K x (one agent's most
# tokens) / (the round's tokens): with N agents that each send their most, K / N.
#   bench/trim_table.sh [MODEL_DIR] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tinystories_split.sh "$@"
quiet() { "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; }; }

quiet $bin calibrate "${model[@]}" --text "$work/train.txt" --sequences 100000 --seq-len 256 -o "$work/train.stats" -q -t "$threads"
quiet $bin quantize "${model[@]}" -o "$work/fp32.pkg"

echo "| trimmed share of each point | as trim_agents 1 with | mean KL | top-1 |"
echo "| --- | --- | --- | --- |"
for share in 0 0.0001 0.001 0.01 0.05 0.1667; do
  quiet $bin quantize "${model[@]}" --stats "$work/train.stats" --recipe plain --method mse --per-channel --trim-share "$share" \
    -o "$work/trim.pkg"
  eval=$($bin eval -m "$work/trim.pkg" --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads" 2>/dev/null)
  python3 - "$share" "$eval" <<'PY'
import json, sys
share, e = float(sys.argv[1]), json.loads(sys.argv[2])
agents = "off" if share == 0 else f"{1 / share:,.0f} agents"
print(f"| {100 * share:g}% | {agents} | {e['mean_kl']:.6f} | {e['top1_agreement']:.4f} |")
PY
done

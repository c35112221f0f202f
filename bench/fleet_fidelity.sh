#!/usr/bin/env bash
# The fidelity figures of a real fleet round (docs/QUANTIZATION.md, "Static INT8 against the dynamic
# baseline"): deploy/local-fleet.sh runs a coordinator and AGENTS agents on loopback, each holding a shard
# of the TinyStories training lines as private text; a smoothing round sums their importance and
# smooths the model, its follow-up round calibrates it (mse, per-channel) and takes the fewest layers
# to the fine-grained mode that reach the dynamic baseline's KL on the coordinator's public text
# (--target-kl "dynamic*0.8": 0.8x it, a margin). Then, on the held-out split (lines 7004-8659), against FP32:
#   dynamic   the original model's per-channel INT8 weights, activations per token (no calibration)
#   fleet     the round's package
#   public    the same recipe calibrated on the coordinator's public text only
#   bench/fleet_fidelity.sh [MODEL_DIR] [AGENTS] [SEQUENCES]  (default models/tinystories-1.8m, 8, 700)
# Prints a markdown table. A few minutes for a small model on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${2:-8}
sequences=${3:-700}
source bench/tinystories_split.sh "${1:-models/tinystories-1.8m}" 1
fleet=$work/fleet
deploy/local-fleet.sh --model "$model_dir" --agents "$agents" --sequences "$sequences" --seq-len 256 --method mse --smooth \
  --target-kl "dynamic*0.8" --fallback fine-grained --keep "$fleet" --json > "$work/report.json"
python3 - "$work/report.json" > "$work/packages.txt" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
assert report["stage"] == "done", report.get("failure")
for model in report["models"]:
    print(model["label"], model["sha256"], model["description"].replace("\n", " "))
PY
package() { echo "$fleet/coordinator/artifacts/$(awk -v l="$1" '$1 == l {print $2}' "$work/packages.txt").fcpkg"; }
[[ -f $(package fleet) ]] || { echo "the fleet package is not in $fleet/coordinator/artifacts" >&2; exit 1; }
$bin quantize "${model[@]}" -o "$work/fp32.pkg" > /dev/null 2>&1
fp32_bytes=$(stat -c %s "$work/fp32.pkg")

echo "| model | setting | ppl change | mean KL | KL vs dynamic | top-1 | package bytes |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
dynamic_kl=""
for variant in dynamic fleet public; do
  activations=()
  case $variant in
    dynamic) pkg=$work/fp32.pkg; activations=(--activations dynamic --per-channel); label="dynamic per token, per-channel weights (no calibration)" ;;
    fleet) pkg=$(package fleet); label="fleet round: $(awk '$1 == "fleet" {$1 = $2 = ""; print substr($0, 3)}' "$work/packages.txt")" ;;
    public) pkg=$(package public); label="the same recipe on the public text" ;;
  esac
  eval=$($bin eval -m "$pkg" "${activations[@]}" --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads" 2>/dev/null)
  size=$(stat -c %s "$pkg")
  [[ $variant == dynamic ]] && size=0  # its INT8 weights are made at load time: no package
  python3 - "$(basename "$model_dir")" "$label" "$eval" "$size" "$fp32_bytes" "$dynamic_kl" <<'PY'
import json, sys
name, label, e, size, fp32_bytes, dynamic_kl = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ratio = f"{e['mean_kl'] / float(dynamic_kl):.2f}x" if dynamic_kl else "1.00x"
print(f"| {name} | {label} | {100 * (e['perplexity'] / e['reference_perplexity'] - 1):+.3f}% | {e['mean_kl']:.6f} | {ratio} "
      f"| {e['top1_agreement']:.4f} | {f'{size / 1e6:.2f} MB ({100 * size / fp32_bytes:.1f}%)' if size else '(weights made at load)'} |")
PY
  [[ $variant == dynamic ]] && dynamic_kl=$(echo "$eval" | python3 -c 'import json, sys; print(json.load(sys.stdin)["mean_kl"])')
done

#!/usr/bin/env bash
# Rebuilds the checkpoints in tests/reference/ and the outputs of the independent PyTorch reference
# (llama_reference.py) that tests/models/format/checkpoint_test.cpp compares the engine with:
#   llama3-tiny/     synth preset tiny-llama3: Llama 3 RoPE scaling
#   head-dim-tiny/   synth preset tiny-head-dim: an explicit head_dim (q wider than the residual, as Qwen3)
#   qwen3-tiny/      synth preset tiny-qwen3: Qwen3 (head_dim, per-head q/k RMSNorm)
#   qwen2-tiny/      synth preset tiny-qwen2: Qwen2.5 (q/k/v biases)
#   smollm2-tiny/    synth preset tiny-smollm2: plain Llama as SmolLM2 shapes it (9 / 3 heads, theta 100000)
#   gemma3-tiny/     synth preset tiny-gemma3: Gemma 3 (2 local layers with a window of 16, 1 global; 100
#                    tokens and a 72-token greedy context run past the window)
#   gemma3-linear-tiny/  synth preset tiny-gemma3-linear: the same shape with linear RoPE scaling x4 of
#                    its global layer
# Each is an F16 Hugging Face folder with its config also in the transformers 5.x layout
# (config.transformers5.json), and reference_logits.json: logits of every 4th of 100 tokens and the
# greedy continuation of the first 8 over 64 tokens.
# Needs a build (build/bin/fedcal-model) and python3-torch (deploy/install-deps.sh --train). Arguments
# (e.g. qwen2-tiny:tiny-qwen2) rebuild only those.
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens="1 $(seq 0 98 | awk '{printf "%d ", ($1 * 37 + 11) % 509 + 3}')"
pairs="${*:-llama3-tiny:tiny-llama3 head-dim-tiny:tiny-head-dim qwen3-tiny:tiny-qwen3 qwen2-tiny:tiny-qwen2 smollm2-tiny:tiny-smollm2 gemma3-tiny:tiny-gemma3 gemma3-linear-tiny:tiny-gemma3-linear}"
for pair in $pairs; do
  out=tests/reference/${pair%%:*}
  rm -rf "$out"
  build/bin/fedcal-model synth --preset "${pair##*:}" --seed 11 --format hf --dtype f16 -o "$out" 2>/dev/null
  /usr/bin/python3 - "$out" <<'PY'
import json, sys
folder = sys.argv[1]
config = json.load(open(f"{folder}/config.json"))
# transformers 5.x: rope_theta and rope_scaling become rope_parameters (Gemma 3: one per layer type,
# in place of rope_local_base_freq), torch_dtype becomes dtype.
if config["model_type"] == "gemma3_text":
    full = {"rope_type": "default", "rope_theta": config.pop("rope_theta")}
    full.update(config.pop("rope_scaling", None) or {})  # linear scaling, of the global layers only
    config["rope_parameters"] = {
        "full_attention": full,
        "sliding_attention": {"rope_type": "default", "rope_theta": config.pop("rope_local_base_freq")}}
else:
    rope = dict(config.pop("rope_scaling", None) or {"rope_type": "default"})
    rope["rope_theta"] = config.pop("rope_theta")
    config["rope_parameters"] = rope
config["dtype"] = config.pop("torch_dtype")
config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
config["transformers_version"] = "5.0.0"
json.dump(config, open(f"{folder}/config.transformers5.json", "w"), indent=2, sort_keys=True)
PY
  # shellcheck disable=SC2086
  /usr/bin/python3 tests/reference/llama_reference.py --every 4 --greedy 8 64 "$out" $tokens > "$out/reference_logits.json"
  echo "wrote $out"
done

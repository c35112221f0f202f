#!/usr/bin/env bash
# Rebuilds tests/reference/llama3-tiny: a Llama-3-shaped checkpoint (synth preset tiny-llama3, F16,
# Hugging Face layout, RoPE scaling) with its config in the transformers 5.x layout beside it, and the
# logits and greedy continuation of the independent PyTorch reference (llama_reference.py) that
# tests/models/format/checkpoint_test.cpp compares the engine with.
# Needs a build (build/bin/fedcal-model) and python3-torch (deploy/install-deps.sh --train).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=tests/reference/llama3-tiny
rm -rf "$out"
build/bin/fedcal-model synth --preset tiny-llama3 --seed 11 --format hf --dtype f16 -o "$out" 2>/dev/null
/usr/bin/python3 - "$out" <<'PY'
import json, sys
folder = sys.argv[1]
config = json.load(open(f"{folder}/config.json"))
# transformers 5.x: rope_theta and rope_scaling become rope_parameters, torch_dtype becomes dtype.
rope = dict(config.pop("rope_scaling"))
rope["rope_theta"] = config.pop("rope_theta")
config["rope_parameters"] = rope
config["dtype"] = config.pop("torch_dtype")
config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
config["transformers_version"] = "5.0.0"
json.dump(config, open(f"{folder}/config.transformers5.json", "w"), indent=2, sort_keys=True)
PY
tokens="1 $(seq 0 98 | awk '{printf "%d ", ($1 * 37 + 11) % 509 + 3}')"
# shellcheck disable=SC2086
/usr/bin/python3 tests/reference/llama_reference.py --every 4 --greedy 8 64 "$out" $tokens > "$out/reference_logits.json"
echo "wrote $out"

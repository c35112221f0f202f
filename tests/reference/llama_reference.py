#!/usr/bin/python3
"""An independent reference for Llama-family checkpoints in the Hugging Face layout.

Written from the published architectures (Llama 2 / Llama 3 papers, transformers' LlamaForCausalLM
conventions: rotate_half RoPE over the two halves of each head, grouped-query attention, SwiGLU, RMSNorm,
Llama 3's RoPE frequency scaling, an explicit head_dim; Qwen2's biases on the q, k and v projections (and
none on o); Qwen3's per-head RMSNorm of q and k before RoPE; Gemma 3 from its technical report and
transformers' Gemma3ForCausalLM: embeddings times sqrt(hidden_size), RMSNorm by (1 + weight), norms
before and after attention and the MLP, q/k norms, GeGLU with tanh GELU, scores scaled by
query_pre_attn_scalar^-0.5, sliding-window layers with their own RoPE base), not from fedcal's C++.
Computes in float64 with PyTorch.

    /usr/bin/python3 tests/reference/llama_reference.py [--every N] [--greedy PROMPT_LENGTH COUNT] FOLDER TOKENS... > logits.json

Reads FOLDER/config.json (transformers 4.x or 5.x layout) and FOLDER/*.safetensors (F32, F16, BF16;
parsed here, no safetensors package needed) and prints {"tokens": [...], "positions": [...],
"logits": [[...], ...]}: the logits of every N-th position (default every one), to 10 significant
digits; with --greedy, also "greedy": COUNT tokens chosen by argmax after the first PROMPT_LENGTH
tokens. Needs python3-torch and python3-numpy (deploy/install-deps.sh --train).
"""
import glob
import json
import math
import struct
import sys

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        header_size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        if info["dtype"] == "F32":
            values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        elif info["dtype"] == "F16":
            values = np.frombuffer(raw, dtype="<f2").astype(np.float64)
        elif info["dtype"] == "BF16":
            values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            raise SystemExit(f"{path}: {name}: dtype {info['dtype']} not handled")
        tensors[name] = torch.from_numpy(values.reshape(info["shape"]).copy())
    return tensors


def rope_parameters(config):
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return theta, rope.get("rope_type", rope.get("type", "default")), rope


def gemma3_rope_bases(config):
    """Gemma 3's (global, local) RoPE bases and the global layers' linear scaling factor (1: none):
    transformers 5's rope_parameters per layer type, or 4's keys and rope_scaling."""
    per_type = config.get("rope_parameters")
    if per_type and "full_attention" in per_type:
        full = per_type["full_attention"]
        factor = full.get("factor", 1.0) if full.get("rope_type") == "linear" else 1.0
        return full["rope_theta"], per_type["sliding_attention"]["rope_theta"], factor
    scaling = config.get("rope_scaling") or {}
    factor = scaling.get("factor", 1.0) if scaling.get("rope_type", scaling.get("type")) == "linear" else 1.0
    return config.get("rope_theta", 1000000.0), config.get("rope_local_base_freq", 10000.0), factor


def inverse_frequencies(config, head_dim, theta=None):
    if theta is not None:  # Gemma 3: the default RoPE type at a given base
        return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    theta, rope_type, rope = rope_parameters(config)
    frequencies = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    if rope_type == "default":
        return frequencies
    if rope_type != "llama3":
        raise SystemExit(f"rope type {rope_type} not handled")
    # Llama 3: long wavelengths stretched by `factor`, short ones kept, a linear blend in between.
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    original = rope["original_max_position_embeddings"]
    out = []
    for frequency in frequencies.tolist():
        wavelength = 2 * math.pi / frequency
        if wavelength < original / high:
            out.append(frequency)
        elif wavelength > original / low:
            out.append(frequency / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * frequency / factor + smooth * frequency)
    return torch.tensor(out, dtype=torch.float64)


def rms_norm(x, weight, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def forward(config, weights, tokens):
    if config.get("model_type") == "gemma3_text":
        return forward_gemma3(config, weights, tokens)
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    eps = config.get("rms_norm_eps", 1e-6)
    length = len(tokens)

    angles = torch.outer(torch.arange(length, dtype=torch.float64), inverse_frequencies(config, head_dim))
    cos = torch.cat((angles.cos(), angles.cos()), dim=-1)  # (T, head_dim)
    sin = torch.cat((angles.sin(), angles.sin()), dim=-1)
    mask = torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)

    x = weights["model.embed_tokens.weight"][tokens]  # (T, hidden)
    for layer in range(config["num_hidden_layers"]):
        w = lambda name: weights[f"model.layers.{layer}.{name}.weight"]
        h = rms_norm(x, w("input_layernorm"), eps)
        if config.get("model_type") == "qwen2":  # Qwen2: nn.Linear(bias=True) for q, k and v
            b = lambda name: weights[f"model.layers.{layer}.{name}.bias"]
            projections = [h @ w(f"self_attn.{p}_proj").T + b(f"self_attn.{p}_proj") for p in "qkv"]
        else:
            projections = [h @ w(f"self_attn.{p}_proj").T for p in "qkv"]
        q = projections[0].view(length, heads, head_dim).transpose(0, 1)  # (H, T, D)
        k = projections[1].view(length, kv_heads, head_dim).transpose(0, 1)
        v = projections[2].view(length, kv_heads, head_dim).transpose(0, 1)
        if config.get("model_type") == "qwen3":  # Qwen3: each head of q and k RMS-normalized before RoPE
            q = rms_norm(q, w("self_attn.q_norm"), eps)
            k = rms_norm(k, w("self_attn.k_norm"), eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=0)  # each KV head serves a group of query heads
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        scores = q @ k.transpose(1, 2) / math.sqrt(head_dim) + mask
        attention = torch.softmax(scores, dim=-1) @ v  # (H, T, D)
        x = x + attention.transpose(0, 1).reshape(length, heads * head_dim) @ w("self_attn.o_proj").T
        h = rms_norm(x, w("post_attention_layernorm"), eps)
        gate = torch.nn.functional.silu(h @ w("mlp.gate_proj").T)
        x = x + (gate * (h @ w("mlp.up_proj").T)) @ w("mlp.down_proj").T
    x = rms_norm(x, weights["model.norm.weight"], eps)
    head = weights.get("lm_head.weight")
    if head is None or config.get("tie_word_embeddings", False):
        head = weights["model.embed_tokens.weight"]
    return x @ head.T


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def forward_gemma3(config, weights, tokens):
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim", 256)
    eps = config.get("rms_norm_eps", 1e-6)
    window = config.get("sliding_window", 4096)
    length = len(tokens)
    layer_types = config.get("layer_types") or [
        "sliding_attention" if (i + 1) % config.get("sliding_window_pattern", 6) else "full_attention"
        for i in range(config["num_hidden_layers"])]
    norm = lambda x, weight: rms_norm(x, 1 + weight, eps)  # Gemma's RMSNorm scales by (1 + weight)

    def rotation(theta, factor=1.0):  # linear scaling: positions divided by the factor
        angles = torch.outer(torch.arange(length, dtype=torch.float64) / factor, inverse_frequencies(config, head_dim, theta))
        return torch.cat((angles.cos(), angles.cos()), dim=-1), torch.cat((angles.sin(), angles.sin()), dim=-1)

    global_theta, local_theta, factor = gemma3_rope_bases(config)
    rotations = {"full_attention": rotation(global_theta, factor), "sliding_attention": rotation(local_theta)}
    query, key = torch.arange(length).view(-1, 1), torch.arange(length).view(1, -1)
    causal = key <= query
    masks = {"full_attention": causal, "sliding_attention": causal & (query - key < window)}

    x = weights["model.embed_tokens.weight"][tokens] * math.sqrt(hidden)  # (T, hidden)
    for layer, layer_type in enumerate(layer_types):
        w = lambda name: weights[f"model.layers.{layer}.{name}.weight"]
        h = norm(x, w("input_layernorm"))
        q, k, v = [h @ w(f"self_attn.{p}_proj").T for p in "qkv"]
        q = norm(q.view(length, heads, head_dim).transpose(0, 1), w("self_attn.q_norm"))  # (H, T, D)
        k = norm(k.view(length, kv_heads, head_dim).transpose(0, 1), w("self_attn.k_norm"))
        v = v.view(length, kv_heads, head_dim).transpose(0, 1)
        cos, sin = rotations[layer_type]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=0)
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        scores = (q @ k.transpose(1, 2)) * config.get("query_pre_attn_scalar", 256) ** -0.5
        scores = scores.masked_fill(~masks[layer_type], float("-inf"))
        attention = torch.softmax(scores, dim=-1) @ v  # (H, T, D)
        out = attention.transpose(0, 1).reshape(length, heads * head_dim) @ w("self_attn.o_proj").T
        x = x + norm(out, w("post_attention_layernorm"))
        h = norm(x, w("pre_feedforward_layernorm"))
        out = (gelu_tanh(h @ w("mlp.gate_proj").T) * (h @ w("mlp.up_proj").T)) @ w("mlp.down_proj").T
        x = x + norm(out, w("post_feedforward_layernorm"))
    x = norm(x, weights["model.norm.weight"])
    head = weights.get("lm_head.weight", weights["model.embed_tokens.weight"])
    return x @ head.T


def main():
    args = sys.argv[1:]
    every, greedy = 1, None
    while args[0].startswith("--"):
        if args[0] == "--every":
            every, args = int(args[1]), args[2:]
        elif args[0] == "--greedy":
            greedy, args = (int(args[1]), int(args[2])), args[3:]
        else:
            raise SystemExit(f"unknown option {args[0]}")
    folder, tokens = args[0], [int(t) for t in args[1:]]
    with open(f"{folder}/config.json") as f:
        config = json.load(f)
    weights = {}
    for path in sorted(glob.glob(f"{folder}/*.safetensors")):
        weights.update(read_safetensors(path))
    logits = forward(config, weights, tokens)
    positions = list(range(0, len(tokens), every))
    rows = ",\n".join("[" + ",".join(f"{float(v):.10g}" for v in logits[p]) + "]" for p in positions)
    chosen = []
    if greedy:
        sequence = tokens[: greedy[0]]
        for _ in range(greedy[1]):
            sequence.append(int(forward(config, weights, sequence)[-1].argmax()))
        chosen = sequence[greedy[0]:]
    print(f'{{"tokens": {json.dumps(tokens)}, "greedy": {json.dumps(chosen)}, "positions": {json.dumps(positions)}, '
          f'"logits": [\n{rows}]}}')


if __name__ == "__main__":
    main()

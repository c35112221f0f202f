#!/usr/bin/python3
"""Which INT8 granularity reaches llama.cpp Q8_0's fidelity on the project model? A design measurement,
not a product path: every linear (the tied classifier included) fake-quantized in float64 PyTorch
(the embedding lookup stays FP32), mean KL(FP32 || quantized) and top-1 agreement over the first
WINDOWS 256-token windows of the held-out split (lines 7004-8659), for weights per tensor / per
channel / in groups of 32 or 64 input channels, times activations per token or in blocks of 32.

    /usr/bin/python3 bench/fine_grained_fidelity.py [WINDOWS]      (default 24; ~1.5 min)

Needs python3-torch, python3-numpy and python3-sentencepiece (Debian); reads the model's HF folder
with tests/reference/llama_reference.py's safetensors reader and RoPE. Results: docs/QUANTIZATION.md."""
import json
import math
import os
import sys

import sentencepiece as spm
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import llama_reference as ref  # noqa: E402

folder = ROOT + "/models/tinystories-1.8m/hf"
config = json.load(open(f"{folder}/config.json"))
weights = ref.read_safetensors(f"{folder}/model.safetensors")
sp = spm.SentencePieceProcessor(model_file=f"{folder}/tokenizer.model")
lines = open(ROOT + "/data/tinystories/tinystories-sample.txt", encoding="utf-8", errors="replace").read().split("\n")[7003:8659]
text = "\n".join(lines)
ids = [1] + sp.encode(text)
windows = [ids[i:i + 256] for i in range(0, min(len(ids), 256 * int(sys.argv[1] if len(sys.argv) > 1 else 24)), 256)]

def q_sym(x, scale):
    return torch.clamp(torch.round(x / scale), -127, 127) * scale

def quant_weight(w, mode):
    if mode == "tensor":
        return q_sym(w, w.abs().max() / 127)
    if mode == "channel":
        return q_sym(w, w.abs().amax(dim=1, keepdim=True) / 127)
    g = int(mode[5:])  # "groupN"
    out, inp = w.shape
    wg = w.reshape(out, inp // g, g)
    s = wg.abs().amax(dim=2, keepdim=True) / 127
    s[s == 0] = 1
    return q_sym(wg, s).reshape(out, inp)

def quant_act(x, mode):
    if mode == "token":
        s = x.abs().amax(dim=-1, keepdim=True) / 127
        s[s == 0] = 1
        return q_sym(x, s)
    g = int(mode[5:])
    shape = x.shape
    xg = x.reshape(*shape[:-1], shape[-1] // g, g)
    s = xg.abs().amax(dim=-1, keepdim=True) / 127
    s[s == 0] = 1
    return q_sym(xg, s).reshape(shape)

def linear_factory(wmode, amode):
    cache = {}
    def linear(x, w):
        key = id(w)
        if key not in cache:
            cache[key] = quant_weight(w, wmode)
        return quant_act(x, amode) @ cache[key].T
    return linear

def forward(tokens, linear):
    c = config
    hidden, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = hidden // heads
    eps = c["rms_norm_eps"]
    T = len(tokens)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), ref.inverse_frequencies(c, hd))
    cos = torch.cat((ang.cos(), ang.cos()), -1); sin = torch.cat((ang.sin(), ang.sin()), -1)
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    W = weights
    x = W["model.embed_tokens.weight"][tokens]
    for l in range(c["num_hidden_layers"]):
        w = lambda n: W[f"model.layers.{l}.{n}.weight"]
        h = ref.rms_norm(x, w("input_layernorm"), eps)
        q = linear(h, w("self_attn.q_proj")).view(T, heads, hd).transpose(0, 1)
        k = linear(h, w("self_attn.k_proj")).view(T, kv, hd).transpose(0, 1)
        v = linear(h, w("self_attn.v_proj")).view(T, kv, hd).transpose(0, 1)
        q = q * cos + ref.rotate_half(q) * sin
        k = k * cos + ref.rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv, 0); v = v.repeat_interleave(heads // kv, 0)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1) @ v
        x = x + linear(a.transpose(0, 1).reshape(T, hidden), w("self_attn.o_proj"))
        h = ref.rms_norm(x, w("post_attention_layernorm"), eps)
        x = x + linear(torch.nn.functional.silu(linear(h, w("mlp.gate_proj"))) * linear(h, w("mlp.up_proj")), w("mlp.down_proj"))
    x = ref.rms_norm(x, W["model.norm.weight"], eps)
    return linear(x, W["model.embed_tokens.weight"])

fp32 = lambda x, w: x @ w.T
refs = [torch.log_softmax(forward(win, fp32), -1) for win in windows]
for wmode, amode in [("channel", "token"), ("tensor", "token"), ("group64", "token"), ("group32", "token"),
                     ("group32", "group32"), ("channel", "group32")]:
    lin = linear_factory(wmode, amode)
    kls, agree, n = 0.0, 0, 0
    for win, lp in zip(windows, refs):
        lq = torch.log_softmax(forward(win, lin), -1)
        kls += (lp.exp() * (lp - lq)).sum().item()
        agree += (lp.argmax(-1) == lq.argmax(-1)).sum().item()
        n += len(win)
    print(f"weights {wmode:9s} activations {amode:8s}: mean KL {kls / n:.6f}, top-1 {agree / n:.4f}  ({n} tokens)", flush=True)

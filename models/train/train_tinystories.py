#!/usr/bin/python3
"""Trains fedcal's own small Llama-architecture model on the TinyStories training split (or on
several domains' training lines: --corpus, once per text file).

Reproducible: fixed seeds, deterministic data order, single-process CPU training. Needs Debian's
python3-torch, python3-sentencepiece and python3-numpy (deploy/install-deps.sh --train), run with
/usr/bin/python3. Writes into OUT_DIR:
  tokenizer.model / tokenizer.bin    sentencepiece BPE model and its llama2.c export
  model.bin                          llama2.c version-1 checkpoint (FP32)
  hf/                                Hugging Face folder: config.json, model.safetensors, tokenizer.model
  reference_logits.json              PyTorch logits on a fixed token sequence (checked by the C++ tests)
  metrics.json                       held-out loss / perplexity / bits per byte, training time, settings

The held-out figures use exactly the protocol of `fedcal-model eval`: the whole held-out text encoded
once with <s> first, windows of the context length advancing by half of it, each token scored once.
"""
import argparse
import json
import math
import os
import random
import struct
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn as nn
import torch.nn.functional as F

TRAIN_LINES = (1, 7003)
HELDOUT_LINES = (7004, 8659)


def parse_corpus(spec):
    """PATH:FIRST-LAST:FIRST-LAST -> (path, training lines, held-out lines)."""
    path, train, heldout = spec.rsplit(":", 2)
    lines = lambda r: tuple(int(n) for n in r.split("-"))
    return path, lines(train), lines(heldout)


def read_split(path, first, last):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    # The file ends with a newline: the split's text is its lines, each followed by "\n".
    return b"".join(line + b"\n" for line in lines[first - 1:last]).decode("utf-8", errors="surrogateescape")


# ----------------------------------------------------------------------------------------------
# The model: exactly the architecture fedcal's C++ engine runs (models/transformer.cpp).

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_size, seq_len, theta):
    # Pair i of a head rotates by pos * theta^(-2i / head_size).
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float64) / head_size))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x, cos, sin):
    # x: (batch, seq, heads, head_size) with interleaved pairs (2i, 2i+1), as llama2.c and Meta store them.
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_size = a.n_heads, a.n_kv_heads, a.dim // a.n_heads
        self.attention_norm = RMSNorm(a.dim, a.norm_eps)
        self.wq = nn.Linear(a.dim, a.dim, bias=False)
        self.wk = nn.Linear(a.dim, a.n_kv_heads * self.head_size, bias=False)
        self.wv = nn.Linear(a.dim, a.n_kv_heads * self.head_size, bias=False)
        self.wo = nn.Linear(a.dim, a.dim, bias=False)
        self.ffn_norm = RMSNorm(a.dim, a.norm_eps)
        self.w1 = nn.Linear(a.dim, a.hidden_dim, bias=False)
        self.w2 = nn.Linear(a.hidden_dim, a.dim, bias=False)
        self.w3 = nn.Linear(a.dim, a.hidden_dim, bias=False)
        self.dropout = nn.Dropout(a.dropout)

    def forward(self, x, cos, sin, mask):
        batch, seq, _ = x.shape
        h = self.attention_norm(x)
        q = self.wq(h).view(batch, seq, self.n_heads, self.head_size)
        k = self.wk(h).view(batch, seq, self.n_kv_heads, self.head_size)
        v = self.wv(h).view(batch, seq, self.n_kv_heads, self.head_size)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        group = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(group, dim=2)
        v = v.repeat_interleave(group, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, seq, head_size)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size) + mask[:seq, :seq]
        attended = (self.dropout(F.softmax(scores, dim=-1)) @ v).transpose(1, 2).reshape(batch, seq, -1)
        x = x + self.dropout(self.wo(attended))
        h = self.ffn_norm(x)
        return x + self.dropout(self.w2(F.silu(self.w1(h)) * self.w3(h)))


class Transformer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.args = a
        self.tok_embeddings = nn.Embedding(a.vocab_size, a.dim)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.dim, a.norm_eps)
        self.output = nn.Linear(a.dim, a.vocab_size, bias=False)
        self.output.weight = self.tok_embeddings.weight  # tied
        self.dropout = nn.Dropout(a.dropout)
        cos, sin = rope_tables(a.dim // a.n_heads, a.max_seq_len, a.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.full((a.max_seq_len, a.max_seq_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("wo.weight") or name.endswith("w2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * a.n_layers))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens):
        seq = tokens.shape[1]
        x = self.dropout(self.tok_embeddings(tokens))
        for layer in self.layers:
            x = layer(x, self.cos[:seq], self.sin[:seq], self.mask)
        return self.output(self.norm(x))


def cosine_lr(step, peak, floor, warmup_steps, steps):
    """The learning rate at `step`: a linear warm-up to `peak`, then a cosine decay to `floor` at `steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------
# Evaluation with the protocol of fedcal-model eval.

@torch.no_grad()
def heldout_nll(model, tokens, context):
    was_training = model.training
    model.eval()
    stride = max(1, context // 2)
    n = len(tokens)
    nll, scored, next_target, begin = 0.0, 0, 1, 0
    while True:
        end = min(n, begin + context)
        window = torch.tensor(tokens[begin:end])[None]
        log_probs = F.log_softmax(model(window)[0].double(), dim=-1)
        for j in range(end - begin - 1):
            target = begin + j + 1
            if target >= next_target:
                nll -= log_probs[j, tokens[target]].item()
                scored += 1
        next_target = end
        if end == n:
            break
        begin += stride
    model.train(was_training)
    return nll, scored


# ----------------------------------------------------------------------------------------------
# Exports.

def export_llama2c(model, path):
    a = model.args
    with open(path, "wb") as f:
        f.write(struct.pack("<I", 0x616B3432))
        f.write(struct.pack("<i", 1))
        f.write(struct.pack("<7i", a.dim, a.hidden_dim, a.n_layers, a.n_heads, a.n_kv_heads, a.vocab_size, a.max_seq_len))
        f.write(struct.pack("<B", 1))
        f.write(b"\0" * (256 - f.tell()))
        layers = model.layers
        tensors = [l.attention_norm.weight for l in layers] + [l.ffn_norm.weight for l in layers] + [model.norm.weight]
        tensors += [model.tok_embeddings.weight]
        for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
            tensors += [getattr(l, name).weight for l in layers]
        for t in tensors:
            f.write(t.detach().float().numpy().astype("<f4").tobytes())


def load_llama2c(path, dropout=0.0):
    """Rebuilds the PyTorch model from a version-1 model.bin written by export_llama2c."""
    with open(path, "rb") as f:
        data = f.read()
    magic, version = struct.unpack_from("<Ii", data, 0)
    if magic != 0x616B3432 or version != 1:
        raise ValueError(f"{path}: not a llama2.c version-1 checkpoint")
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, max_seq_len = struct.unpack_from("<7i", data, 8)
    a = argparse.Namespace(dim=dim, hidden_dim=hidden_dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                           vocab_size=vocab_size, max_seq_len=max_seq_len, norm_eps=1e-5, rope_theta=10000.0, dropout=dropout)
    model = Transformer(a)
    values = np.frombuffer(data, dtype="<f4", offset=256)
    layers, offset = model.layers, 0
    tensors = [l.attention_norm.weight for l in layers] + [l.ffn_norm.weight for l in layers] + [model.norm.weight]
    tensors += [model.tok_embeddings.weight]
    for name in ("wq", "wk", "wv", "wo", "w1", "w2", "w3"):
        tensors += [getattr(l, name).weight for l in layers]
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.from_numpy(values[offset:offset + t.numel()].copy()).view_as(t))
            offset += t.numel()
    if offset != len(values):
        raise ValueError(f"{path}: {len(values) - offset} floats left over")
    model.eval()
    return model


@torch.no_grad()
def write_reference_logits(model, sp, path):
    model.eval()
    probe = [sp.bos_id()] + sp.encode("Once upon a time, there was a little girl named Lily. She loved to play")
    logits = model(torch.tensor(probe)[None])[0]
    with open(path, "w") as f:
        json.dump({"tokens": probe, "vocab_size": model.args.vocab_size,
                   "logits": [[float(v) for v in row] for row in logits.tolist()]}, f)


def to_hf_rotary(w, n_heads, head_size):
    # Interleaved pairs (2i, 2i+1) -> Hugging Face halves (i, i + head_size/2), per head.
    return w.view(n_heads, head_size // 2, 2, -1).transpose(1, 2).reshape(n_heads * head_size, -1)


def export_hf(model, folder, tokenizer_model):
    a = model.args
    os.makedirs(folder, exist_ok=True)
    head_size = a.dim // a.n_heads
    tensors = {"model.embed_tokens.weight": model.tok_embeddings.weight, "model.norm.weight": model.norm.weight}
    for i, l in enumerate(model.layers):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = l.attention_norm.weight
        tensors[p + "self_attn.q_proj.weight"] = to_hf_rotary(l.wq.weight, a.n_heads, head_size)
        tensors[p + "self_attn.k_proj.weight"] = to_hf_rotary(l.wk.weight, a.n_kv_heads, head_size)
        tensors[p + "self_attn.v_proj.weight"] = l.wv.weight
        tensors[p + "self_attn.o_proj.weight"] = l.wo.weight
        tensors[p + "post_attention_layernorm.weight"] = l.ffn_norm.weight
        tensors[p + "mlp.gate_proj.weight"] = l.w1.weight
        tensors[p + "mlp.down_proj.weight"] = l.w2.weight
        tensors[p + "mlp.up_proj.weight"] = l.w3.weight
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        data = t.detach().float().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-(len(header_bytes) + 8) % 8)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for blob in blobs:
            f.write(blob)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": a.dim, "intermediate_size": a.hidden_dim, "num_hidden_layers": a.n_layers,
        "num_attention_heads": a.n_heads, "num_key_value_heads": a.n_kv_heads, "vocab_size": a.vocab_size,
        "max_position_embeddings": a.max_seq_len, "rms_norm_eps": a.norm_eps, "rope_theta": a.rope_theta,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(tokenizer_model, "rb") as src, open(os.path.join(folder, "tokenizer.model"), "wb") as dst:
        dst.write(src.read())


def export_llama2c_tokenizer(sp, path):
    # As llama2.c's tokenizer.py writes it: score + length + bytes per piece, U+2581 as a plain space.
    pieces = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if i == sp.bos_id():
            piece = "\n<s>\n"
        elif i == sp.eos_id():
            piece = "\n</s>\n"
        pieces.append((piece.replace("\u2581", " ").encode("utf-8"), sp.get_score(i)))
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(b) for b, _ in pieces)))
        for data, score in pieces:
            f.write(struct.pack("<fi", score, len(data)))
            f.write(data)


# ----------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../data/tinystories/tinystories-sample.txt"))
    p.add_argument("--corpus", action="append", default=None, metavar="PATH:FIRST-LAST:FIRST-LAST",
                   help="a text file with its training and held-out line ranges; repeat for several domains "
                        "(default: --data with lines 1-7003 for training, 7004-8659 held out)")
    p.add_argument("--out", required=True)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=6)
    p.add_argument("--n-kv-heads", type=int, default=2)
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--norm-eps", type=float, default=1e-5)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--max-minutes", type=float, default=40.0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--patience", type=int, default=4, help="evaluations without improvement before stopping")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--reference-only", action="store_true",
                   help="only rewrite OUT/reference_logits.json from OUT/model.bin and OUT/tokenizer.model")
    a = p.parse_args()

    corpora = [parse_corpus(c) for c in a.corpus] if a.corpus else [(a.data, TRAIN_LINES, HELDOUT_LINES)]
    heldout_parts = [read_split(path, *heldout) for path, _, heldout in corpora]

    if a.reference_only:
        model = load_llama2c(os.path.join(a.out, "model.bin"))
        sp = spm.SentencePieceProcessor(model_file=os.path.join(a.out, "tokenizer.model"))
        write_reference_logits(model, sp, os.path.join(a.out, "reference_logits.json"))
        nll, scored = heldout_nll(model, [sp.bos_id()] + sp.encode("".join(heldout_parts)), model.args.max_seq_len)
        print(f"wrote {a.out}/reference_logits.json; held-out perplexity of model.bin in PyTorch: {math.exp(nll / scored):.6f}")
        return

    torch.manual_seed(a.seed)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    start = time.time()

    train_text = "".join(read_split(path, *train) for path, train, _ in corpora)
    heldout_text = "".join(heldout_parts)
    print(f"train {len(train_text.encode('utf-8', 'surrogateescape'))} bytes, held-out {len(heldout_text.encode('utf-8', 'surrogateescape'))} bytes", flush=True)

    # Tokenizer: the options the C++ tokenizers reproduce exactly (tests/models/tokenizer_test.cpp).
    spm_input = os.path.join(a.out, "spm_train.txt")
    with open(spm_input, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(train_text)
    prefix = os.path.join(a.out, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=spm_input, model_prefix=prefix, vocab_size=a.vocab_size, model_type="bpe", byte_fallback=True,
        character_coverage=0.9995, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=a.threads,
        minloglevel=2)
    os.remove(spm_input)
    os.remove(prefix + ".vocab")
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    export_llama2c_tokenizer(sp, os.path.join(a.out, "tokenizer.bin"))
    train_tokens = [sp.bos_id()] + sp.encode(train_text)
    heldout_tokens = [sp.bos_id()] + sp.encode(heldout_text)
    heldout_bytes = len(heldout_text.encode("utf-8", "surrogateescape"))
    print(f"tokens: train {len(train_tokens)}, held-out {len(heldout_tokens)}", flush=True)

    a.vocab_size = sp.get_piece_size()
    model = Transformer(a)
    n_params = sum(t.numel() for t in model.parameters())
    print(f"model: {n_params} parameters", flush=True)

    decay = [t for n, t in model.named_parameters() if t.dim() >= 2]
    no_decay = [t for n, t in model.named_parameters() if t.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    data = torch.tensor(train_tokens, dtype=torch.long)
    generator = torch.Generator().manual_seed(a.seed)

    def lr_at(step):
        return cosine_lr(step, a.lr, a.min_lr, a.warmup_steps, a.max_steps)

    best = None
    history = []
    evals_without_gain = 0
    best_path = os.path.join(a.out, "best.pt")
    step = 0
    for step in range(a.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        starts = torch.randint(0, len(data) - a.max_seq_len - 1, (a.batch_size,), generator=generator)
        x = torch.stack([data[s:s + a.max_seq_len] for s in starts])
        y = torch.stack([data[s + 1:s + 1 + a.max_seq_len] for s in starts])
        loss = F.cross_entropy(model(x).view(-1, a.vocab_size), y.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = time.time() - start
        last = step + 1 == a.max_steps or elapsed > a.max_minutes * 60
        if (step + 1) % a.eval_every == 0 or last:
            nll, scored = heldout_nll(model, heldout_tokens, a.max_seq_len)
            heldout_loss = nll / scored
            tokens_per_s = (step + 1) * a.batch_size * a.max_seq_len / elapsed
            history.append({"step": step + 1, "train_loss": loss.item(), "heldout_loss": heldout_loss, "minutes": elapsed / 60})
            print(f"step {step + 1}: train loss {loss.item():.4f}, held-out loss {heldout_loss:.4f} "
                  f"(ppl {math.exp(heldout_loss):.3f}), {elapsed / 60:.1f} min, {tokens_per_s:.0f} tokens/s", flush=True)
            if best is None or heldout_loss < best["heldout_loss"]:
                best = {"step": step + 1, "heldout_loss": heldout_loss, "nll": nll, "scored": scored}
                torch.save(model.state_dict(), best_path)
                evals_without_gain = 0
            else:
                evals_without_gain += 1
                if evals_without_gain >= a.patience:
                    print("early stop: held-out loss stopped improving", flush=True)
                    break
        if last:
            break
    train_minutes = (time.time() - start) / 60

    model.load_state_dict(torch.load(best_path))
    os.remove(best_path)
    model.eval()
    nll, scored = heldout_nll(model, heldout_tokens, a.max_seq_len)
    export_llama2c(model, os.path.join(a.out, "model.bin"))
    export_hf(model, os.path.join(a.out, "hf"), prefix + ".model")

    write_reference_logits(model, sp, os.path.join(a.out, "reference_logits.json"))

    # Each domain's held-out text scored on its own (as `fedcal-model eval` would), when there are several.
    per_corpus = []
    if len(corpora) > 1:
        for (path, _, lines), text in zip(corpora, heldout_parts):
            c_nll, c_scored = heldout_nll(model, [sp.bos_id()] + sp.encode(text), a.max_seq_len)
            per_corpus.append({"corpus": os.path.basename(path), "heldout_lines": list(lines),
                               "heldout_perplexity": math.exp(c_nll / c_scored), "tokens_scored": c_scored})
            print(f"held-out {os.path.basename(path)} lines {lines[0]}-{lines[1]}: perplexity "
                  f"{math.exp(c_nll / c_scored):.3f}", flush=True)

    metrics = {
        "parameters": n_params, "vocab_size": a.vocab_size, "train_tokens": len(train_tokens),
        "heldout_tokens_scored": scored, "heldout_bytes": heldout_bytes,
        "heldout_loss": nll / scored, "heldout_perplexity": math.exp(nll / scored),
        "heldout_bits_per_byte": nll / math.log(2) / heldout_bytes,
        "best_step": best["step"], "steps_run": step + 1, "train_minutes": train_minutes,
        "settings": {k: v for k, v in vars(a).items() if k not in ("data", "out")},
        "corpora": [{"corpus": os.path.basename(path), "training_lines": list(train), "heldout_lines": list(heldout)}
                    for path, train, heldout in corpora],
        "heldout_by_corpus": per_corpus, "history": history, "torch": torch.__version__,
    }
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()

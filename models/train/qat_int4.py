#!/usr/bin/python3
"""Quantization-aware training (QAT) of the project model for fedcal's 4-bit weights.

Fine-tunes a llama2.c checkpoint (default: models/tinystories-1.8m) so that its 4-bit form stays close
to the FP32 model it starts from: the forward pass runs every linear layer exactly as fedcal's engine
runs a 4-bit layer (models/quant/int4_format.h, "--int4-rounding absmax"), and the loss is the KL
divergence from the frozen FP32 teacher's next-token distribution (distillation) on the TinyStories
training split. Gradients pass the rounding straight through (STE).

The engine's 4-bit convention, reproduced bit for bit in FP32:
  weights      per row, per group of 32 input channels: e = the first weight of largest magnitude,
               d = binary16(e / L[0]) (2^-24 if that is 0), each weight the level L nearest to
               w * (1/d), the lower one at a midpoint; the layer's weight is d * L. The token table is
               the tied classifier's, so the embedding rows are the 4-bit rows too.
  activations  what enters each linear, per token and block of 32 channels: s = max|x| / 127 (1 if 0),
               q = round-half-even(x * (1/s)) clamped to [-128, 127], the layer sees q * s.
The engine sums q * L exactly in INT32 and scales by d * s afterwards: the same numbers up to FP32
rounding (tests/models/quant/qat_int4_test.cpp checks it on --reference-only's output).

Needs Debian's python3-torch and python3-numpy (deploy/install-deps.sh --train), run with
/usr/bin/python3. Writes into OUT_DIR:
  model.bin                 llama2.c FP32 checkpoint of the fine-tuned weights: quantize it with
                            `fedcal-model quantize --weight-bits 4 --int4-rounding absmax` (same grid)
  tokenizer.bin, tokenizer.model   copied from the model folder, so OUT_DIR is a model folder
  qat_logits.json           the fake-quantized model's logits on the probe text
  metrics.json              settings, time, and the held-out mean KL from the FP32 teacher in PyTorch
                            (before and after training: what `fedcal-model eval --reference` measures
                            on the packages)
`--reference-only FILE` writes only FILE: the fake-quantized logits of the model folder's model.bin on
the probe text, with no training.
"""
import argparse
import json
import os
import shutil
import sys
import time

import sentencepiece as spm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_tinystories import (HELDOUT_LINES, TRAIN_LINES, cosine_lr, export_llama2c, load_llama2c, read_split,  # noqa: E402
                               write_reference_logits)

# The grids' levels by code, ascending (models/quant/int4_format.h).
GRIDS = {
    "non-uniform": [-127, -103, -83, -66, -51, -38, -25, -12, 0, 13, 26, 40, 55, 71, 89, 112],
    "uniform": list(range(-8, 8)),
}
GROUP = 32


class Int4FakeQuant:
    """The engine's 4-bit rounding of a weight matrix (rows, cols), and its INT8 blocks of activations."""

    def __init__(self, grid):
        self.levels = torch.tensor(GRIDS[grid], dtype=torch.float32)
        self.midpoints = (self.levels[:-1] + self.levels[1:]) / 2

    def weights(self, w):
        rows, cols = w.shape
        groups = w.reshape(rows, cols // GROUP, GROUP)  # (rows, groups, 32)
        first_largest = groups.abs().argmax(dim=-1, keepdim=True)  # argmax returns the first of ties
        extreme = groups.gather(-1, first_largest)  # (rows, groups, 1), signed
        d = (extreme / torch.full_like(extreme, float(self.levels[0]))).half().float()
        d = torch.where(d == 0, torch.full_like(d, 2.0 ** -24), d)
        inverse = torch.ones_like(d) / d
        # bucketize: how many midpoints lie strictly below the value (the lower level at a midpoint).
        codes = torch.bucketize(groups * inverse, self.midpoints)
        return (self.levels[codes] * d).reshape(rows, cols)

    @staticmethod
    def activations(x):
        shape = x.shape
        blocks = x.reshape(*shape[:-1], shape[-1] // GROUP, GROUP)
        amax = blocks.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(amax > 0, amax / torch.full_like(amax, 127.0), torch.ones_like(amax))
        inverse = torch.ones_like(scale) / scale
        q = torch.round(blocks * inverse).clamp(-128, 127)  # torch.round: half to even
        return (q * scale).reshape(shape)


def straight_through(x, rounded):
    """rounded in the forward pass, the identity's gradient in the backward pass."""
    return x + (rounded - x).detach()


def fake_quantize(model, quant):
    """Makes every linear layer of `model` (and the tied token table) run as the engine's 4-bit layer."""
    def linear_forward(layer):
        def forward(x):
            return F.linear(straight_through(x, quant.activations(x)), straight_through(layer.weight, quant.weights(layer.weight)))
        return forward

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            if module.in_features % GROUP != 0:
                raise ValueError(f"a linear layer with {module.in_features} inputs: not a multiple of {GROUP}")
            module.forward = linear_forward(module)
    table = model.tok_embeddings
    table.forward = lambda tokens: F.embedding(tokens, straight_through(table.weight, quant.weights(table.weight)))
    return model


@torch.no_grad()
def heldout_kl(student, teacher, tokens, context, max_windows=None, batch=16):
    """Mean KL(teacher || student) per scored token, windows as `fedcal-model eval` takes them (context
    tokens, advancing by half of it, each token scored once), run `batch` windows at a time."""
    student.eval()
    stride = max(1, context // 2)
    windows, begin = [], 0  # (begin, end, first scored position in the window)
    while True:
        end = min(len(tokens), begin + context)
        windows.append((begin, end, 0 if begin == 0 else context - stride - 1))
        if end == len(tokens) or (max_windows is not None and len(windows) >= max_windows):
            break
        begin += stride
    total, scored = 0.0, 0
    for at in range(0, len(windows), batch):
        # Windows of one length go together (only the last may be shorter).
        for length in sorted({end - begin for begin, end, _ in windows[at:at + batch]}):
            chosen = [w for w in windows[at:at + batch] if w[1] - w[0] == length]
            x = torch.tensor([tokens[begin:end] for begin, end, _ in chosen])  # (windows, length)
            p = F.log_softmax(teacher(x).double(), dim=-1)
            q = F.log_softmax(student(x).double(), dim=-1)
            kl = (p.exp() * (p - q)).sum(-1)  # (windows, length)
            for row, (begin, end, first) in enumerate(chosen):
                total += kl[row, first:end - begin - 1].sum().item()
                scored += end - begin - 1 - first
    return total / scored


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--model-dir", default=os.path.normpath(os.path.join(here, "../tinystories-1.8m")),
                   help="folder with model.bin, tokenizer.model and tokenizer.bin (the teacher and the start)")
    p.add_argument("--data", default=os.path.normpath(os.path.join(here, "../../data/tinystories/tinystories-sample.txt")))
    p.add_argument("--out", help="output folder (training)")
    p.add_argument("--reference-only", metavar="FILE", help="only write the fake-quantized logits of model.bin to FILE")
    p.add_argument("--grid", choices=sorted(GRIDS), default="non-uniform")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--max-minutes", type=float, default=40.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--min-lr", type=float, default=3e-6)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out KL readings (first 16 windows)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1337)
    a = p.parse_args()
    if (a.out is None) == (a.reference_only is None):
        p.error("give --out (train) or --reference-only FILE")

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    quant = Int4FakeQuant(a.grid)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model_dir, "tokenizer.model"))
    checkpoint = os.path.join(a.model_dir, "model.bin")
    if a.reference_only:
        write_reference_logits(fake_quantize(load_llama2c(checkpoint), quant), sp, a.reference_only)
        print(f"wrote {a.reference_only}: 4-bit ({a.grid} grid, absmax) fake-quantized logits of {checkpoint}")
        return

    os.makedirs(a.out, exist_ok=True)
    teacher = load_llama2c(checkpoint)
    for t in teacher.parameters():
        t.requires_grad_(False)
    student = fake_quantize(load_llama2c(checkpoint), quant)
    context = min(a.context, student.args.max_seq_len)
    train = torch.tensor([sp.bos_id()] + sp.encode(read_split(a.data, *TRAIN_LINES)), dtype=torch.long)
    heldout = [sp.bos_id()] + sp.encode(read_split(a.data, *HELDOUT_LINES))
    kl_before = heldout_kl(student, teacher, heldout, context)
    print(f"held-out mean KL of the 4-bit model before QAT: {kl_before:.5f}", flush=True)

    optimizer = torch.optim.AdamW(student.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    generator = torch.Generator().manual_seed(a.seed)

    start, history, step = time.time(), [], 0
    for step in range(a.steps):
        student.train()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, a.lr, a.min_lr, a.warmup_steps, a.steps)
        starts = torch.randint(0, len(train) - context, (a.batch_size,), generator=generator)
        x = torch.stack([train[s:s + context] for s in starts])  # (batch, context)
        with torch.no_grad():
            target = F.log_softmax(teacher(x), dim=-1)  # (batch, context, vocab)
        predicted = F.log_softmax(student(x), dim=-1)
        loss = F.kl_div(predicted.flatten(0, 1), target.flatten(0, 1), log_target=True, reduction="batchmean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        minutes = (time.time() - start) / 60
        last = step + 1 == a.steps or minutes > a.max_minutes
        if (step + 1) % a.eval_every == 0 or last:
            kl = heldout_kl(student, teacher, heldout, context, max_windows=16)
            history.append({"step": step + 1, "train_kl": loss.item(), "heldout_kl_16_windows": kl, "minutes": minutes})
            print(f"step {step + 1}: training KL {loss.item():.5f}, held-out KL (16 windows) {kl:.5f}, {minutes:.1f} min",
                  flush=True)
        if last:
            break

    kl_after = heldout_kl(student, teacher, heldout, context)
    print(f"held-out mean KL of the 4-bit model after QAT: {kl_after:.5f} (before: {kl_before:.5f})", flush=True)
    export_llama2c(student, os.path.join(a.out, "model.bin"))
    for name in ("tokenizer.bin", "tokenizer.model"):
        shutil.copyfile(os.path.join(a.model_dir, name), os.path.join(a.out, name))
    write_reference_logits(student, sp, os.path.join(a.out, "qat_logits.json"))
    metrics = {"grid": a.grid, "rounding": "absmax", "teacher": os.path.abspath(checkpoint),
               "heldout_kl_before": kl_before, "heldout_kl_after": kl_after, "steps_run": step + 1,
               "train_minutes": (time.time() - start) / 60, "train_tokens_seen": (step + 1) * a.batch_size * context,
               "settings": {k: v for k, v in vars(a).items() if k not in ("data", "out", "model_dir", "reference_only")},
               "history": history, "torch": torch.__version__}
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

// Perplexity and bits per byte of a model on a token stream, and the divergence of its next-token
// distributions from a reference model's (KL, top-1 agreement).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "models/engine/transformer.h"

namespace fedcal {

struct EvalOptions {
  int context = 0;  // window length in tokens; 0: the model's context length
  int stride = 0;   // tokens the window advances by; 0: context / 2
  // Called after each window with (tokens scored so far, tokens to score in all).
  std::function<void(int64_t, int64_t)> progress;
};

struct ReferenceComparison {
  double reference_perplexity = 0;
  double mean_kl = 0;  // mean over scored tokens of KL(reference || model), nats
  double max_kl = 0;
  double top1_agreement = 0;  // fraction of scored tokens where both argmaxes agree
};

struct EvalResult {
  int64_t tokens = 0;   // tokens scored (every token after the first)
  double mean_nll = 0;  // nats per token
  double perplexity = 0;
  double bits_per_byte = 0;  // total NLL in bits / text bytes
  std::optional<ReferenceComparison> reference;
};

// Scores `tokens` (which begin with <s>) in sliding windows: each window restarts the model at
// position 0, and scores only tokens not scored by an earlier window, so every token after the first
// window sees at least context - stride tokens of context. `text_bytes` is the byte length of the text.
EvalResult evaluate(Transformer& model, Transformer* reference, const std::vector<int>& tokens, size_t text_bytes,
                    const EvalOptions& options = {});
// The same for several models (one vocabulary) in one pass, the reference run once for all of them;
// results in `models` order. The context is the shortest model's (or options.context).
std::vector<EvalResult> evaluate(std::span<Transformer* const> models, Transformer* reference, const std::vector<int>& tokens,
                                 size_t text_bytes, const EvalOptions& options = {});

// The first `max_windows` consecutive windows of `length` tokens (the last may be shorter; one of
// fewer than 2 tokens is left out), each meant to run from position 0.
std::vector<std::vector<int>> context_windows(const std::vector<int>& tokens, size_t length, size_t max_windows);

}  // namespace fedcal

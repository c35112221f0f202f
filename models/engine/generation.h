// The generation loop, defined once for every caller (`fedcal-model generate`, the agent's local
// serving socket): prefill the prompt, then sample and decode one token at a time until
//   - max_tokens tokens were generated,
//   - the sampler picks an end token: EOS, or BOS (which would start a new text), never emitted, or
//   - the context is full (the last token sampled from the final position is still emitted).
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "models/engine/sampler.h"
#include "models/engine/transformer.h"
#include "models/tokenizer/tokenizer.h"

namespace fedcal {

enum class StopReason { kMaxTokens, kEndOfSequence, kContextLength };
const char* stop_reason_name(StopReason reason);  // "max tokens", "end of sequence", "context length"

struct GenerationOptions {
  int max_tokens = 256;
  SamplerOptions sampler;
};

struct Generation {
  std::vector<int> tokens;  // generated, without the prompt
  StopReason stop = StopReason::kMaxTokens;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Continues `prompt` (token ids, BOS included; shorter than the context: else Error). `on_token`, if
// set, sees each generated token with the one before it (for streaming decoded text).
Generation generate(Transformer& transformer, const Tokenizer& tokenizer, std::span<const int> prompt,
                    const GenerationOptions& options, const std::function<void(int previous, int token)>& on_token = {});

// Text the model writes itself, for measuring a quantized copy where no text is given: `documents`
// samples at temperature 1 (seeds 1, 2, ...), each <s> + at most `max_tokens` - 1 generated tokens.
// Deterministic for a model.
std::vector<std::vector<int>> sample_documents(Transformer& transformer, const Tokenizer& tokenizer, int documents,
                                               int max_tokens);

}  // namespace fedcal

#include "models/engine/generation.h"

#include <chrono>

#include "common/error.h"

namespace fedcal {

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kMaxTokens:
      return "max tokens";
    case StopReason::kEndOfSequence:
      return "end of sequence";
    case StopReason::kContextLength:
      return "context length";
  }
  return "unknown";
}

Generation generate(Transformer& transformer, const Tokenizer& tokenizer, std::span<const int> prompt,
                    const GenerationOptions& options, const std::function<void(int previous, int token)>& on_token) {
  const int context = transformer.config().max_seq_len;
  if (prompt.empty()) fail("the prompt has no tokens");
  if (static_cast<int>(prompt.size()) >= context) {
    fail("the prompt is {} tokens; the model's context is {} tokens", prompt.size(), context);
  }
  Sampler sampler(options.sampler);
  Generation result;
  const auto start = std::chrono::steady_clock::now();
  std::span<const float> logits = transformer.forward(prompt, 0, /*all_logits=*/false);
  const auto prefill_done = std::chrono::steady_clock::now();
  int pos = static_cast<int>(prompt.size());
  int previous = prompt.back();
  while (static_cast<int>(result.tokens.size()) < options.max_tokens) {
    const int token = sampler.sample(logits);
    if (token == tokenizer.eos_id() || token == tokenizer.bos_id()) {
      result.stop = StopReason::kEndOfSequence;
      break;
    }
    result.tokens.push_back(token);
    if (on_token) on_token(previous, token);
    previous = token;
    if (pos >= context) {
      result.stop = StopReason::kContextLength;
      break;
    }
    logits = transformer.forward(std::span(&token, 1), pos++, false);
  }
  result.prefill_seconds = std::chrono::duration<double>(prefill_done - start).count();
  result.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - prefill_done).count();
  return result;
}

std::vector<std::vector<int>> sample_documents(Transformer& transformer, const Tokenizer& tokenizer, int documents,
                                               int max_tokens) {
  GenerationOptions options;
  options.max_tokens = max_tokens - 1;
  options.sampler.temperature = 1.0f;
  std::vector<std::vector<int>> out;
  for (int i = 0; i < documents; ++i) {
    options.sampler.seed = static_cast<uint64_t>(i) + 1;
    std::vector<int> document = {tokenizer.bos_id()};
    const Generation generated = generate(transformer, tokenizer, document, options);
    document.insert(document.end(), generated.tokens.begin(), generated.tokens.end());
    out.push_back(std::move(document));
  }
  return out;
}

}  // namespace fedcal

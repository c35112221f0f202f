#include "models/engine/evaluation.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "common/error.h"
#include "models/engine/vector_math.h"

namespace fedcal {
namespace {

// log_softmax of one row, in double.
void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  out.resize(logits.size());
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float value : logits) sum += std::exp(value - max);
  const double log_sum = max + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - log_sum;
}

}  // namespace

std::vector<EvalResult> evaluate(std::span<Transformer* const> models, Transformer* reference, const std::vector<int>& tokens,
                                 size_t text_bytes, const EvalOptions& options) {
  if (models.empty()) fail("no model to evaluate");
  const ModelConfig& config = models.front()->config();
  int context = options.context > 0 ? options.context : config.max_seq_len;
  for (Transformer* model : models) {
    if (model->config().vocab_size != config.vocab_size)
      fail("the models have vocabularies {} and {}: they must share a tokenizer", config.vocab_size, model->config().vocab_size);
    if (options.context <= 0) context = std::min(context, model->config().max_seq_len);
    if (context > model->config().max_seq_len || context < 2)
      fail("evaluation context {} must be in [2, {}]", context, model->config().max_seq_len);
  }
  if (reference != nullptr && reference->config().vocab_size != config.vocab_size) {
    fail("reference model has vocabulary {} but the model has {}: they must share a tokenizer", reference->config().vocab_size,
         config.vocab_size);
  }
  if (reference != nullptr) context = std::min(context, reference->config().max_seq_len);
  const int stride = options.stride > 0 ? options.stride : std::max(1, context / 2);
  if (stride > context) fail("stride {} is longer than the context {}", stride, context);
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 2) fail("the text has fewer than 2 tokens; nothing to score");
  const int chunk = 64;
  const auto vocab = static_cast<size_t>(config.vocab_size);

  struct Sums {
    double nll = 0, kl = 0, kl_max = 0;
    int64_t agreements = 0;
  };
  std::vector<Sums> sums(models.size());
  double reference_nll_sum = 0;
  int64_t scored = 0;
  std::vector<double> log_p, log_q;
  int64_t next_target = 1;  // the first token not yet scored
  for (int64_t begin = 0;; begin += stride) {
    const int64_t end = std::min(n, begin + context);
    for (int64_t start = begin; start < end; start += chunk) {
      const int count = static_cast<int>(std::min<int64_t>(chunk, end - start));
      std::span<const int> window(tokens.data() + start, count);
      const int position = static_cast<int>(start - begin);
      // (count, vocab) each; the reference's rows once for every model.
      std::span<const float> reference_logits;
      if (reference != nullptr) reference_logits = reference->forward(window, position, true);
      std::vector<std::span<const float>> logits;
      for (Transformer* model : models) logits.push_back(model->forward(window, position, true));
      for (int j = 0; j < count; ++j) {
        const int64_t target_index = start + j + 1;  // the token row j predicts
        if (target_index < next_target || target_index >= end) continue;
        const int target = tokens[target_index];
        ++scored;
        std::span<const float> reference_row;
        if (reference != nullptr) {
          reference_row = reference_logits.subspan(size_t(j) * vocab, vocab);
          log_softmax(reference_row, log_p);
          reference_nll_sum -= log_p[target];
        }
        for (size_t m = 0; m < models.size(); ++m) {
          auto row = logits[m].subspan(size_t(j) * vocab, vocab);
          log_softmax(row, log_q);
          Sums& sum = sums[m];
          sum.nll -= log_q[target];
          if (reference == nullptr) continue;
          double kl = 0;
          for (size_t v = 0; v < log_p.size(); ++v) kl += std::exp(log_p[v]) * (log_p[v] - log_q[v]);
          kl = std::max(0.0, kl);
          sum.kl += kl;
          sum.kl_max = std::max(sum.kl_max, kl);
          sum.agreements += argmax(row) == argmax(reference_row);
        }
      }
    }
    next_target = end;
    if (options.progress) options.progress(scored, n - 1);
    if (end == n) break;
  }

  std::vector<EvalResult> results;
  for (const Sums& sum : sums) {
    EvalResult result;
    result.tokens = scored;
    result.mean_nll = sum.nll / static_cast<double>(scored);
    result.perplexity = std::exp(result.mean_nll);
    result.bits_per_byte = text_bytes > 0 ? sum.nll / std::log(2.0) / static_cast<double>(text_bytes) : 0.0;
    if (reference != nullptr) {
      ReferenceComparison comparison;
      comparison.reference_perplexity = std::exp(reference_nll_sum / static_cast<double>(scored));
      comparison.mean_kl = sum.kl / static_cast<double>(scored);
      comparison.max_kl = sum.kl_max;
      comparison.top1_agreement = static_cast<double>(sum.agreements) / static_cast<double>(scored);
      result.reference = comparison;
    }
    results.push_back(result);
  }
  return results;
}

EvalResult evaluate(Transformer& model, Transformer* reference, const std::vector<int>& tokens, size_t text_bytes,
                    const EvalOptions& options) {
  Transformer* const models[] = {&model};
  return evaluate(models, reference, tokens, text_bytes, options).front();
}

std::vector<std::vector<int>> context_windows(const std::vector<int>& tokens, size_t length, size_t max_windows) {
  std::vector<std::vector<int>> windows;
  for (size_t begin = 0; begin < tokens.size() && windows.size() < max_windows; begin += length) {
    const size_t end = std::min(tokens.size(), begin + length);
    if (end - begin >= 2) windows.emplace_back(tokens.begin() + static_cast<std::ptrdiff_t>(begin), tokens.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return windows;
}

}  // namespace fedcal

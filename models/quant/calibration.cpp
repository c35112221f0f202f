#include "models/quant/calibration.h"

#include <memory>
#include <sstream>

#include "common/error.h"
#include "common/sha256.h"

namespace fedcal {

CalibrationStats calibrate(Transformer& model, const Tokenizer& tokenizer, const std::string& text,
                           const std::string& model_sha256, const CalibrationOptions& options) {
  if (options.sequences < 1) fail("--sequences {} must be >= 1", options.sequences);
  std::vector<std::string> documents;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line) && static_cast<int>(documents.size()) < options.sequences;) {
    if (!line.empty()) documents.push_back(line);
  }
  if (documents.empty()) fail("the calibration text has no non-empty line");

  std::vector<std::vector<int>> tokenized;
  for (const std::string& document : documents) tokenized.push_back(tokenizer.encode(document, /*add_bos=*/true));
  return calibrate_documents(model, tokenized, model_sha256, options);
}

CalibrationStats calibrate_documents(Transformer& model, const std::vector<std::vector<int>>& documents,
                                     const std::string& model_sha256, const CalibrationOptions& options) {
  const ModelConfig& config = model.config();
  if (options.seq_len < 2 || options.seq_len > config.max_seq_len) {
    fail("--seq-len {} must be in [2, {}] (the model's context length)", options.seq_len, config.max_seq_len);
  }
  CalibrationStats stats = CalibrationStats::empty_for(config, model_sha256, options.layout, options.importance);
  StatsRecorder recorder(stats);
  model.set_observer(&recorder);
  try {
    for (size_t i = 0; i < documents.size(); ++i) {
      const std::span<const int> tokens(documents[i].data(), std::min(documents[i].size(), static_cast<size_t>(options.seq_len)));
      if (tokens.empty()) continue;
      model.forward(tokens, 0, /*all_logits=*/true);
      stats.sequences += 1;
      stats.tokens += tokens.size();
      if (options.progress) options.progress(static_cast<int>(i + 1), static_cast<int>(documents.size()));
    }
  } catch (...) {
    model.set_observer(nullptr);
    throw;
  }
  model.set_observer(nullptr);
  return stats;
}

std::string model_fingerprint(const Model& model) {
  Sha256 sha;
  const std::string architecture = model.config.describe();
  sha.update(architecture.data(), architecture.size());
  for (const ConstTensorRef& tensor : list_tensors(model)) {
    sha.update(tensor.name.data(), tensor.name.size());
    sha.update(tensor.data->data(), tensor.data->size() * sizeof(float));
  }
  return sha.hex();
}

}  // namespace fedcal

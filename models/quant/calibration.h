// Centralized calibration: runs the FP32 model over text and records the statistics of every
// quantization point. Federated calibration runs the same function on each agent's shard.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/engine/transformer.h"
#include "models/format/model.h"
#include "models/quant/calibration_stats.h"
#include "models/tokenizer/tokenizer.h"

namespace fedcal {

struct CalibrationOptions {
  int sequences = 128;  // at most this many sequences (documents), in text order
  int seq_len = 256;    // tokens per sequence at most (<s> included); longer documents are truncated
  HistogramLayout layout;
  bool importance = false;  // also record the importance sums (importance.h: llama.cpp's imatrix)
  std::function<void(int done, int total)> progress;
};

// Each non-empty line of `text` is one document: <s> + its tokens, cut at seq_len. Documents are
// independent and their statistics add up, so calibrating on shards cut at line boundaries and
// merging equals calibrating on their concatenation.
CalibrationStats calibrate(Transformer& model, const Tokenizer& tokenizer, const std::string& text,
                           const std::string& model_sha256, const CalibrationOptions& options);
// The same on documents already tokenized (each <s> + tokens; cut at seq_len; options.sequences is
// ignored: every document counts).
CalibrationStats calibrate_documents(Transformer& model, const std::vector<std::vector<int>>& documents,
                                     const std::string& model_sha256, const CalibrationOptions& options);

// SHA-256 over the architecture and every weight of a model: the same weights give the same value
// whatever file format they were loaded from.
std::string model_fingerprint(const Model& model);

}  // namespace fedcal

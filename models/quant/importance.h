// Importance statistics: per input channel of every linear layer, the sum over tokens of the squared
// activation - what llama.cpp calls the "importance matrix" (imatrix) and uses to weight quantization
// error, and an additive per-channel magnitude summary (unlike a per-channel maximum).
//
// Recorded at the four linear-input points of each layer (attn_in feeds wq/wk/wv, attn_out feeds wo,
// ffn_in feeds w1/w3, ffn_hidden feeds w2) in fixed point, so that sums over shards and over agents
// are exact integers in any order (secure aggregation adds integers):
//   each token adds min(round(x^2 * 2^16), 2^36) to its channel
// i.e. a resolution of 2^-16 (x^2 of 1.5e-5) per token and magnitudes up to |x| = 1024 before the cap.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "models/format/gguf.h"
#include "models/format/model_config.h"

namespace fedcal {

constexpr int kImportanceFractionBits = 16;
constexpr uint64_t kImportanceTokenCap = uint64_t{1} << 36;

// One token's contribution of activation `x` to its channel.
uint64_t importance_fixed_point(float x);

// The points whose channels are summed, in order, and their widths.
std::vector<int> importance_points(const ModelConfig& config);

// llama.cpp's imatrix file, the binary ".dat" format every llama.cpp release since 2024 reads
// (`llama-quantize --imatrix FILE`), all little-endian:
//   int32 entries; per entry: int32 name length, name (GGUF tensor name, e.g. "blk.0.attn_q.weight"),
//   int32 ncall, int32 nval, float32 x nval values; then int32 last call, int32 dataset name length,
//   dataset name. A value is (sum of x^2 / tokens) * ncall: llama-quantize divides by ncall.
struct ImatrixEntry {
  std::string name;
  int32_t ncall = 0;
  std::vector<float> values;
};
struct Imatrix {
  std::vector<ImatrixEntry> entries;
  int32_t last_call = 0;
  std::string dataset;
};
std::vector<std::byte> serialize_imatrix(const Imatrix& imatrix);

struct CalibrationStats;
// Per linear layer by fedcal name ("layers.3.wq"), the mean over tokens of each input channel's squared
// activation: the weights of the 4-bit rounding error (quant/int4_format.h). Throws Error if the
// statistics hold no importance sums or do not fit `config`.
std::map<std::string, std::vector<double>> linear_importance(const CalibrationStats& stats, const ModelConfig& config);

// The imatrix of `stats` (recorded with importance sums, on a model of `config`): one entry per linear
// layer named as in GGUF (gguf_model.h), ncall = the sequences, values = mean x^2 per token * ncall.
// `dataset` names the calibration text. Throws Error if the statistics hold no importance sums.
Imatrix imatrix_from_stats(const CalibrationStats& stats, const ModelConfig& config, const std::string& dataset);

// The same sums in llama.cpp's newer GGUF imatrix (what `llama-imatrix --output-format gguf` writes and
// llama-quantize reads since 2025): general.type "imatrix", imatrix.datasets [dataset],
// imatrix.chunk_count = the sequences, imatrix.chunk_size = tokens per sequence (the mean, rounded
// up); per matrix "<GGUF name>.in_sum2" F32 [width, 1] = the sum of x^2 over tokens, and
// "<GGUF name>.counts" F32 [1, 1] = the tokens.
GgufWriter imatrix_gguf(const CalibrationStats& stats, const ModelConfig& config, const std::string& dataset);

}  // namespace fedcal

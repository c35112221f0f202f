// The tensors of one transformer layer, each defined once: fedcal's name, where it lives in
// LayerWeights, its extents, the architecture feature that brings it, its rotary layout, llama.cpp's
// GGUF name and, for a linear, the quantization points it reads and writes. Allocation, `list_tensors`,
// the checkpoint readers and writers, GGUF, the quantizer and the importance sums all walk this table;
// a family's own names for the tensors (Hugging Face's) are in its family file.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "models/format/model.h"
#include "models/quant/quantization_points.h"

namespace fedcal {

// A tensor dimension, resolved against a config by `extent`.
enum class Extent { kOne, kDim, kQ, kKv, kHidden, kHead };
int extent(Extent extent, const ModelConfig& config);

// How a tensor's rows rotate with RoPE: fedcal keeps them interleaved (pairs 2i, 2i+1), Hugging Face
// and llama.cpp's NEOX architectures half-split, head by head. kNone: not rotated.
enum class RotaryHeads { kNone, kQuery, kKeyValue, kOneHead };

// What a tensor does: a linear's weights, a norm's scale or a bias added to a linear's output.
enum class TensorRole { kMatrix, kNorm, kBias };

struct LayerTensor {
  const char* name;  // fedcal's "layers.N.<name>"
  std::vector<float> LayerWeights::*member;
  Extent rows, cols;           // rows kOne: a vector
  bool ModelConfig::*feature;  // the architecture feature that brings it; nullptr: every layer has it
  RotaryHeads rotary;
  TensorRole role;
  const char* gguf;  // llama.cpp's "blk.N.<gguf>"
  // A linear layer's quantization points: its input and output (nullopt for norms and biases).
  std::optional<LayerPoint> input, output;

  bool present(const ModelConfig& config) const { return feature == nullptr || config.*feature; }
  bool linear() const { return input.has_value(); }
  int row_count(const ModelConfig& config) const { return extent(rows, config); }
  int col_count(const ModelConfig& config) const { return extent(cols, config); }
  // Heads and columns per row of its rotary permutation (kNone: {0, 0}).
  std::pair<int, int> rotary_shape(const ModelConfig& config) const;
};

// Every layer tensor any family has, in the fixed order of packages and `list_tensors`.
const std::vector<LayerTensor>& layer_tensors();
// The ones `config`'s features bring, in that order.
std::vector<const LayerTensor*> layer_tensors(const ModelConfig& config);
// The entry of a per-layer name ("layers.3.wq" -> wq, its layer 3), or nullopt for the embedding,
// final norm, classifier or an unknown name.
struct LayerTensorName {
  const LayerTensor* tensor;
  int layer;
};
std::optional<LayerTensorName> find_layer_tensor(std::string_view name);

}  // namespace fedcal

#include "models/family/layer_tensors.h"

#include <charconv>

#include "common/error.h"

namespace fedcal {

int extent(Extent extent, const ModelConfig& c) {
  switch (extent) {
    case Extent::kOne:
      return 1;
    case Extent::kDim:
      return c.dim;
    case Extent::kQ:
      return c.q_dim();
    case Extent::kKv:
      return c.kv_dim();
    case Extent::kHidden:
      return c.hidden_dim;
    case Extent::kHead:
      return c.head_size();
  }
  fail("unknown tensor extent {}", static_cast<int>(extent));
}

std::pair<int, int> LayerTensor::rotary_shape(const ModelConfig& config) const {
  const int columns = rows == Extent::kOne ? 1 : col_count(config);  // a vector's rows are single values
  switch (rotary) {
    case RotaryHeads::kNone:
      return {0, 0};
    case RotaryHeads::kQuery:
      return {config.n_heads, columns};
    case RotaryHeads::kKeyValue:
      return {config.n_kv_heads, columns};
    case RotaryHeads::kOneHead:
      return {1, columns};
  }
  return {0, 0};
}

namespace {

using P = LayerPoint;
using W = LayerWeights;
using C = ModelConfig;

// Package order: changing it changes every package's tensor order.
const std::vector<LayerTensor> kLayerTensors = {
    // clang-format off
    // name             member              rows             cols             feature          rotary layout           role                 GGUF name                      linear: input, output
    {"attn_norm",       &W::attn_norm,      Extent::kOne,    Extent::kDim,    nullptr,         RotaryHeads::kNone,     TensorRole::kNorm,   "attn_norm.weight",            {}, {}},
    {"wq",              &W::wq,             Extent::kQ,      Extent::kDim,    nullptr,         RotaryHeads::kQuery,    TensorRole::kMatrix, "attn_q.weight",               P::kAttnIn, P::kQOut},
    {"wk",              &W::wk,             Extent::kKv,     Extent::kDim,    nullptr,         RotaryHeads::kKeyValue, TensorRole::kMatrix, "attn_k.weight",               P::kAttnIn, P::kKOut},
    {"wv",              &W::wv,             Extent::kKv,     Extent::kDim,    nullptr,         RotaryHeads::kNone,     TensorRole::kMatrix, "attn_v.weight",               P::kAttnIn, P::kVOut},
    {"wo",              &W::wo,             Extent::kDim,    Extent::kQ,      nullptr,         RotaryHeads::kNone,     TensorRole::kMatrix, "attn_output.weight",          P::kAttnOut, P::kWoOut},
    {"q_norm",          &W::q_norm,         Extent::kOne,    Extent::kHead,   &C::qk_norm,     RotaryHeads::kOneHead,  TensorRole::kNorm,   "attn_q_norm.weight",          {}, {}},
    {"k_norm",          &W::k_norm,         Extent::kOne,    Extent::kHead,   &C::qk_norm,     RotaryHeads::kOneHead,  TensorRole::kNorm,   "attn_k_norm.weight",          {}, {}},
    {"bq",              &W::bq,             Extent::kOne,    Extent::kQ,      &C::qkv_bias,    RotaryHeads::kQuery,    TensorRole::kBias,   "attn_q.bias",                 {}, {}},
    {"bk",              &W::bk,             Extent::kOne,    Extent::kKv,     &C::qkv_bias,    RotaryHeads::kKeyValue, TensorRole::kBias,   "attn_k.bias",                 {}, {}},
    {"bv",              &W::bv,             Extent::kOne,    Extent::kKv,     &C::qkv_bias,    RotaryHeads::kNone,     TensorRole::kBias,   "attn_v.bias",                 {}, {}},
    {"post_attn_norm",  &W::post_attn_norm, Extent::kOne,    Extent::kDim,    &C::post_norms,  RotaryHeads::kNone,     TensorRole::kNorm,   "post_attention_norm.weight",  {}, {}},
    {"ffn_norm",        &W::ffn_norm,       Extent::kOne,    Extent::kDim,    nullptr,         RotaryHeads::kNone,     TensorRole::kNorm,   "ffn_norm.weight",             {}, {}},
    {"w1",              &W::w1,             Extent::kHidden, Extent::kDim,    nullptr,         RotaryHeads::kNone,     TensorRole::kMatrix, "ffn_gate.weight",             P::kFfnIn, P::kW1Out},
    {"w2",              &W::w2,             Extent::kDim,    Extent::kHidden, nullptr,         RotaryHeads::kNone,     TensorRole::kMatrix, "ffn_down.weight",             P::kFfnHidden, P::kW2Out},
    {"w3",              &W::w3,             Extent::kHidden, Extent::kDim,    nullptr,         RotaryHeads::kNone,     TensorRole::kMatrix, "ffn_up.weight",               P::kFfnIn, P::kW3Out},
    {"post_ffn_norm",   &W::post_ffn_norm,  Extent::kOne,    Extent::kDim,    &C::post_norms,  RotaryHeads::kNone,     TensorRole::kNorm,   "post_ffw_norm.weight",        {}, {}},
    // clang-format on
};

}  // namespace

const std::vector<LayerTensor>& layer_tensors() { return kLayerTensors; }

std::vector<const LayerTensor*> layer_tensors(const ModelConfig& config) {
  std::vector<const LayerTensor*> out;
  for (const LayerTensor& tensor : kLayerTensors) {
    if (tensor.present(config)) out.push_back(&tensor);
  }
  return out;
}

std::optional<LayerTensorName> find_layer_tensor(std::string_view name) {
  constexpr std::string_view kPrefix = "layers.";
  if (!name.starts_with(kPrefix)) return std::nullopt;
  name.remove_prefix(kPrefix.size());
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  int layer = 0;
  const auto [end, error] = std::from_chars(name.data(), name.data() + dot, layer);
  if (error != std::errc() || end != name.data() + dot || layer < 0) return std::nullopt;
  const std::string_view tensor = name.substr(dot + 1);
  for (const LayerTensor& entry : kLayerTensors) {
    if (tensor == entry.name) return LayerTensorName{&entry, layer};
  }
  return std::nullopt;
}

}  // namespace fedcal

#include "models/format/model.h"

#include <fmt/format.h>

namespace fedcal {

Model allocate_model(const ModelConfig& config) {
  config.validate();
  const size_t dim = config.dim, q = config.q_dim(), hidden = config.hidden_dim, kv = config.kv_dim(), vocab = config.vocab_size;
  Model model;
  model.config = config;
  model.token_embedding.resize(vocab * dim);
  model.layers.resize(config.n_layers);
  for (LayerWeights& layer : model.layers) {
    layer.attn_norm.resize(dim);
    layer.wq.resize(q * dim);
    layer.wk.resize(kv * dim);
    layer.wv.resize(kv * dim);
    layer.wo.resize(dim * q);
    layer.ffn_norm.resize(dim);
    layer.w1.resize(hidden * dim);
    layer.w2.resize(dim * hidden);
    layer.w3.resize(hidden * dim);
    if (config.qk_norm) {
      layer.q_norm.resize(static_cast<size_t>(config.head_size()));
      layer.k_norm.resize(static_cast<size_t>(config.head_size()));
    }
    if (config.qkv_bias) {
      layer.bq.resize(q);
      layer.bk.resize(kv);
      layer.bv.resize(kv);
    }
  }
  model.final_norm.resize(dim);
  if (!config.shared_classifier) model.classifier.resize(vocab * dim);
  return model;
}

namespace {

template <typename Ref, typename ModelT>
std::vector<Ref> list_tensors_of(ModelT& model) {
  const ModelConfig& c = model.config;
  std::vector<Ref> tensors;
  tensors.push_back({"token_embedding", &model.token_embedding, c.vocab_size, c.dim});
  for (int l = 0; l < c.n_layers; ++l) {
    auto& layer = model.layers[l];
    auto name = [l](const char* tensor) { return fmt::format("layers.{}.{}", l, tensor); };
    tensors.push_back({name("attn_norm"), &layer.attn_norm, 1, c.dim});
    tensors.push_back({name("wq"), &layer.wq, c.q_dim(), c.dim});
    tensors.push_back({name("wk"), &layer.wk, c.kv_dim(), c.dim});
    tensors.push_back({name("wv"), &layer.wv, c.kv_dim(), c.dim});
    tensors.push_back({name("wo"), &layer.wo, c.dim, c.q_dim()});
    if (c.qk_norm) {
      tensors.push_back({name("q_norm"), &layer.q_norm, 1, c.head_size()});
      tensors.push_back({name("k_norm"), &layer.k_norm, 1, c.head_size()});
    }
    if (c.qkv_bias) {
      tensors.push_back({name("bq"), &layer.bq, 1, c.q_dim()});
      tensors.push_back({name("bk"), &layer.bk, 1, c.kv_dim()});
      tensors.push_back({name("bv"), &layer.bv, 1, c.kv_dim()});
    }
    tensors.push_back({name("ffn_norm"), &layer.ffn_norm, 1, c.dim});
    tensors.push_back({name("w1"), &layer.w1, c.hidden_dim, c.dim});
    tensors.push_back({name("w2"), &layer.w2, c.dim, c.hidden_dim});
    tensors.push_back({name("w3"), &layer.w3, c.hidden_dim, c.dim});
  }
  tensors.push_back({"final_norm", &model.final_norm, 1, c.dim});
  if (!c.shared_classifier) tensors.push_back({"classifier", &model.classifier, c.vocab_size, c.dim});
  return tensors;
}

}  // namespace

std::vector<TensorRef> list_tensors(Model& model) { return list_tensors_of<TensorRef>(model); }
std::vector<ConstTensorRef> list_tensors(const Model& model) { return list_tensors_of<ConstTensorRef>(model); }

}  // namespace fedcal

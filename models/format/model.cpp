#include "models/format/model.h"

#include <fmt/format.h>

#include "models/family/layer_tensors.h"

namespace fedcal {

Model allocate_model(const ModelConfig& config) {
  config.validate();
  const size_t dim = config.dim, vocab = config.vocab_size;
  Model model;
  model.config = config;
  model.token_embedding.resize(vocab * dim);
  model.layers.resize(config.n_layers);
  const std::vector<const LayerTensor*> tensors = layer_tensors(config);
  for (LayerWeights& layer : model.layers) {
    for (const LayerTensor* tensor : tensors)
      (layer.*tensor->member)
          .resize(static_cast<size_t>(tensor->row_count(config)) * static_cast<size_t>(tensor->col_count(config)));
  }
  model.final_norm.resize(dim);
  if (!config.shared_classifier) model.classifier.resize(vocab * dim);
  return model;
}

namespace {

template <typename Ref, typename ModelT>
std::vector<Ref> list_tensors_of(ModelT& model) {
  const ModelConfig& c = model.config;
  const std::vector<const LayerTensor*> layer = layer_tensors(c);
  std::vector<Ref> tensors;
  tensors.reserve(2 + c.n_layers * layer.size() + 1);
  tensors.push_back({"token_embedding", &model.token_embedding, c.vocab_size, c.dim});
  for (int l = 0; l < c.n_layers; ++l) {
    for (const LayerTensor* tensor : layer) {
      tensors.push_back({fmt::format("layers.{}.{}", l, tensor->name), &(model.layers[l].*tensor->member), tensor->row_count(c),
                         tensor->col_count(c)});
    }
  }
  tensors.push_back({"final_norm", &model.final_norm, 1, c.dim});
  if (!c.shared_classifier) tensors.push_back({"classifier", &model.classifier, c.vocab_size, c.dim});
  return tensors;
}

}  // namespace

std::vector<TensorRef> list_tensors(Model& model) { return list_tensors_of<TensorRef>(model); }
std::vector<ConstTensorRef> list_tensors(const Model& model) { return list_tensors_of<ConstTensorRef>(model); }

}  // namespace fedcal

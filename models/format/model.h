// An FP32 Llama-family model in memory: what every loader produces and every writer consumes.
// Matrices are row-major [out][in], as PyTorch stores nn.Linear weights and XNNPACK's fully connected
// operator reads them. Query/key rows use the interleaved rotary layout of Meta's and llama2.c's
// checkpoints (pairs 2i, 2i+1 rotate together); Hugging Face's half-split layout is converted on load.
#pragma once

#include <string>
#include <vector>

#include "models/format/model_config.h"

namespace fedcal {

struct LayerWeights {
  std::vector<float> attn_norm;  // (dim)
  std::vector<float> wq;         // (n_heads * head_size, dim)
  std::vector<float> wk;         // (n_kv_heads * head_size, dim)
  std::vector<float> wv;         // (n_kv_heads * head_size, dim)
  std::vector<float> wo;         // (dim, n_heads * head_size)
  std::vector<float> q_norm;     // (head_size), config.qk_norm only: each query head's RMSNorm
  std::vector<float> k_norm;     // (head_size), config.qk_norm only: each key head's RMSNorm
  std::vector<float> bq;         // (n_heads * head_size), config.qkv_bias only: added to q
  std::vector<float> bk;         // (n_kv_heads * head_size), config.qkv_bias only (bv alike)
  std::vector<float> bv;
  std::vector<float> post_attn_norm;  // (dim), config.post_norms only: the attention output's RMSNorm
  std::vector<float> ffn_norm;   // (dim)
  std::vector<float> w1;         // (hidden_dim, dim)  gate
  std::vector<float> w2;         // (dim, hidden_dim)  down
  std::vector<float> w3;         // (hidden_dim, dim)  up
  std::vector<float> post_ffn_norm;  // (dim), config.post_norms only: the feed-forward output's RMSNorm
};

struct Model {
  ModelConfig config;
  std::vector<float> token_embedding;  // (vocab_size, dim)
  std::vector<LayerWeights> layers;    // (n_layers)
  std::vector<float> final_norm;       // (dim)
  std::vector<float> classifier;       // (vocab_size, dim); empty when config.shared_classifier

  const std::vector<float>& output_weights() const { return config.shared_classifier ? token_embedding : classifier; }
};

// Allocates every tensor at its shape (zero-filled) for `config`.
Model allocate_model(const ModelConfig& config);

// One named tensor of a model, for loaders, writers and `inspect`. Vector is std::vector<float> or its const.
template <typename Vector>
struct BasicTensorRef {
  std::string name;  // fedcal's name, e.g. "layers.3.wq"
  Vector* data;
  int rows;  // 1 for vectors
  int cols;
};
using TensorRef = BasicTensorRef<std::vector<float>>;
using ConstTensorRef = BasicTensorRef<const std::vector<float>>;

// Every tensor of `model` in a fixed order (embedding, per-layer tensors, final norm, classifier).
std::vector<TensorRef> list_tensors(Model& model);
std::vector<ConstTensorRef> list_tensors(const Model& model);

}  // namespace fedcal

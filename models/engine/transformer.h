// The FP32 Llama forward pass: every linear layer on XNNPACK, attention, norms, RoPE and SwiGLU in
// plain C++. One code path serves token-by-token decoding (n = 1) and batched prefill (n > 1).
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "models/engine/dot_int8.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/model.h"
#include "models/quant/linear_int8.h"
#include "models/quant/quantization_points.h"

namespace fedcal {

class LinearDynamicInt8;

// How the INT8 linears quantize what enters them: at the static scales their package or statistics
// hold (calibrated), per token at run time (dynamic: no calibration, the baseline a calibration has
// to beat), or per block of 32 channels of each token at run time (dynamic-blocks: llama.cpp Q8_0's
// activation side, the fine-grained mode; linear_dynamic_int8.h).
enum class ActivationQuantization { kStatic, kDynamic, kDynamicBlocks };
inline bool is_dynamic(ActivationQuantization activations) { return activations != ActivationQuantization::kStatic; }

struct TransformerOptions {
  int max_batch = 64;  // tokens per prefill chunk through each linear layer
  ActivationQuantization activations = ActivationQuantization::kStatic;
  // The kernel of the dynamic and fine-grained INT8 linears (default: the fastest this CPU runs).
  std::optional<Int8Kernel> int8_kernel = std::nullopt;
};

class Transformer {
 public:
  // Packs the model's matrices into XNNPACK operators and copies the small tensors; `model` may be
  // freed afterwards. Linears named in `int8` run in INT8 (their FP32 weights in `model` are not
  // read and may be empty), the others in FP32. `runtime` must outlive the Transformer.
  Transformer(const Model& model, const XnnRuntime& runtime, TransformerOptions options = {},
              const QuantizedLinears* int8 = nullptr);
  // The same, but each of `model`'s tensors and `int8`'s layers is freed (or moved in) as soon as it
  // is packed, so building peaks at one copy of the weights plus one layer, not two copies of the
  // model: how a 1B-class model fits a small board. Both are left empty.
  static std::unique_ptr<Transformer> consume(Model&& model, const XnnRuntime& runtime, TransformerOptions options = {},
                                              QuantizedLinears&& int8 = {});
  ~Transformer();

  const ModelConfig& config() const { return config_; }

  // Runs `tokens` at positions [pos, pos + n), writing their keys/values into the KV cache (positions
  // < pos must have been run before). Returns logits (n, vocab) if `all_logits`, else (vocab) for the
  // last token. The span stays valid until the next call. Throws Error on a bad token or position.
  std::span<const float> forward(std::span<const int> tokens, int pos, bool all_logits);

  // Sends the activations at every quantization point to `observer` during forward (nullptr: none).
  // The observer is not owned and must outlive its use. Observed runs compute every logits row.
  void set_observer(ActivationObserver* observer) { observer_ = observer; }

  // Bytes of weights that one decoding step reads (all matrices, norms, one embedding row).
  size_t decode_weight_bytes() const;
  // Bytes of weights the Transformer holds: all matrices as packed, the whole token table, the norms
  // and biases. What memory a model needs at the least, against which peak RSS is measured.
  size_t resident_weight_bytes() const;
  // Bytes of the KV cache (keys and values, every layer): a local layer's holds only its window.
  size_t kv_cache_bytes() const;

 private:
  struct Layer;
  // `release` / `release_int8` (may be null): the same objects as `model` / `int8`, emptied as packed.
  Transformer(const Model& model, const XnnRuntime& runtime, TransformerOptions options, const QuantizedLinears* int8,
              Model* release, QuantizedLinears* release_int8);
  void forward_chunk(std::span<const int> tokens, int pos, float* logits_out, bool all_logits);
  void attention(int layer, int n, int pos);

  void observe(int point, const float* tensor, int rows, int width) const;
  // rows (n, dim) = rmsnorm(rows) with `weights`, in place.
  void post_norm(float* rows, int n, const std::vector<float>& weights) const;

  ModelConfig config_;
  const XnnRuntime& runtime_;
  ActivationObserver* observer_ = nullptr;
  TransformerOptions options_;
  std::vector<float> token_embedding_;                   // (vocab, dim), unless the table is INT8:
  std::optional<QuantizedMatrix> token_embedding_int8_;  // (vocab, dim) with one scale per tensor or row
  const LinearDynamicInt8* embedding_classifier_ = nullptr;  // or the tied classifier (classifier_) holds the table
  std::vector<int8_t> embedding_row_;                    // (dim): one row of the INT8 table, looked up
  std::vector<float> final_norm_;                        // (dim)
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<Linear> classifier_;      // (vocab, dim)
  std::vector<float> rope_cos_, rope_sin_;  // (max_seq_len, head_size / 2)
  std::vector<float> local_rope_cos_, local_rope_sin_;  // the same for local layers; empty without them

  // KV cache, per layer (n_kv_heads, rows, head_size) for keys and values each, so that one head's
  // keys (and values) are contiguous: attention streams them instead of striding across the other
  // heads. A global layer's rows are its positions (max_seq_len). A local layer keeps only what its
  // window can see: a ring of `ring` = sliding_window + max_batch - 1 slots, position p at slot
  // p % ring and again at p % ring + ring (2 * ring rows), so that any window is one contiguous run.
  std::unique_ptr<float[]> key_cache_, value_cache_;
  struct CacheLayer {
    size_t offset;  // of the layer's first row, in floats
    int rows;       // per head: max_seq_len, or 2 * ring
    int ring;       // 0 for a global layer
  };
  std::vector<CacheLayer> cache_layers_;
  size_t cache_row(int layer, int kv_head, int row) const {
    const CacheLayer& cache = cache_layers_[size_t(layer)];
    return cache.offset + (size_t(kv_head) * cache.rows + row) * config_.head_size();
  }
  // Activations for one chunk of up to max_batch tokens (B = max_batch); padded for XNNPACK.
  std::vector<float> x_;         // (B, dim) residual stream
  std::vector<float> xb_;        // (B, dim) normed input of a block
  std::vector<float> xb2_;       // (B, dim) block output
  std::vector<float> q_;         // (B, dim)
  std::vector<float> k_, v_;     // (B, kv_dim)
  std::vector<float> att_out_;   // (B, dim)
  size_t attention_slices_ = 1;  // scores rows: the (token, head) pairs of a chunk are split into these
  std::vector<float> scores_;    // (attention_slices_, max_seq_len)
  std::vector<float> hb_, hb2_;  // (B, hidden_dim)
  std::vector<float> logits_;    // (n, vocab)
};

}  // namespace fedcal

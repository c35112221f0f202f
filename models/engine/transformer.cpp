#include "models/engine/transformer.h"

#include <pthreadpool.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "models/engine/vector_math.h"
#include "models/quant/int4_format.h"
#include "models/quant/linear_dynamic_int8.h"

namespace fedcal {

struct Transformer::Layer {
  // Norm weights as the forward pass multiplies by them: (1 + w) for a config.norm_plus_one model.
  std::vector<float> attn_norm;  // (dim)
  std::vector<float> ffn_norm;   // (dim)
  std::vector<float> q_norm, k_norm;  // (head_size) with config.qk_norm, else empty
  std::vector<float> post_attn_norm, post_ffn_norm;  // (dim) with config.post_norms, else empty
  std::unique_ptr<Linear> wq, wk, wv, wo, w1, w2, w3;
};

namespace {

std::vector<float> padded(size_t floats) { return std::vector<float>(floats + XNN_EXTRA_BYTES / sizeof(float), 0.0f); }

// Frees a vector's memory now (clear() would keep its capacity).
template <typename T>
void release_vector(std::vector<T>& values) {
  std::vector<T>().swap(values);
}

}  // namespace

Transformer::Transformer(const Model& model, const XnnRuntime& runtime, TransformerOptions options, const QuantizedLinears* int8)
    : Transformer(model, runtime, options, int8, nullptr, nullptr) {}

std::unique_ptr<Transformer> Transformer::consume(Model&& model, const XnnRuntime& runtime, TransformerOptions options,
                                                  QuantizedLinears&& int8) {
  return std::unique_ptr<Transformer>(new Transformer(model, runtime, options, int8.empty() ? nullptr : &int8, &model, &int8));
}

Transformer::Transformer(const Model& model, const XnnRuntime& runtime, TransformerOptions options, const QuantizedLinears* int8,
                         Model* release, QuantizedLinears* release_int8)
    : config_(model.config), runtime_(runtime), options_(options) {
  config_.validate();
  if (options_.max_batch < 1) fail("max_batch {} must be >= 1", options_.max_batch);
  const ModelConfig& c = config_;
  const size_t dim = c.dim, q_dim = c.q_dim(), kv_dim = c.kv_dim(), hidden = c.hidden_dim, batch = options_.max_batch;

  // The INT8 layer if `int8` lists `name` (static or dynamic activations), else the FP32 one; with a
  // bias (out values) when `bias` is not empty. When releasing, the source weights go as soon as the
  // layer holds its own (packed) copy.
  // A tied INT8 classifier on the dynamic kernels is the token table too: tokens are looked up in its
  // packed copy (the table is not held twice).
  bool embedding_in_classifier = false;
  // The layers run one at a time: their INT8 activations share one scratch.
  const auto dynamic_scratch = std::make_shared<DynamicInt8Scratch>();
  auto make_linear = [&](const std::vector<float>& weights, int in, int out, const std::string& name,
                         const std::vector<float>& bias = {}) -> std::unique_ptr<Linear> {
    if (!bias.empty() && bias.size() != static_cast<size_t>(out)) fail("{}: bias has {} values for {} outputs", name, bias.size(), out);
    std::unique_ptr<Linear> linear;
    if (auto it = int8 != nullptr ? int8->find(name) : QuantizedLinears::const_iterator{}; int8 != nullptr && it != int8->end()) {
      const QuantizedMatrix& q = it->second.weights;
      if (q.rows != out || q.cols != in)
        fail("{}: INT8 weights are ({}, {}), the model needs ({}, {})", name, q.rows, q.cols, out, in);
      // Weights in groups always run with activations quantized at run time: per block of 32, unless
      // per token is asked for (a package of them carries no static activation scales).
      if (is_dynamic(options_.activations) || q.per_group()) {
        // The dynamic layer packs the matrix a row at a time and keeps only its packed copy.
        const ActivationScales scales =
            options_.activations == ActivationQuantization::kDynamic ? ActivationScales::kPerToken : ActivationScales::kPerBlock;
        linear = std::make_unique<LinearDynamicInt8>(q, name, bias, scales, options_.int8_kernel, dynamic_scratch);
      } else {
        linear = std::make_unique<LinearInt8>(it->second, name, bias);
      }
      if (release_int8 != nullptr) release_int8->erase(name);
    } else {
      if (weights.size() != static_cast<size_t>(in) * out) fail("{}: no FP32 weights and no INT8 layer", name);
      linear = std::make_unique<LinearF32>(weights.data(), in, out, name, bias.empty() ? nullptr : bias.data());
    }
    // (A tied FP32 classifier is packed from the Transformer's own table, which stays.)
    if (release != nullptr && &weights != &token_embedding_) release_vector(const_cast<std::vector<float>&>(weights));
    return linear;
  };

  // The token table: INT8 when the layers include it (or the tied classifier is INT8), else FP32.
  const QuantizedLinear* table = int8 != nullptr ? int8_token_table(*int8, c.shared_classifier) : nullptr;
  if (table != nullptr) {
    if (table->weights.rows != c.vocab_size || table->weights.cols != c.dim)
      fail("token_embedding: INT8 table has the wrong shape");
    // A tied INT8 classifier is also the table: looked up in the classifier's packed copy when that
    // is on the dynamic kernels, else copied (a static layer keeps its own); a separate table is moved
    // here when ours to take.
    const bool tied = int8->count("token_embedding") == 0;
    embedding_in_classifier = tied && (is_dynamic(options_.activations) || table->weights.per_group());
    if (!embedding_in_classifier) {
      if (release_int8 != nullptr && !tied) {
        token_embedding_int8_ = std::move(release_int8->at("token_embedding").weights);
      } else {
        token_embedding_int8_ = table->weights;
      }
    }
  } else {
    if (model.token_embedding.size() != size_t(c.vocab_size) * c.dim) fail("token_embedding: no FP32 values and no INT8 table");
    token_embedding_ = release != nullptr ? std::move(release->token_embedding) : model.token_embedding;
  }
  // Gemma's norms scale by (1 + w): the offset is added once here.
  auto norm = [&c](const std::vector<float>& weights) { return c.norm_multipliers(weights); };
  final_norm_ = norm(model.final_norm);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model.layers[l];
    auto layer = std::make_unique<Layer>();
    auto name = [l](const char* tensor) { return "layers." + std::to_string(l) + "." + tensor; };
    layer->attn_norm = norm(w.attn_norm);
    layer->ffn_norm = norm(w.ffn_norm);
    if (c.qk_norm) {
      if (w.q_norm.size() != size_t(c.head_size()) || w.k_norm.size() != size_t(c.head_size()))
        fail("layers.{}: q_norm / k_norm must hold {} values", l, c.head_size());
      layer->q_norm = norm(w.q_norm);
      layer->k_norm = norm(w.k_norm);
    }
    if (c.post_norms) {
      if (w.post_attn_norm.size() != size_t(c.dim) || w.post_ffn_norm.size() != size_t(c.dim))
        fail("layers.{}: post_attn_norm / post_ffn_norm must hold {} values", l, c.dim);
      layer->post_attn_norm = norm(w.post_attn_norm);
      layer->post_ffn_norm = norm(w.post_ffn_norm);
    }
    if (c.qkv_bias && (w.bq.size() != size_t(c.q_dim()) || w.bk.size() != size_t(c.kv_dim()) || w.bv.size() != size_t(c.kv_dim())))
      fail("layers.{}: bq / bk / bv must hold {} / {} / {} values", l, c.q_dim(), c.kv_dim(), c.kv_dim());
    // Qwen2: q, k, v with their biases (empty vectors otherwise).
    layer->wq = make_linear(w.wq, c.dim, c.q_dim(), name("wq"), w.bq);
    layer->wk = make_linear(w.wk, c.dim, c.kv_dim(), name("wk"), w.bk);
    layer->wv = make_linear(w.wv, c.dim, c.kv_dim(), name("wv"), w.bv);
    layer->wo = make_linear(w.wo, c.q_dim(), c.dim, name("wo"));
    layer->w1 = make_linear(w.w1, c.dim, c.hidden_dim, name("w1"));
    layer->w2 = make_linear(w.w2, c.hidden_dim, c.dim, name("w2"));
    layer->w3 = make_linear(w.w3, c.dim, c.hidden_dim, name("w3"));
    layers_.push_back(std::move(layer));
    if (release != nullptr) release->layers[l] = LayerWeights{};  // norms and biases: copied or packed above
  }
  // A tied FP32 classifier is packed from the table (the Transformer's own copy: the model's may be gone).
  const std::vector<float>& head = !c.shared_classifier ? model.classifier : token_embedding_.empty() ? model.token_embedding : token_embedding_;
  classifier_ = make_linear(head, c.dim, c.vocab_size, "classifier");
  if (embedding_in_classifier) {
    embedding_classifier_ = dynamic_cast<const LinearDynamicInt8*>(classifier_.get());
    if (embedding_classifier_ == nullptr) fail("classifier: a tied INT8 table on the dynamic kernels, but not packed there");
  }
  if (release_int8 != nullptr) release_int8->clear();
  if (release != nullptr) *release = Model{};

  // RoPE: pair i of every head rotates by pos * theta^(-2i / head_size) (with Llama 3's scaling if set).
  ModelConfig::RopeTables rope = c.rope_tables();
  rope_cos_ = std::move(rope.cos);
  rope_sin_ = std::move(rope.sin);
  if (!c.local_layers.empty()) {  // local layers rotate at their own base
    ModelConfig::RopeTables local = c.local_rope_tables();
    local_rope_cos_ = std::move(local.cos);
    local_rope_sin_ = std::move(local.sin);
  }

  // The KV cache is left uninitialised, so its pages stay untouched (not resident) until positions
  // reach them: a position's keys and values are written before attention reads them.
  size_t cache_floats = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    // A local layer's ring: its window plus a chunk's other positions (a chunk's first token still
    // needs keys its last one's slot would take in a ring of the window alone).
    const int64_t ring = c.local_layer(l) ? int64_t{c.sliding_window} + options_.max_batch - 1 : 0;
    const bool windowed = ring != 0 && 2 * ring < c.max_seq_len;
    const int rows = windowed ? static_cast<int>(2 * ring) : c.max_seq_len;
    cache_layers_.push_back({cache_floats, rows, windowed ? static_cast<int>(ring) : 0});
    cache_floats += static_cast<size_t>(rows) * kv_dim;
  }
  key_cache_ = std::unique_ptr<float[]>(new float[cache_floats]);
  value_cache_ = std::unique_ptr<float[]>(new float[cache_floats]);
  if (token_embedding_int8_ || embedding_classifier_ != nullptr) embedding_row_.resize(dim);
  x_ = padded(batch * dim);
  xb_ = padded(batch * dim);
  xb2_ = padded(batch * dim);
  q_ = padded(batch * q_dim);
  k_ = padded(batch * kv_dim);
  v_ = padded(batch * kv_dim);
  att_out_ = padded(batch * q_dim);
  // Scores: a row per slice of a chunk's (token, head) pairs, 4 slices per thread (the pairs differ in
  // length: the pool balances them), not one per pair (4.7 MB at smollm-135m's 2,048 positions).
  attention_slices_ = std::min(batch * c.n_heads, 4 * std::max<size_t>(1, pthreadpool_get_threads_count(runtime_.threadpool())));
  scores_ = padded(attention_slices_ * static_cast<size_t>(c.max_seq_len));
  hb_ = padded(batch * hidden);
  hb2_ = padded(batch * hidden);
}

Transformer::~Transformer() = default;

size_t Transformer::decode_weight_bytes() const {
  const ModelConfig& c = config_;
  size_t bytes = classifier_->weight_bytes();
  for (const auto& layer : layers_) {
    for (const Linear* linear : {layer->wq.get(), layer->wk.get(), layer->wv.get(), layer->wo.get(), layer->w1.get(),
                                 layer->w2.get(), layer->w3.get()}) {
      bytes += linear->weight_bytes();
    }
  }
  const size_t embedding_row =
      token_embedding_int8_ || embedding_classifier_ != nullptr ? size_t(c.dim) : size_t(c.dim) * sizeof(float);
  const size_t norms = ((c.post_norms ? 4 : 2) * size_t(c.n_layers) + 1) * c.dim * sizeof(float);
  return bytes + embedding_row + norms;
}

size_t Transformer::resident_weight_bytes() const {
  const ModelConfig& c = config_;
  // A table looked up in the classifier is held once, as the classifier (decode counts a row of it too).
  if (embedding_classifier_ != nullptr) return decode_weight_bytes() - size_t(c.dim);
  const size_t row = token_embedding_int8_ ? size_t(c.dim) : size_t(c.dim) * sizeof(float);
  const size_t table = token_embedding_int8_ ? token_embedding_int8_->values.size() + token_embedding_int8_->codes.size() +
                                                   token_embedding_int8_->scales.size() * sizeof(float) +
                                                   token_embedding_int8_->group_scales.size() * sizeof(uint16_t)
                                             : token_embedding_.size() * sizeof(float);
  // decode_weight_bytes counts one row of the table; the whole table is held.
  return decode_weight_bytes() - row + table;
}

size_t Transformer::kv_cache_bytes() const {
  size_t rows = 0;
  for (const CacheLayer& cache : cache_layers_) rows += static_cast<size_t>(cache.rows);
  return 2 * rows * static_cast<size_t>(config_.kv_dim()) * sizeof(float);
}

std::span<const float> Transformer::forward(std::span<const int> tokens, int pos, bool all_logits) {
  const ModelConfig& c = config_;
  const size_t n = tokens.size();
  if (n == 0) fail("forward: no tokens");
  if (pos < 0 || static_cast<size_t>(pos) + n > static_cast<size_t>(c.max_seq_len)) {
    fail("forward: positions [{}, {}) exceed the context length {}", pos, pos + n, c.max_seq_len);
  }
  for (int token : tokens) {
    if (token < 0 || token >= c.vocab_size) fail("forward: token id {} is outside the vocabulary [0, {})", token, c.vocab_size);
  }
  // An observer sees every row, so every row's logits are computed when one is set.
  const bool every_row = all_logits || observer_ != nullptr;
  logits_.resize((every_row ? n : 1) * static_cast<size_t>(c.vocab_size));
  for (size_t start = 0; start < n; start += options_.max_batch) {
    const size_t count = std::min<size_t>(options_.max_batch, n - start);
    const bool last_chunk = start + count == n;
    if (!every_row && !last_chunk) {
      forward_chunk(tokens.subspan(start, count), pos + static_cast<int>(start), nullptr, false);
    } else {
      float* out = every_row ? logits_.data() + start * c.vocab_size : logits_.data();
      forward_chunk(tokens.subspan(start, count), pos + static_cast<int>(start), out, every_row);
    }
  }
  if (!all_logits && every_row) return std::span<const float>(logits_).subspan((n - 1) * c.vocab_size, c.vocab_size);
  return logits_;
}

// One chunk of n <= max_batch tokens at positions [pos, pos + n).
void Transformer::forward_chunk(std::span<const int> tokens, int pos, float* logits_out, bool all_logits) {
  const ModelConfig& c = config_;
  const int n = static_cast<int>(tokens.size());
  const int dim = c.dim, q_dim = c.q_dim(), kv_dim = c.kv_dim(), hidden = c.hidden_dim, half = c.head_size() / 2;

  // x (n, dim) = embedding rows of the tokens
  for (int t = 0; t < n; ++t) {
    float* row = &x_[size_t(t) * dim];
    if (embedding_classifier_ != nullptr) {
      embedding_classifier_->dequantize_row(tokens[t], embedding_row_.data(), row);
    } else if (token_embedding_int8_) {
      const QuantizedMatrix& table = *token_embedding_int8_;
      weight_row_values(table, tokens[t], embedding_row_.data());  // (dim): INT8 values, or 4-bit levels
      const int8_t* values = embedding_row_.data();
      if (table.per_group()) {  // one scale per group of the row
        for (int begin = 0; begin < dim; begin += kWeightGroup) {
          dequantize_int8(values + begin, row + begin, std::min(kWeightGroup, dim - begin), table.scale_at(tokens[t], begin), 0);
        }
      } else {
        dequantize_int8(values, row, dim, table.row_scale(tokens[t]), 0);
      }
    } else {
      std::memcpy(row, &token_embedding_[size_t(tokens[t]) * dim], dim * sizeof(float));
    }
    if (c.embedding_scale) {  // Gemma: x *= sqrt(dim)
      const float scale = std::sqrt(static_cast<float>(dim));
      for (int i = 0; i < dim; ++i) row[i] *= scale;
    }
  }

  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& layer = *layers_[l];

    // Attention block. xb (n, dim) = rmsnorm(x)
    for (int t = 0; t < n; ++t) rmsnorm(&xb_[size_t(t) * dim], &x_[size_t(t) * dim], layer.attn_norm.data(), dim, c.norm_eps);
    layer.wq->run(runtime_, n, xb_.data(), q_.data());  // q (n, q_dim) = xb wq^T (+ bq)
    layer.wk->run(runtime_, n, xb_.data(), k_.data());  // k (n, kv_dim) = xb wk^T (+ bk)
    layer.wv->run(runtime_, n, xb_.data(), v_.data());  // v (n, kv_dim) = xb wv^T (+ bv)
    observe(layer_point(l, LayerPoint::kAttnIn), xb_.data(), n, dim);
    observe(layer_point(l, LayerPoint::kQOut), q_.data(), n, q_dim);
    observe(layer_point(l, LayerPoint::kKOut), k_.data(), n, kv_dim);
    observe(layer_point(l, LayerPoint::kVOut), v_.data(), n, kv_dim);

    // Qwen3, Gemma 3: each head of q and k RMS-normalized (its own weights) before RoPE.
    if (c.qk_norm) {
      const int head_size = c.head_size();
      for (int t = 0; t < n; ++t) {
        for (int h = 0; h < c.n_heads; ++h) {
          float* head = &q_[size_t(t) * q_dim + size_t(h) * head_size];
          rmsnorm(head, head, layer.q_norm.data(), head_size, c.norm_eps);
        }
        for (int h = 0; h < c.n_kv_heads; ++h) {
          float* head = &k_[size_t(t) * kv_dim + size_t(h) * head_size];
          rmsnorm(head, head, layer.k_norm.data(), head_size, c.norm_eps);
        }
      }
    }

    // RoPE on q and k: rotate each interleaved pair (2i, 2i+1) of every head by its position's angle
    // (a local layer's angles from its own base).
    const bool local = c.local_layer(l);
    for (int t = 0; t < n; ++t) {
      const float* cos = &(local ? local_rope_cos_ : rope_cos_)[size_t(pos + t) * half];
      const float* sin = &(local ? local_rope_sin_ : rope_sin_)[size_t(pos + t) * half];
      auto rotate = [&](float* vec, int size) {
        for (int j = 0; j < size; j += 2) {
          const int i = (j % c.head_size()) / 2;
          const float a = vec[j], b = vec[j + 1];
          vec[j] = a * cos[i] - b * sin[i];
          vec[j + 1] = a * sin[i] + b * cos[i];
        }
      };
      rotate(&q_[size_t(t) * q_dim], q_dim);
      rotate(&k_[size_t(t) * kv_dim], kv_dim);
    }

    // KV cache of this layer, each head's rows for positions [pos, pos + n) = that head's part of k, v
    // (a local layer's ring: at both of a position's slots).
    const int head_size = c.head_size();
    const int ring = cache_layers_[size_t(l)].ring;
    for (int h = 0; h < c.n_kv_heads; ++h) {
      for (int t = 0; t < n; ++t) {
        const size_t part = size_t(t) * kv_dim + size_t(h) * head_size;
        const int slot = ring != 0 ? (pos + t) % ring : pos + t;
        for (const int row : {slot, ring != 0 ? slot + ring : -1}) {
          if (row < 0) continue;
          std::memcpy(&key_cache_[cache_row(l, h, row)], &k_[part], head_size * sizeof(float));
          std::memcpy(&value_cache_[cache_row(l, h, row)], &v_[part], head_size * sizeof(float));
        }
      }
    }

    attention(l, n, pos);                                      // att_out (n, q_dim)
    layer.wo->run(runtime_, n, att_out_.data(), xb2_.data());  // xb2 (n, dim)
    observe(layer_point(l, LayerPoint::kAttnOut), att_out_.data(), n, q_dim);
    observe(layer_point(l, LayerPoint::kWoOut), xb2_.data(), n, dim);
    if (c.post_norms) post_norm(xb2_.data(), n, layer.post_attn_norm);  // Gemma: xb2 = rmsnorm(xb2)
    add_into(x_.data(), xb2_.data(), size_t(n) * dim);  // x += xb2

    // Feed-forward block: x += w2(act(w1(xb)) * w3(xb)), xb = rmsnorm(x); act SiLU (SwiGLU) or GELU (GeGLU)
    for (int t = 0; t < n; ++t) rmsnorm(&xb_[size_t(t) * dim], &x_[size_t(t) * dim], layer.ffn_norm.data(), dim, c.norm_eps);
    layer.w1->run(runtime_, n, xb_.data(), hb_.data());   // hb (n, hidden)
    layer.w3->run(runtime_, n, xb_.data(), hb2_.data());  // hb2 (n, hidden)
    observe(layer_point(l, LayerPoint::kFfnIn), xb_.data(), n, dim);
    observe(layer_point(l, LayerPoint::kW1Out), hb_.data(), n, hidden);
    observe(layer_point(l, LayerPoint::kW3Out), hb2_.data(), n, hidden);
    if (c.gelu_tanh) {
      gelu_tanh_mul(hb_.data(), hb2_.data(), size_t(n) * hidden);  // hb = gelu(hb) * hb2
    } else {
      silu_mul(hb_.data(), hb2_.data(), size_t(n) * hidden);  // hb = silu(hb) * hb2
    }
    layer.w2->run(runtime_, n, hb_.data(), xb2_.data());  // xb2 (n, dim)
    observe(layer_point(l, LayerPoint::kFfnHidden), hb_.data(), n, hidden);
    observe(layer_point(l, LayerPoint::kW2Out), xb2_.data(), n, dim);
    if (c.post_norms) post_norm(xb2_.data(), n, layer.post_ffn_norm);  // Gemma: xb2 = rmsnorm(xb2)
    add_into(x_.data(), xb2_.data(), size_t(n) * dim);  // x += xb2
  }

  if (logits_out == nullptr) return;
  // Final norm and classifier, for every row or only the last one.
  const int first = all_logits ? 0 : n - 1;
  const int rows = n - first;
  for (int t = first; t < n; ++t) {
    rmsnorm(&xb_[size_t(t - first) * dim], &x_[size_t(t) * dim], final_norm_.data(), dim, c.norm_eps);
  }
  classifier_->run(runtime_, rows, xb_.data(), logits_out);  // logits (rows, vocab)
  observe(final_in_point(c), xb_.data(), rows, dim);
  observe(logits_point(c), logits_out, rows, c.vocab_size);
}

void Transformer::post_norm(float* rows, int n, const std::vector<float>& weights) const {
  for (int t = 0; t < n; ++t) {
    float* row = rows + size_t(t) * config_.dim;
    rmsnorm(row, row, weights.data(), config_.dim, config_.norm_eps);
  }
}

void Transformer::observe(int point, const float* tensor, int rows, int width) const {
  if (observer_ != nullptr) observer_->observe(point, std::span(tensor, size_t(rows) * width));
}

namespace {

struct AttentionTask {
  const ModelConfig* config;
  const float* q;       // (n, q_dim)
  const float* keys;    // (n_kv_heads, rows, head_size) of this layer
  const float* values;  // (n_kv_heads, rows, head_size) of this layer
  int rows;             // per head: max_seq_len, or twice a local layer's ring
  int ring;             // 0: row = position; else position p at rows p % ring and p % ring + ring
  float* scores;        // (slices, max_seq_len): one row per slice of the items, reused item by item
  float* out;           // (n, q_dim)
  size_t items;         // n * n_heads
  size_t slices;
  int pos;
  int window;  // positions a query sees, itself included: max_seq_len, or a local layer's window
  float scale;  // of the scores, config->attention_scale()
};

// Causal attention of one (token t, head h) pair: item = t * n_heads + h, its scores in `scores`.
void attend_item(const AttentionTask& task, size_t item, float* scores) {
  const ModelConfig& c = *task.config;
  const int head_size = c.head_size();
  const int t = static_cast<int>(item) / c.n_heads, h = static_cast<int>(item) % c.n_heads;
  const size_t kv_offset = size_t(h / (c.n_heads / c.n_kv_heads)) * task.rows * head_size;
  const size_t q_offset = size_t(t) * c.q_dim() + size_t(h) * head_size;
  // keys and values at positions first .. pos + t: all of them, or a local layer's last `window`
  const int end = task.pos + t + 1, first = std::max(0, end - task.window);
  const size_t skip = size_t(task.ring != 0 ? first % task.ring : first) * head_size;  // a ring's run starts at first's slot
  attention_head(task.q + q_offset, task.keys + kv_offset + skip, task.values + kv_offset + skip, end - first, head_size,
                 task.scale, scores, task.out + q_offset);
}

// The items of one slice, one after another on one scores row.
void attend_slice(void* context, size_t slice) {
  const AttentionTask& task = *static_cast<const AttentionTask*>(context);
  float* scores = task.scores + slice * static_cast<size_t>(task.config->max_seq_len);
  for (size_t item = task.items * slice / task.slices; item < task.items * (slice + 1) / task.slices; ++item)
    attend_item(task, item, scores);
}

}  // namespace

void Transformer::attention(int layer, int n, int pos) {
  const ModelConfig& c = config_;
  const CacheLayer& cache = cache_layers_[size_t(layer)];
  const int window = c.local_layer(layer) ? c.sliding_window : c.max_seq_len;
  AttentionTask task{&c,         q_.data(),      &key_cache_[cache.offset], &value_cache_[cache.offset], cache.rows,
                     cache.ring, scores_.data(), att_out_.data(),           size_t(n) * c.n_heads,       0,
                     pos,        window,         c.attention_scale()};
  task.slices = std::min(task.items, attention_slices_);
  pthreadpool_parallelize_1d(runtime_.threadpool(), attend_slice, &task, task.slices, /*flags=*/0);
}

}  // namespace fedcal

#include "models/format/model_config.h"

#include <fmt/format.h>

#include <cmath>

#include "common/error.h"

namespace fedcal {
namespace {

// Far beyond any model fedcal targets, small enough that sizes computed from them cannot overflow.
constexpr int kMaxDim = 1 << 16;
constexpr int kMaxLayers = 1024;
constexpr int kMaxHeads = 1024;
constexpr int kMaxVocab = 1 << 22;
constexpr int kMaxSeqLen = 1 << 20;

void check_range(const char* field, int value, int max) {
  if (value < 1 || value > max) fail("{} = {} is out of range [1, {}]", field, value, max);
}

}  // namespace

int64_t ModelConfig::parameter_count() const {
  int64_t d = dim, h = hidden_dim, kv = kv_dim(), v = vocab_size;
  int64_t per_layer = 2 * d + d * d /*wq*/ + 2 * kv * d /*wk, wv*/ + d * d /*wo*/ + 3 * d * h;
  return v * d + n_layers * per_layer + d + (shared_classifier ? 0 : v * d);
}

void ModelConfig::validate() const {
  check_range("dim", dim, kMaxDim);
  check_range("hidden_dim", hidden_dim, 4 * kMaxDim);
  check_range("n_layers", n_layers, kMaxLayers);
  check_range("n_heads", n_heads, kMaxHeads);
  check_range("n_kv_heads", n_kv_heads, kMaxHeads);
  check_range("vocab_size", vocab_size, kMaxVocab);
  check_range("max_seq_len", max_seq_len, kMaxSeqLen);
  if (dim % n_heads != 0) fail("dim {} is not a multiple of n_heads {}", dim, n_heads);
  if (head_size() % 2 != 0) fail("head size {} is odd; rotary embeddings rotate pairs", head_size());
  if (n_heads % n_kv_heads != 0) fail("n_heads {} is not a multiple of n_kv_heads {}", n_heads, n_kv_heads);
  if (!(norm_eps > 0.0f) || !std::isfinite(norm_eps) || norm_eps > 1.0f) fail("norm_eps {} is not in (0, 1]", norm_eps);
  if (!(rope_theta > 1.0f) || !std::isfinite(rope_theta)) fail("rope_theta {} must be a finite number > 1", rope_theta);
}

std::string ModelConfig::describe() const {
  return fmt::format(
      "dim {}, hidden {}, layers {}, heads {} (kv {}, head size {}), vocab {}, context {}, rope theta {}, norm eps {}, {} "
      "classifier",
      dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_size(), vocab_size, max_seq_len, rope_theta, norm_eps,
      shared_classifier ? "tied" : "separate");
}

}  // namespace fedcal

#include "tests/models/engine/reference_transformer.h"

#include <cmath>

namespace fedcal::testing {
namespace {

using Vector = std::vector<double>;

// y = W x, W row-major (rows, cols)
Vector matvec(const std::vector<float>& w, const Vector& x, int rows) {
  const size_t cols = x.size();
  Vector y(rows, 0.0);
  for (int r = 0; r < rows; ++r) {
    double sum = 0;
    for (size_t c = 0; c < cols; ++c) sum += static_cast<double>(w[r * cols + c]) * x[c];
    y[r] = sum;
  }
  return y;
}

Vector rms_norm(const Vector& x, const std::vector<float>& weight, double eps) {
  double mean_square = 0;
  for (double v : x) mean_square += v * v;
  mean_square /= static_cast<double>(x.size());
  Vector out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] / std::sqrt(mean_square + eps) * weight[i];
  return out;
}

// Rotates interleaved pairs (2i, 2i+1) of each head of `v` by pos * theta^(-2i/head_size).
void rope(Vector& v, int head_size, int pos, double theta) {
  for (size_t head = 0; head < v.size() / head_size; ++head) {
    for (int i = 0; i < head_size / 2; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_size);
      double& a = v[head * head_size + 2 * i];
      double& b = v[head * head_size + 2 * i + 1];
      const double a0 = a, b0 = b;
      a = a0 * std::cos(angle) - b0 * std::sin(angle);
      b = a0 * std::sin(angle) + b0 * std::cos(angle);
    }
  }
}

}  // namespace

std::vector<std::vector<double>> reference_logits(const Model& model, const std::vector<int>& tokens) {
  const ModelConfig& c = model.config;
  const int hs = c.head_size();
  const int group = c.n_heads / c.n_kv_heads;
  // keys[layer][position], values[layer][position]: (kv_dim) each
  std::vector<std::vector<Vector>> keys(c.n_layers), values(c.n_layers);
  std::vector<std::vector<double>> all_logits;

  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    Vector x(c.dim);
    for (int i = 0; i < c.dim; ++i) x[i] = model.token_embedding[static_cast<size_t>(tokens[pos]) * c.dim + i];

    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = model.layers[l];
      Vector h = rms_norm(x, w.attn_norm, c.norm_eps);
      Vector q = matvec(w.wq, h, c.dim);
      Vector k = matvec(w.wk, h, c.kv_dim());
      Vector v = matvec(w.wv, h, c.kv_dim());
      rope(q, hs, static_cast<int>(pos), c.rope_theta);
      rope(k, hs, static_cast<int>(pos), c.rope_theta);
      keys[l].push_back(k);
      values[l].push_back(v);

      Vector attended(c.dim, 0.0);
      for (int head = 0; head < c.n_heads; ++head) {
        const int kv_head = head / group;
        std::vector<double> scores(pos + 1);
        double max_score = -1e300;
        for (size_t s = 0; s <= pos; ++s) {
          double dot = 0;
          for (int i = 0; i < hs; ++i) dot += q[head * hs + i] * keys[l][s][kv_head * hs + i];
          scores[s] = dot / std::sqrt(static_cast<double>(hs));
          max_score = std::max(max_score, scores[s]);
        }
        double total = 0;
        for (double& score : scores) total += (score = std::exp(score - max_score));
        for (size_t s = 0; s <= pos; ++s) {
          for (int i = 0; i < hs; ++i) attended[head * hs + i] += scores[s] / total * values[l][s][kv_head * hs + i];
        }
      }
      Vector projected = matvec(w.wo, attended, c.dim);
      for (int i = 0; i < c.dim; ++i) x[i] += projected[i];

      Vector h2 = rms_norm(x, w.ffn_norm, c.norm_eps);
      Vector gate = matvec(w.w1, h2, c.hidden_dim);
      Vector up = matvec(w.w3, h2, c.hidden_dim);
      for (int i = 0; i < c.hidden_dim; ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      Vector down = matvec(w.w2, gate, c.dim);
      for (int i = 0; i < c.dim; ++i) x[i] += down[i];
    }
    all_logits.push_back(matvec(model.output_weights(), rms_norm(x, model.final_norm, c.norm_eps), c.vocab_size));
  }
  return all_logits;
}

}  // namespace fedcal::testing

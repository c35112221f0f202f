#include "models/format/hf_checkpoint.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "common/error.h"
#include "common/file_util.h"

namespace fedcal {
namespace fs = std::filesystem;
namespace {

// Applies `row_map(head, row_in_head) -> source row in head` to every head of a (n_heads * head_size, cols) matrix.
template <typename RowMap>
std::vector<float> permute_rows(const std::vector<float>& weights, int n_heads, int head_size, int cols, RowMap row_map) {
  std::vector<float> out(weights.size());
  for (int h = 0; h < n_heads; ++h) {
    for (int r = 0; r < head_size; ++r) {
      const float* source = weights.data() + (static_cast<size_t>(h) * head_size + row_map(r)) * cols;
      std::copy(source, source + cols, out.data() + (static_cast<size_t>(h) * head_size + r) * cols);
    }
  }
  return out;
}

// The double that prints like the float does (1e-05, not 9.99999974e-06), for config.json.
double shortest_double(float value) { return std::stod(fmt::format("{}", value)); }

std::string layer_name(int layer, const char* suffix) { return "model.layers." + std::to_string(layer) + "." + suffix; }

}  // namespace

std::vector<float> hf_to_interleaved_rotary(const std::vector<float>& weights, int n_heads, int head_size, int cols) {
  const int half = head_size / 2;
  // Interleaved row 2i+p holds HF row p*half+i.
  return permute_rows(weights, n_heads, head_size, cols, [half](int r) { return (r % 2) * half + r / 2; });
}

std::vector<float> interleaved_to_hf_rotary(const std::vector<float>& weights, int n_heads, int head_size, int cols) {
  const int half = head_size / 2;
  // HF row p*half+i holds interleaved row 2i+p.
  return permute_rows(weights, n_heads, head_size, cols, [half](int r) { return 2 * (r % half) + r / half; });
}

bool is_hf_checkpoint_folder(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / "config.json", ec);
}

Model read_hf_checkpoint(const std::string& folder) {
  const fs::path root(folder);
  const std::string config_path = (root / "config.json").string();
  const ModelConfig config = parse_hf_config(read_text_file(config_path), config_path).model;

  std::vector<fs::path> shard_paths;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.path().extension() == ".safetensors") shard_paths.push_back(entry.path());
  }
  if (ec) fail("{}: cannot list folder: {}", folder, ec.message());
  if (shard_paths.empty()) fail("{}: no *.safetensors file in the folder", folder);
  std::sort(shard_paths.begin(), shard_paths.end());

  std::vector<std::unique_ptr<SafetensorsFile>> shards;
  std::map<std::string, const SafetensorsFile*> owner;  // tensor name -> shard holding it
  for (const fs::path& path : shard_paths) {
    shards.push_back(std::make_unique<SafetensorsFile>(path.string()));
    for (const auto& [name, entry] : shards.back()->index().tensors) {
      auto [it, inserted] = owner.emplace(name, shards.back().get());
      if (!inserted) fail("{}: tensor '{}' appears in both {} and {}", folder, name, it->second->path(), path.string());
    }
  }
  std::set<std::string> used;
  auto read = [&](const std::string& name, std::vector<int64_t> shape) {
    auto it = owner.find(name);
    if (it == owner.end()) fail("{}: missing tensor '{}'", folder, name);
    used.insert(name);
    return it->second->read_f32(name, shape);
  };

  Model model = allocate_model(config);
  const int64_t dim = config.dim, q = config.q_dim(), hidden = config.hidden_dim, kv = config.kv_dim(), vocab = config.vocab_size;
  model.token_embedding = read("model.embed_tokens.weight", {vocab, dim});
  for (int l = 0; l < config.n_layers; ++l) {
    LayerWeights& layer = model.layers[l];
    layer.attn_norm = read(layer_name(l, "input_layernorm.weight"), {dim});
    layer.wq = hf_to_interleaved_rotary(read(layer_name(l, "self_attn.q_proj.weight"), {q, dim}), config.n_heads,
                                        config.head_size(), config.dim);
    layer.wk = hf_to_interleaved_rotary(read(layer_name(l, "self_attn.k_proj.weight"), {kv, dim}), config.n_kv_heads,
                                        config.head_size(), config.dim);
    layer.wv = read(layer_name(l, "self_attn.v_proj.weight"), {kv, dim});
    layer.wo = read(layer_name(l, "self_attn.o_proj.weight"), {dim, q});
    if (config.qkv_bias) {  // Qwen2: q and k biases follow their rows into the interleaved layout
      layer.bq = hf_to_interleaved_rotary(read(layer_name(l, "self_attn.q_proj.bias"), {q}), config.n_heads, config.head_size(), 1);
      layer.bk = hf_to_interleaved_rotary(read(layer_name(l, "self_attn.k_proj.bias"), {kv}), config.n_kv_heads, config.head_size(), 1);
      layer.bv = read(layer_name(l, "self_attn.v_proj.bias"), {kv});
    }
    if (config.qk_norm) {  // one head's weights, in the head's rotary layout like q and k rows
      const int64_t head = config.head_size();
      layer.q_norm = hf_to_interleaved_rotary(read(layer_name(l, "self_attn.q_norm.weight"), {head}), 1, config.head_size(), 1);
      layer.k_norm = hf_to_interleaved_rotary(read(layer_name(l, "self_attn.k_norm.weight"), {head}), 1, config.head_size(), 1);
    }
    layer.ffn_norm = read(layer_name(l, "post_attention_layernorm.weight"), {dim});
    layer.w1 = read(layer_name(l, "mlp.gate_proj.weight"), {hidden, dim});
    layer.w2 = read(layer_name(l, "mlp.down_proj.weight"), {dim, hidden});
    layer.w3 = read(layer_name(l, "mlp.up_proj.weight"), {hidden, dim});
  }
  model.final_norm = read("model.norm.weight", {dim});
  if (!config.shared_classifier) model.classifier = read("lm_head.weight", {vocab, dim});
  // A tensor the family does not have (a bias, an extra norm) would change the computation if it were
  // meant: refused, not ignored.
  for (const auto& [name, shard] : owner) {
    if (!used.count(name)) fail("{}: tensor '{}' (in {}) is not part of this model's architecture", folder, name, shard->path());
  }
  return model;
}

void write_hf_checkpoint(const Model& model, const std::string& folder, TensorDtype dtype) {
  const ModelConfig& c = model.config;
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) fail("{}: cannot create folder: {}", folder, ec.message());

  nlohmann::json config = {
      {"architectures", {c.qk_norm ? "Qwen3ForCausalLM" : c.qkv_bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", c.qk_norm ? "qwen3" : c.qkv_bias ? "qwen2" : "llama"},
      {"hidden_act", "silu"},
      {"hidden_size", c.dim},
      {"intermediate_size", c.hidden_dim},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_seq_len},
      {"rms_norm_eps", shortest_double(c.norm_eps)},
      {"rope_theta", shortest_double(c.rope_theta)},
      {"tie_word_embeddings", c.shared_classifier},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", dtype == TensorDtype::kF32   ? "float32"
                      : dtype == TensorDtype::kF16 ? "float16"
                                                   : "bfloat16"},
  };
  if (c.head_dim != 0) config["head_dim"] = c.head_dim;
  if (c.rope_scaling.enabled()) {
    config["rope_scaling"] = {{"rope_type", "llama3"},
                              {"factor", shortest_double(c.rope_scaling.factor)},
                              {"low_freq_factor", shortest_double(c.rope_scaling.low_freq_factor)},
                              {"high_freq_factor", shortest_double(c.rope_scaling.high_freq_factor)},
                              {"original_max_position_embeddings", c.rope_scaling.original_max_seq_len}};
  }
  std::string text = config.dump(2) + "\n";
  write_file_atomically((fs::path(folder) / "config.json").string(), std::as_bytes(std::span(text)));

  const int64_t dim = c.dim, q = c.q_dim(), hidden = c.hidden_dim, kv = c.kv_dim(), vocab = c.vocab_size;
  std::vector<std::vector<float>> permuted;  // q/k in HF layout, kept alive until written
  permuted.reserve(6 * c.n_layers);  // q, k, their norms and biases: pointers into it must stay valid
  std::vector<SafetensorsTensorToWrite> tensors;
  tensors.push_back({"model.embed_tokens.weight", {vocab, dim}, &model.token_embedding});
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& layer = model.layers[l];
    permuted.push_back(interleaved_to_hf_rotary(layer.wq, c.n_heads, c.head_size(), c.dim));
    tensors.push_back({layer_name(l, "self_attn.q_proj.weight"), {q, dim}, &permuted.back()});
    permuted.push_back(interleaved_to_hf_rotary(layer.wk, c.n_kv_heads, c.head_size(), c.dim));
    tensors.push_back({layer_name(l, "self_attn.k_proj.weight"), {kv, dim}, &permuted.back()});
    tensors.push_back({layer_name(l, "input_layernorm.weight"), {dim}, &layer.attn_norm});
    tensors.push_back({layer_name(l, "self_attn.v_proj.weight"), {kv, dim}, &layer.wv});
    tensors.push_back({layer_name(l, "self_attn.o_proj.weight"), {dim, q}, &layer.wo});
    if (c.qkv_bias) {
      permuted.push_back(interleaved_to_hf_rotary(layer.bq, c.n_heads, c.head_size(), 1));
      tensors.push_back({layer_name(l, "self_attn.q_proj.bias"), {q}, &permuted.back()});
      permuted.push_back(interleaved_to_hf_rotary(layer.bk, c.n_kv_heads, c.head_size(), 1));
      tensors.push_back({layer_name(l, "self_attn.k_proj.bias"), {kv}, &permuted.back()});
      tensors.push_back({layer_name(l, "self_attn.v_proj.bias"), {kv}, &layer.bv});
    }
    if (c.qk_norm) {
      permuted.push_back(interleaved_to_hf_rotary(layer.q_norm, 1, c.head_size(), 1));
      tensors.push_back({layer_name(l, "self_attn.q_norm.weight"), {c.head_size()}, &permuted.back()});
      permuted.push_back(interleaved_to_hf_rotary(layer.k_norm, 1, c.head_size(), 1));
      tensors.push_back({layer_name(l, "self_attn.k_norm.weight"), {c.head_size()}, &permuted.back()});
    }
    tensors.push_back({layer_name(l, "post_attention_layernorm.weight"), {dim}, &layer.ffn_norm});
    tensors.push_back({layer_name(l, "mlp.gate_proj.weight"), {hidden, dim}, &layer.w1});
    tensors.push_back({layer_name(l, "mlp.down_proj.weight"), {dim, hidden}, &layer.w2});
    tensors.push_back({layer_name(l, "mlp.up_proj.weight"), {hidden, dim}, &layer.w3});
  }
  tensors.push_back({"model.norm.weight", {dim}, &model.final_norm});
  if (!c.shared_classifier) tensors.push_back({"lm_head.weight", {vocab, dim}, &model.classifier});
  write_safetensors((fs::path(folder) / "model.safetensors").string(), tensors, dtype, {{"format", "pt"}});
}

}  // namespace fedcal

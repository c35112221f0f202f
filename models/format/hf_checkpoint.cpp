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
#include "models/family/family.h"

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

// A layer tensor's safetensors shape: [cols] for a vector, [rows, cols] for a matrix.
std::vector<int64_t> hf_shape(const LayerTensor& tensor, const ModelConfig& config) {
  const int64_t rows = tensor.row_count(config), cols = tensor.col_count(config);
  return tensor.rows == Extent::kOne ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
}

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
  const ModelFamily& family = family_of(config);
  const int64_t dim = config.dim, vocab = config.vocab_size;
  model.token_embedding = read("model.embed_tokens.weight", {vocab, dim});
  for (int l = 0; l < config.n_layers; ++l) {
    for (const LayerTensor* tensor : layer_tensors(config)) {
      std::vector<float> values = read(family.hf_tensor_name(*tensor, l), hf_shape(*tensor, config));
      // q and k rows (their biases, a head's norm weights) go from the half-split layout to interleaved
      if (tensor->rotary != RotaryHeads::kNone) {
        const auto [heads, columns] = tensor->rotary_shape(config);
        values = hf_to_interleaved_rotary(values, heads, config.head_size(), columns);
      }
      model.layers[l].*tensor->member = std::move(values);
    }
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

  const ModelFamily& family = family_of(c);
  nlohmann::json config = {
      {"architectures", {family.hf_architecture}},
      {"model_type", family.hf_model_type},
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
  if (family.write_hf_config != nullptr) family.write_hf_config(c, config);
  if (c.rope_scaling.enabled()) {
    config["rope_scaling"] = {{"rope_type", "llama3"},
                              {"factor", shortest_double(c.rope_scaling.factor)},
                              {"low_freq_factor", shortest_double(c.rope_scaling.low_freq_factor)},
                              {"high_freq_factor", shortest_double(c.rope_scaling.high_freq_factor)},
                              {"original_max_position_embeddings", c.rope_scaling.original_max_seq_len}};
  }
  std::string text = config.dump(2) + "\n";
  write_file_atomically((fs::path(folder) / "config.json").string(), std::as_bytes(std::span(text)));

  const int64_t dim = c.dim, vocab = c.vocab_size;
  const std::vector<const LayerTensor*> layer_tensors_of_c = layer_tensors(c);
  std::vector<std::vector<float>> permuted;                  // rotary tensors in HF layout, kept alive until written
  permuted.reserve(c.n_layers * layer_tensors_of_c.size());  // pointers into it must stay valid
  std::vector<SafetensorsTensorToWrite> tensors;
  tensors.push_back({"model.embed_tokens.weight", {vocab, dim}, &model.token_embedding});
  for (int l = 0; l < c.n_layers; ++l) {
    for (const LayerTensor* tensor : layer_tensors_of_c) {
      const std::vector<float>* values = &(model.layers[l].*tensor->member);
      if (tensor->rotary != RotaryHeads::kNone) {
        const auto [heads, columns] = tensor->rotary_shape(c);
        permuted.push_back(interleaved_to_hf_rotary(*values, heads, c.head_size(), columns));
        values = &permuted.back();
      }
      tensors.push_back({family.hf_tensor_name(*tensor, l), hf_shape(*tensor, c), values});
    }
  }
  tensors.push_back({"model.norm.weight", {dim}, &model.final_norm});
  if (!c.shared_classifier) tensors.push_back({"lm_head.weight", {vocab, dim}, &model.classifier});
  write_safetensors((fs::path(folder) / "model.safetensors").string(), tensors, dtype, {{"format", "pt"}});
}

}  // namespace fedcal

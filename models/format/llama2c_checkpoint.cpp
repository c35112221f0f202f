#include "models/format/llama2c_checkpoint.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>

#include "common/byte_reader.h"
#include "common/error.h"
#include "common/little_endian.h"
#include "common/mapped_file.h"
#include "models/family/family.h"

namespace fedcal {
namespace {

constexpr uint32_t kLlama2cMagic = 0x616b3432;  // "ak42"
constexpr size_t kVersion1HeaderBytes = 256;

struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};

ModelConfig config_from_header(const Header& h, bool shared_classifier) {
  ModelConfig config;
  config.dim = h.dim;
  config.hidden_dim = h.hidden_dim;
  config.n_layers = h.n_layers;
  config.n_heads = h.n_heads;
  config.n_kv_heads = h.n_kv_heads;
  config.vocab_size = h.vocab_size;
  config.max_seq_len = h.seq_len;
  config.shared_classifier = shared_classifier;
  config.validate();
  return config;
}

// Bytes of the legacy RoPE tables (freq_cis_real and freq_cis_imag), which fedcal recomputes.
int64_t rope_table_floats(const ModelConfig& c) { return 2 * int64_t{c.max_seq_len} * (c.head_size() / 2); }

void read_floats(ByteReader& reader, std::vector<float>& out, const std::string& name) {
  auto bytes = reader.take(out.size() * sizeof(float), name.c_str());
  std::memcpy(out.data(), bytes.data(), bytes.size());
}

// The tensor order of each version, as export.py writes it.
// ModelT is Model (reading) or const Model (writing).
template <typename ModelT>
auto tensor_order(ModelT& m, Llama2cVersion version, std::vector<std::string>& names) {
  std::vector<decltype(&m.final_norm)> order;
  auto add_per_layer = [&](const char* kind, std::vector<float> LayerWeights::*member) {
    for (size_t l = 0; l < m.layers.size(); ++l) {
      order.push_back(&(m.layers[l].*member));
      names.push_back("layers." + std::to_string(l) + "." + kind);
    }
  };
  auto add = [&](const char* name, auto& tensor) {
    order.push_back(&tensor);
    names.push_back(name);
  };
  if (version == Llama2cVersion::kLegacy) {
    add("token_embedding", m.token_embedding);
    add_per_layer("attn_norm", &LayerWeights::attn_norm);
  } else {
    add_per_layer("attn_norm", &LayerWeights::attn_norm);
    add_per_layer("ffn_norm", &LayerWeights::ffn_norm);
    add("final_norm", m.final_norm);
    add("token_embedding", m.token_embedding);
  }
  add_per_layer("wq", &LayerWeights::wq);
  add_per_layer("wk", &LayerWeights::wk);
  add_per_layer("wv", &LayerWeights::wv);
  add_per_layer("wo", &LayerWeights::wo);
  if (version == Llama2cVersion::kLegacy) add_per_layer("ffn_norm", &LayerWeights::ffn_norm);
  add_per_layer("w1", &LayerWeights::w1);
  add_per_layer("w2", &LayerWeights::w2);
  add_per_layer("w3", &LayerWeights::w3);
  if (version == Llama2cVersion::kLegacy) add("final_norm", m.final_norm);
  return order;
}

}  // namespace

bool looks_like_llama2c_version1(std::span<const std::byte> bytes) {
  uint32_t magic = 0;
  if (bytes.size() < sizeof(magic)) return false;
  std::memcpy(&magic, bytes.data(), sizeof(magic));
  return magic == kLlama2cMagic;
}

Model parse_llama2c_checkpoint(std::span<const std::byte> bytes, const std::string& source) {
  ByteReader reader(bytes, source);
  const Llama2cVersion version = looks_like_llama2c_version1(bytes) ? Llama2cVersion::kVersion1 : Llama2cVersion::kLegacy;
  bool shared = true;
  Header header{};
  if (version == Llama2cVersion::kVersion1) {
    reader.skip(4, "magic");
    int32_t file_version = reader.read<int32_t>("version");
    if (file_version != 1) {
      fail("{}: llama2.c checkpoint version {} is not supported (only FP32 version 1 and the legacy format)", source,
           file_version);
    }
    header = reader.read<Header>("header");
    uint8_t shared_flag = reader.read<uint8_t>("shared_classifier flag");
    if (shared_flag > 1) fail("{}: shared_classifier flag is {}, expected 0 or 1", source, shared_flag);
    shared = shared_flag == 1;
    reader.skip(kVersion1HeaderBytes - reader.offset(), "header padding");
  } else {
    header = reader.read<Header>("header");
    shared = header.vocab_size > 0;
    if (header.vocab_size == INT32_MIN) fail("{}: vocab_size {} is out of range", source, header.vocab_size);
    header.vocab_size = std::abs(header.vocab_size);
  }

  ModelConfig config = with_context([&] { return source + ": header"; }, [&] { return config_from_header(header, shared); });
  int64_t expected = static_cast<int64_t>(reader.offset()) + config.parameter_count() * 4;
  if (version == Llama2cVersion::kLegacy) expected += rope_table_floats(config) * 4;
  if (static_cast<int64_t>(bytes.size()) != expected) {
    fail("{}: header ({}) implies a file of {} bytes, but it has {} bytes", source, config.describe(), expected, bytes.size());
  }

  Model model = allocate_model(config);
  std::vector<std::string> names;
  auto order = tensor_order(model, version, names);
  for (size_t i = 0; i < order.size(); ++i) read_floats(reader, *order[i], names[i]);
  if (version == Llama2cVersion::kLegacy) reader.skip(rope_table_floats(config) * 4, "RoPE tables");
  if (!shared) read_floats(reader, model.classifier, "classifier");
  return model;
}

Model read_llama2c_checkpoint(const std::string& path) {
  MappedFile file(path);
  return parse_llama2c_checkpoint(file.bytes(), path);
}

void write_llama2c_checkpoint(const Model& model, const std::string& path, Llama2cVersion version) {
  const ModelConfig& c = model.config;
  if (c.rope_scaling.enabled()) fail("{}: a llama2.c checkpoint cannot hold RoPE scaling (write a Hugging Face folder)", path);
  if (c.head_dim != 0) fail("{}: a llama2.c checkpoint cannot hold an explicit head_dim (write a Hugging Face folder)", path);
  if (c.features() != llama_family().features)  // llama2.c's layout has the Llama family's tensors only
    fail("{}: a llama2.c checkpoint cannot hold {} (write a Hugging Face folder)", path, c.describe_features());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("{}: cannot create", path);
  auto write = [&](const void* data, size_t size) {
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  };
  auto write_floats = [&](const std::vector<float>& v) { write(v.data(), v.size() * sizeof(float)); };

  Header header{c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.max_seq_len};
  if (version == Llama2cVersion::kVersion1) {
    write(&kLlama2cMagic, 4);
    int32_t file_version = 1;
    write(&file_version, 4);
    write(&header, sizeof(header));
    uint8_t shared = c.shared_classifier ? 1 : 0;
    write(&shared, 1);
    std::vector<char> padding(kVersion1HeaderBytes - 4 - 4 - sizeof(header) - 1, 0);
    write(padding.data(), padding.size());
  } else {
    if (!c.shared_classifier) header.vocab_size = -header.vocab_size;
    write(&header, sizeof(header));
  }
  std::vector<std::string> names;
  auto order = tensor_order(model, version, names);
  for (const std::vector<float>* tensor : order) write_floats(*tensor);
  if (version == Llama2cVersion::kLegacy) {
    // RoPE tables as llama2.c's model.py precomputes them: cos/sin(pos * theta^(-2i/head_size)).
    const int half = c.head_size() / 2;
    std::vector<float> cos_table, sin_table;
    for (int pos = 0; pos < c.max_seq_len; ++pos) {
      for (int i = 0; i < half; ++i) {
        double freq = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / c.head_size());
        cos_table.push_back(static_cast<float>(std::cos(pos * freq)));
        sin_table.push_back(static_cast<float>(std::sin(pos * freq)));
      }
    }
    write_floats(cos_table);
    write_floats(sin_table);
  }
  if (!c.shared_classifier) write_floats(model.classifier);
  out.flush();
  if (!out) fail("{}: write failed (disk full?)", path);
}

}  // namespace fedcal

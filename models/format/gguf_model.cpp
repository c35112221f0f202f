#include "models/format/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/ranges.h>

#include "common/error.h"
#include "common/file_util.h"
#include "common/mapped_file.h"
#include "models/family/family.h"
#include "models/format/float16.h"
#include "models/format/gguf_tokenizer.h"
#include "models/format/hf_checkpoint.h"
#include "models/quant/int4_format.h"
#include "models/quant/int5_format.h"
#include "models/tokenizer/bpe.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"

namespace fedcal {
namespace {

// general.file_type (llama_ftype) of a model whose matrices are `type`.
uint32_t file_type(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 0;
    case GgmlType::kF16:
      return 1;
    case GgmlType::kQ8_0:
      return 7;
    case GgmlType::kBF16:
      return 32;
    default:  // types fedcal reads but does not write
      return 0;
  }
}

}  // namespace

std::string gguf_tensor_name(const std::string& name) {
  if (name == "token_embedding") return "token_embd.weight";
  if (name == "final_norm") return "output_norm.weight";
  if (name == "classifier") return "output.weight";
  const std::optional<LayerTensorName> found = find_layer_tensor(name);
  if (!found) fail("GGUF: no name for tensor '{}'", name);
  return fmt::format("blk.{}.{}", found->layer, found->tensor->gguf);
}

namespace {

// The layer tensor whose rows change between the interleaved rotary layout and the NEOX one, or nullptr.
const LayerTensor* rotary_tensor(const std::string& name) {
  const std::optional<LayerTensorName> found = find_layer_tensor(name);
  return found && found->tensor->rotary != RotaryHeads::kNone ? found->tensor : nullptr;
}

// A quantized layer's own blocks, where GGUF has its layout: 4-bit uniform codes as Q4_0 (binary16 d,
// 16 bytes of codes in the same order: code = level + 8), 5-bit uniform ones as Q5_0 (binary16 d, then
// the 20 stored bytes of quant/int5_format.h: code = level + 16), INT8 groups of 32 as Q8_0 (binary16
// d, 32 int8). `type` says which. Anything else is refused naming the tensor.
std::vector<std::byte> quantized_blocks(const std::string& name, const QuantizedMatrix& m, GgmlType& type) {
  const bool q4_0 = m.bits == 4 && m.grid == Int4Grid::kUniform;
  const bool q5_0 = m.bits == 5 && m.grid == Int4Grid::kUniform;
  const bool q8_0 = m.bits == 8 && m.per_group() && m.cols % kQ8_0BlockValues == 0;
  if (!q4_0 && !q5_0 && !q8_0) {
    fail("GGUF export: {} is {}: GGUF has no type with its layout (export the FP32 model it was quantized from{})", name,
         m.bits < 8      ? fmt::format("{}-bit on the non-uniform grid", m.bits)
         : m.per_group() ? std::string("INT8 in groups that do not fill its rows")
                         : std::string("static INT8"),
         m.bits < 8 ? fmt::format(", or quantize with --int4-grid uniform: Q{}_0", m.bits) : "");
  }
  type = q4_0 ? GgmlType::kQ4_0 : q5_0 ? GgmlType::kQ5_0 : GgmlType::kQ8_0;
  const std::vector<uint8_t> five_bit_codes = q5_0 ? pack_int5_codes(m.values, m.rows, m.cols, m.grid) : std::vector<uint8_t>();
  const size_t groups = m.group_scales.size(), group_bytes = q4_0 ? 16 : q5_0 ? kInt5GroupBytes : 32;
  std::vector<std::byte> out;
  out.reserve(groups * (2 + group_bytes));
  for (size_t g = 0; g < groups; ++g) {
    const uint16_t d = m.group_scales[g];
    out.push_back(static_cast<std::byte>(d & 0xff));
    out.push_back(static_cast<std::byte>(d >> 8));
    for (size_t i = 0; i < group_bytes; ++i)
      out.push_back(q4_0   ? static_cast<std::byte>(m.codes[g * group_bytes + i])
                    : q5_0 ? static_cast<std::byte>(five_bit_codes[g * group_bytes + i])
                           : static_cast<std::byte>(m.values[g * group_bytes + i]));
  }
  return out;
}

// A norm's weights: llama.cpp multiplies by them as stored, so a (1 + w) norm (Gemma) is stored as
// 1 + w (what its converter writes) and read back as w.
bool is_norm(const std::string& name) {
  if (name == "final_norm") return true;
  const std::optional<LayerTensorName> found = find_layer_tensor(name);
  return found && found->tensor->role == TensorRole::kNorm;
}

std::vector<float> to_neox(const LayerTensor& rotary, const ConstTensorRef& tensor, const ModelConfig& config) {
  const auto [heads, cols] = rotary.rotary_shape(config);
  return interleaved_to_hf_rotary(*tensor.data, heads, config.head_size(), cols);
}

// Llama 3's scaling as llama.cpp applies it: the rotation rate of pair i is divided by factor[i].
std::vector<float> rope_divisors(const ModelConfig& config) {
  ModelConfig unscaled = config;
  unscaled.rope_scaling = {};
  const std::vector<double> plain = unscaled.rope_inverse_frequencies(), scaled = config.rope_inverse_frequencies();
  std::vector<float> out(plain.size());
  for (size_t i = 0; i < plain.size(); ++i) out[i] = static_cast<float>(plain[i] / scaled[i]);
  return out;
}

}  // namespace

GgufWriter gguf_from_model(const Model& model, const PackageTokenizer& tokenizer, const GgufExportOptions& options,
                           GgufExportSummary* summary) {
  const ModelConfig& c = model.config;
  const ModelFamily& family = family_of(c);
  if (family.gguf_architecture == nullptr) fail("GGUF export: the {} family is not written as GGUF yet", family.name);
  const std::string arch = family.gguf_architecture;
  GgufWriter out;
  out.set("general.architecture", GgufValue::string(arch));
  out.set("general.name", GgufValue::string(options.name.empty() ? "fedcal export" : options.name));
  out.set("general.file_type", GgufValue::u32(file_type(options.weights)));
  if (options.weights == GgmlType::kQ8_0) out.set("general.quantization_version", GgufValue::u32(2));
  out.set(arch + ".vocab_size", GgufValue::u32(static_cast<uint32_t>(c.vocab_size)));
  out.set(arch + ".context_length", GgufValue::u32(static_cast<uint32_t>(c.max_seq_len)));
  out.set(arch + ".embedding_length", GgufValue::u32(static_cast<uint32_t>(c.dim)));
  out.set(arch + ".block_count", GgufValue::u32(static_cast<uint32_t>(c.n_layers)));
  out.set(arch + ".feed_forward_length", GgufValue::u32(static_cast<uint32_t>(c.hidden_dim)));
  out.set(arch + ".attention.head_count", GgufValue::u32(static_cast<uint32_t>(c.n_heads)));
  out.set(arch + ".attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(c.n_kv_heads)));
  out.set(arch + ".attention.layer_norm_rms_epsilon", GgufValue::f32(c.norm_eps));
  out.set(arch + ".rope.freq_base", GgufValue::f32(c.rope_theta));
  out.set(arch + ".rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(c.head_size())));
  if (c.head_dim != 0 || c.qk_norm) {
    out.set(arch + ".attention.key_length", GgufValue::u32(static_cast<uint32_t>(c.head_size())));
    out.set(arch + ".attention.value_length", GgufValue::u32(static_cast<uint32_t>(c.head_size())));
  }

  if (family.write_gguf != nullptr) family.write_gguf(c, out, arch);
  set_gguf_tokenizer(out, tokenizer, c.vocab_size);

  GgufExportSummary counts;
  if (c.rope_scaling.enabled()) {
    const std::vector<float> divisors = rope_divisors(c);
    out.add_tensor("rope_freqs.weight", {divisors.size()}, GgmlType::kF32, ggml_encode(GgmlType::kF32, divisors));
  }
  // A tied table's quantized form is the classifier's.
  const QuantizedLinear* table =
      options.quantized != nullptr ? int8_token_table(*options.quantized, c.shared_classifier) : nullptr;
  for (const ConstTensorRef& tensor : list_tensors(model)) {
    const bool matrix = tensor.rows > 1;
    const QuantizedLinear* quantized = tensor.name == "token_embedding" ? table : nullptr;
    if (options.quantized != nullptr && quantized == nullptr) {
      const auto found = options.quantized->find(tensor.name);
      if (found != options.quantized->end()) quantized = &found->second;
    }
    if (quantized != nullptr) {
      if (family.gguf_neox_rotary && rotary_tensor(tensor.name) != nullptr)
        fail("GGUF export: {} of a {} model: quantized rows in the NEOX layout are not written yet (export the FP32 model)",
             tensor.name, arch);
      GgmlType type = GgmlType::kQ8_0;
      std::vector<std::byte> blocks = quantized_blocks(tensor.name, quantized->weights, type);
      ++(type == GgmlType::kQ4_0 ? counts.package_q4_0 : counts.package_q8_0);
      out.add_tensor(gguf_tensor_name(tensor.name), {static_cast<uint64_t>(tensor.cols), static_cast<uint64_t>(tensor.rows)},
                     type, std::move(blocks));
      continue;
    }
    std::vector<float> changed;  // NEOX rows, or a (1 + w) norm's 1 + w
    if (const LayerTensor* rotary = rotary_tensor(tensor.name); family.gguf_neox_rotary && rotary != nullptr)
      changed = to_neox(*rotary, tensor, c);
    if (c.norm_plus_one && is_norm(tensor.name)) changed = c.norm_multipliers(changed.empty() ? *tensor.data : changed);
    const std::span<const float> values =
        changed.empty() ? std::span<const float>(*tensor.data) : std::span<const float>(changed);
    if (tensor.data->size() != static_cast<size_t>(tensor.rows) * static_cast<size_t>(tensor.cols))
      fail("GGUF export: {} has neither FP32 values nor a quantized form", tensor.name);
    GgmlType type = matrix ? options.weights : GgmlType::kF32;
    if (matrix && tensor.cols % ggml_block_values(type) != 0) type = GgmlType::kF16;
    if (matrix) ++(type == options.weights ? counts.matrices_in_requested_type : counts.matrices_in_f16);
    std::vector<uint64_t> shape{static_cast<uint64_t>(tensor.cols)};
    if (matrix) shape.push_back(static_cast<uint64_t>(tensor.rows));
    out.add_tensor(gguf_tensor_name(tensor.name), std::move(shape), type, ggml_encode(type, values));
  }
  if (summary) *summary = counts;
  return out;
}

GgufExportSummary write_gguf_model(const std::string& path, const Model& model, const PackageTokenizer& tokenizer,
                                   const GgufExportOptions& options) {
  GgufExportSummary summary;
  const std::vector<std::byte> bytes = gguf_from_model(model, tokenizer, options, &summary).serialize();
  write_file_atomically(path, bytes);
  summary.bytes = bytes.size();
  return summary;
}

namespace {

// The `<arch>.` keys this reader uses; any other key of the architecture is refused.
const std::set<std::string> kArchitectureKeys = {
    "vocab_size", "context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
    "attention.head_count_kv", "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.dimension_count",
    "attention.key_length", "attention.value_length",
};

int positive(const GgufFile& file, const std::string& key) {
  const int64_t value = file.integer(key);
  if (value <= 0 || value > (int64_t{1} << 24)) fail("{}: metadata '{}' = {} is out of range", file.source, key, value);
  return static_cast<int>(value);
}

ModelConfig config_of(const GgufFile& file, const ModelFamily& family) {
  const std::string arch = family.gguf_architecture;
  for (const auto& [key, value] : file.metadata) {
    if (!key.starts_with(arch + ".")) continue;
    const std::string rest = key.substr(arch.size() + 1);
    if (kArchitectureKeys.count(rest) ||
        std::find(family.gguf_keys.begin(), family.gguf_keys.end(), rest) != family.gguf_keys.end())
      continue;
    // Keys that describe a default: accepted only with that value.
    if (rest == "rope.scaling.type" && !value.array && value.type == GgufType::kString && value.strings[0] == "none") continue;
    if ((rest == "expert_count" || rest == "expert_used_count") && file.integer(key) == 0) continue;
    fail("{}: metadata '{}' changes the computation and is not supported by fedcal", file.source, key);
  }
  ModelConfig c;
  c.dim = positive(file, arch + ".embedding_length");
  c.hidden_dim = positive(file, arch + ".feed_forward_length");
  c.n_layers = positive(file, arch + ".block_count");
  c.n_heads = positive(file, arch + ".attention.head_count");
  c.n_kv_heads = file.find(arch + ".attention.head_count_kv") ? positive(file, arch + ".attention.head_count_kv") : c.n_heads;
  c.max_seq_len = positive(file, arch + ".context_length");
  c.norm_eps = static_cast<float>(file.number(arch + ".attention.layer_norm_rms_epsilon"));
  c.rope_theta = file.find(arch + ".rope.freq_base") ? static_cast<float>(file.number(arch + ".rope.freq_base")) : 10000.0f;
  c.set_features(family.features);
  if (file.find(arch + ".attention.key_length")) {
    const int key_length = positive(file, arch + ".attention.key_length");
    const int value_length = file.find(arch + ".attention.value_length") ? positive(file, arch + ".attention.value_length") : key_length;
    if (value_length != key_length) fail("{}: key_length {} != value_length {}: not supported", file.source, key_length, value_length);
    if (key_length != c.dim / c.n_heads || c.dim % c.n_heads != 0) c.head_dim = key_length;
  }
  if (file.find(arch + ".rope.dimension_count") && positive(file, arch + ".rope.dimension_count") != c.head_size()) {
    fail("{}: {}.rope.dimension_count = {} rotates part of a head of {} (partial rotary is not supported)", file.source, arch,
         file.integer(arch + ".rope.dimension_count"), c.head_size());
  }
  const GgufTensorInfo* embedding = file.find_tensor("token_embd.weight");
  if (!embedding || embedding->shape.size() != 2) fail("{}: tensor 'token_embd.weight' is missing or not a matrix", file.source);
  c.vocab_size = static_cast<int>(std::min<uint64_t>(embedding->shape[1], INT32_MAX));
  if (file.find(arch + ".vocab_size") && positive(file, arch + ".vocab_size") != c.vocab_size) {
    fail("{}: {}.vocab_size = {} but token_embd.weight has {} rows", file.source, arch, file.integer(arch + ".vocab_size"), c.vocab_size);
  }
  c.shared_classifier = file.find_tensor("output.weight") == nullptr;
  if (family.read_gguf != nullptr) family.read_gguf(file, arch, c);
  try {
    c.validate();
  } catch (Error& error) {
    error.prepend(file.source);
    throw;
  }
  return c;
}

}  // namespace

GgufModel model_from_gguf(const GgufFile& file) {
  const std::string arch = file.text("general.architecture");
  const ModelFamily* family = find_family_by_gguf_architecture(arch);
  if (family == nullptr)
    fail("{}: architecture '{}' is not supported (the families so far: {})", file.source, arch, model_family_names());
  GgufModel out;
  out.architecture = arch;
  const ModelConfig config = config_of(file, *family);
  // Every value takes at least half a byte in the file (Q4_K: 144 per 256, the fewest fedcal reads): a
  // config beyond that is a lie, refused before anything is allocated for it.
  if (static_cast<uint64_t>(config.parameter_count()) > 2 * static_cast<uint64_t>(file.data.size())) {
    fail("{}: the config needs {} weights, the file holds {} bytes of tensor data", file.source, config.parameter_count(), file.data.size());
  }
  out.model = allocate_model(config);
  const ModelConfig& c = out.model.config;
  std::set<std::string> used;
  for (const TensorRef& tensor : list_tensors(out.model)) {
    const std::string name = gguf_tensor_name(tensor.name);
    const GgufTensorInfo* info = file.find_tensor(name);
    if (!info) fail("{}: tensor '{}' is missing", file.source, name);
    std::vector<uint64_t> expected{static_cast<uint64_t>(tensor.cols)};
    if (tensor.rows > 1) expected.push_back(static_cast<uint64_t>(tensor.rows));
    if (info->shape != expected) {
      fail("{}: tensor '{}' has shape [{}], the config needs [{}]", file.source, name, fmt::join(info->shape, ", "), fmt::join(expected, ", "));
    }
    ggml_decode(info->type, file.tensor_bytes(*info), *tensor.data);
    if (const LayerTensor* rotary = rotary_tensor(tensor.name); family->gguf_neox_rotary && rotary != nullptr) {
      const auto [heads, cols] = rotary->rotary_shape(c);
      *tensor.data = hf_to_interleaved_rotary(*tensor.data, heads, c.head_size(), cols);
    }
    if (c.norm_plus_one && is_norm(tensor.name)) *tensor.data = c.norm_weights(*tensor.data);
    used.insert(name);
  }
  for (const GgufTensorInfo& tensor : file.tensors) {
    if (used.count(tensor.name)) continue;
    if (tensor.name == "rope_freqs.weight") {
      fail("{}: tensor 'rope_freqs.weight' (RoPE frequency factors, e.g. Llama 3 scaling) is not supported in GGUF import", file.source);
    }
    fail("{}: tensor '{}' is not part of a {} model fedcal computes", file.source, tensor.name, arch);
  }
  out.tokenizer = gguf_tokenizer(file, c.vocab_size);
  return out;
}

GgufModel read_gguf_model(const std::string& path) {
  MappedFile mapped(path);
  return model_from_gguf(parse_gguf(mapped.bytes(), path));
}

}  // namespace fedcal

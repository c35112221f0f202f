// 5-bit weights (quant/int5_format.h): the stored layout (Q5_0's block without its scale), the rounding
// on 32 levels, packages that hold them (or are damaged), and the GGUF export as Q5_0.
#include "models/quant/int5_format.h"

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "common/error.h"
#include "models/engine/transformer.h"
#include "models/format/float16.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/format/synth.h"
#include "models/quant/quantize.h"
#include "protocol/model_package.capnp.h"
#include "tests/models/format/package_edit.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

double squared_error(std::span<const float> w, float d, std::span<const int8_t> levels) {
  double error = 0;
  for (size_t i = 0; i < w.size(); ++i) error += std::pow(w[i] - static_cast<double>(d) * levels[i], 2);
  return error;
}

TEST_CASE(
    "5-bit codes are stored as llama.cpp Q5_0 orders them: 4 bytes of fifth bits, then the low nibbles as Q4_0, code = level + "
    "16") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> level(-16, 15);
  std::vector<int8_t> levels(3 * 64);
  for (int8_t& v : levels) v = static_cast<int8_t>(level(rng));
  const std::vector<uint8_t> codes = pack_int5_codes(levels, 3, 64, Int4Grid::kUniform);
  REQUIRE(codes.size() == 6 * 20);
  // Read back as the published Q5_0 block describes it (bit m of the little-endian word is value m's
  // fifth bit; byte m of the nibbles holds value m low and m + 16 high), independently of the unpacker.
  for (size_t group = 0; group < 6; ++group) {
    const uint8_t* block = codes.data() + group * 20;
    uint32_t high = 0;
    for (int byte = 0; byte < 4; ++byte) high |= uint32_t{block[byte]} << (8 * byte);
    for (size_t m = 0; m < 32; ++m) {
      const uint8_t nibbles = block[4 + m % 16];
      const int low = m < 16 ? nibbles & 0x0f : nibbles >> 4;
      const int code = low | static_cast<int>((high >> m & 1u) << 4);
      CHECK(code - 16 == levels[group * 32 + m]);
    }
  }
  CHECK(unpack_int5_codes(codes, 3, 64, Int4Grid::kUniform) == levels);
  // The non-uniform grid: 32 distinct ascending levels with 0 and -127 among them, round trip exact.
  const std::array<int8_t, 32>& nl = int5_levels(Int4Grid::kNonUniform);
  CHECK(std::is_sorted(nl.begin(), nl.end()));
  CHECK(std::adjacent_find(nl.begin(), nl.end()) == nl.end());
  CHECK(nl.front() == -127);
  CHECK(int5_code(Int4Grid::kNonUniform, 0) >= 0);
  std::vector<int8_t> nl_levels(2 * 32);
  for (size_t i = 0; i < nl_levels.size(); ++i) nl_levels[i] = nl[(i * 7) % 32];
  CHECK(unpack_int5_codes(pack_int5_codes(nl_levels, 2, 32, Int4Grid::kNonUniform), 2, 32, Int4Grid::kNonUniform) == nl_levels);
  // Refused: a level not on the grid, codes that do not fit the shape.
  levels[70] = 16;
  CHECK_THROWS_WITH(pack_int5_codes(levels, 3, 64, Int4Grid::kUniform),
                    doctest::Contains("5-bit weight 16 at (1, 6) is not a level of the uniform grid"));
  CHECK_THROWS_WITH(unpack_int5_codes(std::span(codes).first(119), 3, 64, Int4Grid::kUniform),
                    doctest::Contains("119 bytes of codes, want 120"));
  CHECK_THROWS_WITH(unpack_int5_codes(codes, 3, 40, Int4Grid::kUniform), doctest::Contains("a multiple of 32 columns"));
}

TEST_CASE("5-bit rounding: never loses to Q5_0's rounding, the non-uniform grid has less error, and both less than 4 bits") {
  std::mt19937 rng(13);
  std::normal_distribution<float> weight(0.0f, 0.05f);
  double q5_0_total = 0, uniform_total = 0, non_uniform_total = 0, four_bit_total = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<float> w(32);
    for (float& v : w) v = weight(rng);
    if (trial % 7 == 0) w[static_cast<size_t>(trial % 32)] *= 6;
    // Q5_0's rounding from its published description: d = the signed extreme / -16, q = round(w / d)
    // clamped to [-16, 15].
    float extreme = 0;
    for (const float v : w) extreme = std::fabs(v) > std::fabs(extreme) ? v : extreme;
    const float d = f16_to_f32(f32_to_f16(extreme / -16.0f));
    std::vector<int8_t> q;
    for (const float v : w) q.push_back(static_cast<int8_t>(std::clamp(std::nearbyint(v / d), -16.0f, 15.0f)));
    const double q5_0 = squared_error(w, d, q);
    const QuantizedMatrix uniform = quantize_int5_weights(w, 1, 32, Int4Grid::kUniform);
    const double uniform_error = squared_error(w, f16_to_f32(uniform.group_scales[0]), uniform.values);
    CHECK(uniform_error <= q5_0 * (1 + 1e-9));
    for (const int8_t v : uniform.values) CHECK((v >= -16 && v <= 15));
    const QuantizedMatrix non_uniform = quantize_int5_weights(w, 1, 32, Int4Grid::kNonUniform);
    for (const int8_t v : non_uniform.values) CHECK(int5_code(Int4Grid::kNonUniform, v) >= 0);
    const QuantizedMatrix four = quantize_int4_weights(w, 1, 32, Int4Grid::kNonUniform);
    q5_0_total += q5_0;
    uniform_total += uniform_error;
    non_uniform_total += squared_error(w, f16_to_f32(non_uniform.group_scales[0]), non_uniform.values);
    four_bit_total += squared_error(w, f16_to_f32(four.group_scales[0]), weight_values(four));
  }
  MESSAGE("5-bit squared error vs Q5_0's rounding: " << uniform_total / q5_0_total << " (uniform), "
                                                     << non_uniform_total / q5_0_total
                                                     << " (non-uniform); 4-bit non-uniform: " << four_bit_total / q5_0_total);
  CHECK(uniform_total < 0.97 * q5_0_total);
  CHECK(non_uniform_total < 0.9 * uniform_total);
  CHECK(four_bit_total > 3 * non_uniform_total);
}

TEST_CASE(
    "Packages hold 5-bit layers as qgnl5 or qgint5 (20 bytes per 32 weights), read back exactly and run as in memory, damaged "
    "ones "
    "refused naming the tensor") {
  testing::ScratchDir dir;
  const Model model = synthesize_model(find_synth_preset("tiny").config, 4);  // dim 64, hidden 176
  QuantizeOptions options;
  options.weight_bits = 5;
  std::string path;
  for (const Int4Grid grid : {Int4Grid::kUniform, Int4Grid::kNonUniform}) {
    options.four_bit_grid = grid;
    path = dir.path(std::string("five-") + int4_grid_name(grid) + ".fcpkg");
    const QuantizedLinears layers = quantize_model_weights(model, options);
    // w2's input (176 channels) has no whole groups: fine-grained INT8, named as for 4 bits.
    CHECK(four_bit_skipped(model.config, options) == std::vector<std::string>{"layers.0.w2", "layers.1.w2"});
    CHECK(layers.at("layers.0.w2").weights.bits == 8);
    write_model_package(path, model, layers, {"llama2c", "tokenizer bytes"}, {"5-bit", false, false, 0, 0, "", {}, "m"}, {});
    const ModelPackage package = read_model_package(path, nullptr);
    for (const auto& entry : layers) {
      const std::string& name = entry.first;  // (a named variable: clang 14 cannot capture structured bindings)
      const QuantizedLinear& layer = entry.second;
      CAPTURE(name);
      const QuantizedMatrix& read = package.int8.at(name).weights;
      CHECK(read.bits == layer.weights.bits);
      CHECK(read.grid == layer.weights.grid);
      CHECK(read.values == layer.weights.values);
      CHECK(read.group_scales == layer.weights.group_scales);
    }
    CHECK(package.int8.at("layers.1.wq").weights.bits == 5);
    // The same tokens' logits from the package as from the layers in memory.
    const LoadedModel loaded = load_model(path);
    XnnRuntime runtime(1);
    Transformer from_package(loaded.model, runtime, {}, &loaded.int8);
    Transformer in_memory(model, runtime, {}, &layers);
    const std::vector<int> tokens = {1, 5, 9, 3};
    const std::span<const float> a = from_package.forward(tokens, 0, true);
    const std::vector<float> expected(a.begin(), a.end());
    const std::span<const float> b = in_memory.forward(tokens, 0, true);
    CHECK(std::vector<float>(b.begin(), b.end()) == expected);
  }
  // 5 bits sit between 4 bits and fine-grained INT8 in bytes.
  QuantizeOptions four = options, grouped;
  four.weight_bits = 4;
  grouped.per_group = true;
  const std::string four_path = dir.path("four.fcpkg"), fine_path = dir.path("fine.fcpkg");
  write_model_package(four_path, model, quantize_model_weights(model, four), {"llama2c", "tokenizer bytes"},
                      {"4-bit", false, false, 0, 0, "", {}, "m"}, {});
  write_model_package(fine_path, model, quantize_model_weights(model, grouped), {"llama2c", "tokenizer bytes"},
                      {"groups", false, false, 0, 0, "", {}, "m"}, {});
  const auto bytes = [](const std::string& p) { return std::filesystem::file_size(p); };
  MESSAGE("package bytes, 4 / 5 bits / fine-grained INT8: " << bytes(four_path) << " / " << bytes(path) << " / "
                                                            << bytes(fine_path));
  CHECK(bytes(four_path) < bytes(path));
  CHECK(bytes(path) < bytes(fine_path));

  auto with_tensor = [&](const char* name, const std::function<void(schema::Tensor::Builder)>& change) {
    return testing::read_error_with_tensor(path, dir.path(std::string("damaged-") + name + ".fcpkg"), name, change);
  };
  CHECK(with_tensor("layers.1.wq", [](auto) {}) == "no error");
  const std::string misfit =
      with_tensor("layers.0.w2", [](schema::Tensor::Builder tensor) { tensor.setType(schema::TensorType::QGNL5); });
  CHECK(misfit.find("tensor 'layers.0.w2'") != std::string::npos);
  CHECK(misfit.find("5-bit blocks of 32 input channels do not fit its 176 columns") != std::string::npos);
  // A 4-bit type on 5-bit codes: the size says it.
  const std::string size =
      with_tensor("layers.1.wq", [](schema::Tensor::Builder tensor) { tensor.setType(schema::TensorType::QGNL4); });
  CHECK(size.find("tensor 'layers.1.wq'") != std::string::npos);
  CHECK(size.find("of 4 bits") != std::string::npos);
  const std::string float_scales = with_tensor("layers.1.wk", [](schema::Tensor::Builder tensor) {
    auto scales = tensor.initWeightScales(tensor.getGroupScales().size());
    for (unsigned i = 0; i < scales.size(); ++i) scales.set(i, 0.1f);
    tensor.disownGroupScales();
  });
  CHECK(float_scales.find("tensor 'layers.1.wk'") != std::string::npos);
  CHECK(float_scales.find("5-bit weights keep binary16 group scales") != std::string::npos);
  const std::string zero = with_tensor("layers.1.wv", [](schema::Tensor::Builder tensor) { tensor.getGroupScales().set(1, 0); });
  CHECK(zero.find("tensor 'layers.1.wv'") != std::string::npos);
  CHECK(zero.find("weight scale 0 is not nonzero") != std::string::npos);

  // Named for 5 bits, a layer without whole groups is refused by name.
  QuantizeOptions named;
  named.five_bit = {"layers.0.w2"};
  CHECK_THROWS_WITH(quantize_model_weights(model, named),
                    doctest::Contains("layers.0.w2 has 176 input channels, not a multiple"));
}

}  // namespace
}  // namespace fedcal

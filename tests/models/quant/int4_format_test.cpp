// 4-bit weights (quant/int4_format.h): the stored layout, the importance-weighted rounding, the layer
// that runs them, and packages that hold them (or are damaged).
#include "models/quant/int4_format.h"

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <random>

#include "common/error.h"
#include "models/format/float16.h"
#include "models/format/model_package.h"
#include "models/format/synth.h"
#include "models/quant/calibration.h"
#include "models/quant/linear_dynamic_int8.h"
#include "models/quant/quantize.h"
#include "protocol/model_package.capnp.h"
#include "tests/models/format/package_edit.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

// The weighted squared error of levels under scale d.
double weighted_error(std::span<const float> w, std::span<const double> a, float d, std::span<const int8_t> levels) {
  double error = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double diff = w[i] - static_cast<double>(d) * levels[i];
    error += (a.empty() ? 1.0 : a[i]) * diff * diff;
  }
  return error;
}

// llama.cpp Q4_0's rounding, from its published description: d = the signed extreme / -8 (binary16),
// q = round(w / d) clamped to [-8, 7]. The baseline the search must never lose to.
double q4_0_error(std::span<const float> w, std::span<const double> a) {
  float extreme = 0;
  for (const float v : w) extreme = std::fabs(v) > std::fabs(extreme) ? v : extreme;
  const float d = f16_to_f32(f32_to_f16(extreme / -8.0f));
  std::vector<int8_t> levels;
  for (const float v : w) levels.push_back(static_cast<int8_t>(d == 0 ? 0 : std::clamp(std::nearbyint(v / d), -8.0f, 7.0f)));
  return weighted_error(w, a, d, levels);
}

TEST_CASE(
    "4-bit codes are stored as llama.cpp Q4_0 orders them: byte m holds channel m (low nibble) and m + 16, code = level + 8") {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> level(-8, 7);
  std::vector<int8_t> levels(2 * 64);
  for (int8_t& v : levels) v = static_cast<int8_t>(level(rng));
  const std::vector<uint8_t> codes = pack_int4_codes(levels, 2, 64, Int4Grid::kUniform);
  REQUIRE(codes.size() == 64);
  for (int group = 0; group < 4; ++group) {
    for (int b = 0; b < 16; ++b) {
      const uint8_t byte = codes[static_cast<size_t>(group * 16 + b)];
      CHECK((byte & 0x0f) == levels[static_cast<size_t>(group * 32 + b)] + 8);
      CHECK((byte >> 4) == levels[static_cast<size_t>(group * 32 + b + 16)] + 8);
    }
  }
  CHECK(unpack_int4_codes(codes, 2, 64, Int4Grid::kUniform) == levels);
  CHECK_THROWS_WITH(unpack_int4_codes(std::span(codes).first(63), 2, 64, Int4Grid::kUniform),
                    doctest::Contains("63 bytes of codes, want 64"));
  CHECK_THROWS_WITH(unpack_int4_codes(codes, 4, 33, Int4Grid::kUniform), doctest::Contains("a multiple of 32 columns"));

  // In memory the matrix keeps the codes as stored; its values are read a row at a time.
  QuantizedMatrix m;
  m.rows = 2;
  m.cols = 64;
  m.bits = 4;
  m.granularity = WeightGranularity::kPerGroup;
  m.codes = codes;
  for (const float scale : {1.0f, -0.5f, 0.25f, 2.0f}) m.group_scales.push_back(f32_to_f16(scale));
  m.check("m");
  CHECK(weight_values(m) == levels);
  std::vector<int8_t> row(64);
  weight_row_values(m, 1, row.data());
  CHECK(std::equal(row.begin(), row.end(), levels.begin() + 64));

  // A level outside [-8, 7]; codes that do not fit the shape; values beside codes: refused.
  levels[5] = 8;
  CHECK_THROWS_WITH(pack_int4_codes(levels, 2, 64, Int4Grid::kUniform),
                    doctest::Contains("4-bit weight 8 at (0, 5) is not a level of the uniform grid"));
  QuantizedMatrix short_codes = m;
  short_codes.codes.pop_back();
  CHECK_THROWS_WITH(short_codes.check("layers.0.wq"),
                    doctest::Contains("layers.0.wq: 126 quantized weights and 4 scales do not fit (2, 64) per group"));
  QuantizedMatrix both = m;
  both.values.assign(128, 0);
  CHECK_THROWS_WITH(both.check("layers.0.wq"), doctest::Contains("layers.0.wq: 128 quantized weights"));
}

TEST_CASE(
    "4-bit rounding: each group's binary16 scale never loses to Q4_0's rounding, and importance moves the error off the channels "
    "that matter") {
  std::mt19937 rng(11);
  std::normal_distribution<float> weight(0.0f, 0.05f);
  std::uniform_real_distribution<double> spread(0.0, 1.0);
  double plain_total = 0, q4_0_total = 0, weighted_with = 0, weighted_without = 0, non_uniform_total = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<float> w(32);
    for (float& v : w) v = weight(rng);
    if (trial % 7 == 0) w[static_cast<size_t>(trial % 32)] *= 6;  // an outlier
    // Importance over a few orders of magnitude, as activations' mean squares are.
    std::vector<double> a(32);
    for (double& v : a) v = std::pow(10.0, 3 * spread(rng));
    const Int4Group plain = quantize_int4_group(w, {}, Int4Grid::kUniform);
    CHECK(f16_to_f32(f32_to_f16(plain.scale)) == plain.scale);
    for (int i = 0; i < 32; ++i) CHECK((plain.levels[static_cast<size_t>(i)] >= -8 && plain.levels[static_cast<size_t>(i)] <= 7));
    const double plain_error = weighted_error(w, {}, plain.scale, plain.levels);
    CHECK(plain_error <= q4_0_error(w, {}) * (1 + 1e-9));
    plain_total += plain_error;
    const Int4Group non_uniform = quantize_int4_group(w, {}, Int4Grid::kNonUniform);
    for (const int8_t level : non_uniform.levels) CHECK(int4_code(Int4Grid::kNonUniform, level) >= 0);
    non_uniform_total += weighted_error(w, {}, non_uniform.scale, non_uniform.levels);
    q4_0_total += q4_0_error(w, {});
    const Int4Group weighted = quantize_int4_group(w, a, Int4Grid::kUniform);
    CHECK(weighted_error(w, a, weighted.scale, weighted.levels) <= q4_0_error(w, a) * (1 + 1e-9));
    weighted_with += weighted_error(w, a, weighted.scale, weighted.levels);
    weighted_without += weighted_error(w, a, plain.scale, plain.levels);
  }
  MESSAGE("squared error vs Q4_0's rounding: "
          << plain_total / q4_0_total << " (uniform grid), " << non_uniform_total / q4_0_total
          << " (non-uniform); importance-weighted error with vs without importance: " << weighted_with / weighted_without);
  CHECK(plain_total < 0.95 * q4_0_total);
  CHECK(non_uniform_total < 0.9 * plain_total);
  CHECK(weighted_with < 0.9 * weighted_without);
  // All zeros: levels 0 under the smallest scale; not finite: refused.
  const std::vector<float> zeros(32, 0.0f);
  const Int4Group zero = quantize_int4_group(zeros, {}, Int4Grid::kUniform);
  CHECK(zero.scale > 0);
  for (const int8_t level : zero.levels) CHECK(level == 0);
  std::vector<float> bad(32, 0.1f);
  bad[3] = std::nanf("");
  CHECK_THROWS_WITH(quantize_int4_group(bad, {}, Int4Grid::kUniform), doctest::Contains("not finite"));
  CHECK_THROWS_WITH(quantize_int4_weights(std::vector<float>(48, 0.1f), 1, 48, Int4Grid::kUniform),
                    doctest::Contains("a multiple of 32 columns"));
}

TEST_CASE(
    "4-bit absmax rounding (the rule QAT trains with): the signed extreme on the lowest level, a binary16 scale, every weight "
    "on its nearest level, and on the uniform grid Q4_0's scale") {
  std::mt19937 rng(5);
  std::normal_distribution<float> weight(0.0f, 0.05f);
  int differing_from_q4_0 = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<float> w(32);
    for (float& v : w) v = weight(rng);
    if (trial % 5 == 0) w[static_cast<size_t>(trial % 32)] *= -8;  // an outlier of either sign
    float extreme = 0;
    for (const float v : w) extreme = std::fabs(v) > std::fabs(extreme) ? v : extreme;
    for (const Int4Grid grid : {Int4Grid::kUniform, Int4Grid::kNonUniform}) {
      const std::array<int8_t, 16>& levels = int4_levels(grid);
      const Int4Group group = quantize_int4_group_absmax(w, grid);
      CHECK(group.scale == f16_to_f32(f32_to_f16(extreme / static_cast<float>(levels[0]))));
      for (size_t i = 0; i < 32; ++i) {
        const double y = static_cast<double>(w[i]) / group.scale;
        if (w[i] == extreme) CHECK(group.levels[i] == levels[0]);
        // Nearest: no level of the grid is closer to w / d (an FP32 rounding's worth of slack at a midpoint).
        for (const int8_t other : levels) CHECK(std::fabs(y - group.levels[i]) <= std::fabs(y - other) + 1e-4);
      }
      if (grid == Int4Grid::kUniform) {
        for (size_t i = 0; i < 32; ++i)
          differing_from_q4_0 +=
              group.levels[i] != static_cast<int8_t>(std::clamp(std::nearbyint(w[i] / group.scale), -8.0f, 7.0f));
      }
    }
  }
  CHECK(differing_from_q4_0 == 0);
  // The matrix: every group by the same rule (no importance taken).
  std::vector<float> matrix(4 * 64);
  for (float& v : matrix) v = weight(rng);
  const QuantizedMatrix m = quantize_int4_weights(matrix, 4, 64, Int4Grid::kNonUniform, {}, Int4Rounding::kAbsmax);
  const std::vector<int8_t> values = weight_values(m);
  for (size_t g = 0; g < 8; ++g) {
    const Int4Group group = quantize_int4_group_absmax(std::span(matrix).subspan(g * 32, 32), Int4Grid::kNonUniform);
    CHECK(f16_to_f32(m.group_scales[g]) == group.scale);
    CHECK(std::equal(group.levels.begin(), group.levels.end(), values.begin() + static_cast<std::ptrdiff_t>(g * 32)));
  }
  // All zeros: levels 0 under the smallest binary16 scale.
  const Int4Group zero = quantize_int4_group_absmax(std::vector<float>(32, 0.0f), Int4Grid::kNonUniform);
  CHECK(zero.scale == 0x1p-24f);
  for (const int8_t level : zero.levels) CHECK(level == 0);
}

TEST_CASE("A 4-bit layer runs as the reference of its levels and scales computes (activations per block at run time)") {
  std::mt19937 rng(5);
  std::normal_distribution<float> value(0.0f, 1.0f);
  const int rows = 40, cols = 96;
  std::vector<float> weights(static_cast<size_t>(rows * cols)), input(3 * static_cast<size_t>(cols));
  for (float& v : weights) v = value(rng) * 0.1f;
  for (float& v : input) v = value(rng);
  const QuantizedMatrix matrix = quantize_int4_weights(weights, rows, cols, Int4Grid::kNonUniform);
  const std::vector<float> expected = reference_linear_dynamic_int8(matrix, input, 3, ActivationScales::kPerBlock);
  XnnRuntime runtime(1);
  for (const Int8Kernel kernel : int8_kernels_supported()) {
    CAPTURE(std::string(int8_kernel_name(kernel)));
    LinearDynamicInt8 layer(matrix, "four", {}, ActivationScales::kPerBlock, kernel);
    CHECK(layer.weight_bytes() == 48u * cols / 2 + 48u * (cols / 32) * 2);  // rows padded to 16
    std::vector<float> out(3 * static_cast<size_t>(rows));
    layer.run(runtime, 3, input.data(), out.data());
    for (size_t i = 0; i < out.size(); ++i) CHECK(out[i] == doctest::Approx(expected[i]).epsilon(1e-4).scale(1e-3));
  }
}

TEST_CASE(
    "Packages hold 4-bit layers as qgnl4 or qgint4 (half a byte per weight) and read them back exactly, damaged ones are "
    "refused naming the tensor") {
  testing::ScratchDir dir;
  const Model model = synthesize_model(find_synth_preset("tiny").config, 4);  // dim 64, hidden 176
  QuantizeOptions options;
  options.weight_bits = 4;
  // Both grids round-trip, each as its own tensor type.
  for (const Int4Grid grid : {Int4Grid::kUniform, Int4Grid::kNonUniform}) {
    options.four_bit_grid = grid;
    const std::string path = dir.path(std::string("grid-") + int4_grid_name(grid) + ".fcpkg");
    const QuantizedLinears layers = quantize_model_weights(model, options);
    write_model_package(path, model, layers, {"llama2c", "tokenizer bytes"}, {"4-bit", false, false, 0, 0, "", {}, "m"}, {});
    const ModelPackage package = read_model_package(path, nullptr);
    CHECK(package.int8.at("layers.0.wq").weights.grid == grid);
    CHECK(!package.int8.at("layers.0.wq").weights.codes.empty());
    CHECK(package.int8.at("layers.0.wq").weights.codes == layers.at("layers.0.wq").weights.codes);
  }
  const QuantizedLinears layers = quantize_model_weights(model, options);
  // w2's input (176 channels) has no whole groups: it stays fine-grained INT8, and is named.
  CHECK(four_bit_skipped(model.config, options) == std::vector<std::string>{"layers.0.w2", "layers.1.w2"});
  CHECK(layers.at("layers.0.w2").weights.bits == 8);
  CHECK(layers.at("layers.0.w2").weights.per_group());
  CHECK(layers.at("layers.1.wq").weights.bits == 4);
  CHECK(layers.at("classifier").weights.bits == 4);
  // Named explicitly, such a layer is refused by name.
  QuantizeOptions named;
  named.four_bit = {"layers.0.w2"};
  CHECK_THROWS_WITH(quantize_model_weights(model, named),
                    doctest::Contains("layers.0.w2 has 176 input channels, not a multiple"));

  const std::string path = dir.path("four.fcpkg");
  write_model_package(path, model, layers, {"llama2c", "tokenizer bytes"}, {"4-bit", false, false, 0, 0, "", {}, "m"}, {});
  const ModelPackage package = read_model_package(path, nullptr);
  for (const auto& entry : layers) {
    const std::string& name = entry.first;
    CAPTURE(name);
    CHECK(package.int8.at(name).weights.bits == entry.second.weights.bits);
    CHECK(package.int8.at(name).weights.values == entry.second.weights.values);
    CHECK(package.int8.at(name).weights.codes == entry.second.weights.codes);
    CHECK(package.int8.at(name).weights.group_scales == entry.second.weights.group_scales);
  }
  const std::string fine = dir.path("fine.fcpkg");
  QuantizeOptions grouped;
  grouped.per_group = true;
  write_model_package(fine, model, quantize_model_weights(model, grouped), {"llama2c", "tokenizer bytes"},
                      {"groups", false, false, 0, 0, "", {}, "m"}, {});
  MESSAGE("package bytes, 4-bit vs fine-grained INT8: " << std::filesystem::file_size(path) << " vs "
                                                        << std::filesystem::file_size(fine));
  CHECK(std::filesystem::file_size(path) < std::filesystem::file_size(fine) * 0.7);

  auto with_tensor = [&](const char* name, const std::function<void(schema::Tensor::Builder)>& change) {
    return testing::read_error_with_tensor(path, dir.path(std::string("damaged-") + name + ".fcpkg"), name, change);
  };
  CHECK(with_tensor("layers.1.wq", [](auto) {}) == "no error");  // the rewrite alone damages nothing
  // Float32 scales instead of binary16 ones.
  const std::string float_scales = with_tensor("layers.1.wq", [](schema::Tensor::Builder tensor) {
    const unsigned n = tensor.getGroupScales().size();
    auto scales = tensor.initWeightScales(n);
    for (unsigned i = 0; i < n; ++i) scales.set(i, 0.1f);
    tensor.disownGroupScales();
  });
  CHECK(float_scales.find("tensor 'layers.1.wq'") != std::string::npos);
  CHECK(float_scales.find("binary16 group scales") != std::string::npos);
  // Blocks that do not fit: w2 (176 columns) claimed as 4-bit.
  const std::string misfit =
      with_tensor("layers.0.w2", [](schema::Tensor::Builder tensor) { tensor.setType(schema::TensorType::QGINT4); });
  CHECK(misfit.find("tensor 'layers.0.w2'") != std::string::npos);
  CHECK(misfit.find("4-bit blocks of 32 input channels do not fit its 176 columns") != std::string::npos);
  // A scale too few, a zero scale, and an unknown type.
  const std::string short_scales = with_tensor("layers.1.wk", [](schema::Tensor::Builder tensor) {
    auto old = tensor.getGroupScales();
    std::vector<uint16_t> kept;
    for (unsigned i = 0; i + 1 < old.size(); ++i) kept.push_back(old[i]);
    auto scales = tensor.initGroupScales(static_cast<unsigned>(kept.size()));
    for (unsigned i = 0; i < kept.size(); ++i) scales.set(i, kept[i]);
  });
  CHECK(short_scales.find("tensor 'layers.1.wk'") != std::string::npos);
  CHECK(short_scales.find("do not fit") != std::string::npos);
  const std::string zero = with_tensor("layers.1.wv", [](schema::Tensor::Builder tensor) { tensor.getGroupScales().set(2, 0); });
  CHECK(zero.find("tensor 'layers.1.wv'") != std::string::npos);
  CHECK(zero.find("weight scale 0 is not nonzero") != std::string::npos);
  const std::string unknown =
      with_tensor("layers.0.w2", [](schema::Tensor::Builder tensor) { tensor.setType(static_cast<schema::TensorType>(9)); });
  CHECK(unknown.find("tensor 'layers.0.w2'") != std::string::npos);
  CHECK(unknown.find("unknown tensor type 9") != std::string::npos);
}

}  // namespace
}  // namespace fedcal

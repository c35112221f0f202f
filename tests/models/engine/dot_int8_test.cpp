#include "models/engine/dot_int8.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "models/format/float16.h"

namespace fedcal {
namespace {

// A random (rows, cols) case with the extremes every kernel must get right: x = -128 (|x| = 128 in
// the sign trick, the largest correction in the offset one) against w = +-127, and zeros.
struct Case {
  int rows, cols, blocks;
  std::vector<int8_t> x, w;  // x padded to whole blocks with zeros
  std::vector<int32_t> block_sums;
  std::vector<float> x_scales, w_scales;  // (blocks), (rows, blocks)
};

Case random_case(int rows, int cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(-128, 127), weight(-127, 127);
  std::uniform_real_distribution<float> scale(0.01f, 4.0f);
  Case c{rows, cols, (cols + kActivationBlock - 1) / kActivationBlock, {}, {}, {}, {}, {}};
  c.x.assign(static_cast<size_t>(c.blocks) * kActivationBlock, 0);
  c.w.resize(static_cast<size_t>(rows) * cols);
  for (int i = 0; i < cols; ++i) c.x[static_cast<size_t>(i)] = static_cast<int8_t>(byte(rng));
  for (int8_t& v : c.w) v = static_cast<int8_t>(weight(rng));
  c.x[0] = -128;
  c.w[0] = 127;
  if (cols > 2) c.x[2] = 0;
  if (rows > 1) c.w[static_cast<size_t>(cols)] = -127;
  c.block_sums.resize(static_cast<size_t>(c.blocks));
  int8_block_sums(c.x.data(), c.blocks, c.block_sums.data());
  c.x_scales.resize(static_cast<size_t>(c.blocks));
  for (float& v : c.x_scales) v = scale(rng);
  c.w_scales.resize(static_cast<size_t>(rows) * c.blocks);
  for (float& v : c.w_scales) v = f16_to_f32(f32_to_f16(scale(rng)));  // group scales are binary16 values
  return c;
}

TEST_CASE("int8_kernels_supported: the portable kernel always, last") {
  const std::vector<Int8Kernel> kernels = int8_kernels_supported();
  REQUIRE(!kernels.empty());
  CHECK(kernels.back() == Int8Kernel::kPortable);
  for (const Int8Kernel kernel : kernels) MESSAGE("INT8 kernel on this CPU: " << std::string(int8_kernel_name(kernel)));
  // Where the CPU is known (the aarch64 build under qemu as a given core): the kernel it must pick.
  if (const char* expected = std::getenv("FEDCAL_EXPECT_INT8_KERNEL")) CHECK(int8_kernel_name(kernels.front()) == expected);
}

TEST_CASE("dot_int8_packed equals exact integer sums on every kernel this CPU runs: any row count and length, the extremes") {
  for (const Int8Kernel kernel : int8_kernels_supported()) {
    for (const int cols : {1, 4, 31, 32, 33, 64, 95, 192, 1000}) {
      for (const int rows : {1, 3, 15, 16, 17, 33}) {
        CAPTURE(std::string(int8_kernel_name(kernel)));
        CAPTURE(cols);
        CAPTURE(rows);
        const Case c = random_case(rows, cols, static_cast<unsigned>(rows * 1000 + cols));
        const PackedInt8 packed = pack_int8(c.w.data(), rows, cols, nullptr, kernel);
        CHECK(packed.kernel == kernel);
        std::vector<int32_t> out(static_cast<size_t>(packed.groups()) * kPackedRows, -1);
        // All groups at once, then each group alone from its own offset.
        dot_int8_packed(packed, c.x.data(), c.block_sums.data(), 0, packed.groups(), out.data());
        std::vector<int32_t> one(kPackedRows);
        for (int g = 0; g < packed.groups(); ++g) {
          dot_int8_packed(packed, c.x.data(), c.block_sums.data(), g, 1, one.data());
          for (int i = 0; i < kPackedRows; ++i) REQUIRE(one[static_cast<size_t>(i)] == out[static_cast<size_t>(g * kPackedRows + i)]);
        }
        for (int r = 0; r < packed.groups() * kPackedRows; ++r) {
          int64_t expected = 0;
          for (int i = 0; r < rows && i < cols; ++i) expected += int64_t{c.x[static_cast<size_t>(i)]} * c.w[static_cast<size_t>(r) * cols + i];
          CHECK(out[static_cast<size_t>(r)] == expected);  // padded rows: 0
        }
      }
    }
    // All -128 against all 127 or -127 over 2^17 columns: the largest sums a row can have, whose
    // unsigned-offset partial sums leave INT32 on the way.
    const int cols = 1 << 17;
    std::vector<int8_t> x(cols, -128), w(2 * static_cast<size_t>(cols), 127);
    std::fill(w.begin() + cols, w.end(), -127);
    std::vector<int32_t> sums(static_cast<size_t>(cols) / kActivationBlock), out(kPackedRows);
    int8_block_sums(x.data(), static_cast<int>(sums.size()), sums.data());
    const PackedInt8 packed = pack_int8(w.data(), 2, cols, nullptr, kernel);
    dot_int8_packed(packed, x.data(), sums.data(), 0, 1, out.data());
    CHECK(out[0] == -128 * 127 * cols);
    CHECK(out[1] == 128 * 127 * cols);
  }
}

TEST_CASE("dot_int8_packed_blocks equals the blocks' exact integer sums times their scales on every kernel: with and without weight groups") {
  for (const Int8Kernel kernel : int8_kernels_supported()) {
    for (const bool weight_groups : {false, true}) {
      for (const int cols : {1, 31, 32, 33, 64, 95, 192, 512, 1000}) {
        for (const int rows : {1, 5, 16, 17, 40}) {
          CAPTURE(std::string(int8_kernel_name(kernel)));
          CAPTURE(weight_groups);
          CAPTURE(cols);
          CAPTURE(rows);
          const Case c = random_case(rows, cols, static_cast<unsigned>(rows * 1000 + cols + weight_groups));
          const PackedInt8 packed = pack_int8(c.w.data(), rows, cols, weight_groups ? c.w_scales.data() : nullptr, kernel);
          const size_t padded_rows = static_cast<size_t>(packed.groups()) * kPackedRows;
          CHECK(packed.bytes() == padded_rows * packed.padded_cols() + (weight_groups ? padded_rows * c.blocks * sizeof(uint16_t) : 0));
          std::vector<float> out(static_cast<size_t>(packed.groups()) * kPackedRows);
          dot_int8_packed_blocks(packed, c.x.data(), c.block_sums.data(), c.x_scales.data(), 0, packed.groups(), out.data());
          for (int r = 0; r < rows; ++r) {
            double expected = 0, magnitude = 0;
            for (int b = 0; b < c.blocks; ++b) {
              int64_t sum = 0, absolute = 0;
              for (int i = b * kActivationBlock; i < std::min(cols, (b + 1) * kActivationBlock); ++i) {
                const int64_t product = int64_t{c.x[static_cast<size_t>(i)]} * c.w[static_cast<size_t>(r) * cols + i];
                sum += product;
                absolute += product < 0 ? -product : product;
              }
              const double block_scale =
                  double{c.x_scales[static_cast<size_t>(b)]} * (weight_groups ? c.w_scales[static_cast<size_t>(r) * c.blocks + b] : 1.0f);
              expected += static_cast<double>(sum) * block_scale;
              magnitude += static_cast<double>(absolute) * block_scale;
            }
            // Float sums of the blocks' scaled sums: within float rounding of the products' total magnitude.
            CHECK(std::fabs(out[static_cast<size_t>(r)] - expected) <= 1e-6 * magnitude + 1e-6);
          }
          for (size_t r = static_cast<size_t>(rows); r < out.size(); ++r) CHECK(out[r] == 0.0f);
        }
      }
    }
  }
}

// 4-bit codes: the same sums with the values drawn from 16 levels, Q4_0's grid and an uneven one with
// the INT8 extremes (the lookup holds any levels the kernels can multiply).
constexpr std::array<int8_t, 16> kQ4Grid = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
constexpr std::array<int8_t, 16> kUnevenGrid = {-127, -90, -61, -38, -22, -11, -4, 0, 3, 9, 18, 31, 48, 70, 98, 127};

TEST_CASE(
    "4-bit codes: dot_int8_packed and dot_int8_packed_blocks equal the exact sums of their levels on every kernel, at half the "
    "bytes") {
  for (const Int8Kernel kernel : int8_kernels_supported()) {
    for (const auto* grid : {&kQ4Grid, &kUnevenGrid}) {
      for (const int cols : {1, 31, 32, 33, 64, 95, 192, 1000}) {
        for (const int rows : {1, 15, 16, 17, 40}) {
          CAPTURE(std::string(int8_kernel_name(kernel)));
          CAPTURE((*grid)[0]);
          CAPTURE(cols);
          CAPTURE(rows);
          Case c = random_case(rows, cols, static_cast<unsigned>(rows * 1000 + cols + 7));
          std::mt19937 rng(static_cast<unsigned>(rows + cols));
          std::uniform_int_distribution<int> code(0, 15);
          for (int8_t& v : c.w) v = (*grid)[static_cast<size_t>(code(rng))];
          c.w[0] = (*grid)[0];  // the extremes against x = -128
          if (rows > 1) c.w[static_cast<size_t>(cols)] = (*grid)[15];
          const PackedInt8 packed = pack_int8(c.w.data(), rows, cols, c.w_scales.data(), kernel, grid);
          CHECK(packed.bits == 4);
          const size_t padded_rows = static_cast<size_t>(packed.groups()) * kPackedRows;
          CHECK(packed.values.size() == padded_rows * packed.padded_cols() / 2);
          std::vector<int32_t> sums(padded_rows, -1);
          dot_int8_packed(packed, c.x.data(), c.block_sums.data(), 0, packed.groups(), sums.data());
          std::vector<float> out(padded_rows);
          dot_int8_packed_blocks(packed, c.x.data(), c.block_sums.data(), c.x_scales.data(), 0, packed.groups(), out.data());
          for (int r = 0; r < static_cast<int>(padded_rows); ++r) {
            int64_t exact = 0;
            double expected = 0, magnitude = 0;
            for (int b = 0; r < rows && b < c.blocks; ++b) {
              int64_t sum = 0, absolute = 0;
              for (int i = b * kActivationBlock; i < std::min(cols, (b + 1) * kActivationBlock); ++i) {
                const int64_t product = int64_t{c.x[static_cast<size_t>(i)]} * c.w[static_cast<size_t>(r) * cols + i];
                sum += product;
                absolute += product < 0 ? -product : product;
              }
              exact += sum;
              const double scale = double{c.x_scales[static_cast<size_t>(b)]} * c.w_scales[static_cast<size_t>(r) * c.blocks + b];
              expected += static_cast<double>(sum) * scale;
              magnitude += static_cast<double>(absolute) * scale;
            }
            REQUIRE(sums[static_cast<size_t>(r)] == exact);  // padded rows: 0
            CHECK(std::fabs(out[static_cast<size_t>(r)] - expected) <= 1e-6 * magnitude + 1e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("packed_row_values and packed_group_scale read every row and scale back from each kernel's layout, 8- and 4-bit") {
  for (const Int8Kernel kernel : int8_kernels_supported()) {
    for (const bool four : {false, true}) {
      for (const int cols : {1, 33, 64, 200}) {
        const int rows = 37;  // groups of 16 rows and a partial one
        CAPTURE(std::string(int8_kernel_name(kernel)));
        CAPTURE(four);
        CAPTURE(cols);
        Case c = random_case(rows, cols, static_cast<unsigned>(cols + (four ? 50 : 0)));
        if (four) {
          std::mt19937 rng(static_cast<unsigned>(cols));
          std::uniform_int_distribution<int> code(0, 15);
          for (int8_t& v : c.w) v = kUnevenGrid[static_cast<size_t>(code(rng))];
        }
        const PackedInt8 packed = pack_int8(c.w.data(), rows, cols, c.w_scales.data(), kernel, four ? &kUnevenGrid : nullptr);
        std::vector<int8_t> row(static_cast<size_t>(cols));
        bool same = true;
        for (int r = 0; r < rows; ++r) {
          packed_row_values(packed, r, row.data());
          same = same && std::equal(row.begin(), row.end(), c.w.begin() + static_cast<std::ptrdiff_t>(r) * cols);
          for (int b = 0; b < c.blocks; ++b)
            same = same && packed_group_scale(packed, r, b) == c.w_scales[static_cast<size_t>(r) * c.blocks + b];
        }
        CHECK(same);
        CHECK_THROWS_WITH(packed_row_values(packed, rows, row.data()), doctest::Contains("row 37"));
      }
    }
  }
  const std::vector<int8_t> w(64, 1);
  CHECK_THROWS_WITH(packed_group_scale(pack_int8(w.data(), 2, 32, nullptr, Int8Kernel::kPortable), 0, 0),
                    doctest::Contains("without group scales"));
}

TEST_CASE("pack_int8 with 4-bit levels refuses a value that is not a level, and levels without 0 or with one twice") {
  const std::vector<int8_t> w = {1, 2, 3, 9};
  CHECK_THROWS_WITH(pack_int8(w.data(), 1, 4, nullptr, Int8Kernel::kPortable, &kQ4Grid),
                    doctest::Contains("value 9 at (0, 3) is not one of the 4-bit levels"));
  std::array<int8_t, 16> no_zero = kQ4Grid;
  no_zero[8] = 100;
  CHECK_THROWS_WITH(pack_int8(w.data(), 1, 3, nullptr, Int8Kernel::kPortable, &no_zero),
                    doctest::Contains("0 is not one of them"));
  std::array<int8_t, 16> twice = kQ4Grid;
  twice[1] = -8;
  CHECK_THROWS_WITH(pack_int8(w.data(), 1, 3, nullptr, Int8Kernel::kPortable, &twice),
                    doctest::Contains("-8 is out of range or twice"));
}

TEST_CASE("pack_int8 refuses what no kernel can sum exactly, by size, and group scales that are not binary16") {
  const std::vector<int8_t> w(4, 1);
  const float not_half = 0.1f, half = f16_to_f32(f32_to_f16(0.1f));
  CHECK(pack_int8(w.data(), 1, 4, &half, Int8Kernel::kPortable).group_scales.size() == kPackedRows);
  CHECK_THROWS_WITH(pack_int8(w.data(), 1, 4, &not_half, Int8Kernel::kPortable),
                    doctest::Contains("group scale 0.1 (row 0, block 0) is not a binary16 value"));
  CHECK_THROWS_WITH(pack_int8(w.data(), 0, 4, nullptr, Int8Kernel::kPortable), doctest::Contains("want 1 to 131072 columns"));
  CHECK_THROWS_WITH(pack_int8(w.data(), 1, (1 << 17) + 1, nullptr, Int8Kernel::kPortable), doctest::Contains("(1, 131073)"));
}

}  // namespace
}  // namespace fedcal

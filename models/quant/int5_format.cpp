#include "models/quant/int5_format.h"

#include "common/error.h"

namespace fedcal {
namespace {

constexpr int kInt5HalfGroup = kWeightGroup / 2;

void check_int5_shape(int rows, int cols) { check_low_bit_shape(5, rows, cols); }

constexpr std::array<int8_t, 256> kInt5UniformCodes = level_code_table(kInt5UniformLevels);
constexpr std::array<int8_t, 256> kInt5NonUniformCodes = level_code_table(kInt5NonUniformLevels);

}  // namespace

const std::array<int8_t, 32>& int5_levels(Int4Grid grid) {
  return grid == Int4Grid::kNonUniform ? kInt5NonUniformLevels : kInt5UniformLevels;
}

int int5_code(Int4Grid grid, int8_t level) {
  return (grid == Int4Grid::kNonUniform ? kInt5NonUniformCodes : kInt5UniformCodes)[static_cast<size_t>(level + 128)];
}

std::vector<uint8_t> pack_int5_codes(std::span<const int8_t> levels, int rows, int cols, Int4Grid grid) {
  check_int5_shape(rows, cols);
  const size_t count = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  if (levels.size() != count) fail("5-bit weights ({}, {}): {} values", rows, cols, levels.size());
  std::vector<uint8_t> out(int5_code_bytes(rows, cols));
  uint8_t* group = out.data();
  for (size_t begin = 0; begin < count; begin += kWeightGroup, group += kInt5GroupBytes) {
    uint32_t high = 0;
    std::array<int, kWeightGroup> codes{};
    for (int m = 0; m < kWeightGroup; ++m) {
      codes[static_cast<size_t>(m)] = int5_code(grid, levels[begin + static_cast<size_t>(m)]);
      if (codes[static_cast<size_t>(m)] < 0) {
        const size_t bad = begin + static_cast<size_t>(m);
        fail("5-bit weight {} at ({}, {}) is not a level of the {} grid", levels[bad], bad / static_cast<size_t>(cols),
             bad % static_cast<size_t>(cols), int4_grid_name(grid));
      }
      high |= static_cast<uint32_t>(codes[static_cast<size_t>(m)] >> 4) << m;
    }
    for (int byte = 0; byte < 4; ++byte) group[byte] = static_cast<uint8_t>(high >> (8 * byte));
    for (int m = 0; m < kInt5HalfGroup; ++m)
      group[4 + m] = static_cast<uint8_t>((codes[static_cast<size_t>(m)] & 0x0f) |
                                          ((codes[static_cast<size_t>(m + kInt5HalfGroup)] & 0x0f) << 4));
  }
  return out;
}

std::vector<int8_t> unpack_int5_codes(std::span<const uint8_t> codes, int rows, int cols, Int4Grid grid) {
  check_int5_shape(rows, cols);
  if (codes.size() != int5_code_bytes(rows, cols))
    fail("5-bit weights ({}, {}): {} bytes of codes, want {}", rows, cols, codes.size(), int5_code_bytes(rows, cols));
  const std::array<int8_t, 32>& levels = int5_levels(grid);
  std::vector<int8_t> out(static_cast<size_t>(rows) * static_cast<size_t>(cols));
  const uint8_t* group = codes.data();
  for (size_t begin = 0; begin < out.size(); begin += kWeightGroup, group += kInt5GroupBytes) {
    const uint32_t high = uint32_t{group[0]} | uint32_t{group[1]} << 8 | uint32_t{group[2]} << 16 | uint32_t{group[3]} << 24;
    for (int m = 0; m < kInt5HalfGroup; ++m) {
      const uint8_t low = group[4 + m];
      out[begin + static_cast<size_t>(m)] = levels[(low & 0x0f) | ((high >> m & 1u) << 4)];
      out[begin + static_cast<size_t>(m + kInt5HalfGroup)] = levels[(low >> 4) | ((high >> (m + kInt5HalfGroup) & 1u) << 4)];
    }
  }
  return out;
}

QuantizedMatrix quantize_int5_weights(std::span<const float> weights, int rows, int cols, Int4Grid grid,
                                      std::span<const double> importance, Int4Rounding rounding) {
  QuantizedMatrix out = low_bit_matrix(5, rows, cols, grid);
  out.values.resize(static_cast<size_t>(std::max(rows, 0)) * static_cast<size_t>(std::max(cols, 0)));
  quantize_groups(weights, rows, cols, int5_levels(grid), importance, rounding, out.group_scales,
                  [&](int row, std::span<const int8_t> levels) {
                    std::copy(
                        levels.begin(), levels.end(),
                        out.values.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(row) * static_cast<size_t>(cols)));
                  });
  return out;
}

}  // namespace fedcal

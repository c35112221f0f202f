#include "models/quant/int5_format.h"

#include "common/error.h"

namespace fedcal {
namespace {

constexpr int kHalfGroup = kWeightGroup / 2;

void check_int5_shape(int rows, int cols) {
  if (rows < 1 || cols < kWeightGroup || cols % kWeightGroup != 0)
    fail("5-bit weights ({}, {}): want at least one row and a multiple of {} columns", rows, cols, kWeightGroup);
}

constexpr std::array<int8_t, 256> code_table(const std::array<int8_t, 32>& levels) {
  std::array<int8_t, 256> table{};
  for (int8_t& code : table) code = -1;
  for (size_t code = 0; code < levels.size(); ++code) table[static_cast<size_t>(levels[code] + 128)] = static_cast<int8_t>(code);
  return table;
}
constexpr std::array<int8_t, 256> kUniformCodes = code_table(kInt5UniformLevels);
constexpr std::array<int8_t, 256> kNonUniformCodes = code_table(kInt5NonUniformLevels);

}  // namespace

const std::array<int8_t, 32>& int5_levels(Int4Grid grid) {
  return grid == Int4Grid::kNonUniform ? kInt5NonUniformLevels : kInt5UniformLevels;
}

int int5_code(Int4Grid grid, int8_t level) {
  return (grid == Int4Grid::kNonUniform ? kNonUniformCodes : kUniformCodes)[static_cast<size_t>(level + 128)];
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
    for (int m = 0; m < kHalfGroup; ++m)
      group[4 + m] = static_cast<uint8_t>((codes[static_cast<size_t>(m)] & 0x0f) |
                                          ((codes[static_cast<size_t>(m + kHalfGroup)] & 0x0f) << 4));
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
    for (int m = 0; m < kHalfGroup; ++m) {
      const uint8_t low = group[4 + m];
      out[begin + static_cast<size_t>(m)] = levels[(low & 0x0f) | ((high >> m & 1u) << 4)];
      out[begin + static_cast<size_t>(m + kHalfGroup)] = levels[(low >> 4) | ((high >> (m + kHalfGroup) & 1u) << 4)];
    }
  }
  return out;
}

QuantizedMatrix quantize_int5_weights(std::span<const float> weights, int rows, int cols, Int4Grid grid,
                                      std::span<const double> importance, Int4Rounding rounding) {
  QuantizedMatrix out;
  out.rows = rows;
  out.cols = cols;
  out.bits = 5;
  out.grid = grid;
  out.granularity = WeightGranularity::kPerGroup;
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

#include "models/quant/int4_format.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <thread>

#include "common/error.h"
#include "models/format/float16.h"

namespace fedcal {
namespace {

constexpr int kHalfGroup = kInt4Group / 2;

void check_int4_shape(int rows, int cols) { check_low_bit_shape(4, rows, cols); }

// The binary16 value nearest `d`, or 0 where it has none (overflow, not finite).
float to_half(double d) {
  const float half = f16_to_f32(f32_to_f16(static_cast<float>(d)));
  return std::isfinite(half) ? half : 0.0f;
}

// A grid's midpoints between neighbouring levels, ascending (one fewer than the levels: at most 31, a
// 5-bit grid's), and where to start counting them for a value: below[k + 128] is how many midpoints lie
// below the integer k. Levels are integers, so midpoints are multiples of 1/2 and at most two lie in
// [k, k + 1): a value's code takes one table read and at most two comparisons (a binary search took five
// unpredictable branches, ~90% of a 4-bit quantize). Made once per grid and thread, not per group.
struct LevelSearch {
  explicit LevelSearch(std::span<const int8_t> levels) : grid(levels) {
    if (grid.size() < 2 || grid.size() > 32) fail("a grid of {} levels (2 to 32)", grid.size());
    count = grid.size() - 1;
    for (size_t code = 0; code < count; ++code)
      mid[code] = 0.5f * (static_cast<float>(grid[code]) + static_cast<float>(grid[code + 1]));
    for (int k = -128; k <= 127; ++k)
      below[static_cast<size_t>(k + 128)] =
          static_cast<uint8_t>(std::lower_bound(mid.begin(), mid.begin() + count, static_cast<float>(k)) - mid.begin());
  }
  // The code of y: how many midpoints lie below it (the lower level at a midpoint).
  size_t code(float y) const {
    const int k = static_cast<int>(std::floor(std::clamp(y, -128.0f, 127.0f)));
    size_t c = below[static_cast<size_t>(k + 128)];
    while (c < count && mid[c] < y) ++c;
    return c;
  }
  std::span<const int8_t> grid;
  std::array<float, 31> mid{};
  size_t count = 0;
  std::array<uint8_t, 256> below{};
};

// The levels of `w` under scale d (each the nearest level of the grid to w / d, the lower one at a
// midpoint) and their weighted squared error.
double round_group(std::span<const float> w, std::span<const double> a, float d, const LevelSearch& search, int8_t* levels) {
  double error = 0;
  const float inverse = 1.0f / d;
  for (size_t i = 0; i < w.size(); ++i) {
    levels[i] = search.grid[search.code(w[i] * inverse)];
    const double diff = static_cast<double>(w[i]) - static_cast<double>(d) * levels[i];
    error += a[i] * diff * diff;
  }
  return error;
}

// The search of quantize_group_on and the rounding of quantize_group_absmax_on, on a grid's search made already.
Int4Group search_group(std::span<const float> w, std::span<const double> a, const LevelSearch& search) {
  if (w.size() > static_cast<size_t>(kInt4Group) || (!a.empty() && a.size() != w.size()))
    fail("a group of {} weights (at most {}) with {} importance values", w.size(), kInt4Group, a.size());
  // Importance weights with a floor, so that channels the statistics never saw still count a little.
  std::array<double, kInt4Group> weight{};
  double total = 0;
  for (size_t i = 0; i < w.size(); ++i) total += a.empty() ? 1.0 : std::max(a[i], 0.0);
  const double mean = total / static_cast<double>(std::max<size_t>(w.size(), 1));
  for (size_t i = 0; i < w.size(); ++i) weight[i] = mean > 0 && !a.empty() ? std::max(a[i], 0.0) + 1e-3 * mean : 1.0;
  const std::span<const double> weights(weight.data(), w.size());

  float max_abs = 0;
  for (const float v : w) {
    if (!std::isfinite(v)) fail("weight {} is not finite", v);
    max_abs = std::max(max_abs, std::fabs(v));
  }
  Int4Group best;
  best.scale = 0x1p-24f;  // all zeros (or below binary16's range): any scale, levels 0
  if (max_abs == 0.0f) return best;
  double best_error = std::numeric_limits<double>::infinity();
  std::array<int8_t, kInt4Group> levels{};
  auto keep_if_better = [&](float half, double error) {
    if (error < best_error) {
      best_error = error;
      best.scale = half;
      best.levels = levels;
    }
  };
  auto consider = [&](double d) {
    const float half = to_half(d);
    if (half != 0.0f) keep_if_better(half, round_group(w, weights, half, search, levels.data()));
  };
  // Each sign (the extreme of either sign can take the lowest level), scales that put the extreme at
  // 3/4 to 9/8 of the lowest level's magnitude (max/6 to max/9 on the uniform grid), each then refined
  // once: the least-squares scale for the levels it rounded to.
  const double lowest = -static_cast<double>(search.grid[0]);
  for (const double sign : {1.0, -1.0}) {
    for (int step = 0; step <= 24; ++step) {
      const float half = to_half(sign * max_abs / (lowest * (0.75 + step / 64.0)));
      if (half == 0.0f) continue;
      const double error = round_group(w, weights, half, search, levels.data());
      double wq = 0, qq = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        wq += weights[i] * w[i] * levels[i];
        qq += weights[i] * levels[i] * levels[i];
      }
      keep_if_better(half, error);
      if (qq > 0) consider(wq / qq);
    }
  }
  return best;
}

Int4Group absmax_group(std::span<const float> w, const LevelSearch& search) {
  if (w.size() > static_cast<size_t>(kInt4Group)) fail("a group of {} weights (at most {})", w.size(), kInt4Group);
  float extreme = 0;
  for (const float v : w) {
    if (!std::isfinite(v)) fail("weight {} is not finite", v);
    if (std::fabs(v) > std::fabs(extreme)) extreme = v;
  }
  Int4Group out;
  // In FP32, as PyTorch computes it: the quotient, then its nearest binary16 value.
  out.scale = f16_to_f32(f32_to_f16(extreme / static_cast<float>(search.grid[0])));
  if (out.scale == 0.0f) out.scale = 0x1p-24f;  // all zeros, or below binary16's range: levels 0
  const std::array<double, kInt4Group> ones = [] {
    std::array<double, kInt4Group> a{};
    a.fill(1.0);
    return a;
  }();
  round_group(w, std::span<const double>(ones.data(), w.size()), out.scale, search, out.levels.data());
  return out;
}

}  // namespace

const std::array<int8_t, 16>& int4_levels(Int4Grid grid) {
  return grid == Int4Grid::kNonUniform ? kInt4NonUniformLevels : kInt4UniformLevels;
}

namespace {

constexpr std::array<int8_t, 256> kUniformCodes = level_code_table(kInt4UniformLevels);
constexpr std::array<int8_t, 256> kNonUniformCodes = level_code_table(kInt4NonUniformLevels);

// The `count` levels (a multiple of 32) of stored codes.
void decode_codes(const uint8_t* codes, size_t count, const std::array<int8_t, 16>& levels, int8_t* out) {
  for (size_t begin = 0; begin < count; begin += kInt4Group, codes += kHalfGroup) {
    for (int m = 0; m < kHalfGroup; ++m) {
      out[begin + m] = levels[codes[m] & 0x0f];
      out[begin + m + kHalfGroup] = levels[codes[m] >> 4];
    }
  }
}

}  // namespace

int int4_code(Int4Grid grid, int8_t level) {
  return (grid == Int4Grid::kNonUniform ? kNonUniformCodes : kUniformCodes)[static_cast<size_t>(level + 128)];
}

void check_low_bit_shape(int bits, int rows, int cols) {
  if (rows < 1 || cols < kWeightGroup || cols % kWeightGroup != 0)
    fail("{}-bit weights ({}, {}): want at least one row and a multiple of {} columns", bits, rows, cols, kWeightGroup);
}

QuantizedMatrix low_bit_matrix(int bits, int rows, int cols, Int4Grid grid) {
  QuantizedMatrix out;
  out.rows = rows;
  out.cols = cols;
  out.bits = bits;
  out.grid = grid;
  out.granularity = WeightGranularity::kPerGroup;
  return out;
}

const char* int4_grid_name(Int4Grid grid) { return grid == Int4Grid::kNonUniform ? "non-uniform" : "uniform"; }

std::vector<uint8_t> pack_int4_codes(std::span<const int8_t> levels, int rows, int cols, Int4Grid grid) {
  check_int4_shape(rows, cols);
  const size_t count = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  if (levels.size() != count) fail("4-bit weights ({}, {}): {} values", rows, cols, levels.size());
  std::vector<uint8_t> out(int4_code_bytes(rows, cols));
  for (size_t begin = 0, at = 0; begin < count; begin += kInt4Group) {
    for (int m = 0; m < kHalfGroup; ++m, ++at) {
      const int low = int4_code(grid, levels[begin + m]);
      const int high = int4_code(grid, levels[begin + m + kHalfGroup]);
      if (low < 0 || high < 0) {
        const size_t bad = low < 0 ? begin + m : begin + m + kHalfGroup;
        fail("4-bit weight {} at ({}, {}) is not a level of the {} grid", levels[bad], bad / static_cast<size_t>(cols),
             bad % static_cast<size_t>(cols), int4_grid_name(grid));
      }
      out[at] = static_cast<uint8_t>(low | (high << 4));
    }
  }
  return out;
}

std::vector<int8_t> unpack_int4_codes(std::span<const uint8_t> codes, int rows, int cols, Int4Grid grid) {
  check_int4_shape(rows, cols);
  if (codes.size() != int4_code_bytes(rows, cols))
    fail("4-bit weights ({}, {}): {} bytes of codes, want {}", rows, cols, codes.size(), int4_code_bytes(rows, cols));
  std::vector<int8_t> out(static_cast<size_t>(rows) * static_cast<size_t>(cols));
  decode_codes(codes.data(), out.size(), int4_levels(grid), out.data());
  return out;
}

Int4Group quantize_int4_group(std::span<const float> w, std::span<const double> a, Int4Grid grid) {
  return quantize_group_on(w, a, int4_levels(grid));
}

Int4Group quantize_group_on(std::span<const float> w, std::span<const double> a, std::span<const int8_t> grid_levels) {
  return search_group(w, a, LevelSearch(grid_levels));
}

Int4Group quantize_int4_group_absmax(std::span<const float> w, Int4Grid grid) {
  return quantize_group_absmax_on(w, int4_levels(grid));
}

Int4Group quantize_group_absmax_on(std::span<const float> w, std::span<const int8_t> grid_levels) {
  return absmax_group(w, LevelSearch(grid_levels));
}

void quantize_groups(std::span<const float> weights, int rows, int cols, std::span<const int8_t> grid_levels,
                     std::span<const double> importance, Int4Rounding rounding, std::vector<uint16_t>& group_scales,
                     const std::function<void(int row, std::span<const int8_t> levels)>& on_row) {
  const int bits = std::bit_width(grid_levels.size()) - 1;  // 16 levels: 4 bits, 32: 5
  check_low_bit_shape(bits, rows, cols);
  if (weights.size() != static_cast<size_t>(rows) * static_cast<size_t>(cols))
    fail("{}-bit weights ({}, {}): {} values", bits, rows, cols, weights.size());
  if (!importance.empty() && importance.size() != static_cast<size_t>(cols))
    fail("{}-bit weights ({}, {}): importance of {} channels", bits, rows, cols, importance.size());
  group_scales.resize(static_cast<size_t>(rows) * static_cast<size_t>(cols / kInt4Group));
  // Rows [first, last): each group on its own, so the rows are split over the CPU's threads (the same
  // result whatever the split).
  auto quantize_rows = [&](int first, int last) {
    std::vector<int8_t> row_levels(static_cast<size_t>(cols));
    const LevelSearch search(grid_levels);
    for (int r = first; r < last; ++r) {
      const size_t row_start = static_cast<size_t>(r) * static_cast<size_t>(cols);
      for (int begin = 0; begin < cols; begin += kInt4Group) {
        const size_t at = row_start + static_cast<size_t>(begin);
        const std::span<const float> w = weights.subspan(at, kInt4Group);
        const Int4Group group =
            rounding == Int4Rounding::kAbsmax
                ? absmax_group(w, search)
                : search_group(w, importance.empty() ? importance : importance.subspan(static_cast<size_t>(begin), kInt4Group),
                               search);
        group_scales[at / kInt4Group] = f32_to_f16(group.scale);  // a binary16 value already
        std::copy(group.levels.begin(), group.levels.end(), row_levels.begin() + begin);
      }
      on_row(r, row_levels);
    }
  };
  const int threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, std::max(1, rows / 16));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        quantize_rows(rows * t / threads, rows * (t + 1) / threads);
      } catch (...) {
        errors[static_cast<size_t>(t)] = std::current_exception();
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

QuantizedMatrix quantize_int4_weights(std::span<const float> weights, int rows, int cols, Int4Grid grid,
                                      std::span<const double> importance, Int4Rounding rounding) {
  QuantizedMatrix out = low_bit_matrix(4, rows, cols, grid);
  out.codes.resize(int4_code_bytes(std::max(rows, 0), std::max(cols, 0)));
  quantize_groups(
      weights, rows, cols, int4_levels(grid), importance, rounding, out.group_scales,
      [&](int row, std::span<const int8_t> levels) {
        const std::vector<uint8_t> codes = pack_int4_codes(levels, 1, cols, grid);  // the row's codes, as stored
        std::copy(codes.begin(), codes.end(),
                  out.codes.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(row) * static_cast<size_t>(cols) / 2));
      });
  return out;
}

void weight_row_values(const QuantizedMatrix& matrix, int row, int8_t* out) {
  const size_t cols = static_cast<size_t>(matrix.cols);
  if (matrix.bits != 4) {
    std::copy_n(matrix.values.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(row) * cols), cols, out);
    return;
  }
  decode_codes(matrix.codes.data() + static_cast<size_t>(row) * cols / 2, cols, int4_levels(matrix.grid), out);
}

std::vector<int8_t> weight_values(const QuantizedMatrix& matrix) {
  if (matrix.bits != 4) return matrix.values;
  return unpack_int4_codes(matrix.codes, matrix.rows, matrix.cols, matrix.grid);
}

}  // namespace fedcal

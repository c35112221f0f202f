// fedcal's 4-bit weights (package tensor types qgint4 and qgnl4), defined here once.
//
// A (rows, cols) matrix whose cols is a multiple of 32 holds, for each row and each group of 32 input
// channels, one binary16 scale d (nonzero, either sign) and 32 codes of 4 bits; code c stands for
// level L[c] of the matrix's grid, and the weight is d * L[c]:
//   uniform      L[c] = c - 8, in [-8, 7]: llama.cpp Q4_0's grid and order, so such a tensor is a Q4_0
//                tensor in GGUF (qgint4).
//   non-uniform  16 INT8 levels from -127 to 112, denser near 0: Lloyd's algorithm (k-means in one
//                dimension, with -1 and 0 held fixed) on the project model's weights, each group
//                divided by its extreme, rounded to 1/127 (qgnl4). 11% less squared error than the
//                uniform grid at the same scale; what weights look like (about normal, heavier tails),
//                not this model's own.
// Stored, each row's group is 16 bytes: byte m holds the code of channel m in its low nibble and of
// channel m + 16 in its high one. In memory the matrix is a QuantizedMatrix with bits = 4, its grid,
// these codes as stored (never unpacked whole: loading stays at half a byte per weight) and the
// groups' scales.
//
// Such a layer runs like the fine-grained INT8 mode: activations quantized per block of 32 at run time,
// exact INT32 sums per block (engine/dot_int8.h looks the levels up from the codes in its kernels).
//
// Quantization (quantize_int4_weights): per group, the scale that minimises the importance-weighted
// squared error sum_i a_i (w_i - d L_i)^2, where a_i is the mean square of input channel i's activation
// in the fleet's statistics (llama.cpp's imatrix idea; all 1 without statistics): candidate scales
// around each sign's extreme, each refined by least squares on its rounding. Or, by request, the absmax
// rule that quantization-aware training reproduces bit for bit (models/train/qat_int4.py):
//   e = the group's first weight of largest magnitude, d = binary16(e / L[0]) computed in FP32 (so e
//   lands on the lowest level; 2^-24 if that is 0), each weight the nearest level to w * (1/d) (FP32),
//   the lower one at a midpoint.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "models/quant/scales.h"

namespace fedcal {

inline constexpr int kInt4Group = kWeightGroup;
// Each INT8 value's code in `levels` (-1: not a level), made at compile time: loading looks up every
// weight (a search per value made loading a 135M-parameter package take seconds). For 4- and 5-bit grids.
template <size_t N>
constexpr std::array<int8_t, 256> level_code_table(const std::array<int8_t, N>& levels) {
  std::array<int8_t, 256> table{};
  for (int8_t& code : table) code = -1;
  for (size_t code = 0; code < N; ++code) table[static_cast<size_t>(levels[code] + 128)] = static_cast<int8_t>(code);
  return table;
}
// Throws Error unless a (rows, cols) matrix of `bits`-bit weights has whole groups of 32: at least one
// row and a positive multiple of 32 columns.
void check_low_bit_shape(int bits, int rows, int cols);
// An empty (rows, cols) matrix of `bits`-bit weights on `grid` in groups of 32: values, codes and
// scales for the caller to fill.
QuantizedMatrix low_bit_matrix(int bits, int rows, int cols, Int4Grid grid);

// The levels by code, ascending.
inline constexpr std::array<int8_t, 16> kInt4UniformLevels = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
inline constexpr std::array<int8_t, 16> kInt4NonUniformLevels = {-127, -103, -83, -66, -51, -38, -25, -12,
                                                                 0,    13,   26,  40,  55,  71,  89,  112};
const std::array<int8_t, 16>& int4_levels(Int4Grid grid);
// The code of `level` in `grid`, or -1 if it is not one of its levels.
int int4_code(Int4Grid grid, int8_t level);
const char* int4_grid_name(Int4Grid grid);  // "uniform", "non-uniform"

// How a group's scale is chosen: the least (importance-weighted) error, or the absmax rule above.
enum class Int4Rounding : uint8_t { kSearch, kAbsmax };

// Bytes of a (rows, cols) matrix's codes: cols / 2 per row.
inline size_t int4_code_bytes(int rows, int cols) { return static_cast<size_t>(rows) * static_cast<size_t>(cols) / 2; }

// The stored codes of row-major (rows, cols) `levels` of `grid`, as described above. Throws Error
// unless cols is a positive multiple of 32 and every value is one of the grid's levels.
std::vector<uint8_t> pack_int4_codes(std::span<const int8_t> levels, int rows, int cols, Int4Grid grid);
// The levels of stored codes (rows, cols) in `grid`: the inverse. Throws Error unless cols is a
// positive multiple of 32 and `codes` holds exactly int4_code_bytes.
std::vector<int8_t> unpack_int4_codes(std::span<const uint8_t> codes, int rows, int cols, Int4Grid grid);

// The INT8 values of row `row` of any checked matrix (cols of them into `out`): its values, or with
// bits 4 its codes' levels.
void weight_row_values(const QuantizedMatrix& matrix, int row, int8_t* out);
// All of them, row-major (rows, cols): for references and tests (a 4-bit matrix is unpacked).
std::vector<int8_t> weight_values(const QuantizedMatrix& matrix);

// The 4-bit matrix of row-major (rows, cols) FP32 `weights`; `importance` holds one weight per input
// channel (cols values, >= 0) or is empty (plain error; the absmax rule takes none). Throws Error unless
// cols is a multiple of 32 and every weight is finite.
QuantizedMatrix quantize_int4_weights(std::span<const float> weights, int rows, int cols, Int4Grid grid,
                                      std::span<const double> importance = {}, Int4Rounding rounding = Int4Rounding::kSearch);

// One group's choice: `levels` (n of them) and the binary16 scale, for n <= 32 weights `w` with
// importance `a` (n values, or empty). Exposed for tests.
struct Int4Group {
  float scale = 0;
  std::array<int8_t, kInt4Group> levels{};
};
Int4Group quantize_int4_group(std::span<const float> w, std::span<const double> a, Int4Grid grid);
// The same by the absmax rule.
Int4Group quantize_int4_group_absmax(std::span<const float> w, Int4Grid grid);

// The two rules on any ascending grid of INT8 levels (the 4-bit grids here, the 5-bit ones of
// quant/int5_format.h): the search and the absmax rule are defined once for both.
Int4Group quantize_group_on(std::span<const float> w, std::span<const double> a, std::span<const int8_t> levels);
Int4Group quantize_group_absmax_on(std::span<const float> w, std::span<const int8_t> levels);
// Every group of row-major (rows, cols) `weights` by one of the rules on `levels`: the binary16 scales
// into `group_scales` ((rows, cols / 32)), each row's levels to `on_row` (rows in any order, from
// several threads, never the same row twice). Throws Error unless cols is a positive multiple of 32,
// the sizes fit and every weight is finite.
void quantize_groups(std::span<const float> weights, int rows, int cols, std::span<const int8_t> levels,
                     std::span<const double> importance, Int4Rounding rounding, std::vector<uint16_t>& group_scales,
                     const std::function<void(int row, std::span<const int8_t> levels)>& on_row);

}  // namespace fedcal

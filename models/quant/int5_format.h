// fedcal's 5-bit weights (package tensor types qgint5 and qgnl5), defined here once: the step between
// the 4-bit groups (quant/int4_format.h) and fine-grained INT8, for mixed precision by bytes.
//
// A (rows, cols) matrix whose cols is a multiple of 32 holds, for each row and each group of 32 input
// channels, one binary16 scale d (nonzero, either sign) and 32 codes of 5 bits; code c stands for
// level L[c] of the matrix's grid, and the weight is d * L[c]:
//   uniform      L[c] = c - 16, in [-16, 15]: llama.cpp Q5_0's grid and order, so such a tensor is a
//                Q5_0 tensor in GGUF (qgint5).
//   non-uniform  32 INT8 levels from -127 to 120, denser near 0: Lloyd's algorithm as for the 4-bit
//                grid (bench/derive_grid.py --bits 5 on the project model's weights) (qgnl5).
// Stored, each row's group is 20 bytes, Q5_0's block without its scale: 4 bytes whose bit m (of the
// little-endian 32-bit word) is the fifth bit of channel m's code, then 16 bytes whose byte m holds the
// low 4 bits of channel m's code in its low nibble and of channel m + 16's in its high one.
// 5.5 bits per weight with the scales.
//
// In memory a 5-bit matrix is a QuantizedMatrix with bits = 5, its grid, the levels as INT8 `values`
// (a byte per weight) and the groups' scales: it runs on the fine-grained INT8 kernels as it is
// (engine/dot_int8.h), so 5 bits save package and download bytes, not memory or time.
// Quantization: the 4-bit rules (quant/int4_format.h) on the 32 levels.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "models/quant/int4_format.h"
#include "models/quant/scales.h"

namespace fedcal {

// The levels by code, ascending.
inline constexpr std::array<int8_t, 32> kInt5UniformLevels = {
    -16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
inline constexpr std::array<int8_t, 32> kInt5NonUniformLevels = {-127, -115, -104, -94, -85, -77, -69, -61, -54, -46, -39,
                                                                 -33,  -26,  -19,  -13, -6,  0,   7,   13,  20,  27,  34,
                                                                 41,   48,   55,   63,  71,  79,  88,  97,  108, 120};
const std::array<int8_t, 32>& int5_levels(Int4Grid grid);
// The code of `level` in `grid`, or -1 if it is not one of its levels.
int int5_code(Int4Grid grid, int8_t level);

inline constexpr size_t kInt5GroupBytes = 20;
// Bytes of a (rows, cols) matrix's codes: 20 per group of 32.
inline size_t int5_code_bytes(int rows, int cols) {
  return static_cast<size_t>(rows) * static_cast<size_t>(cols) / kWeightGroup * kInt5GroupBytes;
}

// The stored codes of row-major (rows, cols) `levels` of `grid`, as described above. Throws Error
// unless cols is a positive multiple of 32 and every value is one of the grid's levels.
std::vector<uint8_t> pack_int5_codes(std::span<const int8_t> levels, int rows, int cols, Int4Grid grid);
// The levels of stored codes (rows, cols) in `grid`: the inverse. Throws Error unless cols is a
// positive multiple of 32 and `codes` holds exactly int5_code_bytes.
std::vector<int8_t> unpack_int5_codes(std::span<const uint8_t> codes, int rows, int cols, Int4Grid grid);

// The 5-bit matrix of row-major (rows, cols) FP32 `weights`, as quantize_int4_weights does on 16 levels.
QuantizedMatrix quantize_int5_weights(std::span<const float> weights, int rows, int cols, Int4Grid grid,
                                      std::span<const double> importance = {}, Int4Rounding rounding = Int4Rounding::kSearch);

}  // namespace fedcal

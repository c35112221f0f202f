// INT8 x INT8 dot products for the linears whose activations are quantized at run time (dynamic and
// fine-grained INT8: quant/linear_dynamic_int8.h), on kernels of our own: XNNPACK 2022 has neither
// dynamically quantized operators nor VNNI kernels.
//
// The weights are packed once, at load time, for the kernel that will run them (PackedInt8): rows in
// groups of 16, columns in blocks of 32, and within a block 8 chunks of 4 columns, each chunk holding
// those 4 columns of all 16 rows (64 bytes). One vector instruction then multiplies 4 activations
// (broadcast) with 4 columns of 16 rows and adds each row's 4 products to its own INT32 lane: no
// horizontal sums, and a block's scales for 16 rows are one vector. (The portable kernel keeps each
// row's 32 values of a block together instead: a plain dot product for the compiler.) Kernels:
//   avx512-vnni  vpdpbusd on 512 bits: 64 products per instruction. It multiplies unsigned by signed
//                bytes, so the weights are stored as w + 128 and each block's sum of activations times
//                128 is subtracted once per block (or once per row).
//   avx-vnni     the same on 256 bits (VEX vpdpbusd: client cores without AVX-512, e.g. Alder Lake,
//                the N100 class of edge boxes), 16 rows as two 8-row halves.
//   avx2         |x| (unsigned) times w with x's sign: vpmaddubsw then vpmaddwd, 32 products per pair
//                (no saturation: |x| <= 128, |w| <= 127); 16 rows as two 8-row halves (and F16C for
//                the binary16 group scales).
//   neon-dotprod sdot (ARMv8.2 dot product: Raspberry Pi 5, Jetson Orin) on 128 bits, signed x signed,
//                16 products per instruction, four 4-row vectors per chunk; chosen by HWCAP_ASIMDDP.
//   portable     the plain loops (the compiler vectorizes them as it can; plain NEON on older ARM
//                cores such as the Raspberry Pi 4's Cortex-A72).
// All of them produce the same exact INT32 sums; the float results of the block kernels differ from one
// another only by float rounding. FEDCAL_BASELINE_KERNELS builds the portable kernel alone.
//
// 4-bit weights (quant/int4_format.h) are packed in the same layout at half the bytes: each value is a
// 4-bit code naming one of 16 INT8 levels, two codes per byte, and every kernel turns 32 bytes of codes
// into the 64 INT8 values of one chunk with a 16-entry table lookup (vpshufb, tbl) before the same
// products: the sums stay exact, and decode reads half the weight bytes. Within a chunk, byte m holds
// value m in its low nibble and value m + 32 in its high one (avx512-vnni: 64 bytes hold value m of
// chunks k and k + 1, so one load feeds two vpdpbusd; portable: within a row's block of 32, value m and
// m + 16, llama.cpp Q4_0's order).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

namespace fedcal {

// Input channels per activation block (and per weight group): llama.cpp Q8_0's block.
inline constexpr int kActivationBlock = 32;
// Output rows per packed group.
inline constexpr int kPackedRows = 16;

enum class Int8Kernel { kPortable, kAvx2, kAvx512Vnni, kNeonDot, kAvxVnni };
std::string_view int8_kernel_name(Int8Kernel kernel);
// The kernels this CPU runs, fastest first (portable always last).
std::vector<Int8Kernel> int8_kernels_supported();

// A (rows, cols) INT8 matrix packed for one kernel. Rows are padded with zeros to whole groups of 16,
// columns to whole blocks of 32; padding contributes nothing to any sum.
struct PackedInt8 {
  int rows = 0, cols = 0;
  Int8Kernel kernel = Int8Kernel::kPortable;
  // 8, or 4: `values` holds 4-bit codes, two per byte, and `lookup` the byte each code stands for in
  // the kernel's layout (its INT8 level, plus 128 for the vpdpbusd kernels).
  int bits = 8;
  std::array<uint8_t, 16> lookup{};
  // (groups, blocks, 8 chunks, 16 rows, 4 columns): the INT8 values, or w + 128 for avx512-vnni;
  // (groups, blocks, 16 rows, 32 columns) for the portable kernel.
  std::vector<uint8_t> values;
  // Per-group weight scales, when the matrix has them, in binary16: (groups, blocks, 16 rows), 0 for
  // padded rows.
  std::vector<uint16_t> group_scales;

  int groups() const { return (rows + kPackedRows - 1) / kPackedRows; }
  int blocks() const { return (cols + kActivationBlock - 1) / kActivationBlock; }
  int padded_cols() const { return blocks() * kActivationBlock; }
  size_t bytes() const { return values.size() + group_scales.size() * sizeof(uint16_t); }
};

// Packs the row-major (rows, cols) INT8 values `w` (cols at most 2^17, so that no row's sum of INT8
// products can leave INT32), with their (rows, blocks) group scales if `group_scales` is not null
// (binary16 values, held as float: anything else is refused). With `levels` (16 INT8 values in
// [-127, 127], distinct), every value must be one of them and is packed as its 4-bit code.
PackedInt8 pack_int8(const int8_t* w, int rows, int cols, const float* group_scales, Int8Kernel kernel,
                     const std::array<int8_t, 16>* levels = nullptr);
// The same from a matrix that is read a row at a time: `row_values(r, out)` writes row r's cols INT8
// values to `out` (a 4-bit matrix decodes one row of its codes, never the whole matrix).
using Int8RowSource = std::function<void(int row, int8_t* out)>;
PackedInt8 pack_int8(const Int8RowSource& row_values, int rows, int cols, const float* group_scales, Int8Kernel kernel,
                     const std::array<int8_t, 16>* levels = nullptr);

// Row `row`'s INT8 values (4-bit levels as their INT8 values) read back from the packed layout, and the
// weight scale of its block `block` (only where the matrix has group scales): a tied token table is
// looked up in its classifier's packed copy, not held twice.
void packed_row_values(const PackedInt8& packed, int row, int8_t* out);
float packed_group_scale(const PackedInt8& packed, int row, int block);

// One activation row for the kernels: `x` holds padded_cols() INT8 values (zeros after cols), and
// `block_sums` each block's sum of them (int8_block_sums).
void int8_block_sums(const int8_t* x, int blocks, int32_t* block_sums);

// For the 16 * `groups` rows from group `first_group` on: out[r] = the exact INT32 sum over c of
// x[c] * w[r][c]. `out` holds 16 * groups values (padded rows give 0).
void dot_int8_packed(const PackedInt8& w, const int8_t* x, const int32_t* block_sums, int first_group, int groups, int32_t* out);

// The same rows with activations in blocks, each with its own scale x_scales[b], and the weights'
// group scales if the matrix has them: out[r] = sum over blocks b of x_scales[b] * w_scale[r][b] *
// (exact INT32 sum over c in b of x[c] * w[r][c]), summed in float.
void dot_int8_packed_blocks(const PackedInt8& w, const int8_t* x, const int32_t* block_sums, const float* x_scales, int first_group,
                            int groups, float* out);

}  // namespace fedcal

// The GGML tensor types fedcal reads and writes in GGUF files, each defined once here:
//   F32   4 bytes per value
//   F16   IEEE binary16, 2 bytes per value
//   BF16  bfloat16, 2 bytes per value
//   Q8_0  blocks of 32 values: a binary16 scale d, then 32 int8 q; value = d * q. Quantized as
//         llama.cpp's reference does: d = max|x| / 127, q = round(x / d) (half away from zero).
// Read only (dequantized to FP32 on load, so that users' 4-bit files load), as ggml publishes them:
//   Q4_0  blocks of 32: binary16 d, 16 bytes of nibbles (byte m: value m low, m + 16 high); d (q - 8).
//   Q4_1  blocks of 32: binary16 d, binary16 m, 16 bytes of nibbles as Q4_0; d q + m.
//   Q5_0  blocks of 32: binary16 d, 4 bytes of fifth bits (little-endian: bit i for value i), nibbles
//         as Q4_0; d (q - 16). Q5_1: binary16 d and m, then as Q5_0; d q + m. (llama-quantize's
//         K-quant mixes fall back to them for rows that are not whole 256-value super-blocks.)
//   Q4_K  super-blocks of 256: binary16 d, binary16 dmin, 12 bytes of eight 6-bit scales and eight
//         6-bit mins (scale_min_k4), 128 bytes of nibbles: each 64 values are 32 bytes, low nibbles
//         then high, with sub-blocks 2j and 2j + 1; value = d sc q - dmin m.
//   Q5_K  as Q4_K, with 32 bytes of fifth bits (qh) between the scales and the nibbles: bit 2j of
//         qh[l] for value l of the 64's low half, bit 2j + 1 for its high half.
//   Q6_K  super-blocks of 256: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales (one
//         per 16 values), binary16 d; value = d sc (q - 32).
// A row (GGUF's ne[0], the input dimension of a matrix) is whole blocks; Q8_0 needs ne[0] % 32 == 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fedcal {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30
};

constexpr int kQ8_0BlockValues = 32;
constexpr size_t kQ8_0BlockBytes = 2 + kQ8_0BlockValues;

// The type with this GGUF number, or nullopt for one fedcal does not read (named by ggml_type_name).
std::optional<GgmlType> ggml_type_from_number(uint32_t number);
// "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", or "type N" for a number fedcal does not
// know.
std::string ggml_type_name(uint32_t number);
inline std::string ggml_type_name(GgmlType type) { return ggml_type_name(static_cast<uint32_t>(type)); }
// "f32" / "f16" / "bf16" / "q8_0" (any case) -> the type; nullopt otherwise.
std::optional<GgmlType> parse_ggml_type(const std::string& name);

// Values per block (1 for the float types) and bytes per block.
int ggml_block_values(GgmlType type);
size_t ggml_block_bytes(GgmlType type);
// Bytes of `values` values of `type`; nullopt when `values` is not whole blocks or overflows.
std::optional<uint64_t> ggml_bytes(GgmlType type, uint64_t values);

// FP32 values -> `type` (values.size() whole blocks; F32, F16, BF16 and Q8_0 only). Throws Error otherwise.
std::vector<std::byte> ggml_encode(GgmlType type, std::span<const float> values);
// `type` bytes -> out.size() FP32 values; bytes.size() must be ggml_bytes(type, out.size()).
void ggml_decode(GgmlType type, std::span<const std::byte> bytes, std::span<float> out);

}  // namespace fedcal

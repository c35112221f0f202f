// The GGML tensor types fedcal reads and writes in GGUF files, each defined once here:
//   F32   4 bytes per value
//   F16   IEEE binary16, 2 bytes per value
//   BF16  bfloat16, 2 bytes per value
//   Q8_0  blocks of 32 values: a binary16 scale d, then 32 int8 q; value = d * q. Quantized as
//         llama.cpp's reference does: d = max|x| / 127, q = round(x / d) (half away from zero).
// A row (GGUF's ne[0], the input dimension of a matrix) is whole blocks; Q8_0 needs ne[0] % 32 == 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fedcal {

enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kQ8_0 = 8, kBF16 = 30 };

constexpr int kQ8_0BlockValues = 32;
constexpr size_t kQ8_0BlockBytes = 2 + kQ8_0BlockValues;

// The type with this GGUF number, or nullopt for one fedcal does not read (named by ggml_type_name).
std::optional<GgmlType> ggml_type_from_number(uint32_t number);
// "F32", "F16", "BF16", "Q8_0", or "type N" for a number fedcal does not know.
std::string ggml_type_name(uint32_t number);
inline std::string ggml_type_name(GgmlType type) { return ggml_type_name(static_cast<uint32_t>(type)); }
// "f32" / "f16" / "bf16" / "q8_0" (any case) -> the type; nullopt otherwise.
std::optional<GgmlType> parse_ggml_type(const std::string& name);

// Values per block (1 for the float types) and bytes per block.
int ggml_block_values(GgmlType type);
size_t ggml_block_bytes(GgmlType type);
// Bytes of `values` values of `type`; nullopt when `values` is not whole blocks or overflows.
std::optional<uint64_t> ggml_bytes(GgmlType type, uint64_t values);

// FP32 values -> `type` (values.size() whole blocks). Throws Error otherwise.
std::vector<std::byte> ggml_encode(GgmlType type, std::span<const float> values);
// `type` bytes -> out.size() FP32 values; bytes.size() must be ggml_bytes(type, out.size()).
void ggml_decode(GgmlType type, std::span<const std::byte> bytes, std::span<float> out);

}  // namespace fedcal

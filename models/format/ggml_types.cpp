#include "models/format/ggml_types.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/little_endian.h"
#include "models/format/float16.h"

namespace fedcal {

std::optional<GgmlType> ggml_type_from_number(uint32_t number) {
  switch (number) {
    case 0:
      return GgmlType::kF32;
    case 1:
      return GgmlType::kF16;
    case 8:
      return GgmlType::kQ8_0;
    case 30:
      return GgmlType::kBF16;
    default:
      return std::nullopt;
  }
}

std::string ggml_type_name(uint32_t number) {
  switch (number) {
    case 0:
      return "F32";
    case 1:
      return "F16";
    case 8:
      return "Q8_0";
    case 30:
      return "BF16";
    default:
      return "type " + std::to_string(number);
  }
}

std::optional<GgmlType> parse_ggml_type(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "f32") return GgmlType::kF32;
  if (lower == "f16") return GgmlType::kF16;
  if (lower == "bf16") return GgmlType::kBF16;
  if (lower == "q8_0") return GgmlType::kQ8_0;
  return std::nullopt;
}

int ggml_block_values(GgmlType type) { return type == GgmlType::kQ8_0 ? kQ8_0BlockValues : 1; }

size_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 4;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      return 2;
    case GgmlType::kQ8_0:
      return kQ8_0BlockBytes;
  }
  return 0;
}

std::optional<uint64_t> ggml_bytes(GgmlType type, uint64_t values) {
  const uint64_t per_block = static_cast<uint64_t>(ggml_block_values(type));
  if (values % per_block != 0) return std::nullopt;
  const uint64_t blocks = values / per_block;
  if (blocks > UINT64_MAX / ggml_block_bytes(type)) return std::nullopt;
  return blocks * ggml_block_bytes(type);
}

namespace {

void put_u16(std::byte* out, uint16_t value) { std::memcpy(out, &value, 2); }
uint16_t get_u16(const std::byte* in) {
  uint16_t value;
  std::memcpy(&value, in, 2);
  return value;
}

// One Q8_0 block: d = amax / 127 stored as binary16; q = round(x / d), with the reciprocal of the
// FP32 d as llama.cpp's quantize_row_q8_0_ref computes it.
void encode_q8_0_block(const float* x, std::byte* out) {
  float amax = 0;
  for (int i = 0; i < kQ8_0BlockValues; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float inverse = d != 0 ? 1.0f / d : 0.0f;
  put_u16(out, f32_to_f16(d));
  for (int i = 0; i < kQ8_0BlockValues; ++i) {
    const float q = std::round(x[i] * inverse);
    out[2 + i] = static_cast<std::byte>(static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f)));
  }
}

}  // namespace

std::vector<std::byte> ggml_encode(GgmlType type, std::span<const float> values) {
  const std::optional<uint64_t> size = ggml_bytes(type, values.size());
  if (!size) fail("{} needs whole blocks of {} values; got {}", ggml_type_name(type), ggml_block_values(type), values.size());
  std::vector<std::byte> out(*size);
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), values.data(), out.size());
      break;
    case GgmlType::kF16:
      for (size_t i = 0; i < values.size(); ++i) put_u16(&out[2 * i], f32_to_f16(values[i]));
      break;
    case GgmlType::kBF16:
      for (size_t i = 0; i < values.size(); ++i) put_u16(&out[2 * i], f32_to_bf16(values[i]));
      break;
    case GgmlType::kQ8_0:
      for (size_t block = 0; block * kQ8_0BlockValues < values.size(); ++block) {
        encode_q8_0_block(&values[block * kQ8_0BlockValues], &out[block * kQ8_0BlockBytes]);
      }
      break;
  }
  return out;
}

void ggml_decode(GgmlType type, std::span<const std::byte> bytes, std::span<float> out) {
  const std::optional<uint64_t> size = ggml_bytes(type, out.size());
  if (!size || *size != bytes.size()) {
    fail("{}: {} bytes do not hold {} values", ggml_type_name(type), bytes.size(), out.size());
  }
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out.data(), bytes.data(), bytes.size());
      break;
    case GgmlType::kF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = f16_to_f32(get_u16(&bytes[2 * i]));
      break;
    case GgmlType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(get_u16(&bytes[2 * i]));
      break;
    case GgmlType::kQ8_0:
      for (size_t block = 0; block * kQ8_0BlockValues < out.size(); ++block) {
        const std::byte* in = &bytes[block * kQ8_0BlockBytes];
        const float d = f16_to_f32(get_u16(in));
        for (int i = 0; i < kQ8_0BlockValues; ++i) {
          out[block * kQ8_0BlockValues + static_cast<size_t>(i)] = d * static_cast<float>(static_cast<int8_t>(in[2 + i]));
        }
      }
      break;
  }
}

}  // namespace fedcal

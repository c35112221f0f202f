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
    case 2:
      return GgmlType::kQ4_0;
    case 3:
      return GgmlType::kQ4_1;
    case 6:
      return GgmlType::kQ5_0;
    case 7:
      return GgmlType::kQ5_1;
    case 8:
      return GgmlType::kQ8_0;
    case 12:
      return GgmlType::kQ4_K;
    case 13:
      return GgmlType::kQ5_K;
    case 14:
      return GgmlType::kQ6_K;
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
    case 2:
      return "Q4_0";
    case 3:
      return "Q4_1";
    case 6:
      return "Q5_0";
    case 7:
      return "Q5_1";
    case 8:
      return "Q8_0";
    case 12:
      return "Q4_K";
    case 13:
      return "Q5_K";
    case 14:
      return "Q6_K";
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

int ggml_block_values(GgmlType type) {
  switch (type) {
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
      return 32;
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return 256;
    default:
      return 1;
  }
}

size_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 4;
    case GgmlType::kF16:
    case GgmlType::kBF16:
      return 2;
    case GgmlType::kQ8_0:
      return kQ8_0BlockBytes;
    case GgmlType::kQ4_0:
      return 18;
    case GgmlType::kQ4_1:
      return 20;
    case GgmlType::kQ5_0:
      return 22;
    case GgmlType::kQ5_1:
      return 24;
    case GgmlType::kQ4_K:
      return 144;
    case GgmlType::kQ5_K:
      return 176;
    case GgmlType::kQ6_K:
      return 210;
  }
  return 0;
}

std::optional<uint64_t> ggml_bytes(GgmlType type, uint64_t values) {
  const uint64_t per_block = static_cast<uint64_t>(ggml_block_values(type));
  if (values % per_block != 0 || ggml_block_bytes(type) == 0) return std::nullopt;
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

// Q4_K / Q5_K: sub-block j's 6-bit scale and min from the 12 packed bytes: j < 4 in the low 6 bits of
// bytes j and j + 4; j >= 4 in the nibbles of byte j + 4 with their top 2 bits in bytes j - 4 and j.
void scale_min_k4(int j, const std::byte* q, int& scale, int& min) {
  const auto at = [&](int i) { return static_cast<int>(std::to_integer<uint8_t>(q[i])); };
  if (j < 4) {
    scale = at(j) & 63;
    min = at(j + 4) & 63;
  } else {
    scale = (at(j + 4) & 0xF) | ((at(j - 4) >> 6) << 4);
    min = (at(j + 4) >> 4) | ((at(j) >> 6) << 4);
  }
}

uint8_t byte_at(const std::byte* p, size_t i) { return std::to_integer<uint8_t>(p[i]); }

// Q4_0, Q4_1 (with_min), Q5_0 and Q5_1 (five).
void decode_q4_q5_block(const std::byte* in, bool with_min, bool five, float* y) {
  const float d = f16_to_f32(get_u16(in));
  const float m = with_min ? f16_to_f32(get_u16(in + 2)) : 0.0f;
  const std::byte* after = in + (with_min ? 4 : 2);
  uint32_t high = 0;
  if (five) std::memcpy(&high, after, 4);  // little-endian, as the file is
  const std::byte* qs = after + (five ? 4 : 0);
  const int offset = with_min ? 0 : five ? 16 : 8;
  for (size_t l = 0; l < 16; ++l) {
    const int high_low = five ? static_cast<int>((high >> l) & 1) << 4 : 0;
    const int high_high = five ? static_cast<int>((high >> (l + 16)) & 1) << 4 : 0;
    y[l] = d * static_cast<float>(((byte_at(qs, l) & 0xF) | high_low) - offset) + m;
    y[l + 16] = d * static_cast<float>(((byte_at(qs, l) >> 4) | high_high) - offset) + m;
  }
}

// Q4_K (qh null) and Q5_K.
void decode_k_block(const std::byte* in, bool five, float* y) {
  const float d = f16_to_f32(get_u16(in)), dmin = f16_to_f32(get_u16(in + 2));
  const std::byte* scales = in + 4;
  const std::byte* qh = five ? in + 16 : nullptr;
  const std::byte* qs = in + (five ? 48 : 16);
  for (int j = 0; j < 4; ++j, qs += 32, y += 64) {
    int sc1 = 0, m1 = 0, sc2 = 0, m2 = 0;
    scale_min_k4(2 * j, scales, sc1, m1);
    scale_min_k4(2 * j + 1, scales, sc2, m2);
    for (size_t l = 0; l < 32; ++l) {
      const int high1 = qh != nullptr && (byte_at(qh, l) >> (2 * j)) & 1 ? 16 : 0;
      const int high2 = qh != nullptr && (byte_at(qh, l) >> (2 * j + 1)) & 1 ? 16 : 0;
      y[l] = d * static_cast<float>(sc1) * static_cast<float>((byte_at(qs, l) & 0xF) + high1) - dmin * static_cast<float>(m1);
      y[l + 32] = d * static_cast<float>(sc2) * static_cast<float>((byte_at(qs, l) >> 4) + high2) - dmin * static_cast<float>(m2);
    }
  }
}

void decode_q6_k_block(const std::byte* in, float* y) {
  const std::byte* ql = in;
  const std::byte* qh = in + 128;
  const std::byte* scales = in + 192;
  const float d = f16_to_f32(get_u16(in + 208));
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, scales += 8, y += 128) {
    for (size_t l = 0; l < 32; ++l) {
      const size_t is = l / 16;
      const int q1 = ((byte_at(ql, l) & 0xF) | (((byte_at(qh, l) >> 0) & 3) << 4)) - 32;
      const int q2 = ((byte_at(ql, l + 32) & 0xF) | (((byte_at(qh, l) >> 2) & 3) << 4)) - 32;
      const int q3 = ((byte_at(ql, l) >> 4) | (((byte_at(qh, l) >> 4) & 3) << 4)) - 32;
      const int q4 = ((byte_at(ql, l + 32) >> 4) | (((byte_at(qh, l) >> 6) & 3) << 4)) - 32;
      const auto scale = [&](size_t k) { return d * static_cast<float>(static_cast<int8_t>(byte_at(scales, k))); };
      y[l] = scale(is) * static_cast<float>(q1);
      y[l + 32] = scale(is + 2) * static_cast<float>(q2);
      y[l + 64] = scale(is + 4) * static_cast<float>(q3);
      y[l + 96] = scale(is + 6) * static_cast<float>(q4);
    }
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
    default:
      fail("{}: fedcal reads this type but does not write it", ggml_type_name(type));
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
    default: {
      const size_t values = static_cast<size_t>(ggml_block_values(type)), block_bytes = ggml_block_bytes(type);
      for (size_t block = 0; block * values < out.size(); ++block) {
        const std::byte* in = &bytes[block * block_bytes];
        float* y = &out[block * values];
        if (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ5_0 || type == GgmlType::kQ5_1)
          decode_q4_q5_block(in, type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1,
                             type == GgmlType::kQ5_0 || type == GgmlType::kQ5_1, y);
        if (type == GgmlType::kQ4_K || type == GgmlType::kQ5_K) decode_k_block(in, type == GgmlType::kQ5_K, y);
        if (type == GgmlType::kQ6_K) decode_q6_k_block(in, y);
      }
    }
  }
}

}  // namespace fedcal

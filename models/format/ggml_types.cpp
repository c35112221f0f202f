#include "models/format/ggml_types.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string_view>

#include "common/error.h"
#include "common/little_endian.h"
#include "models/format/float16.h"

namespace fedcal {

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

// Whole-block loops around each type's block function (inlined: F16 and BF16 decode a value at a time).
template <void (*kBlock)(const std::byte*, float*), int kValues, size_t kBytes>
void decode_blocks(const std::byte* in, size_t blocks, float* out) {
  for (size_t b = 0; b < blocks; ++b) kBlock(in + b * kBytes, out + b * kValues);
}
template <void (*kBlock)(const float*, std::byte*), int kValues, size_t kBytes>
void encode_blocks(const float* in, size_t blocks, std::byte* out) {
  for (size_t b = 0; b < blocks; ++b) kBlock(in + b * kValues, out + b * kBytes);
}

void decode_f32(const std::byte* in, float* y) { std::memcpy(y, in, 4); }
void decode_f16(const std::byte* in, float* y) { *y = f16_to_f32(get_u16(in)); }
void decode_bf16(const std::byte* in, float* y) { *y = bf16_to_f32(get_u16(in)); }
void decode_q8_0_block(const std::byte* in, float* y) {
  const float d = f16_to_f32(get_u16(in));
  for (int i = 0; i < kQ8_0BlockValues; ++i) y[i] = d * static_cast<float>(static_cast<int8_t>(in[2 + i]));
}
void decode_q4_0(const std::byte* in, float* y) { decode_q4_q5_block(in, false, false, y); }
void decode_q4_1(const std::byte* in, float* y) { decode_q4_q5_block(in, true, false, y); }
void decode_q5_0(const std::byte* in, float* y) { decode_q4_q5_block(in, false, true, y); }
void decode_q5_1(const std::byte* in, float* y) { decode_q4_q5_block(in, true, true, y); }
void decode_q4_k(const std::byte* in, float* y) { decode_k_block(in, false, y); }
void decode_q5_k(const std::byte* in, float* y) { decode_k_block(in, true, y); }
void encode_f32(const float* x, std::byte* out) { std::memcpy(out, x, 4); }
void encode_f16(const float* x, std::byte* out) { put_u16(out, f32_to_f16(*x)); }
void encode_bf16(const float* x, std::byte* out) { put_u16(out, f32_to_bf16(*x)); }

// Every type fedcal reads, defined once: its GGUF number (the enum's value), name, block shape, and how
// its blocks decode and, for the types fedcal writes, encode.
struct GgmlTraits {
  GgmlType type;
  const char* name;
  int block_values;
  size_t block_bytes;
  void (*decode)(const std::byte* in, size_t blocks, float* out);
  void (*encode)(const float* in, size_t blocks, std::byte* out);  // nullptr: read only
};
// One row of the table: the block shape stated once, for the fields and the block loops alike.
using DecodeBlock = void (*)(const std::byte* in, float* out);
using EncodeBlock = void (*)(const float* in, std::byte* out);
template <int kValues, size_t kBytes, DecodeBlock kDecode, EncodeBlock kEncode = nullptr>
constexpr GgmlTraits ggml_row(GgmlType type, const char* name) {
  GgmlTraits row{type, name, kValues, kBytes, decode_blocks<kDecode, kValues, kBytes>, nullptr};
  if constexpr (kEncode != nullptr) row.encode = encode_blocks<kEncode, kValues, kBytes>;
  return row;
}
constexpr GgmlTraits kGgmlTypes[] = {
    ggml_row<1, 4, decode_f32, encode_f32>(GgmlType::kF32, "F32"),
    ggml_row<1, 2, decode_f16, encode_f16>(GgmlType::kF16, "F16"),
    ggml_row<1, 2, decode_bf16, encode_bf16>(GgmlType::kBF16, "BF16"),
    ggml_row<kQ8_0BlockValues, kQ8_0BlockBytes, decode_q8_0_block, encode_q8_0_block>(GgmlType::kQ8_0, "Q8_0"),
    ggml_row<32, 18, decode_q4_0>(GgmlType::kQ4_0, "Q4_0"),
    ggml_row<32, 20, decode_q4_1>(GgmlType::kQ4_1, "Q4_1"),
    ggml_row<32, 22, decode_q5_0>(GgmlType::kQ5_0, "Q5_0"),
    ggml_row<32, 24, decode_q5_1>(GgmlType::kQ5_1, "Q5_1"),
    ggml_row<256, 144, decode_q4_k>(GgmlType::kQ4_K, "Q4_K"),
    ggml_row<256, 176, decode_q5_k>(GgmlType::kQ5_K, "Q5_K"),
    ggml_row<256, 210, decode_q6_k_block>(GgmlType::kQ6_K, "Q6_K"),
};

const GgmlTraits* find_traits(uint32_t number) {
  for (const GgmlTraits& traits : kGgmlTypes) {
    if (static_cast<uint32_t>(traits.type) == number) return &traits;
  }
  return nullptr;
}

const GgmlTraits& traits_of(GgmlType type) {
  const GgmlTraits* traits = find_traits(static_cast<uint32_t>(type));
  if (traits == nullptr) fail("GGML type {} is not one fedcal reads", static_cast<uint32_t>(type));
  return *traits;
}

}  // namespace

std::optional<GgmlType> ggml_type_from_number(uint32_t number) {
  const GgmlTraits* traits = find_traits(number);
  return traits != nullptr ? std::optional(traits->type) : std::nullopt;
}

std::string ggml_type_name(uint32_t number) {
  const GgmlTraits* traits = find_traits(number);
  return traits != nullptr ? traits->name : "type " + std::to_string(number);
}

std::optional<GgmlType> parse_ggml_type(const std::string& name) {
  for (const GgmlTraits& traits : kGgmlTypes) {
    const std::string_view known(traits.name);
    const bool same = known.size() == name.size() && std::equal(known.begin(), known.end(), name.begin(), [](char a, char b) {
                        return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
                      });
    if (same && traits.encode != nullptr) return traits.type;
  }
  return std::nullopt;
}

int ggml_block_values(GgmlType type) { return traits_of(type).block_values; }
size_t ggml_block_bytes(GgmlType type) { return traits_of(type).block_bytes; }

std::optional<uint64_t> ggml_bytes(GgmlType type, uint64_t values) {
  const uint64_t per_block = static_cast<uint64_t>(ggml_block_values(type));
  if (values % per_block != 0) return std::nullopt;
  const uint64_t blocks = values / per_block;
  if (blocks > UINT64_MAX / ggml_block_bytes(type)) return std::nullopt;
  return blocks * ggml_block_bytes(type);
}

std::vector<std::byte> ggml_encode(GgmlType type, std::span<const float> values) {
  const GgmlTraits& traits = traits_of(type);
  if (traits.encode == nullptr) fail("{}: fedcal reads this type but does not write it", traits.name);
  const std::optional<uint64_t> size = ggml_bytes(type, values.size());
  if (!size) fail("{} needs whole blocks of {} values; got {}", traits.name, traits.block_values, values.size());
  std::vector<std::byte> out(*size);
  traits.encode(values.data(), values.size() / static_cast<size_t>(traits.block_values), out.data());
  return out;
}

void ggml_decode(GgmlType type, std::span<const std::byte> bytes, std::span<float> out) {
  const GgmlTraits& traits = traits_of(type);
  const std::optional<uint64_t> size = ggml_bytes(type, out.size());
  if (!size || *size != bytes.size()) fail("{}: {} bytes do not hold {} values", traits.name, bytes.size(), out.size());
  traits.decode(bytes.data(), out.size() / static_cast<size_t>(traits.block_values), out.data());
}

}  // namespace fedcal

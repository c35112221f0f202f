#include "models/engine/vector_math.h"

#include <cmath>
#include <cstring>
#include <limits>

// x86-64: an AVX2 + FMA clone and a baseline clone of each kernel, chosen once at load time (ifunc).
// FEDCAL_BASELINE_KERNELS builds the baseline alone, so tests can run it on an AVX2 machine.
#if defined(__x86_64__) && !defined(FEDCAL_BASELINE_KERNELS)
#define FEDCAL_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FEDCAL_KERNEL
#endif
#define FEDCAL_INLINE inline __attribute__((always_inline))

// Under AddressSanitizer the attention loop runs uninstrumented after checking, once, every region it
// reads or writes (FEDCAL_REGION_CHECKED_KERNEL, require_addressable): the same errors are caught,
// since each region is exactly what the loop touches, without a shadow check per access and per
// partial sum (instrumented, attention took 49% of the sanitizer build's fleet tests and made them 5x
// slower). Such a kernel is not cloned there (clang cannot combine target_clones with no_sanitize).
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FEDCAL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FEDCAL_ASAN 1
#endif
#ifdef FEDCAL_ASAN
#include <sanitizer/asan_interface.h>

#include <cstdio>
#include <cstdlib>
#if defined(__clang__)
#define FEDCAL_REGION_CHECKED_KERNEL __attribute__((no_sanitize("address", "coverage")))
#else
#define FEDCAL_REGION_CHECKED_KERNEL __attribute__((no_sanitize("address")))
#endif
#else
#define FEDCAL_REGION_CHECKED_KERNEL FEDCAL_KERNEL
#endif

namespace fedcal {
namespace {

// Aborts with ASan's description of the first byte of [data, data + bytes) that the program may not
// touch (a redzone, freed memory); does nothing without AddressSanitizer.
inline void require_addressable([[maybe_unused]] const void* data, [[maybe_unused]] size_t bytes,
                                [[maybe_unused]] const char* what) {
#ifdef FEDCAL_ASAN
  const void* bad = __asan_region_is_poisoned(const_cast<void*>(data), bytes);
  if (bad == nullptr) return;
  std::fprintf(stderr, "attention_head: %s [%p, +%zu) reaches unaddressable byte %p\n", what, data, bytes, bad);
  __asan_describe_address(const_cast<void*>(bad));
  std::abort();
#endif
}

// Partial sums per lane: enough independent chains for two 256-bit FMA units, and a fixed summation
// order (the compiler may vectorize across lanes without reassociating floats).
constexpr int kLanes = 16;

// Adds the lanes pairwise (a fixed tree, which the compiler keeps in vector registers).
FEDCAL_INLINE float sum_lanes(float (&partial)[kLanes]) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) partial[j] += partial[j + width];
  }
  return partial[0];
}

FEDCAL_INLINE float dot_inline(const float* __restrict a, const float* __restrict b, int size) {
  float partial[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) partial[j] += a[i + j] * b[i + j];
  }
  float tail = 0.0f;
  for (; i < size; ++i) tail += a[i] * b[i];
  return sum_lanes(partial) + tail;
}

FEDCAL_INLINE float sum_inline(const float* x, int size) {
  float partial[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) partial[j] += x[i + j];
  }
  float tail = 0.0f;
  for (; i < size; ++i) tail += x[i];
  return sum_lanes(partial) + tail;
}

// out[i0 .. i0 + Width) = sum over s < length of weights[s] * rows[s * row_size + i0 ..], with the
// Width sums in registers across the whole loop over rows.
template <int Width>
FEDCAL_INLINE void weighted_row_sum(const float* __restrict weights, const float* __restrict rows, int length, int row_size,
                                    int i0, float* __restrict out) {
  float sum[Width] = {};
  for (int s = 0; s < length; ++s) {
    const float weight = weights[s];
    const float* row = rows + size_t(s) * row_size + i0;
    for (int j = 0; j < Width; ++j) sum[j] += weight * row[j];
  }
  for (int j = 0; j < Width; ++j) out[i0 + j] = sum[j];
}

FEDCAL_INLINE uint32_t float_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

FEDCAL_INLINE float bits_float(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// Adding 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer (nearest, ties to even, the
// default rounding mode) held in the low mantissa bits: bits(x + kRoundingBias) - kRoundingBiasBits.
constexpr float kRoundingBias = 12582912.0f;
constexpr uint32_t kRoundingBiasBits = 0x4B400000u;

// exp(x) = 2^k * exp(r), k = round(x / ln 2), |r| <= ln 2 / 2, exp(r) by Cephes' expf polynomial.
// Branch-free and without float->int conversions, so loops around it vectorize and a NaN stays NaN.
FEDCAL_INLINE float exp_inline(float x) {
  x = x < -87.33654f ? -87.33654f : x;  // 2^k stays a normal float
  x = x > 88.37626f ? 88.37626f : x;    // k <= 127
  const float biased = x * 1.44269504088896341f + kRoundingBias;
  const float k = biased - kRoundingBias;
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;  // ln 2 split in two for an exact k * ln2_hi
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t k_bits = float_bits(biased) - kRoundingBiasBits;
  return p * bits_float((k_bits + 127u) << 23);
}

FEDCAL_INLINE float max_inline(const float* x, int size) {
  float partial[kLanes];
  for (float& p : partial) p = -std::numeric_limits<float>::infinity();
  int i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) partial[j] = x[i + j] > partial[j] ? x[i + j] : partial[j];
  }
  float max = -std::numeric_limits<float>::infinity();
  for (; i < size; ++i) max = x[i] > max ? x[i] : max;
  for (float p : partial) max = p > max ? p : max;
  return max;
}

FEDCAL_INLINE void softmax_inline(float* x, int size) {
  const float max = max_inline(x, size);
  for (int i = 0; i < size; ++i) x[i] = exp_inline(x[i] - max);
  const float inverse = 1.0f / sum_inline(x, size);
  for (int i = 0; i < size; ++i) x[i] *= inverse;
}

}  // namespace

FEDCAL_KERNEL float dot(const float* a, const float* b, int size) { return dot_inline(a, b, size); }

FEDCAL_KERNEL void rmsnorm(float* out, const float* x, const float* weight, int size, float eps) {
  const float sum_squares = dot_inline(x, x, size);
  const float scale = 1.0f / std::sqrt(sum_squares / static_cast<float>(size) + eps);
  for (int i = 0; i < size; ++i) out[i] = x[i] * scale * weight[i];
}

FEDCAL_KERNEL void softmax(float* x, int size) { softmax_inline(x, size); }

FEDCAL_KERNEL void exp_inplace(float* x, size_t size) {
  for (size_t i = 0; i < size; ++i) x[i] = exp_inline(x[i]);
}

FEDCAL_KERNEL void silu_mul(float* __restrict gate, const float* __restrict up, size_t size) {
  for (size_t i = 0; i < size; ++i) gate[i] = gate[i] / (1.0f + exp_inline(-gate[i])) * up[i];
}

FEDCAL_KERNEL void gelu_tanh_mul(float* __restrict gate, const float* __restrict up, size_t size) {
  constexpr float k = 2.0f * 0.7978845608028654f;  // 2 sqrt(2 / pi)
  for (size_t i = 0; i < size; ++i) {
    const float x = gate[i];
    gate[i] = x / (1.0f + exp_inline(-k * (x + 0.044715f * x * x * x))) * up[i];
  }
}

FEDCAL_KERNEL void add_into(float* __restrict x, const float* __restrict y, size_t size) {
  for (size_t i = 0; i < size; ++i) x[i] += y[i];
}

FEDCAL_REGION_CHECKED_KERNEL void attention_head(const float* q, const float* keys, const float* values, int length,
                                                 int head_size, float scale, float* scores, float* out) {
  const size_t rows_bytes = size_t(length) * head_size * sizeof(float), row_bytes = size_t(head_size) * sizeof(float);
  require_addressable(q, row_bytes, "q");
  require_addressable(keys, rows_bytes, "keys");
  require_addressable(values, rows_bytes, "values");
  require_addressable(scores, size_t(length) * sizeof(float), "scores");
  require_addressable(out, row_bytes, "out");
  for (int s = 0; s < length; ++s) scores[s] = dot_inline(q, keys + size_t(s) * head_size, head_size) * scale;
  softmax_inline(scores, length);
  // Blocks of 32 outputs: 4 AVX2 registers of independent sums per pass over the values.
  int i = 0;
  for (; i + 32 <= head_size; i += 32) weighted_row_sum<32>(scores, values, length, head_size, i, out);
  for (; i < head_size; ++i) weighted_row_sum<1>(scores, values, length, head_size, i, out);
}

FEDCAL_KERNEL void quantize_int8(const float* __restrict x, int8_t* __restrict q, size_t size, float scale, int zero_point) {
  const float inverse = 1.0f / scale;
  const float low = static_cast<float>(-128 - zero_point), high = static_cast<float>(127 - zero_point);
  for (size_t i = 0; i < size; ++i) {
    float v = x[i] * inverse;
    v = v < low ? low : v;
    v = v > high ? high : v;
    const auto rounded = static_cast<int32_t>(float_bits(v + kRoundingBias) - kRoundingBiasBits);
    q[i] = static_cast<int8_t>(rounded + zero_point);
  }
}

FEDCAL_KERNEL void dequantize_int8(const int8_t* __restrict q, float* __restrict x, size_t size, float scale, int zero_point) {
  for (size_t i = 0; i < size; ++i) x[i] = static_cast<float>(q[i] - zero_point) * scale;
}

FEDCAL_KERNEL float max_abs(const float* x, size_t size) {
  float partial[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float a = std::fabs(x[i + j]);
      partial[j] = a > partial[j] ? a : partial[j];
    }
  }
  float max = 0.0f;
  for (; i < size; ++i) max = std::fabs(x[i]) > max ? std::fabs(x[i]) : max;
  for (const float p : partial) max = p > max ? p : max;
  return max;
}

FEDCAL_KERNEL int argmax(std::span<const float> values) {
  const int size = static_cast<int>(values.size());
  const float max = max_inline(values.data(), size);
  for (int i = 0; i < size; ++i) {
    if (values[i] == max) return i;
  }
  return 0;  // every value NaN
}

}  // namespace fedcal

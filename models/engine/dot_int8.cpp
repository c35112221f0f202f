// dot_int8_rows (vector_math.h): INT8 dot products of one activation row with rows of a weight
// matrix, exact in INT32. Chosen once at load time by the CPU (GCC/Clang function multiversioning):
//   avx2     32 products per instruction pair: |x| (unsigned) times w with x's sign, pairs summed to
//            int16 by vpmaddubsw (no saturation: |x| <= 128, |w| <= 127), then to int32 by vpmaddwd;
//            four weight rows per pass, so each activation load serves four rows
//   default  the plain loop, which the compiler vectorizes as it can (and NEON on ARM)
// FEDCAL_BASELINE_KERNELS builds the default alone, so tests can run it on an AVX2 machine.
#include <cstddef>
#include <cstdint>

#include "models/engine/vector_math.h"

#if defined(__x86_64__) && !defined(FEDCAL_BASELINE_KERNELS)
#include <immintrin.h>
#define FEDCAL_INT8_MULTIVERSION 1
#define FEDCAL_DEFAULT_TARGET __attribute__((target("default")))
#else
#define FEDCAL_DEFAULT_TARGET
#endif

namespace fedcal {
// The versions; only calls from this file go through GCC's dispatcher (one that sees every version),
// so the public function below is a plain call into it.
void dot_int8_rows_version(const int8_t* x, const int8_t* w, int rows, int cols, int32_t* out);
void dot_int8_blocks_version(const int8_t* x, const float* x_scales, const int8_t* w, const float* w_scales, int rows, int cols,
                             float* out);

FEDCAL_DEFAULT_TARGET void dot_int8_blocks_version(const int8_t* x, const float* x_scales, const int8_t* w, const float* w_scales,
                                                   int rows, int cols, float* out) {
  const int blocks = (cols + kActivationBlock - 1) / kActivationBlock;
  for (int r = 0; r < rows; ++r) {
    const int8_t* row = w + static_cast<size_t>(r) * cols;
    float sum = 0.0f;
    for (int begin = 0; begin < cols; begin += kActivationBlock) {
      const int end = begin + kActivationBlock < cols ? begin + kActivationBlock : cols;
      int32_t block = 0;
      for (int c = begin; c < end; ++c) block += static_cast<int32_t>(x[c]) * static_cast<int32_t>(row[c]);
      const int b = begin / kActivationBlock;
      const float scale = w_scales ? x_scales[b] * w_scales[static_cast<size_t>(r) * blocks + b] : x_scales[b];
      sum += scale * static_cast<float>(block);
    }
    out[r] = sum;
  }
}

FEDCAL_DEFAULT_TARGET void dot_int8_rows_version(const int8_t* x, const int8_t* w, int rows, int cols, int32_t* out) {
  for (int r = 0; r < rows; ++r) {
    const int8_t* row = w + static_cast<size_t>(r) * cols;
    int32_t sum = 0;  // integer sums are exact in any order: the compiler may vectorize freely
    for (int c = 0; c < cols; ++c) sum += static_cast<int32_t>(x[c]) * static_cast<int32_t>(row[c]);
    out[r] = sum;
  }
}

#ifdef FEDCAL_INT8_MULTIVERSION

namespace {

__attribute__((target("avx2"), always_inline)) inline __m256i products(__m256i x, __m256i abs_x, const int8_t* w) {
  const __m256i signed_w = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)), x);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(abs_x, signed_w), _mm256_set1_epi16(1));
}

__attribute__((target("avx2"), always_inline)) inline int32_t sum_lanes(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

}  // namespace

__attribute__((target("avx2"))) void dot_int8_rows_version(const int8_t* x, const int8_t* w, int rows, int cols, int32_t* out) {
  const int vectorized = cols & ~31;
  const size_t stride = static_cast<size_t>(cols);
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    const int8_t* w0 = w + static_cast<size_t>(r) * stride;
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int c = 0; c < vectorized; c += 32) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c));
      const __m256i abs_x = _mm256_sign_epi8(xv, xv);
      acc0 = _mm256_add_epi32(acc0, products(xv, abs_x, w0 + c));
      acc1 = _mm256_add_epi32(acc1, products(xv, abs_x, w0 + stride + c));
      acc2 = _mm256_add_epi32(acc2, products(xv, abs_x, w0 + 2 * stride + c));
      acc3 = _mm256_add_epi32(acc3, products(xv, abs_x, w0 + 3 * stride + c));
    }
    int32_t sums[4] = {sum_lanes(acc0), sum_lanes(acc1), sum_lanes(acc2), sum_lanes(acc3)};
    for (int k = 0; k < 4; ++k) {
      for (int c = vectorized; c < cols; ++c) sums[k] += static_cast<int32_t>(x[c]) * w0[static_cast<size_t>(k) * stride + c];
      out[r + k] = sums[k];
    }
  }
  for (; r < rows; ++r) {
    const int8_t* row = w + static_cast<size_t>(r) * stride;
    __m256i acc = _mm256_setzero_si256();
    for (int c = 0; c < vectorized; c += 32) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c));
      acc = _mm256_add_epi32(acc, products(xv, _mm256_sign_epi8(xv, xv), row + c));
    }
    int32_t sum = sum_lanes(acc);
    for (int c = vectorized; c < cols; ++c) sum += static_cast<int32_t>(x[c]) * row[c];
    out[r] = sum;
  }
}

namespace {

__attribute__((target("avx2,fma"), always_inline)) inline float sum_float_lanes(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

// Four weight rows per pass over the activation blocks: each block's products summed exactly to
// eight INT32 lanes per row (as in dot_int8_rows), converted to float and accumulated times the
// block's scale (times the row's block scale, with weight groups) with one FMA; lanes summed once per
// row at the end.
__attribute__((target("avx2,fma"))) void dot_int8_blocks_version(const int8_t* x, const float* x_scales, const int8_t* w,
                                                               const float* w_scales, int rows, int cols, float* out) {
  static_assert(kActivationBlock == 32, "one AVX2 register per block");
  const int full = cols / kActivationBlock * kActivationBlock, blocks = (cols + kActivationBlock - 1) / kActivationBlock;
  const size_t stride = static_cast<size_t>(cols);
  // The scale of block b of row r.
  auto scale = [&](int r, int b) { return w_scales ? x_scales[b] * w_scales[static_cast<size_t>(r) * blocks + b] : x_scales[b]; };
  auto tail = [&](const int8_t* row, int r) {  // the short last block, if any
    int32_t block = 0;
    for (int c = full; c < cols; ++c) block += static_cast<int32_t>(x[c]) * row[c];
    return full < cols ? scale(r, blocks - 1) * static_cast<float>(block) : 0.0f;
  };
  int r = 0;
  for (; r + 4 <= rows; r += 4) {
    const int8_t* w0 = w + static_cast<size_t>(r) * stride;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int c = 0; c < full; c += kActivationBlock) {
      const int b = c / kActivationBlock;
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c));
      const __m256i abs_x = _mm256_sign_epi8(xv, xv);
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products(xv, abs_x, w0 + c)), _mm256_set1_ps(scale(r, b)), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products(xv, abs_x, w0 + stride + c)), _mm256_set1_ps(scale(r + 1, b)), acc1);
      acc2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products(xv, abs_x, w0 + 2 * stride + c)), _mm256_set1_ps(scale(r + 2, b)), acc2);
      acc3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products(xv, abs_x, w0 + 3 * stride + c)), _mm256_set1_ps(scale(r + 3, b)), acc3);
    }
    out[r] = sum_float_lanes(acc0) + tail(w0, r);
    out[r + 1] = sum_float_lanes(acc1) + tail(w0 + stride, r + 1);
    out[r + 2] = sum_float_lanes(acc2) + tail(w0 + 2 * stride, r + 2);
    out[r + 3] = sum_float_lanes(acc3) + tail(w0 + 3 * stride, r + 3);
  }
  for (; r < rows; ++r) {
    const int8_t* row = w + static_cast<size_t>(r) * stride;
    __m256 acc = _mm256_setzero_ps();
    for (int c = 0; c < full; c += kActivationBlock) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + c));
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(products(xv, _mm256_sign_epi8(xv, xv), row + c)),
                            _mm256_set1_ps(scale(r, c / kActivationBlock)), acc);
    }
    out[r] = sum_float_lanes(acc) + tail(row, r);
  }
}

#endif

void dot_int8_rows(const int8_t* x, const int8_t* w, int rows, int cols, int32_t* out) {
  dot_int8_rows_version(x, w, rows, cols, out);
}

void dot_int8_blocks(const int8_t* x, const float* x_scales, const int8_t* w, const float* w_scales, int rows, int cols, float* out) {
  dot_int8_blocks_version(x, x_scales, w, w_scales, rows, cols, out);
}

}  // namespace fedcal

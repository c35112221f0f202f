// The packed INT8 kernels (dot_int8.h). Each kernel reads the layout its own pack_int8 wrote, so a
// matrix always runs on the kernel it was packed for.
#include "models/engine/dot_int8.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "models/format/float16.h"

#if defined(__x86_64__) && !defined(FEDCAL_BASELINE_KERNELS)
#include <cpuid.h>
#include <immintrin.h>
#define FEDCAL_INT8_X86 1
#endif
#if defined(__aarch64__) && !defined(FEDCAL_BASELINE_KERNELS)
#include <arm_neon.h>
#include <sys/auxv.h>
#define FEDCAL_INT8_NEON 1
#endif

namespace fedcal {
namespace {

constexpr int kChunk = 4;                                        // columns per row in one packed piece
constexpr int kChunks = kActivationBlock / kChunk;               // pieces per block
constexpr size_t kChunkBytes = size_t{kPackedRows} * kChunk;     // 64: one piece of 16 rows
constexpr size_t kBlockBytes = kChunkBytes * kChunks;            // 512: one block of one row group
constexpr size_t kMaxCols = size_t{1} << 17;
// Packed bytes of one chunk and one block: half as many with 4-bit codes.
[[maybe_unused]] constexpr size_t chunk_stride(bool four) { return four ? kChunkBytes / 2 : kChunkBytes; }
constexpr size_t block_stride(bool four) { return four ? kBlockBytes / 2 : kBlockBytes; }
constexpr int kHalfBlock = kActivationBlock / 2;

// The weights' offset in the kernel's layout: vpdpbusd multiplies unsigned bytes.
int weight_offset(Int8Kernel kernel) { return kernel == Int8Kernel::kAvx512Vnni || kernel == Int8Kernel::kAvxVnni ? 128 : 0; }

// --- portable ---------------------------------------------------------------------------------------

// One group's exact INT32 sums of one block: each row's 32 values (or 16 bytes of codes) are contiguous
// in this layout, a plain dot product the compiler vectorizes.
template <bool kFour>
void block_portable(const uint8_t* p, const uint8_t* lookup, const int8_t* x, int32_t* sums) {
  for (int i = 0; i < kPackedRows; ++i) {
    int32_t sum = 0;
    if constexpr (kFour) {
      for (int m = 0; m < kHalfBlock; ++m) {
        sum += static_cast<int8_t>(lookup[p[m] & 0x0f]) * x[m] + static_cast<int8_t>(lookup[p[m] >> 4]) * x[m + kHalfBlock];
      }
      p += kHalfBlock;
    } else {
      for (int c = 0; c < kActivationBlock; ++c) sum += static_cast<int8_t>(p[c]) * x[c];
      p += kActivationBlock;
    }
    sums[i] += sum;
  }
}

template <bool kFour>
void rows_portable(const uint8_t* w, const uint8_t* lookup, int blocks, const int8_t* x, int groups, int32_t* out) {
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    int32_t sums[kPackedRows] = {};
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) block_portable<kFour>(w, lookup, x + b * kActivationBlock, sums);
    std::memcpy(out, sums, sizeof sums);
  }
}

template <bool kFour>
void blocks_portable(const uint8_t* w, const uint8_t* lookup, const uint16_t* w_scales, int blocks, const int8_t* x,
                     const float* x_scales, int groups, float* out) {
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    float acc[kPackedRows] = {};
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) {
      int32_t sums[kPackedRows] = {};
      block_portable<kFour>(w, lookup, x + b * kActivationBlock, sums);
      for (int i = 0; i < kPackedRows; ++i) {
        const float scale = w_scales != nullptr ? x_scales[b] * f16_to_f32(w_scales[i]) : x_scales[b];
        acc[i] += scale * static_cast<float>(sums[i]);
      }
      if (w_scales != nullptr) w_scales += kPackedRows;
    }
    std::memcpy(out, acc, sizeof acc);
  }
}

#if defined(FEDCAL_INT8_X86) || defined(FEDCAL_INT8_NEON)

int32_t load4(const int8_t* x) {
  int32_t value;
  std::memcpy(&value, x, sizeof value);
  return value;
}

#endif

#ifdef FEDCAL_INT8_NEON

// --- neon-dotprod -----------------------------------------------------------------------------------
// sdot (ARMv8.2 dot product, Cortex-A55/A76 and later: Raspberry Pi 5, Jetson Orin): signed x signed
// bytes, 4 products into each INT32 lane, 16 products per instruction. Same layout as avx2: one chunk
// is 4 vectors of 4 rows x 4 columns.

#ifdef __clang__
#define FEDCAL_DOTPROD_TARGET __attribute__((target("dotprod")))
#else
#define FEDCAL_DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

// One group's block: INT32 sums of rows 4q..4q+3 into sums[q]. With 4-bit codes, a chunk's two 16-byte
// halves a and b hold values 0-15 (a's low nibbles), 16-31 (b's), 32-47 (a's high), 48-63 (b's high).
template <bool kFour>
FEDCAL_DOTPROD_TARGET __attribute__((always_inline)) inline void block_neon(const uint8_t* p, int8x16_t lookup, const int8_t* x,
                                                                            int32x4_t sums[4]) {
  for (int k = 0; k < kChunks; ++k, p += chunk_stride(kFour)) {
    const int8x16_t xv = vreinterpretq_s8_s32(vdupq_n_s32(load4(x + k * kChunk)));
    int8x16_t w[4];
    if constexpr (kFour) {
      const uint8x16_t a = vld1q_u8(p), b = vld1q_u8(p + 16), nibble = vdupq_n_u8(0x0f);
      w[0] = vqtbl1q_s8(lookup, vandq_u8(a, nibble));
      w[1] = vqtbl1q_s8(lookup, vandq_u8(b, nibble));
      w[2] = vqtbl1q_s8(lookup, vshrq_n_u8(a, 4));
      w[3] = vqtbl1q_s8(lookup, vshrq_n_u8(b, 4));
    } else {
      for (int q = 0; q < 4; ++q) w[q] = vld1q_s8(reinterpret_cast<const int8_t*>(p) + 16 * q);
    }
    for (int q = 0; q < 4; ++q) sums[q] = vdotq_s32(sums[q], w[q], xv);
  }
}

template <bool kFour>
FEDCAL_DOTPROD_TARGET void rows_neon(const uint8_t* w, const uint8_t* lookup, int blocks, const int8_t* x, int groups,
                                     int32_t* out) {
  const int8x16_t table = vreinterpretq_s8_u8(vld1q_u8(lookup));
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    int32x4_t sums[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) block_neon<kFour>(w, table, x + b * kActivationBlock, sums);
    for (int q = 0; q < 4; ++q) vst1q_s32(out + 4 * q, sums[q]);
  }
}

template <bool kFour>
FEDCAL_DOTPROD_TARGET void blocks_neon(const uint8_t* w, const uint8_t* lookup, const uint16_t* w_scales, int blocks,
                                       const int8_t* x, const float* x_scales, int groups, float* out) {
  const int8x16_t table = vreinterpretq_s8_u8(vld1q_u8(lookup));
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) {
      int32x4_t sums[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
      block_neon<kFour>(w, table, x + b * kActivationBlock, sums);
      for (int q = 0; q < 4; ++q) {
        float32x4_t scale = vdupq_n_f32(x_scales[b]);
        if (w_scales != nullptr) scale = vmulq_f32(scale, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w_scales + 4 * q))));
        acc[q] = vfmaq_f32(acc[q], vcvtq_f32_s32(sums[q]), scale);
      }
      if (w_scales != nullptr) w_scales += kPackedRows;
    }
    for (int q = 0; q < 4; ++q) vst1q_f32(out + 4 * q, acc[q]);
  }
}

#endif

#ifdef FEDCAL_INT8_X86

// --- avx2 -------------------------------------------------------------------------------------------

// 8 rows' products of 4 columns with the broadcast activations xv (|x| in abs_x), added pairwise into
// INT32 lanes.
__attribute__((target("avx2"), always_inline)) inline __m256i products8(__m256i xv, __m256i abs_x, __m256i w) {
  const __m256i signed_w = _mm256_sign_epi8(w, xv);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(abs_x, signed_w), _mm256_set1_epi16(1));
}

// A chunk's 64 weight bytes as rows 0-7 (lo) and 8-15 (hi): loaded, or looked up from 32 bytes of
// 4-bit codes (low nibbles: values 0-31, high nibbles: 32-63) in `table` (the 16 bytes in both lanes).
template <bool kFour>
__attribute__((target("avx2"), always_inline)) inline void chunk_avx2(const uint8_t* p, __m256i table, __m256i& lo, __m256i& hi) {
  if constexpr (kFour) {
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), nibble = _mm256_set1_epi8(0x0f);
    lo = _mm256_shuffle_epi8(table, _mm256_and_si256(codes, nibble));
    hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(codes, 4), nibble));
  } else {
    lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
  }
}

__attribute__((target("avx2"), always_inline)) inline __m256i table_avx2(const uint8_t* lookup) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lookup)));
}

// One group's block: INT32 sums of rows 0-7 into lo, 8-15 into hi.
template <bool kFour>
__attribute__((target("avx2"), always_inline)) inline void block_avx2(const uint8_t* p, __m256i table, const int8_t* x,
                                                                      __m256i& lo, __m256i& hi) {
  for (int k = 0; k < kChunks; ++k, p += chunk_stride(kFour)) {
    const __m256i xv = _mm256_set1_epi32(load4(x + k * kChunk));
    const __m256i abs_x = _mm256_sign_epi8(xv, xv);  // -128 stays 0x80: 128 as unsigned
    __m256i w_lo, w_hi;
    chunk_avx2<kFour>(p, table, w_lo, w_hi);
    lo = _mm256_add_epi32(lo, products8(xv, abs_x, w_lo));
    hi = _mm256_add_epi32(hi, products8(xv, abs_x, w_hi));
  }
}

template <bool kFour>
__attribute__((target("avx2"))) void rows_avx2(const uint8_t* w, const uint8_t* lookup, int blocks, const int8_t* x, int groups,
                                               int32_t* out) {
  const __m256i table = table_avx2(lookup);
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    __m256i lo = _mm256_setzero_si256(), hi = lo;
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) block_avx2<kFour>(w, table, x + b * kActivationBlock, lo, hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), hi);
  }
}

// acc += one block's INT32 sums of rows 0-7 (lo) and 8-15 (hi) times the block's activation scale and,
// if the matrix has them, each row's binary16 group scale.
__attribute__((target("avx2,fma,f16c"), always_inline)) inline void add_scaled_block(__m256i lo, __m256i hi, float x_scale,
                                                                                    const uint16_t* w_scales, __m256& acc_lo,
                                                                                    __m256& acc_hi) {
  __m256 scale_lo = _mm256_set1_ps(x_scale), scale_hi = scale_lo;
  if (w_scales != nullptr) {
    scale_lo = _mm256_mul_ps(scale_lo, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w_scales))));
    scale_hi = _mm256_mul_ps(scale_hi, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w_scales + 8))));
  }
  acc_lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), scale_lo, acc_lo);
  acc_hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), scale_hi, acc_hi);
}

template <bool kFour>
__attribute__((target("avx2,fma,f16c"))) void blocks_avx2(const uint8_t* w, const uint8_t* lookup, const uint16_t* w_scales,
                                                          int blocks, const int8_t* x, const float* x_scales, int groups,
                                                          float* out) {
  const __m256i table = table_avx2(lookup);
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    __m256 acc_lo = _mm256_setzero_ps(), acc_hi = acc_lo;
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) {
      __m256i lo = _mm256_setzero_si256(), hi = lo;
      block_avx2<kFour>(w, table, x + b * kActivationBlock, lo, hi);
      add_scaled_block(lo, hi, x_scales[b], w_scales, acc_lo, acc_hi);
      if (w_scales != nullptr) w_scales += kPackedRows;
    }
    _mm256_storeu_ps(out, acc_lo);
    _mm256_storeu_ps(out + 8, acc_hi);
  }
}

// --- avx-vnni ---------------------------------------------------------------------------------------
// The VEX form of vpdpbusd on 256 bits (client cores without AVX-512: Alder Lake and later, the N100
// class of edge boxes): the avx512-vnni layout and offset, 16 rows as two 8-row halves as in avx2.

#define FEDCAL_AVXVNNI_TARGET __attribute__((target("avx2,fma,f16c,avxvnni")))

// One group's block, (w + 128) . x for rows 0-7 into lo and 8-15 into hi.
template <bool kFour>
FEDCAL_AVXVNNI_TARGET __attribute__((always_inline)) inline void block_avxvnni(const uint8_t* p, __m256i table, const int8_t* x,
                                                                               __m256i& lo, __m256i& hi) {
  for (int k = 0; k < kChunks; ++k, p += chunk_stride(kFour)) {
    const __m256i xv = _mm256_set1_epi32(load4(x + k * kChunk));
    __m256i w_lo, w_hi;
    chunk_avx2<kFour>(p, table, w_lo, w_hi);
    lo = _mm256_dpbusd_avx_epi32(lo, w_lo, xv);
    hi = _mm256_dpbusd_avx_epi32(hi, w_hi, xv);
  }
}

template <bool kFour>
FEDCAL_AVXVNNI_TARGET void rows_avxvnni(const uint8_t* w, const uint8_t* lookup, int blocks, const int8_t* x,
                                        const int32_t* block_sums, int groups, int32_t* out) {
  const __m256i table = table_avx2(lookup);
  // As rows_vnni: less 128 times the row's sum of x, exact modulo 2^32.
  int64_t x_sum = 0;
  for (int b = 0; b < blocks; ++b) x_sum += block_sums[b];
  const __m256i correction = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(x_sum * 128)));
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    __m256i lo = _mm256_setzero_si256(), hi = lo;
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) block_avxvnni<kFour>(w, table, x + b * kActivationBlock, lo, hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_sub_epi32(lo, correction));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_sub_epi32(hi, correction));
  }
}

template <bool kFour>
FEDCAL_AVXVNNI_TARGET void blocks_avxvnni(const uint8_t* w, const uint8_t* lookup, const uint16_t* w_scales, int blocks,
                                          const int8_t* x, const int32_t* block_sums, const float* x_scales, int groups,
                                          float* out) {
  const __m256i table = table_avx2(lookup);
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    __m256 acc_lo = _mm256_setzero_ps(), acc_hi = acc_lo;
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) {
      __m256i lo = _mm256_set1_epi32(-128 * block_sums[b]), hi = lo;
      block_avxvnni<kFour>(w, table, x + b * kActivationBlock, lo, hi);
      add_scaled_block(lo, hi, x_scales[b], w_scales, acc_lo, acc_hi);
      if (w_scales != nullptr) w_scales += kPackedRows;
    }
    _mm256_storeu_ps(out, acc_lo);
    _mm256_storeu_ps(out + 8, acc_hi);
  }
}

// --- avx512-vnni ------------------------------------------------------------------------------------

#define FEDCAL_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

// One group's block, (w + 128) . x for 16 rows, added into two independent chains of four vpdpbusd.
// With 4-bit codes, this kernel's layout pairs chunks: 64 bytes hold chunk k in their low nibbles and
// chunk k + 1 in their high ones, so one load feeds two vpdpbusd.
template <bool kFour>
FEDCAL_VNNI_TARGET __attribute__((always_inline)) inline void block_vnni(const uint8_t* p, __m512i table, const int8_t* x,
                                                                         __m512i& a, __m512i& b) {
  for (int k = 0; k < kChunks; k += 2) {
    __m512i first, second;
    if constexpr (kFour) {
      const __m512i codes = _mm512_loadu_si512(p + k * chunk_stride(true)), nibble = _mm512_set1_epi8(0x0f);
      first = _mm512_shuffle_epi8(table, _mm512_and_si512(codes, nibble));
      second = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(codes, 4), nibble));
    } else {
      first = _mm512_loadu_si512(p + k * kChunkBytes);
      second = _mm512_loadu_si512(p + (k + 1) * kChunkBytes);
    }
    a = _mm512_dpbusd_epi32(a, first, _mm512_set1_epi32(load4(x + k * kChunk)));
    b = _mm512_dpbusd_epi32(b, second, _mm512_set1_epi32(load4(x + (k + 1) * kChunk)));
  }
}

FEDCAL_VNNI_TARGET __attribute__((always_inline)) inline __m512i table_vnni(const uint8_t* lookup) {
  return _mm512_maskz_broadcast_i32x4(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(lookup)));
}

template <bool kFour>
FEDCAL_VNNI_TARGET void rows_vnni(const uint8_t* w, const uint8_t* lookup, int blocks, const int8_t* x, const int32_t* block_sums,
                                  int groups, int32_t* out) {
  const __m512i table = table_vnni(lookup);
  // Sum over the row of (w + 128) x, less 128 times the sum of x: exact modulo 2^32, and the true sum
  // fits INT32 (cols <= 2^17), so wrapping on the way changes nothing.
  int64_t x_sum = 0;
  for (int b = 0; b < blocks; ++b) x_sum += block_sums[b];
  const __m512i correction = _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(x_sum * 128)));
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    __m512i a = _mm512_setzero_si512(), b = a;
    for (int k = 0; k < blocks; ++k, w += block_stride(kFour)) block_vnni<kFour>(w, table, x + k * kActivationBlock, a, b);
    _mm512_storeu_si512(out, _mm512_sub_epi32(_mm512_add_epi32(a, b), correction));
  }
}

template <bool kFour>
FEDCAL_VNNI_TARGET void blocks_vnni(const uint8_t* w, const uint8_t* lookup, const uint16_t* w_scales, int blocks,
                                    const int8_t* x, const int32_t* block_sums, const float* x_scales, int groups, float* out) {
  const __m512i table = table_vnni(lookup);
  for (int g = 0; g < groups; ++g, out += kPackedRows) {
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < blocks; ++b, w += block_stride(kFour)) {
      __m512i sums = _mm512_set1_epi32(-128 * block_sums[b]), more = _mm512_setzero_si512();
      block_vnni<kFour>(w, table, x + b * kActivationBlock, sums, more);
      __m512 scale = _mm512_set1_ps(x_scales[b]);
      if (w_scales != nullptr) {
        scale = _mm512_mul_ps(scale, _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w_scales))));
        w_scales += kPackedRows;
      }
      // (The zero-masked conversions: GCC 12 warns that the plain ones read an undefined register.)
      acc = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xffff, _mm512_add_epi32(sums, more)), scale, acc);
    }
    _mm512_storeu_ps(out, acc);
  }
}

#endif

}  // namespace

std::string_view int8_kernel_name(Int8Kernel kernel) {
  switch (kernel) {
    case Int8Kernel::kAvx512Vnni: return "avx512-vnni";
    case Int8Kernel::kAvx2: return "avx2";
    case Int8Kernel::kNeonDot: return "neon-dotprod";
    case Int8Kernel::kAvxVnni: return "avx-vnni";
    case Int8Kernel::kPortable: break;
  }
  return "portable";
}

std::vector<Int8Kernel> int8_kernels_supported() {
  std::vector<Int8Kernel> kernels;
#ifdef FEDCAL_INT8_X86
  __builtin_cpu_init();
  // AVX512-F/BW, AVX2 and FMA as the compiler's runtime reports them (which includes the OS saving the
  // vector state); VNNI (CPUID leaf 7, ECX bit 11) and F16C (leaf 1, ECX bit 29) from CPUID directly:
  // clang 14 has no feature names for them.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool vnni = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 11)) != 0;
  // AVX-VNNI: leaf 7 sub-leaf 1, EAX bit 4.
  const bool avx_vnni = __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && (eax & (1u << 4)) != 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
  const bool avx2 = f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (vnni && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) kernels.push_back(Int8Kernel::kAvx512Vnni);
  if (avx_vnni && avx2) kernels.push_back(Int8Kernel::kAvxVnni);
  if (avx2) kernels.push_back(Int8Kernel::kAvx2);
#endif
#ifdef FEDCAL_INT8_NEON
  if ((getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0) kernels.push_back(Int8Kernel::kNeonDot);
#endif
  kernels.push_back(Int8Kernel::kPortable);
  return kernels;
}

PackedInt8 pack_int8(const int8_t* w, int rows, int cols, const float* group_scales, Int8Kernel kernel,
                     const std::array<int8_t, 16>* levels) {
  const auto row_values = [w, cols](int r, int8_t* out) {
    std::copy_n(w + static_cast<size_t>(r) * static_cast<size_t>(cols), cols, out);
  };
  return pack_int8(row_values, rows, cols, group_scales, kernel, levels);
}

namespace {

// Where value (r, c) of a packed matrix lies: its byte, and for 4-bit codes which half of it.
struct PackedPosition {
  size_t at = 0;
  bool high = false;
};
PackedPosition packed_position(const PackedInt8& packed, int r, int c) {
  const bool four = packed.bits == 4;
  const size_t block_bytes = four ? kBlockBytes / 2 : kBlockBytes;
  const int g = r / kPackedRows, i = r % kPackedRows;
  const int b = c / kActivationBlock, k = c % kActivationBlock / kChunk, j = c % kChunk;
  const size_t within = packed.kernel == Int8Kernel::kPortable ? static_cast<size_t>(i) * kActivationBlock + c % kActivationBlock
                                                               : static_cast<size_t>(k) * kChunkBytes + i * kChunk + j;
  const size_t block = (static_cast<size_t>(g) * packed.blocks() + b) * block_bytes;
  if (!four) return {block + within, false};
  // Two codes per byte: portable, value m and m + 16 of a row's block; avx512-vnni, value m of chunks
  // k and k + 1 (k even); else value m and m + 32 of a chunk.
  if (packed.kernel == Int8Kernel::kAvx512Vnni)
    return {block + within / (2 * kChunkBytes) * kChunkBytes + within % kChunkBytes, within / kChunkBytes % 2 == 1};
  const size_t half = packed.kernel == Int8Kernel::kPortable ? kHalfBlock : kChunkBytes / 2;
  const size_t piece = packed.kernel == Int8Kernel::kPortable ? kActivationBlock : kChunkBytes;
  return {block + within / piece * half + within % half, within % piece >= half};
}

size_t packed_scale_index(const PackedInt8& packed, int r, int b) {
  return (static_cast<size_t>(r / kPackedRows) * packed.blocks() + b) * kPackedRows + r % kPackedRows;
}

}  // namespace

PackedInt8 pack_int8(const Int8RowSource& row_values, int rows, int cols, const float* group_scales, Int8Kernel kernel,
                     const std::array<int8_t, 16>* levels) {
  if (rows < 1 || cols < 1 || static_cast<size_t>(cols) > kMaxCols) fail("INT8 matrix ({}, {}): want 1 to {} columns", rows, cols, kMaxCols);
  bool supported = false;
  for (Int8Kernel k : int8_kernels_supported()) supported = supported || k == kernel;
  if (!supported) fail("the {} INT8 kernel does not run on this CPU", int8_kernel_name(kernel));
  PackedInt8 packed;
  packed.rows = rows;
  packed.cols = cols;
  packed.kernel = kernel;
  const int groups = packed.groups(), blocks = packed.blocks();
  const int offset = weight_offset(kernel);
  // With levels: each value's code (-1: not a level), and the byte each code stands for.
  std::array<int, 256> code_of;
  code_of.fill(-1);
  if (levels != nullptr) {
    packed.bits = 4;
    for (int code = 0; code < 16; ++code) {
      const int level = (*levels)[static_cast<size_t>(code)];
      if (level < -127 || code_of[static_cast<size_t>(level + 128)] >= 0)
        fail("4-bit levels: {} is out of range or twice", level);
      code_of[static_cast<size_t>(level + 128)] = code;
      packed.lookup[static_cast<size_t>(code)] = static_cast<uint8_t>(level + offset);
    }
    if (code_of[128] < 0) fail("4-bit levels: 0 is not one of them (padding must add nothing)");
  }
  const bool four = packed.bits == 4;
  const size_t block_bytes = four ? kBlockBytes / 2 : kBlockBytes;
  // Padding holds the value that means 0.
  packed.values.assign(static_cast<size_t>(groups) * blocks * block_bytes,
                       four ? static_cast<uint8_t>(code_of[128] * 0x11) : static_cast<uint8_t>(offset));
  std::vector<int8_t> row(static_cast<size_t>(cols));
  for (int r = 0; r < rows; ++r) {
    row_values(r, row.data());
    for (int c = 0; c < cols; ++c) {
      const PackedPosition position = packed_position(packed, r, c);
      if (!four) {
        packed.values[position.at] = static_cast<uint8_t>(row[c] + offset);
        continue;
      }
      const int code = code_of[static_cast<size_t>(row[c] + 128)];
      if (code < 0) fail("value {} at ({}, {}) is not one of the 4-bit levels", row[c], r, c);
      uint8_t& byte = packed.values[position.at];
      byte = position.high ? static_cast<uint8_t>((byte & 0x0f) | (code << 4)) : static_cast<uint8_t>((byte & 0xf0) | code);
    }
  }
  if (group_scales != nullptr) {
    packed.group_scales.assign(static_cast<size_t>(groups) * blocks * kPackedRows, 0);
    for (int r = 0; r < rows; ++r) {
      for (int b = 0; b < blocks; ++b) {
        const float scale = group_scales[static_cast<size_t>(r) * blocks + b];
        const uint16_t half = f32_to_f16(scale);
        if (f16_to_f32(half) != scale) fail("group scale {} (row {}, block {}) is not a binary16 value", scale, r, b);
        packed.group_scales[packed_scale_index(packed, r, b)] = half;
      }
    }
  }
  return packed;
}

void packed_row_values(const PackedInt8& packed, int row, int8_t* out) {
  if (row < 0 || row >= packed.rows) fail("row {} of a packed ({}, {}) matrix", row, packed.rows, packed.cols);
  const int offset = weight_offset(packed.kernel);
  for (int c = 0; c < packed.cols; ++c) {
    const PackedPosition position = packed_position(packed, row, c);
    const uint8_t byte = packed.values[position.at];
    const int stored = packed.bits == 4 ? packed.lookup[position.high ? byte >> 4 : byte & 0x0f] : byte;
    out[c] = static_cast<int8_t>(stored - offset);
  }
}

float packed_group_scale(const PackedInt8& packed, int row, int block) {
  if (packed.group_scales.empty() || row < 0 || row >= packed.rows || block < 0 || block >= packed.blocks())
    fail("group scale ({}, {}) of a packed ({}, {}) matrix{}", row, block, packed.rows, packed.cols,
         packed.group_scales.empty() ? " without group scales" : "");
  return f16_to_f32(packed.group_scales[packed_scale_index(packed, row, block)]);
}

void int8_block_sums(const int8_t* x, int blocks, int32_t* block_sums) {
  for (int b = 0; b < blocks; ++b) {
    int32_t sum = 0;
    for (int c = 0; c < kActivationBlock; ++c) sum += x[b * kActivationBlock + c];
    block_sums[b] = sum;
  }
}

namespace {

template <bool kFour>
void dot_rows(const PackedInt8& w, const int8_t* x, [[maybe_unused]] const int32_t* block_sums, int first_group, int groups,
              int32_t* out) {
  const int blocks = w.blocks();
  const uint8_t* values = w.values.data() + static_cast<size_t>(first_group) * blocks * block_stride(kFour);
  const uint8_t* lookup = w.lookup.data();
  switch (w.kernel) {
#ifdef FEDCAL_INT8_X86
    case Int8Kernel::kAvx512Vnni:
      return rows_vnni<kFour>(values, lookup, blocks, x, block_sums, groups, out);
    case Int8Kernel::kAvx2:
      return rows_avx2<kFour>(values, lookup, blocks, x, groups, out);
    case Int8Kernel::kAvxVnni:
      return rows_avxvnni<kFour>(values, lookup, blocks, x, block_sums, groups, out);
#endif
#ifdef FEDCAL_INT8_NEON
    case Int8Kernel::kNeonDot:
      return rows_neon<kFour>(values, lookup, blocks, x, groups, out);
#endif
    default:
      return rows_portable<kFour>(values, lookup, blocks, x, groups, out);
  }
}

template <bool kFour>
void dot_blocks(const PackedInt8& w, const int8_t* x, [[maybe_unused]] const int32_t* block_sums, const float* x_scales,
                int first_group, int groups, float* out) {
  const int blocks = w.blocks();
  const uint8_t* values = w.values.data() + static_cast<size_t>(first_group) * blocks * block_stride(kFour);
  const uint8_t* lookup = w.lookup.data();
  const uint16_t* w_scales =
      w.group_scales.empty() ? nullptr : w.group_scales.data() + static_cast<size_t>(first_group) * blocks * kPackedRows;
  switch (w.kernel) {
#ifdef FEDCAL_INT8_X86
    case Int8Kernel::kAvx512Vnni:
      return blocks_vnni<kFour>(values, lookup, w_scales, blocks, x, block_sums, x_scales, groups, out);
    case Int8Kernel::kAvx2:
      return blocks_avx2<kFour>(values, lookup, w_scales, blocks, x, x_scales, groups, out);
    case Int8Kernel::kAvxVnni:
      return blocks_avxvnni<kFour>(values, lookup, w_scales, blocks, x, block_sums, x_scales, groups, out);
#endif
#ifdef FEDCAL_INT8_NEON
    case Int8Kernel::kNeonDot:
      return blocks_neon<kFour>(values, lookup, w_scales, blocks, x, x_scales, groups, out);
#endif
    default:
      return blocks_portable<kFour>(values, lookup, w_scales, blocks, x, x_scales, groups, out);
  }
}

}  // namespace

void dot_int8_packed(const PackedInt8& w, const int8_t* x, const int32_t* block_sums, int first_group, int groups, int32_t* out) {
  if (w.bits == 4) return dot_rows<true>(w, x, block_sums, first_group, groups, out);
  dot_rows<false>(w, x, block_sums, first_group, groups, out);
}

void dot_int8_packed_blocks(const PackedInt8& w, const int8_t* x, const int32_t* block_sums, const float* x_scales,
                            int first_group, int groups, float* out) {
  if (w.bits == 4) return dot_blocks<true>(w, x, block_sums, x_scales, first_group, groups, out);
  dot_blocks<false>(w, x, block_sums, x_scales, first_group, groups, out);
}

}  // namespace fedcal

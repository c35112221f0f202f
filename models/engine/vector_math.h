// The forward pass's own loops around the XNNPACK matrix products: dot products, RMSNorm, softmax,
// SwiGLU, one attention head, INT8 <-> FP32 conversions and argmax. On x86-64 each is compiled twice,
// for AVX2 + FMA and for the baseline ISA, and the loader picks the one the CPU runs (so one binary
// serves an old Atom and a new Xeon); on AArch64 NEON is the baseline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace fedcal {

float dot(const float* a, const float* b, int size);
// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], for one row of `size`.
void rmsnorm(float* out, const float* x, const float* weight, int size, float eps);
// In-place softmax over `size` values.
void softmax(float* x, int size);
// In-place exp; relative error < 2e-7 over the float range, exp(x) = 0 below -87.3 (where floats
// become denormal) and +inf above 88.7.
void exp_inplace(float* x, size_t size);
// SwiGLU: gate[i] = silu(gate[i]) * up[i].
void silu_mul(float* gate, const float* up, size_t size);
// GeGLU (Gemma): gate[i] = gelu(gate[i]) * up[i], GELU in its tanh approximation:
// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) = x / (1 + exp(-2 sqrt(2 / pi) (x + 0.044715 x^3))).
void gelu_tanh_mul(float* gate, const float* up, size_t size);
// x[i] += y[i].
void add_into(float* x, const float* y, size_t size);

// One attention head of one query: out (head_size) = softmax(q . keys[s] * scale, s < length) .
// values, where keys and values are (length, head_size) row-major. `scores` holds `length` floats.
void attention_head(const float* q, const float* keys, const float* values, int length, int head_size, float scale, float* scores,
                    float* out);

// INT8 <-> FP32 at a static scale and zero point, round-to-nearest-even and saturating, as XNNPACK's
// convert operators do: q = clamp(round(x / scale) + zero_point, -128, 127); x = (q - zero_point) * scale.
void quantize_int8(const float* x, int8_t* q, size_t size, float scale, int zero_point);
void dequantize_int8(const int8_t* q, float* x, size_t size, float scale, int zero_point);

// The largest |x[i]| (0 for an empty range; NaN is ignored).
float max_abs(const float* x, size_t size);

// The INT8 dot products of the dynamic linears: dot_int8.h.

// Index of the largest value (the first one on ties); values must not be empty.
int argmax(std::span<const float> values);

}  // namespace fedcal

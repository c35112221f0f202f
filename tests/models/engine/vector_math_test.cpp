#include "models/engine/vector_math.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "models/quant/scales.h"

namespace fedcal {
namespace {

// Bounds of the fast kernels against plain double-precision references.
constexpr double kExpRelativeError = 4e-7;     // ~3 ulp
constexpr double kVectorRelativeError = 1e-5;  // float sums of up to a few thousand terms

std::vector<float> random_values(size_t size, float low, float high, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(low, high);
  std::vector<float> values(size);
  for (float& v : values) v = uniform(rng);
  return values;
}

TEST_CASE("exp_inplace matches std::exp within 3 ulp over the float range and saturates at both ends") {
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.0f; v += 0.0137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-8f, -1e-8f, 0.5f, -0.34657359f, 0.34657359f}) x.push_back(v);
  std::vector<float> y = x;
  exp_inplace(y.data(), y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double expected = std::exp(static_cast<double>(x[i]));
    worst = std::max(worst, std::abs(y[i] - expected) / expected);
  }
  MESSAGE("exp: worst relative error ", worst, " over ", x.size(), " points");
  CHECK(worst < kExpRelativeError);

  std::vector<float> extremes{-1000.0f, -200.0f, 89.0f, 1000.0f};
  exp_inplace(extremes.data(), extremes.size());
  CHECK(extremes[0] >= 0.0f);
  CHECK(extremes[0] < 1.2e-38f);
  CHECK(extremes[1] == extremes[0]);
  CHECK(std::isfinite(extremes[3]));
  CHECK(extremes[3] > 1e38f);
  CHECK(extremes[2] == extremes[3]);
}

TEST_CASE("dot, rmsnorm, silu_mul and add_into match double references for sizes around the vector width") {
  for (int size : {1, 7, 15, 16, 17, 64, 100, 576}) {
    CAPTURE(size);
    const std::vector<float> a = random_values(size, -2.0f, 2.0f, 1), b = random_values(size, -2.0f, 2.0f, 2);
    double expected = 0, magnitude = 0;
    for (int i = 0; i < size; ++i) {
      expected += double(a[i]) * b[i];
      magnitude += std::abs(double(a[i]) * b[i]);
    }
    CHECK(std::abs(dot(a.data(), b.data(), size) - expected) <= kVectorRelativeError * magnitude);

    std::vector<float> normed(size);
    rmsnorm(normed.data(), a.data(), b.data(), size, 1e-5f);
    double mean_square = 0;
    for (float v : a) mean_square += double(v) * v / size;
    for (int i = 0; i < size; ++i) {
      const double reference = a[i] / std::sqrt(mean_square + 1e-5) * b[i];
      CHECK(std::abs(normed[i] - reference) <= kVectorRelativeError * (1 + std::abs(reference)));
    }

    std::vector<float> gate = a;
    silu_mul(gate.data(), b.data(), size);
    std::vector<float> sum = a;
    add_into(sum.data(), b.data(), size);
    for (int i = 0; i < size; ++i) {
      const double reference = a[i] / (1.0 + std::exp(-double(a[i]))) * b[i];
      CHECK(std::abs(gate[i] - reference) <= kVectorRelativeError * (1 + std::abs(reference)));
      CHECK(sum[i] == a[i] + b[i]);
    }
  }
  // SiLU of large negative gates is a signed zero-ish tiny value, never NaN.
  std::vector<float> gate{-200.0f, 200.0f}, up{1.0f, 1.0f};
  silu_mul(gate.data(), up.data(), 2);
  CHECK(std::abs(gate[0]) < 1e-30f);
  CHECK(gate[1] == doctest::Approx(200.0f));
}

TEST_CASE("softmax and attention_head match a double reference, and attention over one key returns its value") {
  for (int head_size : {64, 40})  // 40: one block of 32 and a tail of 8
    for (int length : {1, 2, 15, 16, 33, 128}) {
      CAPTURE(head_size);
      CAPTURE(length);
      const std::vector<float> q = random_values(head_size, -1.0f, 1.0f, 3);
      const std::vector<float> keys = random_values(size_t(length) * head_size, -1.0f, 1.0f, 4);
      const std::vector<float> values = random_values(size_t(length) * head_size, -1.0f, 1.0f, 5);
      const float scale = 0.125f;
      std::vector<float> scores(length), out(head_size);
      attention_head(q.data(), keys.data(), values.data(), length, head_size, scale, scores.data(), out.data());

      std::vector<double> weights(length);
      double total = 0;
      for (int s = 0; s < length; ++s) {
        double logit = 0;
        for (int i = 0; i < head_size; ++i) logit += double(q[i]) * keys[size_t(s) * head_size + i];
        weights[s] = std::exp(logit * scale);
        total += weights[s];
      }
      for (int i = 0; i < head_size; ++i) {
        double reference = 0;
        for (int s = 0; s < length; ++s) reference += weights[s] / total * values[size_t(s) * head_size + i];
        CHECK(std::abs(out[i] - reference) <= kVectorRelativeError);
      }
      if (length == 1) {
        for (int i = 0; i < head_size; ++i) CHECK(out[i] == values[i]);
      }
    }

  std::vector<float> x{0.0f, 2.0f, 1.0f, -1.0f, -100.0f};
  softmax(x.data(), static_cast<int>(x.size()));
  CHECK(x[1] == doctest::Approx(0.6439).epsilon(1e-3));
  CHECK(x[3] == doctest::Approx(0.0321).epsilon(1e-2));
  CHECK(x[4] >= 0.0f);
  CHECK(x[0] + x[1] + x[2] + x[3] + x[4] == doctest::Approx(1.0f).epsilon(1e-6));
}

TEST_CASE("quantize_int8 rounds half to even and saturates, dequantize_int8 inverts it, argmax takes the first maximum") {
  const float scale = 0.5f;
  // x / scale: 0.5 -> 0 (even), 1.5 -> 2, -0.5 -> 0, -1.5 -> -2, 2.5 -> 2, 1000 -> saturates.
  const std::vector<float> x{0.25f, 0.75f, -0.25f, -0.75f, 1.25f, 500.0f, -500.0f, 0.3f};
  std::vector<int8_t> q(x.size());
  quantize_int8(x.data(), q.data(), x.size(), scale, 0);
  CHECK(q == std::vector<int8_t>{0, 2, 0, -2, 2, 127, -128, 1});
  quantize_int8(x.data(), q.data(), x.size(), scale, 10);  // zero point 10: saturates at 127 - 10 before the shift
  CHECK(q == std::vector<int8_t>{10, 12, 10, 8, 12, 127, -128, 11});

  const std::vector<float> many = random_values(1000, -40.0f, 40.0f, 6);
  std::vector<int8_t> fast(many.size());
  quantize_int8(many.data(), fast.data(), many.size(), 0.3f, -3);
  std::vector<float> back(many.size());
  dequantize_int8(fast.data(), back.data(), many.size(), 0.3f, -3);
  // Bit for bit what XNNPACK's convert operator computes (x times the reciprocal scale), and within
  // 1 LSB of the project's reference quantize_value (x divided by the scale).
  const float inverse = 1.0f / 0.3f;
  for (size_t i = 0; i < many.size(); ++i) {
    const float xnnpack_style = std::clamp(std::nearbyint(many[i] * inverse) - 3.0f, -128.0f, 127.0f);
    REQUIRE(fast[i] == static_cast<int8_t>(xnnpack_style));
    REQUIRE(std::abs(fast[i] - quantize_value(many[i], {0.3f, -3})) <= 1);
    CHECK(back[i] == static_cast<float>(fast[i] + 3) * 0.3f);
  }

  std::vector<float> logits = random_values(49152, -10.0f, 10.0f, 7);
  logits[123] = 50.0f;
  logits[40000] = 50.0f;
  CHECK(argmax(logits) == 123);
  CHECK(argmax(std::vector<float>{-3.0f}) == 0);
  CHECK(argmax(std::vector<float>{-3.0f, -1.0f, -2.0f}) == 1);
}

TEST_CASE("max_abs: the largest magnitude, NaN ignored, 0 for nothing") {
  const std::vector<float> values = {0.5f, -3.0f, 2.0f, std::nanf(""), -0.0f};
  CHECK(max_abs(values.data(), values.size()) == 3.0f);
  CHECK(max_abs(values.data(), 0) == 0.0f);
  const std::vector<float> many = random_values(1000, -7.0f, 5.0f, 9);
  float expected_max = 0.0f;
  for (const float v : many) expected_max = std::max(expected_max, std::fabs(v));
  CHECK(max_abs(many.data(), many.size()) == expected_max);
}

}  // namespace
}  // namespace fedcal

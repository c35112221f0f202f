#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "models/format/float16.h"

namespace fedcal {
namespace {

TEST_CASE("binary16 conversion: exact values, rounding to nearest even, subnormals, specials") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);             // largest finite half
  CHECK(f32_to_f16(65520.0f) == 0x7c00);             // rounds up to infinity
  CHECK(f32_to_f16(0x1p-24f) == 0x0001);             // smallest subnormal
  CHECK(f32_to_f16(0x1p-25f) == 0x0000);             // half of it: ties to even (0)
  CHECK(f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);      // tie between 1 and 1+2^-10: to even
  CHECK(f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);  // tie, odd neighbour below: up
  CHECK(f16_to_f32(0x3555) == doctest::Approx(0.333251953125));
  CHECK(f16_to_f32(0x0001) == 0x1p-24f);
  CHECK(std::isinf(f16_to_f32(0xfc00)));
  CHECK(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  // Every half value round-trips.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float value = f16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(value)) REQUIRE(f32_to_f16(value) == h);
  }
}

TEST_CASE("bfloat16 conversion: truncation of the low half with round to nearest even") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);             // tie: to even
  CHECK(f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82);         // tie: up to even
  CHECK(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);  // above the tie: up
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

}  // namespace
}  // namespace fedcal

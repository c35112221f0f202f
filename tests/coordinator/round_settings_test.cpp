#include "coordinator/round_settings.h"

#include <doctest/doctest.h>

#include "common/error.h"

namespace fedcal::coordinator {
namespace {

TEST_CASE("Round settings: every field is range-checked, unknown ones refused") {
  CHECK_NOTHROW(RoundSettings::from_json({{"model_id", 1}, {"method", "mse"}}));
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"min_agents", 1}}), doctest::Contains("min_agents"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"method", "median"}}), doctest::Contains("median"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"sequence", 3}}), doctest::Contains("unknown round setting 'sequence'"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"dp_epsilon", -1.0}}), doctest::Contains("dp_epsilon"), Error);
  CHECK_THROWS_AS(RoundSettings::from_json({{"seq_len", "long"}}), Error);
  const RoundSettings settings = RoundSettings::from_json({{"per_channel", true}, {"keep_fp32", {"classifier"}}});
  CHECK(RoundSettings::from_json(settings.to_json()).to_json() == settings.to_json());
}

}  // namespace
}  // namespace fedcal::coordinator

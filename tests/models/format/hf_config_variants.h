// What the config.json tests change keys to, and the catalogue's word on a key (hf_config.h).
#pragma once

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "models/format/hf_config.h"

namespace fedcal::testing {

// A different value of the same kind: numbers doubled (plus one), booleans flipped, strings and lists
// extended, objects given an unknown member, null made a number.
inline nlohmann::json changed(const nlohmann::json& value) {
  if (value.is_boolean()) return !value.get<bool>();
  if (value.is_number_integer()) return value.get<int64_t>() * 2 + 1;
  if (value.is_number()) return value.get<double>() == 0 ? 1.0 : value.get<double>() * 2;
  if (value.is_string()) return value.get<std::string>() + "x";
  if (value.is_array()) {
    nlohmann::json out = value;
    out.push_back("x");
    return out;
  }
  if (value.is_object()) {
    nlohmann::json out = value;
    out["unknown_parameter"] = 1;
    return out;
  }
  return 7;
}

// How the catalogue (shared keys and every family's) uses `key`; a key not in it fails the test.
inline HfKeyUse use_of(const std::string& key) {
  for (const HfConfigKey& entry : hf_config_keys()) {
    if (key == entry.name) return entry.use;
  }
  FAIL("not in the catalogue: " << key);
  return HfKeyUse::kUsed;
}

}  // namespace fedcal::testing

// Reading one key of a daemon's TOML configuration file (coordinator.toml, relay.toml) with an error
// that names the file and the key. Header-only over toml++: only targets linking fedcal_tomlplusplus
// include it.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"

namespace fedcal {

// `out` = table[key] if present: a string, true/false, an array of strings, or a positive integer
// within T's range. Throws Error ("PATH: 'KEY' must be ...") otherwise.
template <typename T>
void read_toml_key(const toml::table& table, const std::string& key, T& out, const std::string& path) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!node->is_string()) fail("{}: '{}' must be a string", path, key);
    out = node->value<std::string>().value();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!node->is_boolean()) fail("{}: '{}' must be true or false", path, key);
    out = node->value<bool>().value();
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    const toml::array* list = node->as_array();
    if (list == nullptr) fail("{}: '{}' must be an array of strings", path, key);
    for (const auto& item : *list) {
      if (!item.is_string()) fail("{}: '{}' must be an array of strings", path, key);
      out.push_back(item.value<std::string>().value());
    }
  } else {
    if (!node->is_integer()) fail("{}: '{}' must be an integer", path, key);
    const int64_t value = node->value<int64_t>().value();
    if (value <= 0 || value > std::numeric_limits<T>::max()) fail("{}: '{}' = {} is out of range", path, key, value);
    out = static_cast<T>(value);
  }
}

// A path from the file, relative to the file's folder unless absolute ("" stays "").
inline std::string resolve_config_path(const std::string& value, const std::filesystem::path& config_dir) {
  if (value.empty() || std::filesystem::path(value).is_absolute()) return value;
  return (config_dir / value).lexically_normal().string();
}

}  // namespace fedcal

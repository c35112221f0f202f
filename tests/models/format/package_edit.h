// Damaged and hand-made packages for the readers' tests: a package's manifest rewritten in place.
#pragma once

#include <functional>
#include <string>

#include "protocol/model_package.capnp.h"

namespace fedcal::testing {

// Rewrites a package's manifest with `edit` (the data region kept, the SHA-256 trailer recomputed,
// unsigned): what a damaged or hand-made package looks like to the reader.
void edit_manifest(const std::string& path, const std::function<void(schema::ModelPackage::Builder)>& edit);
// read_model_package's error on `path` (unsigned), or "no error".
std::string read_error(const std::string& path);

}  // namespace fedcal::testing

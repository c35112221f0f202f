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
// read_error of `copy`: `package` copied there with `change` made to its tensor named `tensor`.
std::string read_error_with_tensor(const std::string& package, const std::string& copy, const std::string& tensor,
                                   const std::function<void(schema::Tensor::Builder)>& change);

}  // namespace fedcal::testing

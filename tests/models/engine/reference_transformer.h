// A plain scalar implementation of the Llama forward pass, written straight from the math with
// double accumulation and no shared code with models/engine/transformer.cpp, to check the XNNPACK path.
#pragma once

#include <vector>

#include "models/format/model.h"

namespace fedcal::testing {

// Logits (tokens.size(), vocab) for `tokens` at positions 0, 1, ...
std::vector<std::vector<double>> reference_logits(const Model& model, const std::vector<int>& tokens);

}  // namespace fedcal::testing

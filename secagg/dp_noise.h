// Distributed differential privacy for integer count vectors: each agent adds Skellam noise
// (the difference of two Poisson variables), which stays an integer, survives the modular sum of
// secure aggregation, and sums across agents to Skellam noise of the summed variance.
#pragma once

#include <cstdint>
#include <span>

namespace fedcal {

// Adds independent Skellam noise of standard deviation `stddev` to every value (mod 2^64, so a
// negative draw wraps and the sum reads as a signed value). Randomness: AES-CTR keyed from the OS CSPRNG.
void add_skellam_noise(std::span<uint64_t> values, double stddev);

}  // namespace fedcal

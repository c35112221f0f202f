// A local report as a forger would send it: the same figures for every label it names.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "protocol/wire.h"

namespace fedcal::testing {

// Fills `message` with a localReport of `round`: one check per label (repeats kept), each with
// `tokens`, `kl` and `top1` (NLL 2.0 against a reference 1.9).
void forged_local_report(OutgoingMessage& message, int64_t round, std::initializer_list<const char*> labels, uint64_t tokens,
                         double kl, double top1);

}  // namespace fedcal::testing

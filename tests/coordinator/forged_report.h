// A local report as a forger would send it: the same figures for every label it names.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "protocol/wire.h"

namespace fedcal::testing {

// What a forger claims about speed.
struct ForgedSpeeds {
  double tokens_per_second = 0, reference_tokens_per_second = 0, spread = 0;
};

// Fills `message` with a localReport of `round`: one check per label (repeats kept), each with
// `tokens`, `kl`, `top1` (NLL 2.0 against a reference 1.9) and `speeds`.
void forged_local_report(OutgoingMessage& message, int64_t round, std::initializer_list<const char*> labels, uint64_t tokens,
                         double kl, double top1, ForgedSpeeds speeds = {});

}  // namespace fedcal::testing

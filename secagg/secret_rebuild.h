// What the server side of secure aggregation needs to rebuild an agent's secret from revealed Shamir
// shares: where each holder sits among an owner's holders (its x), and a rebuild that outvotes wrong
// shares. Used by the round's server (SecAggServer) and by the coordinator opening a relay group's
// sealed self-mask shares (group_unmasking.h).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "common/random.h"
#include "secagg/shamir.h"

namespace fedcal {

// Bytes of every secret shared: a self-mask seed or an X25519 private key.
inline constexpr size_t kSecretBytes = 32;

// Participant `holder`'s x in the shares of `owner`'s secrets, given `owner`'s sorted neighbours: its
// rank among the holders (the neighbours and the owner itself, share_holders), from 1. Throws Error
// when `holder` holds no share of `owner`.
uint8_t holder_x(const std::vector<uint32_t>& neighbours, uint32_t owner, uint32_t holder);

// A secret from revealed shares of which some may be wrong: the secret of the first t-subset (in
// lexicographic order, at most 4,096 tried) that passes `verify`, and the shares that are off the
// polynomial of that subset. nullopt when no subset tried passes.
struct VerifiedSecret {
  Bytes secret;
  std::vector<size_t> wrong;  // indices into the shares
};
std::optional<VerifiedSecret> verified_combine(const std::vector<ShamirShare>& shares, size_t t,
                                               const std::function<bool(const Bytes&)>& verify);

// A 32-byte secret as a key (its size checked by the caller).
Key32 key_from_bytes(const Bytes& bytes);

}  // namespace fedcal

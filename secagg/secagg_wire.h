// Secure-aggregation structs <-> their Cap'n Proto messages, shared by the agent, the coordinator and
// the fleet benchmark. Readers range-check as they go; errors name the message.
#pragma once

#include <vector>

#include "protocol/messages.capnp.h"
#include "secagg/secure_aggregation.h"

namespace fedcal {

void write_encrypted_shares(const std::vector<EncryptedShare>& shares, capnp::List<wire::EncryptedShare>::Builder out);
std::vector<EncryptedShare> read_encrypted_shares(capnp::List<wire::EncryptedShare>::Reader list, const char* message);

void write_revealed_shares(const std::vector<RevealedShare>& shares, capnp::List<wire::RevealedShare>::Builder out);
std::vector<RevealedShare> read_revealed_shares(capnp::List<wire::RevealedShare>::Reader list, const char* message);

// The secure-aggregation configuration and neighbour keys a roundKeys message carries.
SecAggConfig read_round_keys_config(wire::RoundKeys::Reader keys, uint32_t min_survivors);
std::map<uint32_t, AdvertisedKeys> read_round_keys_neighbours(wire::RoundKeys::Reader keys);

}  // namespace fedcal

// Secure-aggregation structs <-> their Cap'n Proto messages, shared by the agent, the coordinator and
// the fleet benchmark. Readers range-check as they go; errors name the message.
#pragma once

#include <vector>

#include "common/signing.h"
#include "protocol/messages.capnp.h"
#include "secagg/secure_aggregation.h"

namespace fedcal {

void write_encrypted_shares(const std::vector<EncryptedShare>& shares, capnp::List<wire::EncryptedShare>::Builder out);
std::vector<EncryptedShare> read_encrypted_shares(capnp::List<wire::EncryptedShare>::Reader list, const char* message);

void write_revealed_shares(const std::vector<RevealedShare>& shares, capnp::List<wire::RevealedShare>::Builder out);
std::vector<RevealedShare> read_revealed_shares(capnp::List<wire::RevealedShare>::Reader list, const char* message);

// Stage 1's request to participant `index`: the configuration and its `neighbours`' advertised keys.
void write_round_keys(const SecAggConfig& config, uint32_t index, const std::vector<uint32_t>& neighbours,
                      const std::vector<AdvertisedKeys>& keys, wire::RoundKeys::Builder out);
// Stage 3's request to survivor `index`: the survivors, or (`neighbour_list`, for an agent that can
// take it) only itself and its surviving `neighbours` with the survivor count (k + 1 entries, not n).
void write_unmask_request(uint64_t round_id, uint32_t index, const std::set<uint32_t>& survivors,
                          const std::vector<uint32_t>& neighbours, bool neighbour_list, wire::UnmaskRequest::Builder out);

// Stage 3, an agent's answer to `request`: the revealed shares written to `out`; in a relay group (the
// request carries the coordinator's round key) the self-mask shares go sealed to that key, once its
// signature checks out with `coordinator_signing_key`. Throws Error naming the field that is wrong.
void answer_unmask_request(SecAggClient& client, wire::UnmaskRequest::Reader request, const SigningKey& coordinator_signing_key,
                           wire::UnmaskShares::Builder out);

// The secure-aggregation configuration and neighbour keys a roundKeys message carries.
SecAggConfig read_round_keys_config(wire::RoundKeys::Reader keys, uint32_t min_survivors);
std::map<uint32_t, AdvertisedKeys> read_round_keys_neighbours(wire::RoundKeys::Reader keys);

}  // namespace fedcal

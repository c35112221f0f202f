// Secure aggregation per group at a relay: what the coordinator sends a relay to run a group
// (["fedcal-relay/1"] ["group"] [RelayGroupStart]) and what the relay sends back when the group's
// stages are over (["fedcal-relay/1"] ["group-result"] [RelayGroupResult]); protocol/messages.capnp
// documents the fields, secagg/group_unmasking.h the protocol. Readers check every field against
// the group's configuration and throw Error naming it.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "secagg/group_unmasking.h"

namespace fedcal {

struct RelayGroupMember {
  std::string agent_key;  // CURVE, Z85
  std::string route;      // its routing id at the relay
  AdvertisedKeys keys;
  bool neighbour_survivors = false;
};

struct RelayGroupStart {
  SecAggConfig config;                    // the group's: self_masks_sealed, group_id > 0
  std::vector<RelayGroupMember> members;  // by index in the group
  Key32 coordinator_key{};
  Bytes coordinator_key_signature;  // Ed25519 of group_key_statement, 64 bytes
  uint32_t stage_timeout_ms = 0;
};

struct RelayGroupResult {
  uint64_t round_id = 0;
  std::string failure;           // empty: `aggregate` holds the group's self-masked sum
  std::vector<uint32_t> shared;  // U2
  GroupAggregate aggregate;      // its config is the group's start config
};

std::vector<std::byte> encode_group_start(const RelayGroupStart& start);
RelayGroupStart decode_group_start(std::span<const std::byte> bytes, size_t max_bytes);
std::vector<std::byte> encode_group_result(const RelayGroupResult& result);
// `config`: the group's configuration as the coordinator sent it (the result is read against it).
RelayGroupResult decode_group_result(std::span<const std::byte> bytes, size_t max_bytes, const SecAggConfig& config);
// The round and group a result names, to find its configuration before decoding it whole.
std::pair<uint64_t, uint64_t> peek_group_result_ids(std::span<const std::byte> bytes, size_t max_bytes);

}  // namespace fedcal

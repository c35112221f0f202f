// Secure aggregation per group at a relay (issue 31). A relay runs SecAggServer for a group of its
// agents with SecAggConfig::self_masks_sealed: each survivor reveals its shares of dropped agents'
// mask keys to the relay as usual, but seals its shares of surviving agents' self-mask seeds to a
// per-round X25519 key of the coordinator (seal_self_mask_shares). The relay removes the pairwise
// masks (SecAggServer::self_masked_sum) and forwards a GroupAggregate: the group's sum still under
// every survivor's self-mask, the sealed shares and the seeds' commitments. The coordinator opens the
// shares, rebuilds each survivor's seed, checks it against its commitment and removes the
// self-masks (open_group_sum): it learns the group's sum and nothing of one agent's vector.
//
// What each side learns (docs/ARCHITECTURE.md, threat model):
//   relay        masked inputs and sum_{u in U3} (x_u + PRG(b_u)): uniformly random without the b_u,
//                which only the coordinator can rebuild (the shares are sealed to its key)
//   coordinator  the group's sum over U3 (at least min_survivors agents), as the server of the
//                original protocol learns the fleet's sum
//   both, colluding   what the server of the original protocol learns: the sum over U3, since an
//                honest holder reveals one secret per owner, never both
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "secagg/crypto.h"
#include "secagg/secure_aggregation.h"

namespace fedcal {

// An agent's stage-3 answer in a sealed group: `revealed` (from SecAggClient::unmask) split into the
// mask-key shares, which go to the relay in the clear, and the self-mask-seed shares, sealed to
// `coordinator_public` (an ephemeral X25519 key agreement, HKDF, AES-256-GCM bound to the round,
// the group and the revealer). Throws Error for a low-order coordinator key.
struct SealedReveal {
  std::vector<RevealedShare> mask_key_shares;
  Bytes sealed_self_mask_shares;
};
SealedReveal seal_self_mask_shares(const SecAggConfig& config, uint32_t revealer, const std::vector<RevealedShare>& revealed,
                                   const Key32& coordinator_public);
// The self-mask-seed shares `revealer` sealed, or nullopt when they do not open with `coordinator`
// (not sealed to it, for another round, group or revealer, or altered) or are malformed.
std::optional<std::vector<RevealedShare>> open_self_mask_shares(const SecAggConfig& config, uint32_t revealer,
                                                                const Bytes& sealed, const X25519KeyPair& coordinator);

// What the coordinator signs so that agents take `coordinator_public` as its round key (not one a
// relay made up): "fedcal-group-key-v1", the round and group ids (little-endian 64-bit) and the key.
Bytes group_key_statement(uint64_t round_id, uint64_t group_id, const Key32& coordinator_public);

// What a relay forwards for one group once its stage 3 is over.
struct GroupAggregate {
  SecAggConfig config;                    // the group's (self_masks_sealed, group_id)
  std::vector<uint32_t> survivors;        // U3: whose masked inputs are in the sum
  std::map<uint32_t, Key32> commitments;  // by survivor: its commitment to its self-mask seed
  std::map<uint32_t, Bytes> sealed;       // by revealer (survivors): its sealed self-mask shares
  std::vector<uint64_t> self_masked_sum;  // SecAggServer::self_masked_sum
};

// The group's sum over its survivors, or nullopt with `why` while fewer than t shares of a survivor's
// seed open and agree with its commitment (or fewer survivors than min_survivors). Revealers whose
// shares were off a seed that checked out, or whose sealed shares did not open, go to `wrong_revealers`.
// Throws Error naming the field for an aggregate that does not fit its configuration.
std::optional<std::vector<uint64_t>> open_group_sum(const GroupAggregate& group, const X25519KeyPair& coordinator,
                                                    std::string* why, std::set<uint32_t>* wrong_revealers = nullptr);

}  // namespace fedcal

#include "secagg/group_unmasking.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"
#include "secagg/secret_rebuild.h"

namespace fedcal {
namespace {

constexpr size_t kSealedShareBytes = 4 + 1 + kSecretBytes;  // owner, x, value

void put_le(Bytes& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// What binds a sealed reveal to its round, group and revealer and to both keys of the agreement: the
// HKDF info and the AES-GCM associated data.
Bytes seal_context(const SecAggConfig& config, uint32_t revealer, const Key32& ephemeral_public,
                   const Key32& coordinator_public) {
  Bytes context;
  put_le(context, config.round_id, 8);
  put_le(context, config.group_id, 8);
  put_le(context, revealer, 4);
  context.insert(context.end(), ephemeral_public.begin(), ephemeral_public.end());
  context.insert(context.end(), coordinator_public.begin(), coordinator_public.end());
  return context;
}

Key32 seal_key(const Key32& shared_secret, const Bytes& context) {
  return hkdf_sha256(shared_secret, "fedcal-secagg-v1 sealed self-mask shares", context);
}

}  // namespace

Bytes group_key_statement(uint64_t round_id, uint64_t group_id, const Key32& coordinator_public) {
  constexpr std::string_view kLabel = "fedcal-group-key-v1";
  Bytes statement(kLabel.begin(), kLabel.end());
  put_le(statement, round_id, 8);
  put_le(statement, group_id, 8);
  statement.insert(statement.end(), coordinator_public.begin(), coordinator_public.end());
  return statement;
}

SealedReveal seal_self_mask_shares(const SecAggConfig& config, uint32_t revealer, const std::vector<RevealedShare>& revealed,
                                   const Key32& coordinator_public) {
  check_x25519_public_key(coordinator_public, "the coordinator's round key");
  SealedReveal out;
  Bytes plaintext;
  for (const RevealedShare& share : revealed) {
    if (share.kind == SecretKind::kMaskKey) {
      out.mask_key_shares.push_back(share);
      continue;
    }
    if (share.share.value.size() != kSecretBytes)
      fail("secure aggregation: a self-mask share of {} bytes", share.share.value.size());
    put_le(plaintext, share.owner, 4);
    plaintext.push_back(share.share.x);
    plaintext.insert(plaintext.end(), share.share.value.begin(), share.share.value.end());
  }
  const X25519KeyPair ephemeral = X25519KeyPair::generate();
  const Bytes context = seal_context(config, revealer, ephemeral.public_key(), coordinator_public);
  out.sealed_self_mask_shares.assign(ephemeral.public_key().begin(), ephemeral.public_key().end());
  const Bytes sealed = aes_gcm_seal(seal_key(ephemeral.agree(coordinator_public), context), plaintext, context);
  out.sealed_self_mask_shares.insert(out.sealed_self_mask_shares.end(), sealed.begin(), sealed.end());
  return out;
}

std::optional<std::vector<RevealedShare>> open_self_mask_shares(const SecAggConfig& config, uint32_t revealer,
                                                                const Bytes& sealed, const X25519KeyPair& coordinator) {
  if (sealed.size() < 32) return std::nullopt;
  const Key32 ephemeral_public = key_from_bytes(Bytes(sealed.begin(), sealed.begin() + 32));
  const Bytes context = seal_context(config, revealer, ephemeral_public, coordinator.public_key());
  Bytes plaintext;
  try {
    const Key32 key = seal_key(coordinator.agree(ephemeral_public), context);
    if (!aes_gcm_open(key, std::span(sealed).subspan(32), context, plaintext)) return std::nullopt;
  } catch (const Error&) {
    return std::nullopt;  // a low-order ephemeral key: no agreement
  }
  if (plaintext.size() % kSealedShareBytes != 0) return std::nullopt;
  std::vector<RevealedShare> out;
  for (size_t at = 0; at < plaintext.size(); at += kSealedShareBytes) {
    RevealedShare share;
    for (int i = 0; i < 4; ++i) share.owner |= static_cast<uint32_t>(plaintext[at + i]) << (8 * i);
    share.kind = SecretKind::kSelfMaskSeed;
    share.share.x = plaintext[at + 4];
    share.share.value.assign(plaintext.begin() + static_cast<ptrdiff_t>(at + 5),
                             plaintext.begin() + static_cast<ptrdiff_t>(at + kSealedShareBytes));
    out.push_back(std::move(share));
  }
  return out;
}

std::optional<std::vector<uint64_t>> open_group_sum(const GroupAggregate& group, const X25519KeyPair& coordinator,
                                                    std::string* why, std::set<uint32_t>* wrong_revealers) {
  const SecAggConfig& config = group.config;
  config.validate();
  auto missing = [&](const std::string& reason) -> std::optional<std::vector<uint64_t>> {
    if (why) *why = fmt::format("group {}: {}", config.group_id, reason);
    return std::nullopt;
  };
  auto wrong = [&](uint32_t revealer) {
    if (wrong_revealers) wrong_revealers->insert(revealer);
  };
  if (!config.self_masks_sealed) fail("group {}: its self-mask shares are not sealed to the coordinator", config.group_id);
  const std::set<uint32_t> survivors(group.survivors.begin(), group.survivors.end());
  if (survivors.size() != group.survivors.size()) fail("group {}: a survivor listed twice", config.group_id);
  if (!survivors.empty() && *survivors.rbegin() >= config.participants)
    fail("group {}: survivor {} of {} participants", config.group_id, *survivors.rbegin(), config.participants);
  if (group.self_masked_sum.size() != config.vector_length)
    fail("group {}: a sum of {} values, expected {}", config.group_id, group.self_masked_sum.size(), config.vector_length);
  if (config.lane_bits == 32 &&
      std::any_of(group.self_masked_sum.begin(), group.self_masked_sum.end(), [](uint64_t value) { return value > UINT32_MAX; }))
    fail("group {}: a sum value does not fit the group's 32-bit lanes", config.group_id);
  if (survivors.size() < config.min_survivors)
    return missing(fmt::format("{} survivors, fewer than the minimum of {}", survivors.size(), config.min_survivors));

  const std::vector<std::vector<uint32_t>> neighbours = graph_neighbour_lists(config);
  std::map<uint32_t, std::vector<ShamirShare>> shares;  // by owner
  std::map<uint32_t, std::vector<uint32_t>> revealers;  // by owner, beside each share
  for (const auto& entry : group.sealed) {
    const uint32_t revealer = entry.first;  // a plain variable: clang 14 cannot capture a structured binding
    if (!survivors.count(revealer)) fail("group {}: sealed shares from {}, which is not a survivor", config.group_id, revealer);
    const std::optional<std::vector<RevealedShare>> opened = open_self_mask_shares(config, revealer, entry.second, coordinator);
    if (!opened) {
      wrong(revealer);
      continue;
    }
    // A share of a non-survivor, twice, or at another holder's x does not fit: the revealer (or what
    // forwarded it) is wrong, and the share is left out.
    std::set<uint32_t> owners;
    auto fits = [&](const RevealedShare& share) {
      if (!survivors.count(share.owner) || !owners.insert(share.owner).second) return false;
      const std::vector<uint32_t>& holders = neighbours[share.owner];
      if (revealer != share.owner && !std::binary_search(holders.begin(), holders.end(), revealer)) return false;
      return share.share.x == holder_x(holders, share.owner, revealer);
    };
    for (const RevealedShare& share : *opened) {
      if (!fits(share)) {
        wrong(revealer);
        continue;
      }
      shares[share.owner].push_back(share.share);
      revealers[share.owner].push_back(revealer);
    }
  }

  std::vector<uint64_t> sum = group.self_masked_sum;
  for (const uint32_t u : survivors) {
    const auto commitment = group.commitments.find(u);
    if (commitment == group.commitments.end()) return missing(fmt::format("no commitment to agent {}'s self-mask seed", u));
    const std::vector<ShamirShare>& held = shares[u];
    if (held.size() < config.threshold)
      return missing(fmt::format("{} of {} shares of agent {}'s self-mask seed opened", held.size(), config.threshold, u));
    const std::optional<VerifiedSecret> seed = verified_combine(held, config.threshold, [&](const Bytes& candidate) {
      return self_mask_commitment(key_from_bytes(candidate), config.round_id, u) == commitment->second;
    });
    if (!seed)
      return missing(
          fmt::format("no {} of the opened shares of agent {}'s self-mask seed agree with its commitment", config.threshold, u));
    for (const size_t i : seed->wrong) wrong(revealers[u][i]);
    apply_prg_mask(self_mask_prg_seed(key_from_bytes(seed->secret), config.round_id, u), -1, sum, config.lane_bits);
  }
  reduce_to_lanes(sum, config.lane_bits);
  return sum;
}

}  // namespace fedcal

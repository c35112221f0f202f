#include "secagg/secagg_wire.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "protocol/wire.h"
#include "secagg/group_unmasking.h"

namespace fedcal {

// No agent has more than 254 neighbours (plus itself).
constexpr unsigned kMaxShares = 255;

void write_encrypted_shares(const std::vector<EncryptedShare>& shares, capnp::List<wire::EncryptedShare>::Builder out) {
  for (unsigned i = 0; i < out.size(); ++i) {
    out[i].setFrom(shares[i].from);
    out[i].setTo(shares[i].to);
    out[i].setCiphertext(as_data(shares[i].ciphertext));
  }
}

std::vector<EncryptedShare> read_encrypted_shares(capnp::List<wire::EncryptedShare>::Reader list, const char* message) {
  if (list.size() > kMaxShares) fail("{}: {} shares", message, list.size());
  std::vector<EncryptedShare> shares;
  for (const auto share : list) {
    const auto ciphertext = share.getCiphertext();
    shares.push_back({share.getFrom(), share.getTo(), Bytes(ciphertext.begin(), ciphertext.end())});
  }
  return shares;
}

void write_revealed_shares(const std::vector<RevealedShare>& shares, capnp::List<wire::RevealedShare>::Builder out) {
  for (unsigned i = 0; i < out.size(); ++i) {
    out[i].setOwner(shares[i].owner);
    out[i].setKind(static_cast<uint8_t>(shares[i].kind));
    out[i].setX(shares[i].share.x);
    out[i].setValue(as_data(shares[i].share.value));
  }
}

std::vector<RevealedShare> read_revealed_shares(capnp::List<wire::RevealedShare>::Reader list, const char* message) {
  if (list.size() > kMaxShares) fail("{}: {} shares", message, list.size());
  std::vector<RevealedShare> shares;
  for (const auto share : list) {
    if (share.getKind() > 1) fail("{}: share kind {}", message, share.getKind());
    const auto value = share.getValue();
    shares.push_back(
        {share.getOwner(), static_cast<SecretKind>(share.getKind()), {share.getX(), Bytes(value.begin(), value.end())}});
  }
  return shares;
}

void write_round_keys(const SecAggConfig& config, uint32_t index, const std::vector<uint32_t>& neighbours,
                      const std::vector<AdvertisedKeys>& keys, wire::RoundKeys::Builder out) {
  out.setRoundId(config.round_id);
  out.setIndex(index);
  out.setParticipants(config.participants);
  out.setNeighbours(config.neighbours);
  out.setThreshold(config.threshold);
  out.setGraphSeed(as_data(config.graph_seed));
  out.setVectorLength(config.vector_length);
  out.setLaneBits(static_cast<uint8_t>(config.lane_bits));
  out.setEphemeralShareKeys(config.ephemeral_share_keys);
  out.setGroupId(config.group_id);
  auto list = out.initKeys(static_cast<unsigned>(neighbours.size()));
  for (unsigned i = 0; i < list.size(); ++i) {
    list[i].setIndex(neighbours[i]);
    list[i].setCipherPublic(as_data(keys.at(neighbours[i]).cipher_public));
    list[i].setMaskPublic(as_data(keys.at(neighbours[i]).mask_public));
  }
}

void write_unmask_request(uint64_t round_id, uint32_t index, const std::set<uint32_t>& survivors,
                          const std::vector<uint32_t>& neighbours, bool neighbour_list, wire::UnmaskRequest::Builder out) {
  std::vector<uint32_t> listed;
  if (neighbour_list) {
    listed.push_back(index);
    for (const uint32_t v : neighbours) {
      if (survivors.count(v)) listed.push_back(v);
    }
    std::sort(listed.begin(), listed.end());
    out.setSurvivorCount(static_cast<uint32_t>(survivors.size()));
  } else {
    listed.assign(survivors.begin(), survivors.end());
  }
  out.setRoundId(round_id);
  auto list = out.initSurvivors(static_cast<unsigned>(listed.size()));
  for (unsigned i = 0; i < listed.size(); ++i) list.set(i, listed[i]);
}

void answer_unmask_request(SecAggClient& client, wire::UnmaskRequest::Reader request, const SigningKey& coordinator_signing_key,
                           wire::UnmaskShares::Builder out) {
  if (request.getSurvivors().size() > 100000) fail("unmaskRequest: {} survivors", request.getSurvivors().size());
  std::vector<uint32_t> survivors;
  for (const uint32_t survivor : request.getSurvivors()) survivors.push_back(survivor);
  const std::optional<uint32_t> count =
      request.getSurvivorCount() > 0 ? std::optional<uint32_t>(request.getSurvivorCount()) : std::nullopt;
  const SecAggConfig config = client.config();
  const bool sealed = request.hasCoordinatorKey() && request.getCoordinatorKey().size() > 0;
  if (sealed != config.self_masks_sealed) {
    fail("unmaskRequest: {} coordinatorKey for {}", sealed ? "a" : "no",
         config.self_masks_sealed ? fmt::format("relay group {}", config.group_id) : std::string("a round without groups"));
  }
  Key32 coordinator_key{};
  if (sealed) {
    // Checked before anything is revealed: a relay's own key would let it open the seeds.
    coordinator_key = read_key32(request.getCoordinatorKey(), "unmaskRequest.coordinatorKey");
    const auto signature = request.getCoordinatorKeySignature();
    if (signature.size() != 64) fail("unmaskRequest.coordinatorKeySignature: {} bytes, not 64", signature.size());
    Signature parsed{};
    std::memcpy(parsed.data(), signature.begin(), parsed.size());
    const Bytes statement = group_key_statement(config.round_id, config.group_id, coordinator_key);
    if (!coordinator_signing_key.verify(std::as_bytes(std::span(statement)), parsed))
      fail("unmaskRequest.coordinatorKey: not signed by the coordinator (round {}, group {})", config.round_id, config.group_id);
  }
  const std::vector<RevealedShare> revealed = client.unmask(survivors, count);
  out.setRoundId(request.getRoundId());
  if (!sealed) {
    write_revealed_shares(revealed, out.initShares(static_cast<unsigned>(revealed.size())));
    return;
  }
  const SealedReveal reveal = seal_self_mask_shares(config, client.index(), revealed, coordinator_key);
  write_revealed_shares(reveal.mask_key_shares, out.initShares(static_cast<unsigned>(reveal.mask_key_shares.size())));
  out.setSealedSelfMaskShares(as_data(reveal.sealed_self_mask_shares));
}

SecAggConfig read_round_keys_config(wire::RoundKeys::Reader keys, uint32_t min_survivors) {
  SecAggConfig config;
  config.round_id = keys.getRoundId();
  config.participants = keys.getParticipants();
  config.neighbours = keys.getNeighbours();
  config.threshold = keys.getThreshold();
  config.min_survivors = min_survivors;
  config.graph_seed = read_key32(keys.getGraphSeed(), "roundKeys.graphSeed");
  config.vector_length = keys.getVectorLength();
  config.lane_bits = keys.getLaneBits() == 0 ? 64 : keys.getLaneBits();
  config.ephemeral_share_keys = keys.getEphemeralShareKeys();
  config.group_id = keys.getGroupId();
  config.self_masks_sealed = config.group_id != 0;
  config.validate();
  return config;
}

std::map<uint32_t, AdvertisedKeys> read_round_keys_neighbours(wire::RoundKeys::Reader keys) {
  if (keys.getKeys().size() > kMaxShares) fail("roundKeys: {} neighbours", keys.getKeys().size());
  std::map<uint32_t, AdvertisedKeys> neighbours;
  for (const auto entry : keys.getKeys()) {
    neighbours[entry.getIndex()] = {read_key32(entry.getCipherPublic(), "roundKeys.keys.cipherPublic"),
                                    read_key32(entry.getMaskPublic(), "roundKeys.keys.maskPublic")};
  }
  return neighbours;
}

}  // namespace fedcal

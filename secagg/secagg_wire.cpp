#include "secagg/secagg_wire.h"

#include "common/error.h"
#include "protocol/wire.h"

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

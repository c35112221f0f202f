#include "secagg/secure_aggregation.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <future>
#include <numeric>
#include <thread>

#include "common/error.h"
#include "secagg/secret_rebuild.h"

namespace fedcal {
namespace {

void put_u32(Bytes& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}
void put_u64(Bytes& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

Bytes pair_info(uint64_t round_id, uint32_t a, uint32_t b) {
  Bytes info;
  put_u64(info, round_id);
  put_u32(info, std::min(a, b));
  put_u32(info, std::max(a, b));
  return info;
}

Key32 share_encryption_key(const Key32& shared_secret, uint64_t round_id, uint32_t a, uint32_t b) {
  return hkdf_sha256(shared_secret, "fedcal-secagg-v1 share encryption", pair_info(round_id, a, b));
}

Bytes share_associated_data(uint64_t round_id, uint32_t from, uint32_t to) {
  Bytes data;
  put_u64(data, round_id);
  put_u32(data, from);
  put_u32(data, to);
  return data;
}

bool contains(const std::vector<uint32_t>& sorted, uint32_t value) {
  return std::binary_search(sorted.begin(), sorted.end(), value);
}

// +1 if a adds the pairwise mask it shares with b, -1 if it subtracts it.
int pair_sign(uint32_t a, uint32_t b) { return a < b ? 1 : -1; }

}  // namespace

void SecAggConfig::validate() const {
  if (participants < 2) fail("secure aggregation: {} participants (at least 2)", participants);
  if (neighbours < 1 || neighbours >= participants || neighbours > 254) {
    fail("secure aggregation: {} neighbours for {} participants (1..min(n-1, 254))", neighbours, participants);
  }
  if (threshold < 2 || threshold > neighbours + 1) {
    fail("secure aggregation: threshold {} for {} share holders (2..k+1)", threshold, neighbours + 1);
  }
  if (min_survivors < 1) fail("secure aggregation: min_survivors must be at least 1");
  if (vector_length == 0 || vector_length > (uint64_t{1} << 28)) fail("secure aggregation: vector length {}", vector_length);
  if (lane_bits != 32 && lane_bits != 64) fail("secure aggregation: lanes of {} bits (32 or 64)", lane_bits);
}

uint32_t narrowest_lane_bits(uint64_t per_agent_bound, uint32_t agents, double noise_stddev) {
  constexpr uint64_t kLimit = uint64_t{1} << 31;
  if (agents == 0 || per_agent_bound > kLimit / agents) return 64;
  const double bound = static_cast<double>(per_agent_bound * agents) + 40 * noise_stddev;
  return bound < static_cast<double>(kLimit) ? 32 : 64;
}

void reduce_to_lanes(std::span<uint64_t> values, uint32_t lane_bits) {
  if (lane_bits == 32) {
    for (uint64_t& value : values) value = static_cast<uint32_t>(value);
  }
}

int64_t lane_to_signed(uint64_t value, uint32_t lane_bits) {
  return lane_bits == 32 ? static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(value))) : static_cast<int64_t>(value);
}

uint32_t default_neighbours(uint32_t participants) {
  if (participants <= 33) return std::min<uint32_t>(participants - 1, 254);
  const auto half = static_cast<uint32_t>(std::ceil(1.5 * std::log2(static_cast<double>(participants))));
  return std::min<uint32_t>({2 * half, participants - 1, 254});
}

uint32_t default_threshold(uint32_t neighbours) { return std::max<uint32_t>(2, (neighbours + 1) / 2 + 1); }

namespace {

// A seeded Fisher-Yates permutation places the agents on a ring; each is joined to the k/2 nearest
// on either side (k rounded up to even), so the graph is symmetric and k-regular.
std::vector<uint32_t> ring_order(const SecAggConfig& config) {
  const uint32_t n = config.participants;
  std::vector<uint64_t> words(n, 0);
  apply_prg_mask(hkdf_sha256(config.graph_seed, "fedcal-secagg-v1 graph", pair_info(config.round_id, 0, 0)), 1, words);
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  for (uint32_t i = n - 1; i > 0; --i) std::swap(order[i], order[words[i] % (uint64_t{i} + 1)]);
  return order;
}

// The neighbours of the agent at `position` on the ring, sorted.
std::vector<uint32_t> ring_neighbours(const SecAggConfig& config, const std::vector<uint32_t>& order, uint32_t position) {
  const auto n = static_cast<uint32_t>(order.size());
  std::vector<uint32_t> list;
  for (uint32_t j = 1; j <= (config.neighbours + 1) / 2; ++j) {
    list.push_back(order[(position + j) % n]);
    list.push_back(order[(position + n - j) % n]);
  }
  std::sort(list.begin(), list.end());
  list.erase(std::unique(list.begin(), list.end()), list.end());
  std::erase(list, order[position]);
  return list;
}

std::vector<uint32_t> all_but(uint32_t n, uint32_t u) {
  std::vector<uint32_t> out;
  for (uint32_t v = 0; v < n; ++v) {
    if (v != u) out.push_back(v);
  }
  return out;
}

}  // namespace

std::vector<std::vector<uint32_t>> graph_neighbour_lists(const SecAggConfig& config) {
  const uint32_t n = config.participants;
  std::vector<std::vector<uint32_t>> lists(n);
  if (config.neighbours >= n - 1) {
    for (uint32_t u = 0; u < n; ++u) lists[u] = all_but(n, u);
    return lists;
  }
  const std::vector<uint32_t> order = ring_order(config);
  for (uint32_t position = 0; position < n; ++position) lists[order[position]] = ring_neighbours(config, order, position);
  return lists;
}

std::vector<uint32_t> graph_neighbours(const SecAggConfig& config, uint32_t u) {
  const uint32_t n = config.participants;
  if (u >= n) fail("agent index {} out of range ({} participants)", u, n);
  if (config.neighbours >= n - 1) return all_but(n, u);
  const std::vector<uint32_t> order = ring_order(config);
  return ring_neighbours(config, order, static_cast<uint32_t>(std::find(order.begin(), order.end(), u) - order.begin()));
}

std::vector<uint32_t> share_holders(const SecAggConfig& config, uint32_t u) {
  std::vector<uint32_t> holders = graph_neighbours(config, u);
  holders.insert(std::lower_bound(holders.begin(), holders.end(), u), u);
  return holders;
}

Key32 pairwise_mask_seed(const Key32& shared_secret, uint64_t round_id, uint32_t a, uint32_t b) {
  return hkdf_sha256(shared_secret, "fedcal-secagg-v1 pairwise mask", pair_info(round_id, a, b));
}

Key32 self_mask_prg_seed(const Key32& seed, uint64_t round_id, uint32_t owner) {
  return hkdf_sha256(seed, "fedcal-secagg-v1 self mask", pair_info(round_id, owner, owner));
}

Key32 self_mask_commitment(const Key32& seed, uint64_t round_id, uint32_t owner) {
  return hkdf_sha256(seed, "fedcal-secagg-v1 self mask commitment", pair_info(round_id, owner, owner));
}

Key32 SecAggClient::self_mask_commitment() const {
  if (held_.empty()) fail("secure aggregation: no commitment before the key-sharing stage");
  return fedcal::self_mask_commitment(self_mask_seed_, config_.round_id, index_);
}

SecAggClient::SecAggClient()
    : cipher_keys_(X25519KeyPair::generate()), mask_keys_(X25519KeyPair::generate()), self_mask_seed_(random_key()) {}

std::vector<EncryptedShare> SecAggClient::share_keys(const SecAggConfig& config, uint32_t index,
                                                     const std::map<uint32_t, AdvertisedKeys>& keys) {
  config.validate();
  config_ = config;
  index_ = index;
  const std::vector<uint32_t> holders = share_holders(config, index);
  if (holders.size() > 255) fail("secure aggregation: {} share holders (at most 255)", holders.size());
  std::vector<uint8_t> xs(holders.size());
  std::iota(xs.begin(), xs.end(), uint8_t{1});
  const auto seed_shares = shamir_split(self_mask_seed_, static_cast<int>(config.threshold), xs);
  const auto key_shares = shamir_split(mask_keys_.private_key(), static_cast<int>(config.threshold), xs);

  std::vector<EncryptedShare> out;
  for (size_t i = 0; i < holders.size(); ++i) {
    const uint32_t holder = holders[i];
    if (holder == index) {
      held_[index] = {xs[i], seed_shares[i].value, key_shares[i].value};
      continue;
    }
    const auto found = keys.find(holder);
    if (found == keys.end()) fail("secure aggregation: no advertised keys for neighbour {}", holder);
    neighbour_keys_[holder] = found->second;
    Bytes plaintext = seed_shares[i].value;
    plaintext.insert(plaintext.end(), key_shares[i].value.begin(), key_shares[i].value.end());
    const Key32 pair_key = share_encryption_key(cipher_keys_.agree(found->second.cipher_public), config.round_id, index, holder);
    share_keys_[holder] = pair_key;  // without ephemeral keys, the same key decrypts what this neighbour sends us
    const Bytes associated = share_associated_data(config.round_id, index, holder);
    if (!config.ephemeral_share_keys) {
      out.push_back({index, holder, aes_gcm_seal(pair_key, plaintext, associated)});
      continue;
    }
    const X25519KeyPair ephemeral = X25519KeyPair::generate();
    ephemeral_secrets_[holder] = ephemeral.private_key();
    const Key32 key = share_encryption_key(ephemeral.agree(found->second.cipher_public), config.round_id, index, holder);
    Bytes sealed(ephemeral.public_key().begin(), ephemeral.public_key().end());
    const Bytes ciphertext = aes_gcm_seal(key, plaintext, associated);
    sealed.insert(sealed.end(), ciphertext.begin(), ciphertext.end());
    out.push_back({index, holder, std::move(sealed)});
  }
  return out;
}

namespace {

// A share sealed under an ephemeral key: the key's public half, then the AES-GCM ciphertext.
std::optional<Bytes> open_ephemeral_share(const SecAggConfig& config, const EncryptedShare& share, const X25519KeyPair& opener,
                                          const Key32& other_public) {
  Bytes plaintext;
  try {
    const Key32 key = share_encryption_key(opener.agree(other_public), config.round_id, share.from, share.to);
    const std::span<const uint8_t> sealed(share.ciphertext.data() + 32, share.ciphertext.size() - 32);
    if (!aes_gcm_open(key, sealed, share_associated_data(config.round_id, share.from, share.to), plaintext)) return std::nullopt;
  } catch (const Error&) {
    return std::nullopt;  // a low-order ephemeral key: no agreement
  }
  if (plaintext.size() != 2 * kSecretBytes) return std::nullopt;
  return plaintext;
}

Key32 ephemeral_public(const EncryptedShare& share) {
  Key32 key{};
  std::copy_n(share.ciphertext.begin(), key.size(), key.begin());
  return key;
}

}  // namespace

bool share_opens(const SecAggConfig& config, const EncryptedShare& share, const Key32& holder_cipher_public,
                 const Key32& ephemeral_secret) {
  if (!config.ephemeral_share_keys || share.ciphertext.size() < 32) return false;
  const X25519KeyPair ephemeral = X25519KeyPair::from_private(ephemeral_secret);
  if (ephemeral.public_key() != ephemeral_public(share)) return false;  // not the key it was sealed under
  return open_ephemeral_share(config, share, ephemeral, holder_cipher_public).has_value();
}

Key32 SecAggClient::share_opening(uint32_t holder) {
  if (!config_.ephemeral_share_keys)
    fail("secure aggregation: round {}: shares are not sealed under ephemeral keys", config_.round_id);
  const auto found = ephemeral_secrets_.find(holder);
  if (found == ephemeral_secrets_.end())
    fail("secure aggregation: round {}: no share was sent to agent {}", config_.round_id, holder);
  if (opened_) fail("secure aggregation: round {}: a share was opened already; a second opening is refused", config_.round_id);
  opened_ = true;
  return found->second;
}

std::optional<Bytes> SecAggClient::open_share(const EncryptedShare& share, const std::vector<uint32_t>& neighbours) const {
  if (share.to != index_ || !contains(neighbours, share.from)) {
    fail("secure aggregation: unexpected share from agent {} to agent {}", share.from, share.to);
  }
  if (config_.ephemeral_share_keys) {
    if (share.ciphertext.size() < 32) return std::nullopt;
    return open_ephemeral_share(config_, share, cipher_keys_, ephemeral_public(share));
  }
  Bytes plaintext;
  if (!aes_gcm_open(share_keys_.at(share.from), share.ciphertext, share_associated_data(config_.round_id, share.from, index_),
                    plaintext) ||
      plaintext.size() != 2 * kSecretBytes) {
    return std::nullopt;
  }
  return plaintext;
}

std::vector<uint32_t> SecAggClient::undecryptable(const std::vector<EncryptedShare>& received) const {
  if (held_.empty()) fail("secure aggregation: shares received before the key-sharing stage");
  const std::vector<uint32_t> neighbours = graph_neighbours(config_, index_);
  std::vector<uint32_t> out;
  for (const EncryptedShare& share : received) {
    if (!open_share(share, neighbours)) out.push_back(share.from);
  }
  return out;
}

std::vector<uint64_t> SecAggClient::mask_input(std::span<const uint64_t> input, const std::vector<EncryptedShare>& received) {
  if (held_.empty()) fail("secure aggregation: masked input requested before the key-sharing stage");
  if (unmasked_) fail("secure aggregation: round {}: masking after unmasking is refused", config_.round_id);
  if (input.size() != config_.vector_length) {
    fail("secure aggregation: input has {} values, the round expects {}", input.size(), config_.vector_length);
  }
  const std::vector<uint32_t> neighbours = graph_neighbours(config_, index_);
  std::map<uint32_t, HeldShares> held = {{index_, held_.at(index_)}};
  for (const EncryptedShare& share : received) {
    const std::optional<Bytes> plaintext = open_share(share, neighbours);
    if (!plaintext) fail("secure aggregation: the share from agent {} does not decrypt", share.from);
    // Masking again (after an exclusion) only ever drops senders: never a new one, nor one twice.
    if (held.count(share.from) || (masked_ && !held_.count(share.from))) {
      fail("secure aggregation: unexpected share from agent {} to agent {}", share.from, share.to);
    }
    held[share.from] = {holder_x(graph_neighbours(config_, share.from), share.from, index_), Bytes(plaintext->begin(), plaintext->begin() + kSecretBytes),
                        Bytes(plaintext->begin() + kSecretBytes, plaintext->end())};
  }
  if (masked_ && held.size() == held_.size()) fail("secure aggregation: masking again with the same senders");
  held_ = std::move(held);
  masked_ = true;

  // Inputs are taken modulo 2^lane_bits (a DP noise draw below zero wraps, read back as signed); the
  // round's budget keeps honest counts below 2^31.
  std::vector<uint64_t> masked(input.begin(), input.end());
  reduce_to_lanes(masked, config_.lane_bits);
  apply_prg_mask(self_mask_prg_seed(self_mask_seed_, config_.round_id, index_), 1, masked, config_.lane_bits);
  for (const auto& [owner, shares] : held_) {
    if (owner == index_) continue;
    const Key32 secret = mask_keys_.agree(neighbour_keys_.at(owner).mask_public);
    apply_prg_mask(pairwise_mask_seed(secret, config_.round_id, index_, owner), pair_sign(index_, owner), masked,
                   config_.lane_bits);
  }
  return masked;
}

std::vector<RevealedShare> SecAggClient::unmask(const std::vector<uint32_t>& survivors, std::optional<uint32_t> survivor_count) {
  if (held_.empty()) fail("secure aggregation: unmasking requested before the key-sharing stage");
  if (unmasked_) fail("secure aggregation: round {}: a second unmasking request is refused", config_.round_id);
  std::vector<uint32_t> sorted = survivors;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) fail("secure aggregation: duplicate survivors");
  const size_t count = survivor_count ? *survivor_count : sorted.size();
  if (count < config_.min_survivors) {
    fail("secure aggregation: {} survivors, fewer than the minimum of {}: refusing to unmask", count, config_.min_survivors);
  }
  if (survivor_count) {
    if (sorted.size() > count) fail("secure aggregation: {} survivors listed of {} in all", sorted.size(), count);
    for (const uint32_t survivor : sorted) {
      if (survivor != index_ && !held_.count(survivor))
        fail("secure aggregation: survivor {} listed as a neighbour is not one", survivor);
    }
  }
  if (!contains(sorted, index_)) fail("secure aggregation: the survivor list does not include this agent");
  unmasked_ = true;
  std::vector<RevealedShare> out;
  for (const auto& [owner, shares] : held_) {
    const bool survived = contains(sorted, owner);
    out.push_back({owner,
                   survived ? SecretKind::kSelfMaskSeed : SecretKind::kMaskKey,
                   {shares.x, survived ? shares.self_mask_seed : shares.mask_key}});
  }
  return out;
}

SecAggServer::SecAggServer(SecAggConfig config, std::vector<AdvertisedKeys> keys) : config_(config), keys_(std::move(keys)) {
  config_.validate();
  if (keys_.size() != config_.participants)
    fail("secure aggregation: {} key sets for {} participants", keys_.size(), config_.participants);
  neighbours_ = graph_neighbour_lists(config_);
  senders_to_.resize(config_.participants);
}

void SecAggServer::add_shares(uint32_t from, std::vector<EncryptedShare> shares, std::optional<Key32> self_mask_commitment) {
  if (from >= config_.participants) fail("share keys from unknown participant {}", from);
  if (u2_.count(from)) fail("participant {} sent its shares twice", from);
  const std::vector<uint32_t>& expected = neighbours_.at(from);
  std::vector<uint32_t> got;
  for (const EncryptedShare& share : shares) {
    if (share.from != from) fail("participant {} sent a share labelled from {}", from, share.from);
    if (share.ciphertext.size() != (config_.ephemeral_share_keys ? 32 : 0) + 12 + 2 * kSecretBytes + 16)
      fail("participant {}: share for {} has {} bytes", from, share.to, share.ciphertext.size());
    got.push_back(share.to);
  }
  std::sort(got.begin(), got.end());
  if (got != expected)
    fail("participant {} sent shares for {} holders, expected its {} neighbours", from, got.size(), expected.size());
  if (config_.self_masks_sealed && !self_mask_commitment)
    fail("participant {} sent no commitment to its self-mask seed, which the coordinator checks the seed against", from);
  for (const EncryptedShare& share : shares) {
    std::vector<uint32_t>& senders = senders_to_.at(share.to);
    senders.insert(std::lower_bound(senders.begin(), senders.end(), from), from);
  }
  shares_by_sender_[from] = std::move(shares);
  if (self_mask_commitment) self_mask_commitments_[from] = *self_mask_commitment;
  u2_.insert(from);
}

std::vector<EncryptedShare> SecAggServer::shares_for(uint32_t to) const {
  std::vector<EncryptedShare> out;
  if (to >= senders_to_.size()) return out;
  for (const uint32_t sender : senders_to_[to]) {  // ascending, as U2 is
    if (!u2_.count(sender)) continue;              // excluded since
    if (const EncryptedShare* found = share(sender, to)) out.push_back(*found);
  }
  return out;
}

const EncryptedShare* SecAggServer::share(uint32_t from, uint32_t to) const {
  const auto sender = shares_by_sender_.find(from);
  if (sender == shares_by_sender_.end()) return nullptr;
  for (const EncryptedShare& entry : sender->second) {
    if (entry.to == to) return &entry;
  }
  return nullptr;
}

void SecAggServer::add_masked_input(uint32_t from, std::vector<uint64_t> masked) {
  if (!u2_.count(from)) fail("masked input from participant {}, which did not share keys", from);
  if (u3_.count(from)) fail("participant {} sent its masked input twice", from);
  if (masked.size() != config_.vector_length)
    fail("participant {}: masked input has {} values, expected {}", from, masked.size(), config_.vector_length);
  MaskedInput& input = masked_[from];
  if (config_.lane_bits == 32) {
    input.lanes32.resize(masked.size());
    for (size_t i = 0; i < masked.size(); ++i) {
      if (masked[i] > UINT32_MAX) {
        masked_.erase(from);
        fail("participant {}: masked value {} does not fit the round's 32-bit lanes", from, i);
      }
      input.lanes32[i] = static_cast<uint32_t>(masked[i]);
    }
  } else {
    input.lanes64 = std::move(masked);
  }
  u3_.insert(from);
}

uint64_t SecAggServer::masked_bytes() const {
  uint64_t bytes = 0;
  for (const auto& [survivor, input] : masked_) bytes += input.lanes32.size() * 4 + input.lanes64.size() * 8;
  return bytes;
}

std::vector<uint32_t> SecAggServer::exclude(uint32_t from, const std::vector<uint32_t>& senders) {
  if (!u2_.count(from)) fail("a complaint from participant {}, which did not share keys", from);
  if (u3_.count(from)) fail("participant {} complains after sending its masked input", from);
  if (senders.empty()) fail("participant {} complains about nobody", from);
  const std::vector<uint32_t>& neighbours = neighbours_.at(from);
  for (const uint32_t sender : senders) {
    if (!u2_.count(sender) || !contains(neighbours, sender)) {
      fail("participant {} complains about participant {}, which sent it no share", from, sender);
    }
  }
  std::set<uint32_t> again;
  for (const uint32_t sender : senders) {
    u2_.erase(sender);
    u3_.erase(sender);
    masked_.erase(sender);
    excluded_.insert(sender);
    for (const EncryptedShare& share : shares_by_sender_.at(sender)) again.insert(share.to);
    shares_by_sender_.erase(sender);
  }
  std::vector<uint32_t> out;
  for (const uint32_t v : again) {
    if (!u2_.count(v)) continue;
    u3_.erase(v);
    masked_.erase(v);
    out.push_back(v);
  }
  return out;
}

void SecAggServer::add_revealed(uint32_t from, const std::vector<RevealedShare>& shares, Bytes sealed_self_mask_shares) {
  if (!u3_.count(from)) fail("unmasking shares from participant {}, which is not a survivor", from);
  if (u4_.count(from)) fail("participant {} sent unmasking shares twice", from);
  if (config_.self_masks_sealed != !sealed_self_mask_shares.empty()) {
    fail("participant {}: self-mask shares {} where the round {} them sealed to the coordinator", from,
         sealed_self_mask_shares.empty() ? "not sealed" : "sealed", config_.self_masks_sealed ? "has" : "does not have");
  }
  std::set<uint32_t> owners;
  for (const RevealedShare& revealed : shares) {
    const uint32_t owner = revealed.owner;
    if (!u2_.count(owner)) fail("participant {} revealed a share of {}, which did not share keys", from, owner);
    if (!owners.insert(owner).second) fail("participant {} revealed two shares of {}", from, owner);
    const SecretKind expected = u3_.count(owner) ? SecretKind::kSelfMaskSeed : SecretKind::kMaskKey;
    if (revealed.kind != expected) fail("participant {} revealed the wrong secret of {}", from, owner);
    if (config_.self_masks_sealed && revealed.kind == SecretKind::kSelfMaskSeed)
      fail("participant {} revealed a share of {}'s self-mask seed unsealed", from, owner);
    if (revealed.share.x != holder_x(neighbours_.at(owner), owner, from) || revealed.share.value.size() != kSecretBytes) {
      fail("participant {}: malformed share of {}", from, owner);
    }
  }
  for (const RevealedShare& revealed : shares) {
    auto& bucket = revealed.kind == SecretKind::kSelfMaskSeed ? self_mask_shares_ : mask_key_shares_;
    bucket[revealed.owner].push_back(revealed.share);
  }
  if (config_.self_masks_sealed) sealed_[from] = std::move(sealed_self_mask_shares);
  u4_.insert(from);
}

std::optional<std::vector<uint64_t>> SecAggServer::unmasked_sum(std::string* why, size_t workers,
                                                                std::set<uint32_t>* wrong_revealers) const {
  if (config_.self_masks_sealed) fail("secure aggregation: the self-mask shares of this group are sealed to the coordinator");
  return survivors_sum(true, why, workers, wrong_revealers);
}

std::optional<std::vector<uint64_t>> SecAggServer::self_masked_sum(std::string* why, size_t workers,
                                                                   std::set<uint32_t>* wrong_revealers) const {
  if (!config_.self_masks_sealed) fail("secure aggregation: a self-masked sum of a round whose self-mask shares are revealed");
  return survivors_sum(false, why, workers, wrong_revealers);
}

std::optional<std::vector<uint64_t>> SecAggServer::survivors_sum(bool remove_self_masks, std::string* why, size_t workers,
                                                                 std::set<uint32_t>* wrong_revealers) const {
  auto missing = [&](const std::string& reason) -> std::optional<std::vector<uint64_t>> {
    if (why) *why = reason;
    return std::nullopt;
  };
  if (u3_.size() < config_.min_survivors) {
    return missing(fmt::format("{} agents sent masked input, fewer than the minimum of {}", u3_.size(), config_.min_survivors));
  }
  const int t = static_cast<int>(config_.threshold);
  for (const uint32_t u : remove_self_masks ? u3_ : std::set<uint32_t>{}) {
    const auto found = self_mask_shares_.find(u);
    const size_t have = found == self_mask_shares_.end() ? 0 : found->second.size();
    if (have < config_.threshold) return missing(fmt::format("{} of {} shares of agent {}'s self-mask seed", have, t, u));
  }
  for (const uint32_t u : u2_) {
    if (u3_.count(u)) continue;
    const auto found = mask_key_shares_.find(u);
    const size_t have = found == mask_key_shares_.end() ? 0 : found->second.size();
    if (have < config_.threshold) return missing(fmt::format("{} of {} shares of dropped agent {}'s mask key", have, t, u));
  }

  // Every mask to take out: each survivor's self-mask (unless the coordinator removes it) and, for
  // each dropped agent, the pairwise masks its surviving neighbours added. Seeds first (cheap; a mismatch throws here), then the
  // PRG expansions, which are the work, spread over the cores.
  struct Removal {
    const MaskedInput* masked;  // a survivor's input to add, or nullptr
    Key32 seed;
    int sign;  // 0: no mask to remove (a survivor's input whose self-mask stays on)
  };
  std::vector<Removal> removals;
  // Each secret from a t-subset of its shares that checks out; the holders of shares off it lied.
  auto rebuild = [&](uint32_t owner, const std::vector<ShamirShare>& shares,
                     const std::function<bool(const Bytes&)>& verify) -> std::optional<Key32> {
    const std::optional<VerifiedSecret> verified = verified_combine(shares, config_.threshold, verify);
    if (!verified) return std::nullopt;
    std::vector<uint32_t> holders = neighbours_.at(owner);
    holders.insert(std::lower_bound(holders.begin(), holders.end(), owner), owner);
    for (const size_t i : verified->wrong) {
      if (wrong_revealers) wrong_revealers->insert(holders.at(shares[i].x - 1u));
    }
    return key_from_bytes(verified->secret);
  };
  for (const auto& [survivor, masked] : masked_) {
    const uint32_t u = survivor;  // a plain variable: clang 14 cannot capture a structured binding
    if (!remove_self_masks) {
      removals.push_back({&masked, Key32{}, 0});
      continue;
    }
    const auto commitment = self_mask_commitments_.find(u);
    const std::optional<Key32> seed = rebuild(u, self_mask_shares_.at(u), [&](const Bytes& candidate) {
      if (commitment == self_mask_commitments_.end()) return true;  // an older agent: nothing to check against
      return self_mask_commitment(key_from_bytes(candidate), config_.round_id, u) == commitment->second;
    });
    if (!seed)
      return missing(fmt::format("no {} of the revealed shares of agent {}'s self-mask seed agree with its commitment", t, u));
    removals.push_back({&masked, self_mask_prg_seed(*seed, config_.round_id, u), -1});
  }
  for (const uint32_t u : u2_) {
    if (u3_.count(u)) continue;
    const std::optional<Key32> private_key = rebuild(u, mask_key_shares_.at(u), [&](const Bytes& candidate) {
      return X25519KeyPair::from_private(key_from_bytes(candidate)).public_key() == keys_[u].mask_public;
    });
    if (!private_key)
      return missing(fmt::format("no {} of the revealed shares of dropped agent {}'s mask key match its public key", t, u));
    const X25519KeyPair dropped = X25519KeyPair::from_private(*private_key);
    for (const uint32_t v : neighbours_.at(u)) {
      if (!u3_.count(v)) continue;
      // v added pair_sign(v, u) * PRG(s_vu) for the dropped u: take it back out.
      removals.push_back(
          {nullptr, pairwise_mask_seed(dropped.agree(keys_[v].mask_public), config_.round_id, v, u), -pair_sign(v, u)});
    }
  }
  // Sums mod 2^64 are exact in any order, so each worker sums a stride of the removals on its own.
  auto partial_sum = [&](size_t first, size_t stride) {
    std::vector<uint64_t> sum(config_.vector_length, 0);
    for (size_t r = first; r < removals.size(); r += stride) {
      if (removals[r].masked != nullptr) {
        const MaskedInput& masked = *removals[r].masked;
        if (!masked.lanes32.empty()) {
          for (size_t i = 0; i < sum.size(); ++i) sum[i] += masked.lanes32[i];
        } else {
          for (size_t i = 0; i < sum.size(); ++i) sum[i] += masked.lanes64[i];
        }
      }
      if (removals[r].sign != 0) apply_prg_mask(removals[r].seed, removals[r].sign, sum, config_.lane_bits);
    }
    return sum;
  };
  if (workers == 0) {
    constexpr uint64_t kWordsPerWorker = uint64_t(1) << 22;  // below this, a thread costs more than it saves
    workers = std::min<uint64_t>(std::thread::hardware_concurrency(), removals.size() * config_.vector_length / kWordsPerWorker);
  }
  workers = std::clamp<size_t>(workers, 1, std::max<size_t>(removals.size(), 1));
  std::vector<std::future<std::vector<uint64_t>>> others;
  for (size_t w = 1; w < workers; ++w) others.push_back(std::async(std::launch::async, partial_sum, w, workers));
  std::vector<uint64_t> sum = partial_sum(0, workers);
  for (auto& other : others) {
    const std::vector<uint64_t> part = other.get();  // rethrows a worker's Error
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];
  }
  reduce_to_lanes(sum, config_.lane_bits);
  return sum;
}

}  // namespace fedcal

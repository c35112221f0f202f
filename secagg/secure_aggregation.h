// Secure aggregation of uint64 vectors (sums modulo 2^64, or 2^32 in narrow lanes) after Bonawitz et al., "Practical Secure
// Aggregation for Privacy-Preserving Machine Learning" (CCS 2017), with the sparse neighbour graph of
// Bell et al. (SecAgg+, CCS 2020). Transport-independent: the coordinator and the agents move these
// structs in protocol messages.
//
// Participants are numbered 0..n-1 in the order they advertised keys (the set U1). Stages:
//   0 advertise    each agent: two X25519 key pairs (c: encrypts shares, s: pairwise masks)
//   1 share keys   each agent u: a random 256-bit self-mask seed b_u; t-of-(k+1) Shamir shares of b_u
//                  and of s_sk_u to its share holders (its k graph neighbours and itself), encrypted
//                  with AES-256-GCM under a key agreed with each holder; the set of senders is U2
//   2 masked input y_u = x_u + PRG(b_u) + sum over neighbours v in U2 of +-PRG(s_uv)  (mod 2^64),
//                  + if u < v, - if u > v, so pairwise masks cancel in the sum; senders are U3
//   3 unmask       each surviving agent reveals, for each owner whose shares it holds, the share of
//                  b (owner in U3) or of s_sk (owner dropped after stage 1) - never both - once per round
// The coordinator rebuilds b for survivors and s_sk for dropped agents, removes their masks and gets
// sum_{u in U3} x_u. It learns nothing else, as long as fewer than t holders of any agent collude
// with it (honest-but-curious coordinator; see docs/ARCHITECTURE.md for the threat model).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "secagg/crypto.h"
#include "secagg/shamir.h"

namespace fedcal {

struct SecAggConfig {
  uint64_t round_id = 0;
  uint32_t participants = 0;   // n = |U1|
  uint32_t neighbours = 0;     // graph degree k; n - 1 is the complete graph of the original protocol
  uint32_t threshold = 0;      // t: shares needed out of the k + 1 holders of each secret
  uint32_t min_survivors = 3;  // the sum of fewer agents is never unmasked
  Key32 graph_seed{};          // public randomness that places agents on the graph
  uint64_t vector_length = 0;
  // Arithmetic modulo 2^lane_bits (64, or 32 when the round's budget keeps every sum below 2^31):
  // narrow lanes halve the mask expansion and the bytes of every masked input.
  uint32_t lane_bits = 64;
  // Each share sealed to its holder under a fresh X25519 key pair of its own (the public half before
  // the ciphertext), so a disputed share can be opened - its sender reveals that one ephemeral
  // secret - and a complaint checked (verifiable complaints). False: under the pair's static key, as
  // older agents do, and a complaint cannot be checked.
  bool ephemeral_share_keys = false;
  // Secure aggregation per group at a relay (group_unmasking.h): the relay runs this protocol's server
  // for a group of its agents, and survivors seal their revealed self-mask shares to the coordinator
  // instead of revealing them to the server. The server then removes only pairwise masks
  // (self_masked_sum), and the coordinator opens the group's sum. `group_id` names the group in what
  // is sealed, so a share cannot be moved to another group or round.
  bool self_masks_sealed = false;
  uint64_t group_id = 0;

  // Throws Error naming the field that is out of range.
  void validate() const;
};

// The narrowest lanes (32 or 64 bits) in which the sum of `agents` vectors cannot wrap: every count
// at most agents x per_agent_bound, plus (with distributed DP) 40 standard deviations of the summed
// noise either way, must stay below 2^31 so that a sum reads back as a signed value.
uint32_t narrowest_lane_bits(uint64_t per_agent_bound, uint32_t agents, double noise_stddev);
// Each value modulo 2^lane_bits.
void reduce_to_lanes(std::span<uint64_t> values, uint32_t lane_bits);
// A lane of an unmasked sum read as signed (DP noise can push a count below zero).
int64_t lane_to_signed(uint64_t value, uint32_t lane_bits);

// The graph degree SecAgg+ needs for n agents: the complete graph up to 33 agents, else
// 2 * ceil(1.5 * log2 n) (so an agent's work grows with log n); always at most 254.
uint32_t default_neighbours(uint32_t participants);
// A majority of the holders: floor((k + 1) / 2) + 1, at least 2.
uint32_t default_threshold(uint32_t neighbours);

// Every agent's graph neighbours (a Harary graph on a seeded permutation; symmetric), sorted: one
// permutation for all n (the server's, once per round).
std::vector<std::vector<uint32_t>> graph_neighbour_lists(const SecAggConfig& config);
// Agent u's (an agent's own: graph_neighbour_lists for one).
std::vector<uint32_t> graph_neighbours(const SecAggConfig& config, uint32_t u);
// The holders of u's shares: its neighbours and u itself, sorted; holder i gets x = i + 1.
std::vector<uint32_t> share_holders(const SecAggConfig& config, uint32_t u);

struct AdvertisedKeys {
  Key32 cipher_public{};
  Key32 mask_public{};
};

struct EncryptedShare {
  uint32_t from = 0;
  uint32_t to = 0;
  Bytes ciphertext;
};

enum class SecretKind : uint8_t { kSelfMaskSeed = 0, kMaskKey = 1 };

struct RevealedShare {
  uint32_t owner = 0;  // whose secret this is a share of
  SecretKind kind = SecretKind::kSelfMaskSeed;
  ShamirShare share;
};

// One agent's side of a round.
class SecAggClient {
 public:
  SecAggClient();  // fresh key pairs and self-mask seed
  AdvertisedKeys advertise() const { return {cipher_keys_.public_key(), mask_keys_.public_key()}; }
  // The round's configuration and this agent's index in it, once stage 1 has run.
  const SecAggConfig& config() const { return config_; }
  uint32_t index() const { return index_; }

  // Stage 1. `keys` holds the advertised keys of (at least) every graph neighbour of `index`.
  std::vector<EncryptedShare> share_keys(const SecAggConfig& config, uint32_t index,
                                         const std::map<uint32_t, AdvertisedKeys>& keys);
  // After stage 1: the commitment to this agent's self-mask seed (self_mask_commitment below).
  Key32 self_mask_commitment() const;
  // Stage 2, first: the senders of `received` whose share does not decrypt (to complain about:
  // the coordinator excludes them and sends the shares again). Throws Error for a share that does
  // not belong (wrong recipient, not a neighbour, twice).
  std::vector<uint32_t> undecryptable(const std::vector<EncryptedShare>& received) const;
  // Stage 2. `received`: the shares the coordinator forwarded (one per neighbour in U2). Throws Error
  // naming the sender of a share that does not decrypt or does not belong. May run again, before
  // unmasking, with a strict subset of the senders (after the coordinator excluded some).
  std::vector<uint64_t> mask_input(std::span<const uint64_t> input, const std::vector<EncryptedShare>& received);
  // Stage 3. Refuses (Error) a second request, fewer than min_survivors survivors, or a list without us.
  // `survivor_count`, when given, is the round's number of survivors and `survivors` lists only this
  // agent and its surviving neighbours (then a listed agent that is not a neighbour is refused).
  std::vector<RevealedShare> unmask(const std::vector<uint32_t>& survivors,
                                    std::optional<uint32_t> survivor_count = std::nullopt);
  // A complaint against this agent's share to `holder`: the ephemeral secret it was sealed under,
  // which opens that one share (and no other) to whoever checks it (share_opens). Once per round:
  // a second request, for any holder, is refused (Error), so a coordinator cannot collect shares of
  // this agent's secrets by asking; also refused without ephemeral_share_keys or for a non-holder.
  Key32 share_opening(uint32_t holder);

 private:
  struct HeldShares {
    uint8_t x = 0;
    std::vector<uint8_t> self_mask_seed;
    std::vector<uint8_t> mask_key;
  };
  X25519KeyPair cipher_keys_;
  X25519KeyPair mask_keys_;
  Key32 self_mask_seed_{};
  SecAggConfig config_;
  uint32_t index_ = 0;
  std::map<uint32_t, AdvertisedKeys> neighbour_keys_;
  std::map<uint32_t, Key32> share_keys_;  // AES-GCM key shared with each neighbour (symmetric in the pair)
  std::map<uint32_t, Key32> ephemeral_secrets_;  // with ephemeral_share_keys: what sealed our share to each holder
  bool opened_ = false;                          // share_opening was answered this round
  std::map<uint32_t, HeldShares> held_;   // by owner: neighbours in U2 and ourselves
  bool masked_ = false;
  bool unmasked_ = false;
  // The share of `share` decrypted, or nullopt; throws Error if it does not belong.
  std::optional<Bytes> open_share(const EncryptedShare& share, const std::vector<uint32_t>& neighbours) const;
};

// The coordinator's side of a round.
class SecAggServer {
 public:
  // `keys[i]` are the advertised keys of participant i.
  SecAggServer(SecAggConfig config, std::vector<AdvertisedKeys> keys);
  const SecAggConfig& config() const { return config_; }
  const std::vector<AdvertisedKeys>& keys() const { return keys_; }

  // Stage 1 from `from`: one share for each of its holders but itself, and (from agents that send
  // one) the commitment to its self-mask seed. Throws Error if malformed or repeated.
  void add_shares(uint32_t from, std::vector<EncryptedShare> shares, std::optional<Key32> self_mask_commitment = std::nullopt);
  const std::set<uint32_t>& shared() const { return u2_; }
  // The shares addressed to `to` from agents in U2.
  std::vector<EncryptedShare> shares_for(uint32_t to) const;

  // Stage 2. Throws Error unless `from` is in U2, sends once, and the length and lane width match.
  void add_masked_input(uint32_t from, std::vector<uint64_t> masked);
  // Stage 2: `from` says the shares of `senders` to it do not decrypt. The senders are excluded as if
  // they had never shared (their masked inputs dropped, nobody unmasks them); returns the
  // participants that were sent one of their shares, whose masked inputs are dropped too: they must
  // mask again without them (shares_for no longer lists the excluded). Throws Error unless `from`
  // and each sender are in U2 and neighbours, and `from` has no masked input in.
  std::vector<uint32_t> exclude(uint32_t from, const std::vector<uint32_t>& senders);
  const std::set<uint32_t>& excluded() const { return excluded_; }
  // The share `from` sent `to` in stage 1 (as forwarded), or null.
  const EncryptedShare* share(uint32_t from, uint32_t to) const;
  const std::set<uint32_t>& survivors() const { return u3_; }
  // Participant u's neighbours on the round's graph (sorted).
  const std::vector<uint32_t>& neighbours(uint32_t u) const { return neighbours_.at(u); }
  // Bytes of masked inputs held (what the server's memory grows with: survivors x vector length x lane width).
  uint64_t masked_bytes() const;

  // Stage 3. Throws Error if `from` is not a survivor, replies twice, or a share does not fit
  // (wrong owner, kind or x). With self_masks_sealed, `shares` are the mask-key shares of dropped
  // owners only, and `sealed_self_mask_shares` the rest, sealed to the coordinator (opaque here).
  void add_revealed(uint32_t from, const std::vector<RevealedShare>& shares, Bytes sealed_self_mask_shares = {});
  const std::set<uint32_t>& revealed() const { return u4_; }
  // With self_masks_sealed: what each revealer sealed to the coordinator, and each survivor's
  // commitment to its self-mask seed (what the coordinator checks the seeds it rebuilds against).
  const std::map<uint32_t, Bytes>& sealed_self_mask_shares() const { return sealed_; }
  const std::map<uint32_t, Key32>& self_mask_commitments() const { return self_mask_commitments_; }

  // The sum of the survivors' inputs, or std::nullopt with `why` set while shares are missing or no
  // t of them agree. Each secret is rebuilt from a t-subset of its revealed shares that checks out
  // (a mask key against the advertised public key, a self-mask seed against its commitment), so wrong
  // shares are outvoted while t right ones exist; their revealers go to `wrong_revealers`. The mask
  // expansions run on `workers` threads (0: up to one per core, as the amount of work warrants).
  std::optional<std::vector<uint64_t>> unmasked_sum(std::string* why, size_t workers = 0,
                                                    std::set<uint32_t>* wrong_revealers = nullptr) const;
  // With self_masks_sealed (a relay's group): the survivors' sum with the pairwise masks removed and
  // each survivor's self-mask still on, sum_{u in U3} (x_u + PRG(b_u)); the same conditions as
  // unmasked_sum for the dropped agents' mask keys. Reveals nothing of the sum without the seeds.
  std::optional<std::vector<uint64_t>> self_masked_sum(std::string* why, size_t workers = 0,
                                                       std::set<uint32_t>* wrong_revealers = nullptr) const;

 private:
  std::optional<std::vector<uint64_t>> survivors_sum(bool remove_self_masks, std::string* why, size_t workers,
                                                     std::set<uint32_t>* wrong_revealers) const;

  SecAggConfig config_;
  std::vector<AdvertisedKeys> keys_;
  std::vector<std::vector<uint32_t>> neighbours_;  // graph_neighbour_lists, made once
  std::map<uint32_t, std::vector<EncryptedShare>> shares_by_sender_;
  std::vector<std::vector<uint32_t>> senders_to_;  // by recipient: who sent it a share (shares_for)
  std::set<uint32_t> u2_, u3_, u4_, excluded_;
  // Each survivor's masked input as it arrived, held in its lanes' width: 32-bit lanes as 32-bit words
  // (half the memory of 64-bit ones), 64-bit lanes as they are.
  struct MaskedInput {
    std::vector<uint32_t> lanes32;
    std::vector<uint64_t> lanes64;
  };
  std::map<uint32_t, MaskedInput> masked_;
  std::map<uint32_t, std::vector<ShamirShare>> self_mask_shares_;  // by owner
  std::map<uint32_t, std::vector<ShamirShare>> mask_key_shares_;   // by owner
  std::map<uint32_t, Key32> self_mask_commitments_;                // by owner, from agents that sent one
  std::map<uint32_t, Bytes> sealed_;                               // by revealer, with self_masks_sealed
};

// A complaint checked: whether `ephemeral_secret` is the key `share` was sealed under (its public half
// is the one before the ciphertext) and the share opens with it to a well-formed share for its
// holder, whose advertised cipher key is `holder_cipher_public`. True: the share was fine, so the
// complaint was false; false: the sender's share (or its opening) was bad.
bool share_opens(const SecAggConfig& config, const EncryptedShare& share, const Key32& holder_cipher_public,
                 const Key32& ephemeral_secret);

// For tests and audits: the mask seeds both sides derive.
Key32 pairwise_mask_seed(const Key32& shared_secret, uint64_t round_id, uint32_t a, uint32_t b);
Key32 self_mask_prg_seed(const Key32& seed, uint64_t round_id, uint32_t owner);
// What an agent commits to in stage 1: HKDF of its self-mask seed (hiding: the seed is 256 random bits).
Key32 self_mask_commitment(const Key32& seed, uint64_t round_id, uint32_t owner);

}  // namespace fedcal

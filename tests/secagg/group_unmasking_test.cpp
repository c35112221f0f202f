#include "secagg/group_unmasking.h"

#include <doctest/doctest.h>

#include <random>

#include "common/error.h"
#include "secagg/secret_rebuild.h"

namespace fedcal {
namespace {

// One group of a round driven in-process: the agents' client code, a relay's server with sealed
// self-mask shares, and the coordinator's round key.
struct Group {
  SecAggConfig config;
  X25519KeyPair coordinator = X25519KeyPair::generate();
  std::vector<SecAggClient> clients;
  std::vector<std::vector<uint64_t>> inputs;
  std::unique_ptr<SecAggServer> relay;

  Group(uint64_t group_id, uint32_t n, uint64_t length, uint32_t lane_bits = 64) : clients(n) {
    config.round_id = 7;
    config.group_id = group_id;
    config.self_masks_sealed = true;
    config.participants = n;
    config.neighbours = default_neighbours(n);
    config.threshold = default_threshold(config.neighbours);
    config.vector_length = length;
    config.lane_bits = lane_bits;
    config.graph_seed = random_key();
    std::mt19937_64 rng(group_id * 1000 + n);
    for (uint32_t u = 0; u < n; ++u) {
      std::vector<uint64_t> input(length);
      for (auto& value : input) value = rng() % 5000;
      inputs.push_back(input);
    }
    std::vector<AdvertisedKeys> keys;
    for (auto& client : clients) keys.push_back(client.advertise());
    relay = std::make_unique<SecAggServer>(config, keys);
  }

  // Stages 1-3 at the relay; agents in `drop_after_shares` vanish after stage 1, those in
  // `drop_after_masked` after stage 2. Returns what the relay forwards.
  GroupAggregate run(const std::set<uint32_t>& drop_after_shares = {}, const std::set<uint32_t>& drop_after_masked = {}) {
    std::map<uint32_t, AdvertisedKeys> keys;
    for (uint32_t u = 0; u < config.participants; ++u) keys[u] = relay->keys()[u];
    for (uint32_t u = 0; u < config.participants; ++u) {
      std::vector<EncryptedShare> shares = clients[u].share_keys(config, u, keys);
      relay->add_shares(u, std::move(shares), clients[u].self_mask_commitment());
    }
    for (uint32_t u = 0; u < config.participants; ++u) {
      if (!drop_after_shares.count(u)) relay->add_masked_input(u, clients[u].mask_input(inputs[u], relay->shares_for(u)));
    }
    const std::vector<uint32_t> survivors(relay->survivors().begin(), relay->survivors().end());
    for (const uint32_t u : survivors) {
      if (drop_after_masked.count(u)) continue;
      SealedReveal reveal = seal_self_mask_shares(config, u, clients[u].unmask(survivors), coordinator.public_key());
      relay->add_revealed(u, reveal.mask_key_shares, std::move(reveal.sealed_self_mask_shares));
    }
    std::string why;
    const std::optional<std::vector<uint64_t>> sum = relay->self_masked_sum(&why);
    REQUIRE_MESSAGE(sum.has_value(), why);
    GroupAggregate out{config, survivors, relay->self_mask_commitments(), relay->sealed_self_mask_shares(), *sum};
    return out;
  }

  std::vector<uint64_t> plain_sum(const std::set<uint32_t>& left_out) const {
    std::vector<uint64_t> sum(config.vector_length, 0);
    for (uint32_t u = 0; u < config.participants; ++u) {
      if (left_out.count(u)) continue;
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += inputs[u][i];
    }
    if (config.lane_bits == 32) {
      for (uint64_t& value : sum) value &= 0xFFFFFFFFu;
    }
    return sum;
  }
};

TEST_CASE("Group aggregation: the coordinator opens the exact sum, the relay holds it only under self-masks") {
  Group group(1, 9, 500);
  const GroupAggregate aggregate = group.run({3}, {5});  // 3 dropped after sharing, 5 after its masked input
  const std::vector<uint64_t> plain = group.plain_sum({3});
  size_t equal_lanes = 0;
  for (size_t i = 0; i < plain.size(); ++i) equal_lanes += aggregate.self_masked_sum[i] == plain[i] ? 1 : 0;
  CHECK(equal_lanes < 5);  // each lane of the relay's sum is off by uniform random masks
  std::string why;
  std::set<uint32_t> wrong;
  const auto sum = open_group_sum(aggregate, group.coordinator, &why, &wrong);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == plain);
  CHECK(wrong.empty());
  // The relay's own key (or anyone else's) opens no sealed share.
  const X25519KeyPair relay_key = X25519KeyPair::generate();
  for (const auto& [revealer, sealed] : aggregate.sealed)
    CHECK_FALSE(open_self_mask_shares(group.config, revealer, sealed, relay_key));
  CHECK_FALSE(open_group_sum(aggregate, relay_key, &why).has_value());
  CHECK(why.find("shares of agent") != std::string::npos);
}

TEST_CASE("Group aggregation: groups' sums add up to the fleet's plain sum, in 32-bit lanes too") {
  for (const uint32_t lane_bits : {64u, 32u}) {
    CAPTURE(lane_bits);
    Group first(1, 6, 300, lane_bits), second(2, 40, 300, lane_bits);  // the second on a sparse graph
    CHECK(second.config.neighbours < 39);
    std::string why;
    const auto a = open_group_sum(first.run(), first.coordinator, &why);
    REQUIRE_MESSAGE(a.has_value(), why);
    const auto b = open_group_sum(second.run({}, {0, 17}), second.coordinator, &why);
    REQUIRE_MESSAGE(b.has_value(), why);
    const std::vector<uint64_t> plain_a = first.plain_sum({}), plain_b = second.plain_sum({});
    for (size_t i = 0; i < plain_a.size(); ++i) {
      REQUIRE((*a)[i] + (*b)[i] == plain_a[i] + plain_b[i]);
      if (lane_bits == 32) REQUIRE((*a)[i] <= UINT32_MAX);
    }
  }
}

TEST_CASE("Group aggregation: sealed shares open only for their round, group and revealer") {
  Group group(4, 5, 16);
  const GroupAggregate aggregate = group.run();
  const Bytes& sealed = aggregate.sealed.at(2);
  CHECK(open_self_mask_shares(group.config, 2, sealed, group.coordinator).has_value());
  CHECK_FALSE(open_self_mask_shares(group.config, 1, sealed, group.coordinator).has_value());
  SecAggConfig other_group = group.config, other_round = group.config;
  other_group.group_id = 5;
  other_round.round_id = 8;
  CHECK_FALSE(open_self_mask_shares(other_group, 2, sealed, group.coordinator).has_value());
  CHECK_FALSE(open_self_mask_shares(other_round, 2, sealed, group.coordinator).has_value());
  Bytes flipped = sealed;
  flipped[40] ^= 1;
  CHECK_FALSE(open_self_mask_shares(group.config, 2, flipped, group.coordinator).has_value());
  CHECK_FALSE(open_self_mask_shares(group.config, 2, Bytes(10, 0), group.coordinator).has_value());
  CHECK_THROWS_AS(seal_self_mask_shares(group.config, 2, {}, Key32{}), Error);  // a low-order coordinator key

  // A relay that swaps two revealers' sealed shares: both are named, and each seed is still rebuilt
  // from the other three holders' shares (complete graph of 5: 5 holders, t = 3). Rotating three
  // leaves two: too few, and the reason says so.
  CHECK(group.config.threshold == 3);
  GroupAggregate swapped = aggregate;
  std::swap(swapped.sealed.at(0), swapped.sealed.at(1));
  std::string why;
  std::set<uint32_t> wrong;
  const auto sum = open_group_sum(swapped, group.coordinator, &why, &wrong);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == group.plain_sum({}));
  CHECK(wrong == std::set<uint32_t>{0, 1});
  std::swap(swapped.sealed.at(1), swapped.sealed.at(2));
  CHECK_FALSE(open_group_sum(swapped, group.coordinator, &why).has_value());
  CHECK(why.find("group 4: 2 of 3 shares") != std::string::npos);
}

TEST_CASE("Group aggregation: wrong shares are outvoted and named, missing commitments and short lists refused") {
  Group group(3, 12, 64);  // complete graph: 12 holders, t = 7
  GroupAggregate aggregate = group.run();
  // Revealer 4 seals shares of its own making (its x in every owner's holders, wrong values).
  std::vector<RevealedShare> forged;
  for (const uint32_t owner : aggregate.survivors) {
    RevealedShare share;
    share.owner = owner;
    share.share.x = 5;  // holders are all 12 agents in order: agent 4 is the fifth
    share.share.value = Bytes(kSecretBytes, 0x5a);
    forged.push_back(share);
  }
  aggregate.sealed[4] = seal_self_mask_shares(group.config, 4, forged, group.coordinator.public_key()).sealed_self_mask_shares;
  std::string why;
  std::set<uint32_t> wrong;
  const auto sum = open_group_sum(aggregate, group.coordinator, &why, &wrong);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == group.plain_sum({}));
  CHECK(wrong == std::set<uint32_t>{4});

  GroupAggregate no_commitment = aggregate;
  no_commitment.commitments.erase(9);
  CHECK_FALSE(open_group_sum(no_commitment, group.coordinator, &why).has_value());
  CHECK(why == "group 3: no commitment to agent 9's self-mask seed");
  GroupAggregate few = aggregate;
  few.config.min_survivors = 13;
  CHECK_FALSE(open_group_sum(few, group.coordinator, &why).has_value());
  CHECK(why == "group 3: 12 survivors, fewer than the minimum of 13");
  GroupAggregate short_sum = aggregate;
  short_sum.self_masked_sum.pop_back();
  CHECK_THROWS_WITH_AS(open_group_sum(short_sum, group.coordinator, &why), "group 3: a sum of 63 values, expected 64", Error);
  GroupAggregate stranger = aggregate;
  stranger.survivors.push_back(12);
  CHECK_THROWS_WITH_AS(open_group_sum(stranger, group.coordinator, &why), "group 3: survivor 12 of 12 participants", Error);
  GroupAggregate unsealed = aggregate;
  unsealed.config.self_masks_sealed = false;
  CHECK_THROWS_AS(open_group_sum(unsealed, group.coordinator, &why), Error);
}

TEST_CASE("Group aggregation: the relay's server takes sealed self-mask shares only, and commitments are required") {
  Group group(6, 4, 8);
  std::map<uint32_t, AdvertisedKeys> keys;
  for (uint32_t u = 0; u < 4; ++u) keys[u] = group.relay->keys()[u];
  std::vector<EncryptedShare> shares = group.clients[0].share_keys(group.config, 0, keys);
  CHECK_THROWS_WITH_AS(group.relay->add_shares(0, shares),
                       "participant 0 sent no commitment to its self-mask seed, which the coordinator checks the seed against",
                       Error);
  group.relay->add_shares(0, shares, group.clients[0].self_mask_commitment());
  for (uint32_t u = 1; u < 4; ++u) {
    std::vector<EncryptedShare> more = group.clients[u].share_keys(group.config, u, keys);
    group.relay->add_shares(u, std::move(more), group.clients[u].self_mask_commitment());
  }
  for (uint32_t u = 0; u < 4; ++u)
    group.relay->add_masked_input(u, group.clients[u].mask_input(group.inputs[u], group.relay->shares_for(u)));
  const std::vector<RevealedShare> clear = group.clients[0].unmask({0, 1, 2, 3});
  CHECK_THROWS_AS(group.relay->add_revealed(0, clear), Error);  // not sealed
  const SealedReveal sealed = seal_self_mask_shares(group.config, 0, clear, group.coordinator.public_key());
  CHECK(sealed.mask_key_shares.empty());  // nobody dropped
  CHECK_THROWS_WITH_AS(group.relay->add_revealed(0, clear, sealed.sealed_self_mask_shares),
                       "participant 0 revealed a share of 0's self-mask seed unsealed", Error);
  group.relay->add_revealed(0, sealed.mask_key_shares, sealed.sealed_self_mask_shares);
  std::string why;
  CHECK_THROWS_AS(group.relay->unmasked_sum(&why), Error);  // the relay cannot take the self-masks off
}

}  // namespace
}  // namespace fedcal

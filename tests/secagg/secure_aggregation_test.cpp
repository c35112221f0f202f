#include "secagg/secure_aggregation.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "common/error.h"

namespace fedcal {
namespace {

// A round driven in-process: the same client and server code the agents and coordinator run.
struct Round {
  SecAggConfig config;
  std::vector<SecAggClient> clients;
  std::vector<std::vector<uint64_t>> inputs;
  std::unique_ptr<SecAggServer> server;
  std::map<uint32_t, std::vector<uint64_t>> masked;

  Round(uint32_t n, uint64_t length, uint32_t neighbours = 0, uint32_t threshold = 0, uint32_t lane_bits = 64) : clients(n) {
    config.round_id = 42;
    config.participants = n;
    config.neighbours = neighbours ? neighbours : default_neighbours(n);
    config.threshold = threshold ? threshold : default_threshold(config.neighbours);
    config.vector_length = length;
    config.lane_bits = lane_bits;
    config.graph_seed = random_key();
    std::mt19937_64 rng(n);
    for (uint32_t u = 0; u < n; ++u) {
      std::vector<uint64_t> input(length);
      for (auto& value : input) value = rng() % 1000;
      inputs.push_back(input);
    }
    std::vector<AdvertisedKeys> keys;
    for (auto& client : clients) keys.push_back(client.advertise());
    server = std::make_unique<SecAggServer>(config, keys);
  }

  // Shares sealed under ephemeral keys (checkable complaints), on both sides.
  void use_ephemeral_share_keys() {
    config.ephemeral_share_keys = true;
    server = std::make_unique<SecAggServer>(config, server->keys());
  }

  std::map<uint32_t, AdvertisedKeys> keys_map() const {
    std::map<uint32_t, AdvertisedKeys> out;
    for (uint32_t u = 0; u < config.participants; ++u) out[u] = server->keys()[u];
    return out;
  }

  // Runs every stage; agents in `drop_after_shares` vanish after stage 1, those in
  // `drop_after_masked` after stage 2. `neighbour_lists`: each survivor is told only about itself and
  // its neighbours, with the survivor count (what the coordinator sends agents that can take it).
  std::optional<std::vector<uint64_t>> run(const std::set<uint32_t>& drop_after_shares,
                                           const std::set<uint32_t>& drop_after_masked, std::string* why,
                                           bool neighbour_lists = false) {
    const auto keys = keys_map();
    for (uint32_t u = 0; u < config.participants; ++u) {
      std::vector<EncryptedShare> shares = clients[u].share_keys(config, u, keys);
      server->add_shares(u, std::move(shares), clients[u].self_mask_commitment());
    }
    for (uint32_t u = 0; u < config.participants; ++u) {
      if (drop_after_shares.count(u)) continue;
      masked[u] = clients[u].mask_input(inputs[u], server->shares_for(u));
      server->add_masked_input(u, masked[u]);
    }
    const std::vector<uint32_t> survivors(server->survivors().begin(), server->survivors().end());
    if (survivors.size() < config.min_survivors) return server->unmasked_sum(why);
    for (const uint32_t u : survivors) {
      if (drop_after_masked.count(u)) continue;
      if (!neighbour_lists) {
        server->add_revealed(u, clients[u].unmask(survivors));
        continue;
      }
      std::vector<uint32_t> listed{u};
      for (const uint32_t v : server->neighbours(u)) {
        if (server->survivors().count(v)) listed.push_back(v);
      }
      listed_entries += listed.size();
      server->add_revealed(u, clients[u].unmask(listed, static_cast<uint32_t>(survivors.size())));
    }
    return server->unmasked_sum(why);
  }
  size_t listed_entries = 0;  // survivor entries sent, with neighbour lists

  std::vector<uint64_t> expected_sum(const std::set<uint32_t>& excluded) const {
    std::vector<uint64_t> sum(config.vector_length, 0);
    for (uint32_t u = 0; u < config.participants; ++u) {
      if (excluded.count(u)) continue;
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += inputs[u][i];
    }
    if (config.lane_bits == 32) {  // the reference reduces on its own, not with the code under test
      for (uint64_t& value : sum) value &= 0xFFFFFFFFu;
    }
    return sum;
  }
};

TEST_CASE("X25519: low-order public keys are refused, real ones pass") {
  Key32 zero{};
  CHECK_THROWS_WITH_AS(check_x25519_public_key(zero, "join.maskPublic"), doctest::Contains("join.maskPublic: a low-order"),
                       Error);
  Key32 one{};
  one[0] = 1;  // u = 1: a point of order 4
  CHECK_THROWS_AS(check_x25519_public_key(one, "key"), Error);
  // u = 325606250916557431795983626356110631294008115727848805560023387167927233504: order 8
  const Key32 order8 = {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
                        0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00};
  CHECK_THROWS_AS(check_x25519_public_key(order8, "key"), Error);
  for (int i = 0; i < 20; ++i) CHECK_NOTHROW(check_x25519_public_key(X25519KeyPair::generate().public_key(), "key"));
}

TEST_CASE("Shamir: any t shares give the secret, the points do not matter") {
  const Key32 secret = random_key();
  const std::vector<uint8_t> xs = {1, 2, 3, 4, 5, 200, 255};
  const auto shares = shamir_split(secret, 4, xs);
  REQUIRE(shares.size() == 7);
  for (size_t skip = 0; skip + 4 <= shares.size(); ++skip) {
    std::vector<ShamirShare> subset(shares.begin() + static_cast<long>(skip), shares.begin() + static_cast<long>(skip) + 4);
    CHECK(shamir_combine(subset, 4) == std::vector<uint8_t>(secret.begin(), secret.end()));
  }
  // t - 1 shares are refused, and 3 shares read as a threshold-3 polynomial give garbage.
  std::vector<ShamirShare> three(shares.begin(), shares.begin() + 3);
  CHECK_THROWS_AS(shamir_combine(three, 4), Error);
  CHECK(shamir_combine(three, 3) != std::vector<uint8_t>(secret.begin(), secret.end()));
  CHECK_THROWS_AS(shamir_split(secret, 2, std::vector<uint8_t>{1, 1}), Error);
  CHECK_THROWS_AS(shamir_split(secret, 2, std::vector<uint8_t>{0, 1}), Error);
}

// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1 (the AES field), the schoolbook way.
uint8_t reference_gf_mul(uint8_t a, uint8_t b) {
  uint8_t product = 0;
  for (int bit = 0; bit < 8; ++bit) {
    if (b & (1 << bit)) product ^= a;
    a = static_cast<uint8_t>((a << 1) ^ ((a & 0x80) ? 0x1b : 0));
  }
  return product;
}

TEST_CASE("Shamir: interpolation matches polynomials evaluated with schoolbook GF(2^8) arithmetic, every secret length") {
  std::mt19937 random(7);
  for (size_t length = 1; length <= 40; ++length) {
    for (const int t : {1, 2, 5, 18}) {
      // A random polynomial of degree t - 1 per byte, evaluated at t + 3 random distinct points.
      std::vector<std::vector<uint8_t>> coefficients(length, std::vector<uint8_t>(static_cast<size_t>(t)));
      for (auto& byte : coefficients)
        for (uint8_t& c : byte) c = static_cast<uint8_t>(random());
      const auto evaluate = [&](uint8_t x) {
        std::vector<uint8_t> value(length);
        for (size_t byte = 0; byte < length; ++byte) {
          uint8_t y = 0;
          for (size_t c = coefficients[byte].size(); c-- > 0;) y = reference_gf_mul(y, x) ^ coefficients[byte][c];
          value[byte] = y;
        }
        return value;
      };
      std::vector<uint8_t> xs(255);
      std::iota(xs.begin(), xs.end(), uint8_t{1});
      std::shuffle(xs.begin(), xs.end(), random);
      std::vector<ShamirShare> shares;
      for (int i = 0; i < t; ++i) shares.push_back({xs[static_cast<size_t>(i)], evaluate(xs[static_cast<size_t>(i)])});
      std::vector<uint8_t> secret(length);
      for (size_t byte = 0; byte < length; ++byte) secret[byte] = coefficients[byte][0];
      REQUIRE(shamir_combine(shares, t) == secret);
      for (int extra = 0; extra < 3; ++extra) {
        const uint8_t x = xs[static_cast<size_t>(t + extra)];
        CHECK(shamir_interpolate(shares, t, x) == evaluate(x));
      }
      // At many points at once: the shares' own, others, and 0.
      const std::vector<uint8_t> points = {xs[0], xs[static_cast<size_t>(t)], 0, xs[static_cast<size_t>(t) - 1]};
      const std::vector<std::vector<uint8_t>> values = shamir_interpolate(shares, t, points);
      REQUIRE(values.size() == points.size());
      for (size_t k = 0; k < points.size(); ++k) CHECK(values[k] == evaluate(points[k]));
    }
  }
}

TEST_CASE("Secure aggregation: the sum is exact modulo 2^64 and the masks cancel") {
  Round round(5, 1000);
  round.inputs[0][0] = ~uint64_t{0};  // wraps: the aggregate is modular
  std::string why;
  const auto sum = round.run({}, {}, &why);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({}));
}

TEST_CASE("Secure aggregation: a masked input is indistinguishable from random") {
  Round round(4, 1 << 14);
  std::string why;
  REQUIRE(round.run({}, {}, &why).has_value());
  // Agent 0's inputs are < 1000, i.e. their high 54 bits are zero; masked, each bit is set about half
  // the time and every byte value about equally often (chi-square over 256 bins, 255 dof).
  const auto& masked = round.masked.at(0);
  std::vector<double> bins(256, 0);
  int high_bits = 0;
  for (uint64_t value : masked) {
    bins[value >> 56] += 1;
    high_bits += static_cast<int>((value >> 63) & 1);
  }
  const double expected = static_cast<double>(masked.size()) / 256;
  double chi2 = 0;
  for (double count : bins) chi2 += (count - expected) * (count - expected) / expected;
  CHECK(chi2 < 340);                                                       // p ~ 0.0003 for a uniform source
  CHECK(std::abs(high_bits - static_cast<int>(masked.size()) / 2) < 400);  // ~6 sigma
  for (size_t i = 0; i < masked.size(); ++i) REQUIRE(masked[i] != round.inputs[0][i]);
}

TEST_CASE("Secure aggregation: agents dropping after their masked input (up to n - t) do not change the sum") {
  Round round(8, 257);  // complete graph, 8 holders, t = 5
  CHECK(round.config.threshold == 5);
  std::string why;
  const auto sum = round.run({}, {1, 4, 6}, &why);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({}));
}

TEST_CASE("Secure aggregation: agents dropping after sharing keys are left out of the sum") {
  Round round(8, 300);
  std::string why;
  const auto sum = round.run({2, 7}, {5}, &why);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({2, 7}));
}

TEST_CASE("Secure aggregation: the server's unmasking gives the same exact sum on 1, 2, 3 and 7 worker threads") {
  Round round(8, 1000);
  std::string why;
  const auto sum = round.run({2}, {5}, &why);  // one dropped agent's pairwise masks to take out too
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({2}));
  for (size_t workers : {1, 2, 3, 7}) {
    CAPTURE(workers);
    CHECK(round.server->unmasked_sum(&why, workers) == sum);
  }
}

TEST_CASE("Secure aggregation: more than n - t dropouts cannot be unmasked, with the reason") {
  Round round(8, 64);
  std::string why;
  CHECK_FALSE(round.run({}, {0, 1, 2, 3}, &why).has_value());
  CHECK(why.find("shares of agent") != std::string::npos);
}

TEST_CASE("Secure aggregation: fewer survivors than the minimum are never unmasked") {
  Round round(4, 16, 0, 2);
  round.config.min_survivors = 3;
  std::string why;
  CHECK_FALSE(round.run({0, 1}, {}, &why).has_value());
  CHECK(why.find("fewer than the minimum") != std::string::npos);
}

TEST_CASE("Secure aggregation: an agent reveals once, one secret per owner") {
  Round round(4, 16);
  const auto keys = round.keys_map();
  for (uint32_t u = 0; u < 4; ++u) round.server->add_shares(u, round.clients[u].share_keys(round.config, u, keys));
  for (uint32_t u = 0; u < 4; ++u) round.clients[u].mask_input(round.inputs[u], round.server->shares_for(u));
  const auto revealed = round.clients[0].unmask({0, 1, 2});
  std::set<uint32_t> owners;
  for (const auto& share : revealed) {
    CHECK(owners.insert(share.owner).second);
    CHECK(share.kind == (share.owner == 3 ? SecretKind::kMaskKey : SecretKind::kSelfMaskSeed));
  }
  CHECK(owners.size() == 4);
  CHECK_THROWS_AS(round.clients[0].unmask({0, 1, 2, 3}), Error);  // a second request: refused
  CHECK_THROWS_AS(round.clients[1].unmask({0, 2}), Error);        // below the minimum of 3
  CHECK_THROWS_AS(round.clients[1].unmask({0, 2, 3}), Error);     // without the agent itself
}

TEST_CASE("Secure aggregation: a tampered share is detected by its recipient") {
  Round round(3, 8);
  const auto keys = round.keys_map();
  for (uint32_t u = 0; u < 3; ++u) round.server->add_shares(u, round.clients[u].share_keys(round.config, u, keys));
  auto shares = round.server->shares_for(1);
  shares[0].ciphertext[20] ^= 1;
  CHECK_THROWS_WITH_AS(round.clients[1].mask_input(round.inputs[1], shares), doctest::Contains("does not decrypt"), Error);
}

TEST_CASE("Secure aggregation: a sender whose share does not decrypt is named, excluded, and the others' sum is exact") {
  Round round(6, 16);
  const auto keys = round.keys_map();
  for (uint32_t u = 0; u < 6; ++u) {
    std::vector<EncryptedShare> shares = round.clients[u].share_keys(round.config, u, keys);
    if (u == 2) {
      for (EncryptedShare& share : shares) {
        if (share.to == 1) share.ciphertext[20] ^= 1;  // participant 2 sends participant 1 garbage
      }
    }
    round.server->add_shares(u, std::move(shares));
  }
  // Everyone but 1 masks (with 2's pairwise mask); 1 names 2 instead.
  for (const uint32_t u : {0u, 2u, 3u, 4u, 5u}) {
    CHECK(round.clients[u].undecryptable(round.server->shares_for(u)).empty());
    round.server->add_masked_input(u, round.clients[u].mask_input(round.inputs[u], round.server->shares_for(u)));
  }
  const auto shares_for_0 = round.server->shares_for(0);
  const auto shares_for_1 = round.server->shares_for(1);
  CHECK(round.clients[1].undecryptable(shares_for_1) == std::vector<uint32_t>{2});
  CHECK_THROWS_AS(round.server->exclude(1, {7}), Error);  // nobody who sent it a share
  CHECK_THROWS_AS(round.server->exclude(0, {2}), Error);  // 0 already masked: no complaint from it
  const std::vector<uint32_t> again = round.server->exclude(1, {2});
  CHECK(again == std::vector<uint32_t>{0, 1, 3, 4, 5});  // all were sent a share of 2
  CHECK(round.server->survivors().empty());
  CHECK_THROWS_AS(round.server->add_masked_input(2, std::vector<uint64_t>(16)), Error);  // excluded
  // Masking again only ever drops senders.
  CHECK_THROWS_WITH_AS(round.clients[0].mask_input(round.inputs[0], shares_for_0), doctest::Contains("same senders"), Error);
  for (const uint32_t u : again) {
    round.server->add_masked_input(u, round.clients[u].mask_input(round.inputs[u], round.server->shares_for(u)));
  }
  const std::vector<uint32_t> survivors(round.server->survivors().begin(), round.server->survivors().end());
  for (const uint32_t u : survivors) round.server->add_revealed(u, round.clients[u].unmask(survivors));
  std::string why;
  const auto sum = round.server->unmasked_sum(&why);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({2}));
}

TEST_CASE("Secure aggregation with ephemeral share keys: exact sums, and a disputed share is opened by its sender, once") {
  Round round(5, 16);
  round.use_ephemeral_share_keys();
  std::string why;
  const auto sum = round.run({}, {3}, &why);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({}));

  Round disputed(4, 8);
  disputed.use_ephemeral_share_keys();
  const auto keys = disputed.keys_map();
  std::vector<std::vector<EncryptedShare>> sent;
  for (uint32_t u = 0; u < 4; ++u) sent.push_back(disputed.clients[u].share_keys(disputed.config, u, keys));
  const auto to = [&](uint32_t from, uint32_t holder) {
    return *std::find_if(sent[from].begin(), sent[from].end(), [&](const EncryptedShare& share) { return share.to == holder; });
  };
  // Each share is sealed under a key of its own: the same plaintext size, a different public key first.
  const EncryptedShare to_1 = to(0, 1), to_2 = to(0, 2);
  CHECK(to_1.ciphertext.size() == to_2.ciphertext.size());
  CHECK(!std::equal(to_1.ciphertext.begin(), to_1.ciphertext.begin() + 32, to_2.ciphertext.begin()));
  CHECK(disputed.clients[1].undecryptable({to(0, 1), to(2, 1), to(3, 1)}).empty());
  // A false complaint about 0's share to 1: it opens with 0's ephemeral secret, for holder 1 only.
  const Key32 secret = disputed.clients[0].share_opening(1);
  CHECK(share_opens(disputed.config, to(0, 1), keys.at(1).cipher_public, secret));
  CHECK_FALSE(share_opens(disputed.config, to(0, 2), keys.at(2).cipher_public, secret));  // not this share's key
  CHECK_FALSE(share_opens(disputed.config, to(0, 1), keys.at(2).cipher_public, secret));  // not its holder
  // A true complaint: a tampered share does not open, even with the right key.
  EncryptedShare tampered = to(0, 1);
  tampered.ciphertext[40] ^= 1;
  CHECK_FALSE(share_opens(disputed.config, tampered, keys.at(1).cipher_public, secret));
  CHECK(disputed.clients[1].undecryptable({tampered}) == std::vector<uint32_t>{0});
  // One opening per round: asking for a second share of 0's secrets is refused.
  CHECK_THROWS_WITH_AS(disputed.clients[0].share_opening(2), doctest::Contains("a second opening is refused"), Error);
  CHECK_THROWS_WITH_AS(disputed.clients[2].share_opening(2), doctest::Contains("no share was sent to agent 2"), Error);
  // Without ephemeral keys there is nothing to open.
  Round plain(3, 8);
  const auto plain_keys = plain.keys_map();
  plain.clients[0].share_keys(plain.config, 0, plain_keys);
  CHECK_THROWS_WITH_AS(plain.clients[0].share_opening(1), doctest::Contains("not sealed under ephemeral keys"), Error);
}

TEST_CASE("Secure aggregation: wrong unmasking shares are outvoted by right ones, and their revealers are named") {
  // 6 agents, complete graph: t = 4 of 6 holders. Agent 5 drops after sharing (its mask key is
  // rebuilt), 0-4 survive (their self-mask seeds are rebuilt, each from 5 revealed shares).
  const auto run = [](const std::set<uint32_t>& liars, std::set<uint32_t>& wrong, std::string& why) {
    Round round(6, 16);
    const auto keys = round.keys_map();
    for (uint32_t u = 0; u < 6; ++u) {
      std::vector<EncryptedShare> shares = round.clients[u].share_keys(round.config, u, keys);
      round.server->add_shares(u, std::move(shares), round.clients[u].self_mask_commitment());
    }
    for (uint32_t u = 0; u < 5; ++u) {
      round.server->add_masked_input(u, round.clients[u].mask_input(round.inputs[u], round.server->shares_for(u)));
    }
    const std::vector<uint32_t> survivors = {0, 1, 2, 3, 4};
    for (const uint32_t u : survivors) {
      std::vector<RevealedShare> revealed = round.clients[u].unmask(survivors);
      if (liars.count(u)) {
        for (RevealedShare& share : revealed) share.share.value[7] ^= 0x40;
      }
      round.server->add_revealed(u, revealed);
    }
    const auto sum = round.server->unmasked_sum(&why, 0, &wrong);
    if (sum) CHECK(*sum == round.expected_sum({5}));
    return sum.has_value();
  };
  std::set<uint32_t> wrong;
  std::string why;
  CHECK(run({3}, wrong, why));  // one liar: 4 right shares of each secret remain
  CHECK(wrong == std::set<uint32_t>{3});
  wrong.clear();
  CHECK_FALSE(run({1, 2}, wrong, why));  // two liars: 3 right shares, fewer than t = 4
  CHECK(why.find("agree with its commitment") != std::string::npos);
}

TEST_CASE("Secure aggregation: the sparse SecAgg+ graph is symmetric, k-regular, and sums exactly") {
  const uint32_t n = 100;
  Round round(n, 40);
  CHECK(round.config.neighbours < n - 1);
  const auto lists = graph_neighbour_lists(round.config);  // the server's, all at once: the same graph
  for (uint32_t u = 0; u < n; ++u) {
    const auto neighbours = graph_neighbours(round.config, u);
    CHECK(neighbours == lists[u]);
    CHECK(neighbours.size() == round.config.neighbours);
    for (uint32_t v : neighbours) {
      const auto back = graph_neighbours(round.config, v);
      CHECK(std::binary_search(back.begin(), back.end(), u));
    }
  }
  std::string why;
  const auto sum = round.run({3, 50}, {10, 77, 99}, &why);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({3, 50}));
}

TEST_CASE(
    "Secure aggregation: survivors told only about their neighbours unmask the same exact sum, and refuse what does not fit") {
  Round round(60, 16);  // SecAgg+ graph: k < n - 1
  std::string why;
  const auto sum = round.run({5}, {2, 40}, &why, /*neighbour_lists=*/true);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({5}));
  // k + 1 entries per survivor at most, not n.
  CHECK(round.listed_entries <= round.server->survivors().size() * (round.config.neighbours + 1));
  CHECK(round.listed_entries < round.server->survivors().size() * round.server->survivors().size() / 2);

  Round other(60, 4);
  const auto keys = other.keys_map();
  for (uint32_t u = 0; u < 60; ++u) other.server->add_shares(u, other.clients[u].share_keys(other.config, u, keys));
  for (uint32_t u = 0; u < 60; ++u)
    other.server->add_masked_input(u, other.clients[u].mask_input(other.inputs[u], other.server->shares_for(u)));
  std::vector<uint32_t> listed{0};
  for (const uint32_t v : other.server->neighbours(0)) listed.push_back(v);
  // A count below the round's minimum, a listed agent that is not a neighbour, more listed than counted.
  CHECK_THROWS_WITH(other.clients[0].unmask(listed, 2), doctest::Contains("fewer than the minimum"));
  uint32_t stranger = 1;
  while (std::find(listed.begin(), listed.end(), stranger) != listed.end()) ++stranger;
  std::vector<uint32_t> with_stranger = listed;
  with_stranger.push_back(stranger);
  CHECK_THROWS_WITH(other.clients[0].unmask(with_stranger, 60), doctest::Contains("is not one"));
  CHECK_THROWS_WITH(other.clients[0].unmask(listed, static_cast<uint32_t>(listed.size() - 1)), doctest::Contains("listed of"));
  CHECK(other.clients[0].unmask(listed, 60).size() == listed.size());  // and the right request is answered
}

TEST_CASE("Secure aggregation in 32-bit lanes: exact sums modulo 2^32 with dropouts, masked words below 2^32, uniform") {
  Round round(40, 3000, 0, 0, 32);   // SecAgg+ graph beyond 33 agents
  round.inputs[0][0] = 0xFFFFFFFFu;  // wraps modulo 2^32
  std::string why;
  const auto sum = round.run({7}, {1, 30}, &why);
  REQUIRE_MESSAGE(sum.has_value(), why);
  CHECK(*sum == round.expected_sum({7}));
  // Held in the lanes' width: 4 bytes per value of each survivor (was 8).
  CHECK(round.server->masked_bytes() == round.server->survivors().size() * 3000 * 4);
  std::vector<double> bins(16, 0);
  for (const auto& [u, masked] : round.masked) {
    for (uint64_t value : masked) {
      REQUIRE(value <= UINT32_MAX);
      bins[value >> 28] += 1;
    }
  }
  const double expected = static_cast<double>(round.masked.size() * 3000) / 16;
  double chi2 = 0;
  for (double count : bins) chi2 += (count - expected) * (count - expected) / expected;
  CHECK(chi2 < 45);  // 15 degrees of freedom: the top nibble of a masked word is uniform
  // A word that does not fit the lanes is malformed.
  Round other(3, 4, 0, 0, 32);
  const auto keys = other.keys_map();
  for (uint32_t u = 0; u < 3; ++u) other.server->add_shares(u, other.clients[u].share_keys(other.config, u, keys));
  CHECK_THROWS_WITH_AS(other.server->add_masked_input(0, {1, 2, uint64_t{1} << 32, 3}), doctest::Contains("32-bit lanes"), Error);
  CHECK(other.server->survivors().empty());  // refused: nothing kept
  CHECK(other.server->masked_bytes() == 0);
}

TEST_CASE("Secure aggregation: the narrowest lanes that cannot wrap, and signed lanes") {
  CHECK(narrowest_lane_bits(1000, 1000, 0) == 32);
  CHECK(narrowest_lane_bits((uint64_t{1} << 31) / 128 - 1, 128, 0) == 32);
  CHECK(narrowest_lane_bits((uint64_t{1} << 31) / 128, 128, 0) == 64);  // the sum could reach 2^31
  CHECK(narrowest_lane_bits(uint64_t{1} << 40, 100000, 0) == 64);       // the product overflows 64 bits
  CHECK(narrowest_lane_bits(1000, 1000, 1e6) == 32);
  CHECK(narrowest_lane_bits(1000, 1000, 1e8) == 64);  // 40 sigma of DP noise do not fit
  CHECK(lane_to_signed(0xFFFFFFFFu, 32) == -1);
  CHECK(lane_to_signed(0x7FFFFFFFu, 32) == 0x7FFFFFFF);
  CHECK(lane_to_signed(~uint64_t{0}, 64) == -1);
  SecAggConfig config;
  config.participants = 3;
  config.neighbours = 2;
  config.threshold = 2;
  config.vector_length = 4;
  config.lane_bits = 16;
  CHECK_THROWS_WITH_AS(config.validate(), doctest::Contains("lanes of 16 bits"), Error);
}

TEST_CASE("Secure aggregation: the server refuses malformed and repeated stage messages") {
  Round round(3, 8);
  const auto keys = round.keys_map();
  auto shares = round.clients[0].share_keys(round.config, 0, keys);
  CHECK_THROWS_AS(round.server->add_shares(1, shares), Error);  // labelled with another sender
  round.server->add_shares(0, shares);
  CHECK_THROWS_AS(round.server->add_shares(0, shares), Error);                          // replayed
  CHECK_THROWS_AS(round.server->add_masked_input(1, std::vector<uint64_t>(8)), Error);  // did not share
  CHECK_THROWS_AS(round.server->add_masked_input(0, std::vector<uint64_t>(7)), Error);  // wrong length
}

}  // namespace
}  // namespace fedcal

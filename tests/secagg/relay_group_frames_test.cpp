#include "secagg/relay_group_frames.h"

#include <doctest/doctest.h>

#include <capnp/message.h>

#include "common/error.h"
#include "protocol/wire.h"

namespace fedcal {
namespace {

RelayGroupStart a_start() {
  RelayGroupStart start;
  SecAggConfig& config = start.config;
  config.round_id = 12;
  config.group_id = 3;
  config.self_masks_sealed = true;
  config.participants = 4;
  config.neighbours = 3;
  config.threshold = 3;
  config.min_survivors = 3;
  config.graph_seed = random_key();
  config.vector_length = 5;
  config.lane_bits = 32;
  for (int i = 0; i < 4; ++i) {
    start.members.push_back({std::string(40, static_cast<char>('A' + i)),
                             std::string("\0route", 6) + std::to_string(i),
                             {random_key(), random_key()},
                             i % 2 == 0});
  }
  start.coordinator_key = random_key();
  start.coordinator_key_signature.assign(64, 9);
  start.stage_timeout_ms = 2500;
  return start;
}

TEST_CASE("Relay group frames: a start and a result read back as written") {
  const RelayGroupStart start = a_start();
  const RelayGroupStart read = decode_group_start(encode_group_start(start), 1 << 20);
  CHECK(read.config.round_id == 12);
  CHECK(read.config.group_id == 3);
  CHECK(read.config.self_masks_sealed);
  CHECK(read.config.participants == 4);
  CHECK(read.config.threshold == 3);
  CHECK(read.config.graph_seed == start.config.graph_seed);
  CHECK(read.config.lane_bits == 32);
  REQUIRE(read.members.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(read.members[i].agent_key == start.members[i].agent_key);
    CHECK(read.members[i].route == start.members[i].route);
    CHECK(read.members[i].keys.cipher_public == start.members[i].keys.cipher_public);
    CHECK(read.members[i].keys.mask_public == start.members[i].keys.mask_public);
    CHECK(read.members[i].neighbour_survivors == start.members[i].neighbour_survivors);
  }
  CHECK(read.coordinator_key == start.coordinator_key);
  CHECK(read.coordinator_key_signature == start.coordinator_key_signature);
  CHECK(read.stage_timeout_ms == 2500);

  RelayGroupResult result;
  result.round_id = 12;
  result.shared = {0, 1, 2, 3};
  result.aggregate.config = start.config;
  result.aggregate.survivors = {0, 2, 3};
  for (const uint32_t u : result.aggregate.survivors) {
    result.aggregate.commitments[u] = random_key();
    result.aggregate.sealed[u] = Bytes(90, static_cast<uint8_t>(u));
  }
  result.aggregate.self_masked_sum = {1, 0xFFFFFFFFu, 3, 4, 5};
  const std::vector<std::byte> bytes = encode_group_result(result);
  CHECK(peek_group_result_ids(bytes, 1 << 20) == std::pair<uint64_t, uint64_t>(12, 3));
  const RelayGroupResult back = decode_group_result(bytes, 1 << 20, start.config);
  CHECK(back.failure.empty());
  CHECK(back.shared == result.shared);
  CHECK(back.aggregate.survivors == result.aggregate.survivors);
  CHECK(back.aggregate.commitments == result.aggregate.commitments);
  CHECK(back.aggregate.sealed == result.aggregate.sealed);
  CHECK(back.aggregate.self_masked_sum == result.aggregate.self_masked_sum);

  RelayGroupResult failed;
  failed.round_id = 12;
  failed.failure = "only 2 members shared their keys; the group needs 3";
  failed.aggregate.config = start.config;
  const RelayGroupResult failed_back = decode_group_result(encode_group_result(failed), 1 << 20, start.config);
  CHECK(failed_back.failure == failed.failure);
  CHECK(failed_back.aggregate.self_masked_sum.empty());
}

TEST_CASE("Relay group frames: bad frames are refused naming what is wrong") {
  RelayGroupStart start = a_start();
  auto refused_start = [](const RelayGroupStart& bad) {
    try {
      decode_group_start(encode_group_start(bad), 1 << 20);
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  RelayGroupStart bad = start;
  bad.config.group_id = 0;
  CHECK(refused_start(bad) == "group start: group id 0");
  bad = start;
  bad.members[1].agent_key = "short";
  CHECK(refused_start(bad) == "group start: member 1: agentKey is not a CURVE key");
  bad = start;
  bad.members[2].route.clear();
  CHECK(refused_start(bad) == "group start: member 2: a route of 0 bytes");
  bad = start;
  bad.coordinator_key_signature.resize(10);
  CHECK(refused_start(bad) == "group start: a coordinatorKeySignature of 10 bytes");
  bad = start;
  bad.config.threshold = 9;  // more than the k + 1 = 4 holders
  CHECK(refused_start(bad).find("threshold 9") != std::string::npos);
  CHECK_THROWS_WITH_AS(decode_group_start(std::vector<std::byte>(24, std::byte{0xff}), 1 << 20),
                       doctest::Contains("group start: malformed Cap'n Proto"), Error);
  CHECK_THROWS_WITH_AS(decode_group_start(std::vector<std::byte>(7), 1 << 20),
                       "group start: 7 bytes is not a Cap'n Proto message", Error);

  RelayGroupResult result;
  result.round_id = 12;
  result.aggregate.config = start.config;
  result.aggregate.survivors = {0, 1, 2};
  result.aggregate.self_masked_sum.assign(5, 1);
  SecAggConfig other = start.config;
  other.group_id = 4;
  CHECK_THROWS_WITH_AS(decode_group_result(encode_group_result(result), 1 << 20, other),
                       "group result: round 12 group 3, expected round 12 group 4", Error);
  result.aggregate.survivors = {0, 4};
  CHECK_THROWS_WITH_AS(decode_group_result(encode_group_result(result), 1 << 20, start.config),
                       "group result: survivors: index 4 of 4 members", Error);
  result.aggregate.survivors = {2, 1};
  CHECK_THROWS_WITH_AS(decode_group_result(encode_group_result(result), 1 << 20, start.config),
                       "group result: survivors: indices not ascending", Error);
  result.aggregate.survivors = {0, 1, 2};
  result.aggregate.self_masked_sum.assign(4, 1);
  CHECK_THROWS_WITH_AS(decode_group_result(encode_group_result(result), 1 << 20, start.config),
                       doctest::Contains("group result: selfMaskedSum"), Error);
}

}  // namespace
}  // namespace fedcal

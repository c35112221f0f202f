#include "secagg/relay_group_frames.h"

#include <capnp/message.h>

#include "common/error.h"
#include "protocol/relay_frames.h"
#include "protocol/wire.h"

namespace fedcal {
namespace {

constexpr unsigned kMaxGroupMembers = 100000;

void set_entries(capnp::List<wire::RelayGroupSealed>::Builder list, const auto& by_index) {
  unsigned i = 0;
  for (const auto& [index, bytes] : by_index) {
    list[i].setIndex(index);
    list[i].setData(as_data(bytes));
    ++i;
  }
}

std::vector<uint32_t> read_indices(capnp::List<uint32_t>::Reader list, uint32_t participants, std::string_view field) {
  std::vector<uint32_t> out;
  for (const uint32_t index : list) {
    if (index >= participants) fail("group result: {}: index {} of {} members", field, index, participants);
    if (!out.empty() && index <= out.back()) fail("group result: {}: indices not ascending", field);
    out.push_back(index);
  }
  return out;
}

}  // namespace

std::vector<std::byte> encode_group_start(const RelayGroupStart& start) {
  capnp::MallocMessageBuilder builder;
  auto out = builder.initRoot<wire::RelayGroupStart>();
  const SecAggConfig& config = start.config;
  out.setRoundId(config.round_id);
  out.setGroupId(config.group_id);
  out.setNeighbours(config.neighbours);
  out.setThreshold(config.threshold);
  out.setMinSurvivors(config.min_survivors);
  out.setGraphSeed(as_data(config.graph_seed));
  out.setVectorLength(config.vector_length);
  out.setLaneBits(static_cast<uint8_t>(config.lane_bits));
  out.setEphemeralShareKeys(config.ephemeral_share_keys);
  auto members = out.initMembers(static_cast<unsigned>(start.members.size()));
  for (unsigned i = 0; i < members.size(); ++i) {
    const RelayGroupMember& member = start.members[i];
    members[i].setIndex(i);
    members[i].setAgentKey(member.agent_key);
    members[i].setRoute(as_data(std::span(reinterpret_cast<const uint8_t*>(member.route.data()), member.route.size())));
    members[i].setCipherPublic(as_data(member.keys.cipher_public));
    members[i].setMaskPublic(as_data(member.keys.mask_public));
    members[i].setNeighbourSurvivors(member.neighbour_survivors);
  }
  out.setCoordinatorKey(as_data(start.coordinator_key));
  out.setCoordinatorKeySignature(as_data(start.coordinator_key_signature));
  out.setStageTimeoutMs(start.stage_timeout_ms);
  return encode_message(builder);
}

RelayGroupStart decode_group_start(std::span<const std::byte> bytes, size_t max_bytes) {
  const DecodedMessage decoded = decode_message<wire::RelayGroupStart>(bytes, max_bytes, "group start");
  return reading_message([&] {
    const auto in = decoded.root<wire::RelayGroupStart>();
    RelayGroupStart start;
    SecAggConfig& config = start.config;
    config.round_id = in.getRoundId();
    config.group_id = in.getGroupId();
    if (config.group_id == 0) fail("group start: group id 0");
    config.self_masks_sealed = true;
    if (in.getMembers().size() > kMaxGroupMembers) fail("group start: {} members", in.getMembers().size());
    config.participants = in.getMembers().size();
    config.neighbours = in.getNeighbours();
    config.threshold = in.getThreshold();
    config.min_survivors = in.getMinSurvivors();
    config.graph_seed = read_key32(in.getGraphSeed(), "group start: graphSeed");
    config.vector_length = in.getVectorLength();
    config.lane_bits = in.getLaneBits();
    config.ephemeral_share_keys = in.getEphemeralShareKeys();
    config.validate();
    for (const auto member : in.getMembers()) {
      if (member.getIndex() != start.members.size()) fail("group start: member {} out of order", member.getIndex());
      RelayGroupMember out;
      out.agent_key = read_text(member.getAgentKey(), kCurveKeyChars);
      if (out.agent_key.size() != kCurveKeyChars) fail("group start: member {}: agentKey is not a CURVE key", member.getIndex());
      const auto route = member.getRoute();
      if (route.size() == 0 || route.size() > kMaxRouteBytes)
        fail("group start: member {}: a route of {} bytes", member.getIndex(), route.size());
      out.route.assign(reinterpret_cast<const char*>(route.begin()), route.size());
      out.keys = {read_key32(member.getCipherPublic(), "group start: cipherPublic"),
                  read_key32(member.getMaskPublic(), "group start: maskPublic")};
      out.neighbour_survivors = member.getNeighbourSurvivors();
      start.members.push_back(std::move(out));
    }
    start.coordinator_key = read_key32(in.getCoordinatorKey(), "group start: coordinatorKey");
    const auto signature = in.getCoordinatorKeySignature();
    if (signature.size() != 64) fail("group start: a coordinatorKeySignature of {} bytes", signature.size());
    start.coordinator_key_signature.assign(signature.begin(), signature.end());
    start.stage_timeout_ms = in.getStageTimeoutMs();
    if (start.stage_timeout_ms == 0) fail("group start: stageTimeoutMs 0");
    return start;
  });
}

std::vector<std::byte> encode_group_result(const RelayGroupResult& result) {
  capnp::MallocMessageBuilder builder;
  auto out = builder.initRoot<wire::RelayGroupResult>();
  const GroupAggregate& aggregate = result.aggregate;
  out.setRoundId(result.round_id);
  out.setGroupId(aggregate.config.group_id);
  out.setFailure(result.failure);
  auto shared = out.initShared(static_cast<unsigned>(result.shared.size()));
  for (unsigned i = 0; i < shared.size(); ++i) shared.set(i, result.shared[i]);
  auto survivors = out.initSurvivors(static_cast<unsigned>(aggregate.survivors.size()));
  for (unsigned i = 0; i < survivors.size(); ++i) survivors.set(i, aggregate.survivors[i]);
  set_entries(out.initCommitments(static_cast<unsigned>(aggregate.commitments.size())), aggregate.commitments);
  set_entries(out.initSealed(static_cast<unsigned>(aggregate.sealed.size())), aggregate.sealed);
  out.setLaneBits(static_cast<uint8_t>(aggregate.config.lane_bits));
  if (!aggregate.self_masked_sum.empty()) {
    write_lane_vector(
        aggregate.self_masked_sum, aggregate.config.lane_bits,
        out.initSelfMaskedSum(static_cast<unsigned>(aggregate.self_masked_sum.size() * aggregate.config.lane_bits / 8)));
  }
  return encode_message(builder);
}

std::pair<uint64_t, uint64_t> peek_group_result_ids(std::span<const std::byte> bytes, size_t max_bytes) {
  const DecodedMessage decoded = decode_message<wire::RelayGroupResult>(bytes, max_bytes, "group result");
  return reading_message([&] {
    const auto in = decoded.root<wire::RelayGroupResult>();
    return std::pair<uint64_t, uint64_t>(in.getRoundId(), in.getGroupId());
  });
}

RelayGroupResult decode_group_result(std::span<const std::byte> bytes, size_t max_bytes, const SecAggConfig& config) {
  const DecodedMessage decoded = decode_message<wire::RelayGroupResult>(bytes, max_bytes, "group result");
  return reading_message([&] {
    const auto in = decoded.root<wire::RelayGroupResult>();
    RelayGroupResult result;
    result.round_id = in.getRoundId();
    if (result.round_id != config.round_id || in.getGroupId() != config.group_id)
      fail("group result: round {} group {}, expected round {} group {}", result.round_id, in.getGroupId(), config.round_id,
           config.group_id);
    result.failure = read_text(in.getFailure(), 1000);
    result.shared = read_indices(in.getShared(), config.participants, "shared");
    GroupAggregate& aggregate = result.aggregate;
    aggregate.config = config;
    aggregate.survivors = read_indices(in.getSurvivors(), config.participants, "survivors");
    for (const auto entry : in.getCommitments()) {
      if (entry.getIndex() >= config.participants) fail("group result: a commitment of member {}", entry.getIndex());
      aggregate.commitments[entry.getIndex()] = read_key32(entry.getData(), "group result: commitments");
    }
    for (const auto entry : in.getSealed()) {
      if (entry.getIndex() >= config.participants) fail("group result: sealed shares of member {}", entry.getIndex());
      if (entry.getData().size() > 64 + 1024 * 37) fail("group result: sealed shares of {} bytes", entry.getData().size());
      aggregate.sealed[entry.getIndex()] = Bytes(entry.getData().begin(), entry.getData().end());
    }
    if (result.failure.empty()) {
      if (in.getLaneBits() != config.lane_bits)
        fail("group result: {}-bit lanes, the group has {}", in.getLaneBits(), config.lane_bits);
      aggregate.self_masked_sum =
          read_lane_vector(in.getSelfMaskedSum(), config.vector_length, config.lane_bits, "group result: selfMaskedSum");
    }
    return result;
  });
}

}  // namespace fedcal

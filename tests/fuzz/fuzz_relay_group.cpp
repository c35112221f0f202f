// Fuzzes the relay group frames (secagg/relay_group_frames.h): a group start as the relay reads it
// from the coordinator, and a group result as the coordinator reads it from a relay, against a fixed
// group. Either fedcal::Error or a frame whose every field fits its group; what decodes encodes back
// to a frame that decodes to the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "secagg/relay_group_frames.h"

namespace {

using namespace fedcal;

SecAggConfig fixed_group() {
  SecAggConfig config;
  config.round_id = 7;
  config.group_id = 2;
  config.self_masks_sealed = true;
  config.participants = 5;
  config.neighbours = 4;
  config.threshold = 3;
  config.vector_length = 16;
  config.lane_bits = 32;
  return config;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const RelayGroupStart start = decode_group_start(bytes, 1 << 20);
    if (start.members.size() != start.config.participants || start.coordinator_key_signature.size() != 64) std::abort();
    const RelayGroupStart again = decode_group_start(encode_group_start(start), 1 << 20);
    if (again.members.size() != start.members.size() || again.config.graph_seed != start.config.graph_seed) std::abort();
  } catch (const Error&) {
  }
  try {
    const SecAggConfig config = fixed_group();
    const RelayGroupResult result = decode_group_result(bytes, 1 << 20, config);
    for (const uint32_t u : result.aggregate.survivors) {
      if (u >= config.participants) std::abort();
    }
    if (result.failure.empty() && result.aggregate.self_masked_sum.size() != config.vector_length) std::abort();
    const RelayGroupResult again = decode_group_result(encode_group_result(result), 1 << 20, config);
    if (again.aggregate.self_masked_sum != result.aggregate.self_masked_sum || again.shared != result.shared) std::abort();
  } catch (const Error&) {
  }
  return 0;
}

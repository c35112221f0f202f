// Fuzzes the coordinator's handlers, not only the decoder: each input is one agent message handed to
// a real Server (real SQLite store in a scratch folder, real sockets bound on loopback) at the
// boundary libzmq's messages pass, followed by one tick of the event loop. Senders: two enrolled
// agents and a stranger, from one of two addresses. A round of the project's model is running (and
// started again whenever it ended), so the round's handlers see the inputs too. Whatever the bytes,
// nothing may escape, crash or leave the message.
//
// Input: [sender: 1 byte][flags: 1 byte][message bytes...]
//   flags bit 0: the address; bit 1: a message that decodes is re-encoded with a fresh sequence number,
//   so replay protection does not keep the fuzzer from reaching a handler twice; bit 2 (with bit 1): a
//   join also gets the round's vector length, so joins get past that check to the key checks and on.
#include <unistd.h>

#include <capnp/serialize.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

#include "coordinator/server.h"
#include "models/quant/calibration_stats.h"
#include "protocol/wire.h"
#include "transport/curve.h"

namespace {

using namespace fedcal;
using coordinator::Server;

struct Harness {
  std::string dir;
  std::unique_ptr<Server> server;
  CurveKeyPair keys[3];
  uint64_t sequence = uint64_t{1} << 60;  // above every seed's number
  nlohmann::json round_settings;
  uint64_t vector_length = 0;
  uint64_t inputs = 0;

  Harness() {
    char pattern[] = "/tmp/fuzz_coordinator.XXXXXX";
    dir = ::mkdtemp(pattern);
    coordinator::CoordinatorConfig config;
    config.listen = "tcp://127.0.0.1:*";
    config.state_dir = dir;
    config.refusals_per_window = 1000000;  // every input reaches its handler
    config.stage_timeout_ms = 2000;        // stages end, rounds start again
    config.join_timeout_ms = 5000;
    server = std::make_unique<Server>(config);
    for (int i = 0; i < 2; ++i) {
      keys[i] = CurveKeyPair::generate();
      const std::string token = server->store().create_token(60000);
      server->store().redeem_token(token, keys[i].public_key, "agent " + std::to_string(i));
    }
    keys[2] = CurveKeyPair::generate();
    const std::string model = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m";
    const auto imported = server->run_command(
        {{"command", "models.import"}, {"path", model + "/model.bin"}, {"tokenizer", model + "/tokenizer.bin"}});
    round_settings = {
        {"model_id", imported["id"]}, {"min_agents", 2}, {"sequences_per_agent", 1}, {"seq_len", 16}, {"method", "minmax"}};
    const auto record = server->store().model(imported["id"].get<int64_t>());
    const coordinator::RoundModel loaded = coordinator::load_round_model(*record);
    vector_length = contribution_length(CalibrationStats::empty_for(loaded.config, loaded.fingerprint, HistogramLayout{}));
    start_round();
  }
  void hello(int agent) {
    OutgoingMessage hello;
    hello.body().initHello().setName("agent");
    const auto bytes = hello.encode(sequence++);
    server->receive({{"route-" + std::to_string(agent), "", "", ""}, keys[agent].public_key, "127.0.0.1"}, bytes);
  }
  void start_round() {
    hello(0);
    hello(1);
    try {
      server->run_command({{"command", "round.start"}, {"settings", round_settings}});
    } catch (const std::exception&) {  // one is still running
    }
  }
  // The message with a fresh sequence number (and, for a join with `fix_join`, the round's vector
  // length); empty if it does not decode.
  std::vector<std::byte> resequenced(std::span<const std::byte> bytes, bool fix_join) {
    try {
      DecodedEnvelope decoded = decode_envelope(bytes);
      capnp::MallocMessageBuilder builder;
      builder.setRoot(decoded.envelope());
      auto envelope = builder.getRoot<wire::Envelope>();
      envelope.setSequence(sequence++);
      if (fix_join && envelope.getBody().isJoin()) envelope.getBody().getJoin().setVectorLength(vector_length);
      const auto words = capnp::messageToFlatArray(builder);
      const auto out = words.asBytes();
      return {reinterpret_cast<const std::byte*>(out.begin()), reinterpret_cast<const std::byte*>(out.end())};
    } catch (const std::exception&) {
    } catch (const kj::Exception&) {
    }
    return {};
  }
  ~Harness() {
    server.reset();
    std::filesystem::remove_all(dir);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness harness;
  if (size < 2) return 0;
  const size_t sender = data[0] % 3;
  const uint8_t flags = data[1];
  const Server::Sender from{
      {"route-" + std::to_string(sender), "", "", ""}, harness.keys[sender].public_key, flags & 1 ? "127.0.0.1" : "10.0.0.7"};
  std::span<const std::byte> message(reinterpret_cast<const std::byte*>(data + 2), size - 2);
  std::vector<std::byte> fresh;
  if (flags & 2) fresh = harness.resequenced(message, flags & 4);
  harness.server->receive(from, fresh.empty() ? message : std::span<const std::byte>(fresh));
  harness.server->tick();
  if (++harness.inputs % 256 == 0) harness.start_round();
  return 0;
}

// Fuzzes the edge agent's handlers, not only the decoder: each input is one message from "the
// coordinator" handed to a real Agent (real state folder with keys and enrollment, its DEALER
// connected over loopback CURVE to a ROUTER here that drains its replies) at the boundary its
// socket loop uses. Whatever the bytes, nothing may escape, crash or leave the message.
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <span>

#include "common/signing.h"
#include "edge_agent/agent.h"
#include "transport/curve.h"

namespace {

using namespace fedcal;

struct Harness {
  std::string dir;
  zmq::context_t context{1};
  zmq::socket_t coordinator{context, zmq::socket_type::router};
  std::unique_ptr<edge_agent::Agent> agent;

  Harness() {
    char pattern[] = "/tmp/fuzz_agent.XXXXXX";
    dir = ::mkdtemp(pattern);
    const CurveKeyPair coordinator_keys = CurveKeyPair::generate();
    coordinator.set(zmq::sockopt::curve_server, 1);
    coordinator.set(zmq::sockopt::curve_secretkey, coordinator_keys.secret_key);
    coordinator.set(zmq::sockopt::linger, 0);
    coordinator.bind("tcp://127.0.0.1:*");
    edge_agent::AgentConfig config;
    config.coordinator = coordinator.get(zmq::sockopt::last_endpoint);
    config.coordinator_key = coordinator_keys.public_key;
    config.state_dir = dir + "/state";
    config.data_dir = dir + "/text";
    config.name = "fuzz";
    config.threads = 1;
    std::filesystem::create_directories(config.state_dir);
    std::filesystem::create_directories(config.data_dir);
    CurveKeyPair::generate().write(config.curve_key_path());
    edge_agent::Enrollment enrollment;
    enrollment.agent_id = 1;
    enrollment.coordinator = config.coordinator;
    enrollment.coordinator_key = config.coordinator_key;
    enrollment.signing_public_key = SigningKey::generate().public_key_hex();
    enrollment.write(config.enrollment_path());
    agent = std::make_unique<edge_agent::Agent>(config);
  }
  void drain() {
    zmq::message_t frame;
    for (;;) {
      try {
        if (!coordinator.recv(frame, zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t& error) {
        if (error.num() != EINTR) throw;  // libFuzzer's timer signal
      }
    }
  }
  ~Harness() {
    agent.reset();
    std::filesystem::remove_all(dir);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness harness;
  harness.agent->receive(std::span(reinterpret_cast<const std::byte*>(data), size));
  harness.drain();
  return 0;
}

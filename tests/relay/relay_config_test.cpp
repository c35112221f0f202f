// The relay's configuration file (relay/relay_config.h) and the coordinator's relay keys: every
// mistake refused naming the file and the key.
#include <doctest/doctest.h>

#include "coordinator/coordinator_config.h"
#include "relay/relay_config.h"
#include "tests/error_of.h"
#include "tests/test_support.h"
#include "transport/curve.h"

namespace fedcal::testing {

TEST_CASE("Relay config: defaults, relative paths, and each mistake named with the file and key") {
  ScratchDir dir;
  const std::string key = CurveKeyPair::generate().public_key;
  const std::string path = dir.path("relay.toml");
  const std::string base = "coordinator = \"tcp://10.0.0.1:7701\"\ncoordinator_key = \"" + key + "\"\n";
  write_text(path, base + "state_dir = \"relay-state\"\nstandby_coordinators = [\"tcp://10.0.0.2:7701\"]\n");
  const relay::RelayConfig config = relay::RelayConfig::load(path);
  CHECK(config.listen == "tcp://127.0.0.1:7710");
  CHECK(config.state_dir == dir.path("relay-state"));
  CHECK(config.standby_coordinators == std::vector<std::string>{"tcp://10.0.0.2:7701"});
  CHECK(config.presence_interval_ms == 1000);
  CHECK(config.transport_pings);

  const auto refused = [&](const std::string& text) {
    write_text(path, text);
    return error_of([&] { relay::RelayConfig::load(path); });
  };
  CHECK(refused("coordinator_key = \"" + key + "\"\n") ==
        path + ": 'coordinator' is missing (the coordinator's relay_listen endpoint)");
  CHECK(refused(base + "listn = \"x\"\n") == path + ": unknown key 'listn'");
  CHECK(refused("coordinator = \"10.0.0.1:7701\"\ncoordinator_key = \"" + key + "\"\n") ==
        path + ": coordinator: '10.0.0.1:7701' is not a tcp:// endpoint");
  CHECK(refused("coordinator = \"tcp://a:1\"\ncoordinator_key = \"short\"\n").find(path + ": coordinator_key: not a CURVE key") ==
        0);
  CHECK(refused(base + "presence_interval_ms = 6000\n") ==
        path + ": presence_interval_ms (6000) must be at most half of coordinator_timeout_ms (10000)");
  CHECK(refused(base + "presence_interval_ms = -1\n") == path + ": 'presence_interval_ms' = -1 is out of range");
  CHECK(refused(base + "standby_coordinators = \"tcp://a:1\"\n") ==
        path + ": 'standby_coordinators' must be an array of strings");
}

TEST_CASE("Coordinator config: relays and relay_listen go together, and each relay key must be a CURVE key") {
  ScratchDir dir;
  const std::string key = CurveKeyPair::generate().public_key;
  const std::string path = dir.path("coordinator.toml");
  write_text(path, "relays = [\"" + key + "\"]\nrelay_listen = \"tcp://127.0.0.1:7701\"\nartifacts_dir = \"shared/artifacts\"\n");
  const coordinator::CoordinatorConfig config = coordinator::CoordinatorConfig::load(path);
  CHECK(config.relays == std::vector<std::string>{key});
  CHECK(config.artifacts_dir() == dir.path("shared/artifacts"));
  write_text(path, "relays = [\"" + key + "\"]\n");
  CHECK(error_of([&] { coordinator::CoordinatorConfig::load(path); }) ==
        path + ": 'relays' and 'relay_listen' go together (the relays' keys, and where they connect)");
  write_text(path, "relays = [\"not-a-key\"]\nrelay_listen = \"tcp://127.0.0.1:7701\"\n");
  CHECK(error_of([&] { coordinator::CoordinatorConfig::load(path); }).find(path + ": relays: not a CURVE key") == 0);
}

}  // namespace fedcal::testing

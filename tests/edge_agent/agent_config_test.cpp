#include "edge_agent/agent_config.h"

#include <doctest/doctest.h>

#include "common/error.h"
#include "tests/test_support.h"

namespace fedcal::edge_agent {
namespace {

TEST_CASE("Agent config: errors name the file and key") {
  testing::ScratchDir dir;
  testing::write_text(dir.path("a.toml"), "coordinator_key = \"short\"\n");
  CHECK_THROWS_WITH_AS(AgentConfig::load(dir.path("a.toml")), doctest::Contains("coordinator_key"), Error);
  testing::write_text(dir.path("b.toml"), "coordinator_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\nthreads = -2\n");
  CHECK_THROWS_WITH_AS(AgentConfig::load(dir.path("b.toml")), doctest::Contains("'threads'"), Error);
  testing::write_text(dir.path("c.toml"), "coordinator_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\ncolour = 1\n");
  CHECK_THROWS_WITH_AS(AgentConfig::load(dir.path("c.toml")), doctest::Contains("unknown key 'colour'"), Error);
  testing::write_text(dir.path("d.toml"),
                      "coordinator_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\ntransport_ping_ms = 50\n");
  CHECK_THROWS_WITH_AS(AgentConfig::load(dir.path("d.toml")), doctest::Contains("'transport_ping_ms'"), Error);
}

TEST_CASE("Agent config: transport pings every second by default, their timeout at least twice the period") {
  testing::ScratchDir dir;
  testing::write_text(dir.path("a.toml"), "coordinator_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\n");
  const AgentConfig defaults = AgentConfig::load(dir.path("a.toml"));
  CHECK(defaults.transport_ping_ms == 1000);
  CHECK(defaults.transport_timeout_ms() == 5000);
  testing::write_text(dir.path("b.toml"),
                      "coordinator_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\ntransport_ping_ms = 10000\n");
  const AgentConfig large = AgentConfig::load(dir.path("b.toml"));
  CHECK(large.transport_ping_ms == 10000);
  CHECK(large.transport_timeout_ms() == 20000);  // a TTL shorter than the period would close idle connections
}

}  // namespace
}  // namespace fedcal::edge_agent

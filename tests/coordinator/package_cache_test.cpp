// Packages over HTTP (#31 item 4): the coordinator's artifact store behind the shipped nginx origin and
// cache (deploy/nginx/), agents told the cache's url in their welcome; real processes throughout.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <optional>

#include "tests/coordinator/mini_fleet.h"
#include "tests/nginx_server.h"

namespace fedcal::testing {
namespace {

TEST_CASE(
    "Packages over HTTP: agents fetch a round's packages through the shipped cache, the origin serves one copy and the "
    "coordinator none, and with the cache gone they fall back to chunks from the coordinator" *
    doctest::timeout(180) * doctest::test_suite("fleet robustness")) {
  const int origin_port = free_tcp_port(), cache_port = free_tcp_port();
  FleetOptions options;
  options.agents = 3;
  options.coordinator_extra = fmt::format("package_url = \"http://127.0.0.1:{}/fedcal/\"\n", cache_port);
  MiniFleet fleet(options);
  const NginxServer origin(
      deploy_nginx_site("fedcal-origin.conf", {{"listen 7780;", fmt::format("listen 127.0.0.1:{};", origin_port)},
                                               {"/var/lib/fedcal/artifacts/", fleet.coordinator_dir() + "/artifacts/"}}),
      origin_port);
  ScratchDir cache_dir;
  std::optional<NginxServer> cache;
  cache.emplace(deploy_nginx_site("fedcal-cache.conf", {{"listen 7790;", fmt::format("listen 127.0.0.1:{};", cache_port)},
                                                        {"/var/cache/nginx/fedcal", cache_dir.root()},
                                                        {"coordinator.example:7780", fmt::format("127.0.0.1:{}", origin_port)}}),
                cache_port);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  const nlohmann::json first = fleet.run_round(round_settings(model));
  REQUIRE_MESSAGE(first["stage"] == "done", first.dump(2));
  CHECK(first["contributors"] == 3);
  // The FP32 package and the round's results (each agent checks them) went through the cache ...
  const nlohmann::json status = fleet.admin({{"command", "status"}});
  CHECK(status["package_chunk_bytes_sent"] == 0);
  std::map<std::string, uint64_t> origin_bytes;
  for (const NginxServer::Served& served : origin.served()) origin_bytes[served.uri] += served.bytes;
  std::map<std::string, int> cache_requests;
  for (const NginxServer::Served& served : cache->served()) {
    CHECK(served.status == 206);
    cache_requests[served.uri] += 1;
  }
  // ... the origin sent each package once (its slices), whatever the number of agents.
  const nlohmann::json models = fleet.admin({{"command", "models.list"}})["models"];
  int fetched = 0;
  for (const auto& entry : models) {
    const std::string uri = "/fedcal/" + entry["sha256"].get<std::string>() + ".fcpkg";
    if (!origin_bytes.count(uri)) continue;
    ++fetched;
    CHECK(origin_bytes[uri] == entry["bytes"].get<uint64_t>());
    CHECK(cache_requests[uri] >= 3);  // every agent fetched it
  }
  CHECK(fetched >= 2);  // the FP32 package and at least the fleet package

  // The cache goes: the next round's packages come from the coordinator, and the round is done.
  cache.reset();
  nlohmann::json settings = round_settings(model);
  settings["method"] = "percentile:99.9";  // other scales: new packages to fetch
  const nlohmann::json second = fleet.run_round(settings);
  CHECK_MESSAGE(second["stage"] == "done", second.dump(2));
  CHECK(fleet.admin({{"command", "status"}})["package_chunk_bytes_sent"].get<uint64_t>() > 0);
}

}  // namespace
}  // namespace fedcal::testing

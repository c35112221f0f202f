// Staged rollouts over real processes: waves, health gates, automatic rollback, refused tampered
// packages, and an agent that was offline the whole time catching up.
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "common/file_util.h"
#include "common/sha256.h"
#include "edge_agent/local_server.h"
#include "models/format/model_package.h"
#include "tests/coordinator/mini_fleet.h"
#include "tests/coordinator/raw_client.h"

namespace fedcal::testing {
namespace {

namespace fs = std::filesystem;

nlohmann::json wait_rollout(MiniFleet& fleet, std::chrono::seconds timeout = std::chrono::seconds(90)) {
  nlohmann::json status;
  const bool over = eventually(
      [&] {
        status = fleet.admin({{"command", "rollout.status"}});
        const std::string stage = status["stage"].get<std::string>();
        return stage != "running" && stage != "paused";
      },
      timeout);
  if (!over) throw std::runtime_error("rollout did not finish: " + status.dump());
  return status;
}

nlohmann::json start_rollout(MiniFleet& fleet, int64_t model, std::vector<double> waves, int soak_ms = 0) {
  fleet.admin({{"command", "rollout.start"},
               {"settings",
                {{"model_id", model},
                 {"waves", waves},
                 {"max_kl", 0.05},
                 {"max_slowdown", 50.0},
                 {"min_healthy", 100.0},
                 {"min_failing", 1},
                 {"wave_timeout_ms", 30000},
                 {"soak_ms", soak_ms}}}});
  return wait_rollout(fleet);
}

// Active model of every listed agent, by id.
std::map<int64_t, std::string> active_models(MiniFleet& fleet) {
  std::map<int64_t, std::string> out;
  const nlohmann::json agents = fleet.admin({{"command", "agents.list"}});
  for (const auto& agent : agents["agents"]) out[agent["id"].get<int64_t>()] = agent["active_model"].get<std::string>();
  return out;
}

std::string model_sha(MiniFleet& fleet, int64_t id) {
  const nlohmann::json models = fleet.admin({{"command", "models.list"}});
  for (const auto& model : models["models"]) {
    if (model["id"].get<int64_t>() == id) return model["sha256"].get<std::string>();
  }
  throw std::runtime_error("no model " + std::to_string(id));
}

// An INT8 package of the project's model, built centrally with fedcal-model from `text`.
std::string build_int8_package(MiniFleet& fleet, const std::string& text, const std::string& quantize_options,
                               const std::string& name) {
  const std::string model = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m";
  const std::string common = " --threads 1 --model " + model + "/model.bin --tokenizer " + model + "/tokenizer.bin ";
  write_text(fleet.path(name + ".txt"), text);
  REQUIRE(run_command(built_binary("fedcal-model") + " calibrate -q" + common + "--text " + fleet.path(name + ".txt") +
                      " --seq-len 64 -o " + fleet.path(name + ".stats"))
              .exit_code == 0);
  REQUIRE(run_command(built_binary("fedcal-model") + " quantize --recipe plain" + common + "--stats " +
                      fleet.path(name + ".stats") + " " + quantize_options + " -o " + fleet.path(name + ".fcpkg"))
              .exit_code == 0);
  return fleet.path(name + ".fcpkg");
}

TEST_CASE(
    "Rollout: waves with health gates, automatic rollback of a bad model, tampered packages refused, offline agents catch up" *
    doctest::timeout(300) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 10;
  options.lines_per_agent = 12;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  // One agent goes offline before any rollout and stays away until the end. (Ids follow the order
  // in which the agents enrolled, so look it up by name.)
  const int64_t away = fleet.agent_id(9);
  fleet.agent(9).signal(SIGTERM);
  REQUIRE(fleet.agent(9).wait_exit(std::chrono::seconds(10)) == 0);
  fleet.wait_online(9);
  REQUIRE(eventually([&] { return fleet.admin({{"command", "status"}})["online_agents"] == 9; }, std::chrono::seconds(10)));

  // The FP32 model everywhere first (one wave): the baseline the INT8 models are checked against.
  const int64_t fp32 = fleet.import_model();
  const std::string fp32_sha = model_sha(fleet, fp32);
  nlohmann::json status = start_rollout(fleet, fp32, {100});
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == (agent == away ? "" : fp32_sha));

  // INT8 packages built centrally: a good one, and one with every activation scale multiplied by 100.
  std::string text;
  for (int i = 0; i < 3; ++i) text += fleet.calibration_text(i, 100);
  const std::string good_package = build_int8_package(fleet, text, "--method mse --per-channel", "good");
  ModelPackage bad = read_model_package(good_package, nullptr);
  for (auto& [name, layer] : bad.int8) {
    layer.input.scale *= 100;
    layer.output.scale *= 100;
  }
  write_model_package(fleet.path("bad.fcpkg"), bad.model, bad.int8, bad.tokenizer, bad.provenance);
  const int64_t good = fleet.admin({{"command", "models.import"}, {"path", good_package}})["id"].get<int64_t>();
  const int64_t planted = fleet.admin({{"command", "models.import"}, {"path", fleet.path("bad.fcpkg")}})["id"].get<int64_t>();

  // The bad model fails the first wave's gate: halted, and the first wave is back on FP32.
  status = start_rollout(fleet, planted, {20, 60, 100});
  CHECK(status["stage"] == "rolled_back");
  CHECK(status["reason"].get<std::string>().find("wave 1 failed its health gate") != std::string::npos);
  REQUIRE(eventually([&] { return wait_rollout(fleet)["counts"].value("rolling_back", 0) == 0; }, std::chrono::seconds(30)));
  int first_wave = 0;
  for (const auto& agent : status["agents"]) first_wave += agent["wave"] == 0 ? 1 : 0;
  CHECK(first_wave == 2);
  // Switching back is not a crash (it used to report one).
  const nlohmann::json after_rollback = wait_rollout(fleet);
  int rolled_back = 0;
  for (const auto& agent : after_rollback["agents"]) {
    if (agent["wave"] != 0) continue;
    CHECK(agent["report"]["rolled_back"] == true);
    CHECK(agent["report"]["crashes"] == 0);
    ++rolled_back;
  }
  CHECK(rolled_back == 2);
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == (agent == away ? "" : fp32_sha));

  // A package altered in the coordinator's store is refused by every agent that fetches it.
  const std::string good_path = fleet.coordinator_dir() + "/artifacts/" + model_sha(fleet, good) + ".fcpkg";
  const std::string original = [&] {
    std::ifstream in(good_path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  std::string altered = original;
  altered[altered.size() / 2] ^= 0x01;
  write_text(good_path, altered);
  status = start_rollout(fleet, good, {100});
  CHECK(status["stage"] == "rolled_back");
  for (const auto& agent : status["agents"]) {
    if (agent["agent"] != away) CHECK(agent["report"]["error"].get<std::string>().find("hash") != std::string::npos);
  }
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == (agent == away ? "" : fp32_sha));

  // Restored, the good model goes out in three waves, while an application on agent 1 keeps asking
  // it for text through the local socket: every request is answered, by the old model and then the new.
  write_text(good_path, original);
  std::atomic<bool> stop_client{false};
  std::set<std::string> served_by;
  int served = 0, failed = 0;
  std::thread client([&] {
    const std::string endpoint = fleet.path("agent-0/state/serve.json");
    while (!stop_client) {
      try {
        served_by.insert(edge_agent::local_request(
            endpoint, {{"command", "generate"}, {"prompt", "Once upon a time"}, {"max_tokens", 8}})["model"]);
        ++served;
      } catch (const std::exception&) {
        ++failed;
      }
    }
  });
  status = start_rollout(fleet, good, {20, 60, 100});
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop_client = true;
  client.join();
  CHECK(failed == 0);
  CHECK(served > 0);
  CHECK(served_by.count(fp32_sha) == 1);
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  CHECK(status["counts"]["healthy"] == 9);
  const std::string good_sha = model_sha(fleet, good);
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == (agent == away ? "" : good_sha));
  CHECK(served_by.count(good_sha) == 1);
  const std::string scored = run_command(built_binary("fedcal-agent") + " --config " + fleet.path("agent-0/agent.toml") +
                                         " score --json --text " + fleet.path("good.txt"))
                                 .output;
  CHECK(scored.find(good_sha) != std::string::npos);

  // The agent that was away the whole time gets the current model when it returns.
  fleet.start_agent(9);
  REQUIRE(eventually([&] { return active_models(fleet)[away] == good_sha; }, std::chrono::seconds(60)));
}

TEST_CASE("Rollout of a round's package: agents judge it against its FP32 original, so a broken first rollout never passes "
          "wave 1 and a repair over a broken model goes through" *
          doctest::timeout(300) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t fp32 = fleet.import_model();
  // A useless package from a round: every activation clipped at 2 (the histogram's top, 2^1), and the
  // coordinator's own check before publishing turned off.
  nlohmann::json settings = round_settings(fp32);
  settings["max_exponent"] = 1;
  settings["max_kl_ratio"] = 0;
  nlohmann::json report = fleet.run_round(settings);
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  const int64_t broken = report["models"][0]["model"].get<int64_t>();
  const nlohmann::json gate = {{"waves", {100.0}}, {"max_slowdown", 50.0}, {"soak_ms", 0}};
  const auto rollout = [&](int64_t model, double max_kl) {
    nlohmann::json rollout_settings = gate;
    rollout_settings["model_id"] = model;
    rollout_settings["max_kl"] = max_kl;
    return fleet.run_rollout(rollout_settings);
  };

  // Its first rollout, to agents without a model: nothing to compare with but its FP32 original.
  nlohmann::json status = rollout(broken, 0.05);
  CHECK(status["reference_model"] == fp32);
  REQUIRE_MESSAGE(status["stage"] == "rolled_back", status.dump(2));
  CHECK(status["reason"].get<std::string>().find("KL vs FP32") != std::string::npos);
  for (const auto& agent : status["agents"]) {
    CHECK(agent["report"]["reference_checked"] == true);
    CHECK(agent["report"]["reference_kl"].get<double>() > 0.05);
  }

  // The fleet on the broken package anyway (an operator's --max-kl 50), then a good round's package.
  REQUIRE(rollout(broken, 50)["stage"] == "done");
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == model_sha(fleet, broken));
  report = fleet.run_round(round_settings(fp32));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  const int64_t good = report["models"][0]["model"].get<int64_t>();
  // Against the broken previous model its KL is large; against FP32 small: the repair goes through.
  status = rollout(good, 0.05);
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  for (const auto& agent : status["agents"]) {
    CHECK(agent["report"]["mean_kl"].get<double>() > 0.05);  // vs the broken model
    CHECK(agent["report"]["reference_kl"].get<double>() < 0.05);
  }
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == model_sha(fleet, good));
}

TEST_CASE("A rollback that reaches agents still downloading or self-testing leaves them on their current model, never the one "
          "before it" *
          doctest::timeout(300) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  options.chunk_bytes = 4096;  // downloads of many chunks: the rollback arrives before anyone switched
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const nlohmann::json gate = {{"waves", {100.0}}, {"max_slowdown", 50.0}, {"max_kl", 50.0}, {"soak_ms", 0}};
  const auto settings_for = [&](int64_t model) {
    nlohmann::json settings = gate;
    settings["model_id"] = model;
    return settings;
  };
  // Every agent on A, with the FP32 model P before it.
  const int64_t p = fleet.import_model();
  REQUIRE(fleet.run_rollout(settings_for(p))["stage"] == "done");
  const std::string text = fleet.calibration_text(0, 100);
  const int64_t a = fleet.admin({{"command", "models.import"},
                                 {"path", build_int8_package(fleet, text, "--method mse --per-channel", "a")}})["id"].get<int64_t>();
  REQUIRE(fleet.run_rollout(settings_for(a))["stage"] == "done");
  for (const auto& [agent, sha] : active_models(fleet)) REQUIRE(sha == model_sha(fleet, a));
  // B's rollout, rolled back by the operator at once.
  const int64_t b = fleet.admin({{"command", "models.import"},
                                 {"path", build_int8_package(fleet, text, "--method percentile:99.9", "b")}})["id"].get<int64_t>();
  fleet.admin({{"command", "rollout.start"}, {"settings", settings_for(b)}});
  fleet.admin({{"command", "rollout.rollback"}});
  REQUIRE(eventually(
      [&] {
        const nlohmann::json status = fleet.admin({{"command", "rollout.status"}});
        return status["stage"] == "rolled_back" && status["counts"].value("rolling_back", 0) == 0 &&
               status["counts"].value("sent", 0) == 0;
      },
      std::chrono::seconds(60)));
  // Whether each had switched to B or not, every agent is on A again, and the registry says so.
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == model_sha(fleet, a));
  for (int i = 0; i < 3; ++i) {
    const nlohmann::json slots =
        nlohmann::json::parse(read_text_file(fleet.path("agent-" + std::to_string(i) + "/state/slots.json")));
    CHECK(slots["active"] == model_sha(fleet, a));  // what the device serves
  }
}

TEST_CASE("An agent that stops (SIGSTOP) after reporting healthy and is offline when its soak ends fails the gate" *
          doctest::timeout(180) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  fleet.admin({{"command", "rollout.start"},
               {"settings",
                {{"model_id", model},
                 {"waves", {100.0}},
                 {"max_slowdown", 50.0},
                 {"min_failing", 1},
                 {"min_healthy", 100.0},
                 {"soak_ms", 4000}}}});
  const int64_t stopped = fleet.agent_id(0);
  REQUIRE(eventually(
      [&] {
        const nlohmann::json rollout = fleet.admin({{"command", "rollout.status"}});
        for (const auto& agent : rollout["agents"]) {
          if (agent["agent"] == stopped) return agent["status"] == "healthy";
        }
        return false;
      },
      std::chrono::seconds(60)));
  fleet.agent(0).signal(SIGSTOP);  // hung: no heartbeats, no crash
  const nlohmann::json status = wait_rollout(fleet);
  fleet.agent(0).signal(SIGCONT);
  CHECK(status["stage"] == "rolled_back");
  CHECK(status["reason"].get<std::string>().find(fmt::format("agent {} (offline at the end of its soak)", stopped)) !=
        std::string::npos);
}

TEST_CASE("A package deleted from the artifact store mid-rollout ends the rollout at once with the reason, no agent blamed" *
          doctest::timeout(120) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  options.chunk_bytes = 4096;  // many chunks: the file goes while they download
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const std::string package = build_int8_package(fleet, fleet.calibration_text(0, 100), "--method mse", "int8");
  const nlohmann::json imported = fleet.admin({{"command", "models.import"}, {"path", package}});
  const int64_t model = imported["id"].get<int64_t>();
  std::string stored;
  const nlohmann::json models = fleet.admin({{"command", "models.list"}});
  for (const auto& entry : models["models"]) {
    if (entry["id"] == model) stored = entry["path"].get<std::string>();
  }
  REQUIRE(fs::exists(stored));
  fleet.admin({{"command", "rollout.start"},
               {"settings", {{"model_id", model}, {"waves", {100.0}}, {"max_slowdown", 50.0}, {"max_kl", 50.0}, {"soak_ms", 0}}}});
  fs::remove(stored);
  const nlohmann::json status = wait_rollout(fleet, std::chrono::seconds(30));
  CHECK(status["stage"] == "rolled_back");
  CHECK(status["reason"].get<std::string>().find("is missing from the artifact store") != std::string::npos);
  // No agent was blamed for asking for the missing package. (Any other refusal is named, so a cause
  // that shows up under load can be found: one CI run of 2026-12-06 had one, not reproduced in 10
  // runs here, 4 of them beside two busy loops.)
  const nlohmann::json audit = fleet.admin({{"command", "audit"}, {"limit", 200}});
  for (const auto& entry : audit["audit"]) {
    if (entry["event"] != "refused") continue;
    const std::string detail = entry["detail"].get<std::string>();
    MESSAGE("refused: " << entry.dump());
    CHECK(detail.find("artifact") == std::string::npos);
    CHECK(detail.find("chunk") == std::string::npos);
  }
  // A rollout of a model whose file is gone is refused up front.
  CHECK_THROWS_WITH_AS(fleet.admin({{"command", "rollout.start"}, {"settings", {{"model_id", model}, {"waves", {100.0}}}}}),
                       doctest::Contains("is missing from the artifact store"), Error);
}

// A hostile enrolled agent beside real ones: online (hello, heartbeats), it answers every activation
// order with a failing report (KL 1.0 against its previous model) without downloading anything.
class LyingAgent {
 public:
  explicit LyingAgent(MiniFleet& fleet) : probe_(fleet, "liar") {
    thread_ = std::thread([this] { run(); });
  }
  ~LyingAgent() {
    stop_ = true;
    thread_.join();
  }

 private:
  void run() {
    uint64_t sequence = uint64_t{1} << 62;  // above what enrollment used
    OutgoingMessage hello;
    hello.body().initHello().setName("liar");
    probe_.send_raw(hello.encode(sequence++));
    auto last_heartbeat = std::chrono::steady_clock::now();
    while (!stop_) {
      if (std::chrono::steady_clock::now() - last_heartbeat >= std::chrono::milliseconds(500)) {
        OutgoingMessage heartbeat;
        heartbeat.body().initHeartbeat();
        probe_.send_raw(heartbeat.encode(sequence++));
        last_heartbeat = std::chrono::steady_clock::now();
      }
      const std::optional<DecodedEnvelope> message = probe_.receive(std::chrono::milliseconds(200));
      if (!message || body_name(message->envelope()) != "modelActivate") continue;
      const auto activate = message->envelope().getBody().getModelActivate();
      OutgoingMessage report;
      auto body = report.body().initActivationReport();
      body.setRolloutId(activate.getRolloutId());
      body.setSha256(activate.getSha256());
      body.setActivated(true);
      body.setMeanKl(1.0);
      body.setTop1Agreement(0.1);
      body.setTokensPerSecond(100);
      body.setPreviousTokensPerSecond(100);
      probe_.send_raw(report.encode(sequence++));
    }
  }

  ProbeClient probe_;
  std::atomic<bool> stop_ = false;
  std::thread thread_;
};

TEST_CASE(
    "Rollout: one agent's failing reports cannot veto it, the gate names the agent, and the second time it is listed as "
    "failing" *
    doctest::timeout(240) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  LyingAgent liar(fleet);
  fleet.start_agents();
  fleet.wait_online(4);
  const int64_t liar_id = fleet.admin({{"command", "agents.list"}})["agents"].front()["id"].get<int64_t>();  // enrolled first
  // The defaults (90% healthy, at least 2 failing) in one wave: 3 of 4 healthy.
  const int64_t fp32 = fleet.import_model();
  nlohmann::json status = fleet.run_rollout({{"model_id", fp32}, {"waves", {100.0}}, {"max_slowdown", 50.0}, {"soak_ms", 0}});
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  CHECK(status["counts"]["healthy"] == 3);
  CHECK(status["counts"]["unhealthy"] == 1);
  const std::string audit = fleet.admin({{"command", "audit"}, {"limit", 20}}).dump();
  CHECK(audit.find(fmt::format("failing: agent {} (KL 1 > 0.05)", liar_id)) != std::string::npos);
  // Once: not yet a pattern.
  CHECK(fleet.admin({{"command", "agents.list"}, {"failing", true}})["agents"].empty());

  const std::string package = build_int8_package(fleet, fleet.calibration_text(0, 100), "--method mse --per-channel", "int8");
  const int64_t int8 = fleet.admin({{"command", "models.import"}, {"path", package}})["id"].get<int64_t>();
  status = fleet.run_rollout({{"model_id", int8}, {"waves", {50.0, 100.0}}, {"max_slowdown", 50.0}, {"soak_ms", 0}});
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  for (const auto& [agent, sha] : active_models(fleet)) {
    if (agent != liar_id) CHECK(sha == model_sha(fleet, int8));
  }
  const nlohmann::json failing = fleet.admin({{"command", "agents.list"}, {"failing", true}})["agents"];
  REQUIRE(failing.size() == 1);
  CHECK(failing[0]["id"] == liar_id);
  CHECK(failing[0]["problem"].get<std::string>().find("its rollout health reports contradicted the fleet 2 times") !=
        std::string::npos);
}

TEST_CASE("Rollout: an agent that crashes after switching makes its wave unhealthy, and the rollout rolls back" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t fp32 = fleet.import_model();
  REQUIRE(start_rollout(fleet, fp32, {100})["stage"] == "done");
  // The new model: an INT8 build of the same weights.
  const std::string package = build_int8_package(fleet, fleet.calibration_text(0, 100), "--method mse", "int8");
  const int64_t int8 = fleet.admin({{"command", "models.import"}, {"path", package}})["id"].get<int64_t>();
  // Agent 1 will die right after switching to the new model.
  fleet.agent(0).signal(SIGTERM);
  fleet.agent(0).wait_exit(std::chrono::seconds(10));
  fleet.start_agent(0, "fault_injection = \"exit-after-activation\"");
  fleet.wait_online(3);
  fleet.admin({{"command", "rollout.start"},
               {"settings",
                {{"model_id", int8},
                 {"waves", {100}},
                 {"max_slowdown", 50.0},
                 {"min_healthy", 100.0},
                 {"min_failing", 1},
                 {"soak_ms", 8000}}}});
  REQUIRE(fleet.agent(0).wait_exit(std::chrono::seconds(30)) == 128 + SIGKILL);
  fleet.start_agent(0);  // back, without the fault: its hello carries the crash
  const nlohmann::json status = wait_rollout(fleet);
  CHECK(status["stage"] == "rolled_back");
  CHECK(status["reason"].get<std::string>().find("health gate") != std::string::npos);
  REQUIRE(eventually([&] { return wait_rollout(fleet)["counts"].value("rolling_back", 0) == 0; }, std::chrono::seconds(30)));
  const std::string fp32_sha = model_sha(fleet, fp32);
  for (const auto& [agent, sha] : active_models(fleet)) CHECK(sha == fp32_sha);
}

TEST_CASE("Rollout: an agent killed in the middle of a download resumes where it stopped and verifies the package" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  options.chunk_bytes = 4096;  // ~1,700 round trips for the 7 MB FP32 package: slow enough to interrupt
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  const std::string sha = model_sha(fleet, model);
  fleet.admin({{"command", "rollout.start"},
               {"settings", {{"model_id", model}, {"waves", {100}}, {"wave_timeout_ms", 60000}, {"soak_ms", 0}}}});
  const std::string part = fleet.path("agent-0/state/downloads/" + sha + ".part");
  REQUIRE(eventually([&] { return fs::exists(part) && fs::file_size(part) > 100000; }, std::chrono::seconds(30)));
  fleet.agent(0).signal(SIGKILL);
  fleet.agent(0).wait_exit(std::chrono::seconds(5));
  const auto cut = fs::file_size(part);
  CHECK(cut < static_cast<uintmax_t>(fleet.admin({{"command", "models.list"}})["models"][0]["bytes"].get<int64_t>()));
  fleet.start_agent(0);
  const int64_t killed = fleet.agent_id(0);
  REQUIRE(eventually([&] { return active_models(fleet)[killed] == sha; }, std::chrono::seconds(60)));
  std::ifstream log(fleet.path("agent-0/agent.log"));
  const std::string text{std::istreambuf_iterator<char>(log), {}};
  CHECK(text.find("resuming the download of " + sha.substr(0, 16) + " at ") != std::string::npos);
  CHECK(text.find("downloaded and verified " + sha.substr(0, 16)) != std::string::npos);
  CHECK(sha256_file_hex(fleet.path("agent-0/state/models/" + sha + ".fcpkg")) == sha);
}

}  // namespace
}  // namespace fedcal::testing

namespace fedcal::testing {
namespace {

TEST_CASE("Crash: the coordinator SIGKILLed as a wave starts its soak resumes the soak and judges the gate after the restart" *
          doctest::timeout(180) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 4;
  options.coordinator_fault_injection = "kill-soaking";
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t fp32 = fleet.import_model();
  const int soak_ms = 3000;
  fleet.admin({{"command", "rollout.start"},
               {"settings",
                {{"model_id", fp32},
                 {"waves", {50.0, 100.0}},
                 {"max_kl", 0.05},
                 {"max_slowdown", 50.0},
                 {"min_healthy", 100.0},
                 {"min_failing", 1},
                 {"wave_timeout_ms", 30000},
                 {"soak_ms", soak_ms}}}});
  // Both agents of wave 1 report; the soak starts; the coordinator dies.
  REQUIRE(fleet.coordinator().wait_exit(std::chrono::seconds(60)) == 128 + SIGKILL);
  fleet.set_coordinator_fault_injection("");
  // Taken before the start: the coordinator resumes the soak while it starts, before it answers.
  const auto restarted = std::chrono::steady_clock::now();
  fleet.start_coordinator();
  // Wave 2 is not started before a whole soak after the restart (was: at once, and then declared done
  // with its agents still "sent").
  nlohmann::json status;
  REQUIRE(eventually(
      [&] {
        status = fleet.admin({{"command", "rollout.status"}});
        return status["wave"] == 1 || status["stage"] != "running";
      },
      std::chrono::seconds(30)));
  CHECK(std::chrono::steady_clock::now() - restarted >= std::chrono::milliseconds(soak_ms));
  status = wait_rollout(fleet);
  CHECK_MESSAGE(status["stage"] == "done", status.dump(2));
  CHECK(status["counts"]["healthy"] == 4);  // every agent reported and was judged; none left "sent"
}

// Flips one bit in the middle of `path`.
void flip_bit(const std::string& path) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  const auto middle = static_cast<std::streamoff>(fs::file_size(path) / 2);
  file.seekg(middle);
  char byte = 0;
  file.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x10);
  file.seekp(middle);
  file.write(&byte, 1);
}

TEST_CASE(
    "A damaged package on an agent is found by its hash, reported (agents list --failing) and downloaded again: the "
    "active one at start, a cached round model when a round needs it" *
    doctest::timeout(180) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  const std::string sha = model_sha(fleet, model);
  REQUIRE(start_rollout(fleet, model, {100})["stage"] == "done");  // the model is active on every agent

  // The active package, one bit flipped while the agent was stopped.
  fleet.agent(0).signal(SIGKILL);
  fleet.agent(0).wait_exit(std::chrono::seconds(5));
  const std::string active = fleet.path("agent-0/state/models/" + sha + ".fcpkg");
  flip_bit(active);
  REQUIRE(sha256_file_hex(active) != sha);
  fleet.start_agent(0);
  const int64_t damaged_agent = fleet.agent_id(0);
  // Was: the agent served nothing (SHA-256 mismatch) while the coordinator showed it healthy.
  REQUIRE(eventually(
      [&] {
        const nlohmann::json list = fleet.admin({{"command", "agents.list"}});
        for (const auto& agent : list["agents"]) {
          if (agent["id"] == damaged_agent)
            return agent.value("problem", std::string()).find("damaged package") != std::string::npos;
        }
        return false;
      },
      std::chrono::seconds(30)));
  REQUIRE(eventually(
      [&] { return read_text_file(fleet.path("agent-0/agent.log")).find("repaired the active package") != std::string::npos; },
      std::chrono::seconds(60)));
  CHECK(sha256_file_hex(active) == sha);

  // A cached round model (the same file on agent 1, also its active package), flipped while it runs:
  // the next round's download finds it by its hash and fetches it again. Was: a file of the right size
  // counted as verified, the agent failed to load it and declined every later round.
  const std::string cached = fleet.path("agent-1/state/models/" + sha + ".fcpkg");
  flip_bit(cached);
  const nlohmann::json report = fleet.run_round(round_settings(model));
  CHECK_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 3);
  CHECK(sha256_file_hex(cached) == sha);
  CHECK(read_text_file(fleet.path("agent-1/agent.log")).find("damaged, removed, downloading it again") != std::string::npos);
}

}  // namespace
}  // namespace fedcal::testing

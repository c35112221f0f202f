// Multi-process integration tests: a real coordinator and real agents on loopback.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include "common/sha256.h"
#include "coordinator/admin_client.h"
#include "edge_agent/enrollment.h"
#include "edge_agent/local_server.h"
#include "models/quant/calibration_stats.h"
#include "protocol/wire.h"
#include "secagg/crypto.h"
#include "secagg/secagg_wire.h"
#include "secagg/secure_aggregation.h"
#include "tests/coordinator/forged_report.h"
#include "tests/coordinator/mini_fleet.h"
#include "tests/coordinator/raw_client.h"
#include "tests/models/tokenizer/tokenizer_fixtures.h"
#include "transport/connection_guard.h"
#include "transport/curve.h"
#include "transport/json_request.h"
#include "transport/local_access.h"

namespace fedcal::testing {
namespace {

namespace fs = std::filesystem;

// The coordinator's log so far.
std::string read_log(MiniFleet& fleet) {
  std::ifstream log(fleet.path("coordinator.log"));
  return {std::istreambuf_iterator<char>(log), {}};
}

// The file's bytes; a missing or empty file fails the test (two missing files must not compare equal).
std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), path);
  std::string bytes{std::istreambuf_iterator<char>(in), {}};
  REQUIRE_MESSAGE(!bytes.empty(), path);
  return bytes;
}

struct CapturedMessage {
  int64_t agent;
  std::vector<std::byte> bytes;
};

std::vector<CapturedMessage> read_capture(const std::string& path) {
  std::vector<CapturedMessage> out;
  std::ifstream in(path, std::ios::binary);
  uint64_t header[2];
  while (in.read(reinterpret_cast<char*>(header), sizeof(header))) {
    CapturedMessage message{static_cast<int64_t>(header[0]), std::vector<std::byte>(header[1])};
    in.read(reinterpret_cast<char*>(message.bytes.data()), static_cast<std::streamsize>(header[1]));
    out.push_back(std::move(message));
  }
  return out;
}

TEST_CASE("Fleet round: federated = centralized, bit for bit, and the coordinator sees only masked vectors" *
          doctest::timeout(180)) {
  FleetOptions options;
  options.agents = 4;
  options.capture = true;
  options.reference_text = true;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  const nlohmann::json report = fleet.run_round(round_settings(model));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 4);
  CHECK(report["checks"]["fleet"]["agents"] == 4);
  CHECK(report["checks"]["public"]["agents"] == 4);  // the baseline calibrated on the public text
  CHECK(report["checks"]["fleet"]["top1_agreement"].get<double>() > 0.9);
  // The calibration-free baseline: the fleet package's weights with dynamic per-token activations.
  CHECK(report["checks"]["dynamic"]["agents"] == 4);
  CHECK(report["checks"]["dynamic"]["mean_kl"].get<double>() > 0.0);
  CHECK(report["checks"]["dynamic"]["top1_agreement"].get<double>() > 0.9);
  // And the fine-grained mode: activations per block of 32 channels, closer to FP32 than per token.
  CHECK(report["checks"]["dynamic-blocks"]["agents"] == 4);
  CHECK(report["checks"]["dynamic-blocks"]["mean_kl"].get<double>() > 0.0);
  CHECK(report["checks"]["dynamic-blocks"]["mean_kl"].get<double>() < report["checks"]["dynamic"]["mean_kl"].get<double>());

  // Centralized: the same tool chain on the concatenation of the agents' calibration text.
  const std::string fp32 = fp32_package_path(fleet, model);
  std::string all;
  for (int i = 0; i < options.agents; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string central_stats = calibrate_centrally(fleet, fp32, all, kSequences * options.agents, "central");
  const std::string fleet_stats = fleet.coordinator_dir() + "/artifacts/round-1.stats";
  CHECK(read_bytes(fleet_stats) == read_bytes(central_stats));

  const std::string central_package = fleet.path("central.fcpkg");
  const auto quantize = run_command(built_binary("fedcal-model") + " quantize --recipe plain --threads 1 --model " + fp32 +
                                        " --stats " + central_stats + " --method percentile:99.99 --per-channel --sign " +
                                        fleet.coordinator_dir() + "/signing.key -o " + central_package,
                                    true);
  REQUIRE_MESSAGE(quantize.exit_code == 0, quantize.output);
  // Same statistics, same scales, same tensors, same (deterministic Ed25519) signature: the same file.
  CHECK(sha256_file_hex(central_package) == report["models"][0]["sha256"].get<std::string>());

  // Privacy: every aggregation message the coordinator received. This round's counts fit 32-bit
  // lanes, so the masks are 32-bit words (the 64-bit arithmetic has its own unit tests).
  REQUIRE(report["secure_aggregation"]["lane_bits"] == 32);
  const int lane_bits = 32;
  std::map<int64_t, std::vector<uint64_t>> masked;
  std::map<uint32_t, std::pair<int, int>> revealed;  // owner -> (self-mask seed shares, mask key shares)
  for (const CapturedMessage& message : read_capture(fleet.capture_path())) {
    DecodedEnvelope decoded = decode_envelope(message.bytes);
    const auto body = decoded.envelope().getBody();
    if (body.which() == wire::Envelope::Body::MASKED_INPUT) {
      const auto values = body.getMaskedInput().getValues();
      masked[message.agent] = read_lane_vector(values, values.size() / 4, lane_bits, "values");
    }
    if (body.which() == wire::Envelope::Body::UNMASK_SHARES) {
      for (const auto share : body.getUnmaskShares().getShares()) {
        (share.getKind() == 0 ? revealed[share.getOwner()].first : revealed[share.getOwner()].second) += 1;
      }
    }
  }
  REQUIRE(masked.size() == 4);
  const int threshold = report["secure_aggregation"].is_null() ? 3 : report["secure_aggregation"]["threshold"].get<int>();
  for (const auto& [owner, counts] : revealed) {
    // Never t shares of both secrets of one agent: its masked vector stays masked by its pairwise masks.
    CHECK_FALSE((counts.first >= threshold && counts.second >= threshold));
    CHECK(counts.second == 0);  // nobody dropped, so no mask key was revealed at all
  }
  // Each agent's masked vector against its true statistics: independent of them, uniform.
  for (int i = 0; i < options.agents; ++i) {
    const std::string own =
        calibrate_centrally(fleet, fp32, fleet.calibration_text(i, kSequences), kSequences, "agent" + std::to_string(i));
    const CalibrationStats stats = read_stats(own);
    const std::vector<uint64_t> truth = contribution_vector(stats);
    const int64_t agent_id = fleet.agent_id(i);
    REQUIRE(masked.count(agent_id));
    const auto& vector = masked.at(agent_id);
    REQUIRE(vector.size() == truth.size());
    size_t equal = 0;
    for (size_t k = 0; k < vector.size(); ++k) equal += vector[k] == truth[k] ? 1 : 0;
    CHECK(equal < 3);  // a uniform 32-bit value equals the true count with probability 2^-32
    CHECK(looks_uniform(vector, lane_bits));
  }
}

// A round on the PyTorch-checked checkpoint tests/reference/`name` (with `spm` as its tokenizer): the
// statistics equal the agents' text calibrated centrally, bit for bit, and the package rolls out to
// every agent, which runs it.
void check_reference_round_and_rollout(MiniFleet& fleet, int agents, const std::string& name, const std::string& spm) {
  CAPTURE(name);
  const std::string folder = fleet.path(name);
  fs::create_directories(folder);
  for (const char* file : {"config.json", "model.safetensors"})
    fs::copy_file(std::string(FEDCAL_SOURCE_DIR) + "/tests/reference/" + name + "/" + file, folder + "/" + file);
  fs::copy_file(spm, folder + "/tokenizer.model");
  const int64_t model = fleet.import_model(folder);
  const nlohmann::json report = fleet.run_round(round_settings(model));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == agents);
  CHECK(report["checks"]["fleet"]["agents"] == agents);
  CHECK(report["checks"]["dynamic"]["agents"] == agents);
  // The same statistics as the agents' calibration text run centrally, bit for bit.
  const std::string fp32 = fp32_package_path(fleet, model);
  std::string all;
  for (int i = 0; i < agents; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string central = calibrate_centrally(fleet, fp32, all, kSequences * agents, "central-" + name);
  const std::string round = std::to_string(report["round"].get<int64_t>());
  CHECK(read_bytes(fleet.coordinator_dir() + "/artifacts/round-" + round + ".stats") == read_bytes(central));
  // Rolled out to every agent, which runs it (the second replaces an unrelated model: no KL limit).
  const nlohmann::json rollout = fleet.run_rollout(
      {{"model_id", report["models"][0]["model"]}, {"waves", {100.0}}, {"max_kl", 50.0}, {"max_slowdown", 50.0}, {"soak_ms", 0}});
  CHECK_MESSAGE(rollout["stage"] == "done", rollout.dump(2));
  CHECK(rollout["counts"]["healthy"] == agents);
}

TEST_CASE("Fleet round and rollout of Llama 3, Qwen3 and Qwen2 shaped models (RoPE scaling, head_dim, q/k norms, q/k/v biases): federated = centralized" *
          doctest::timeout(240)) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  // The PyTorch-checked checkpoints of tests/reference, with a 512-piece tokenizer trained on public text.
  fs::create_directories(fleet.path("spm"));
  const std::string spm = train_sentencepiece(fleet.path("spm"), tinystories_train().substr(0, 100000), 512);
  for (const std::string name : {"llama3-tiny", "head-dim-tiny", "qwen3-tiny", "qwen2-tiny"}) {
    check_reference_round_and_rollout(fleet, options.agents, name, spm);
  }
}

TEST_CASE(
    "Fleet round and rollout of a Gemma 3 shaped model (sliding-window layers, post-norms, GeGLU): federated = centralized" *
    doctest::timeout(120)) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fs::create_directories(fleet.path("spm"));
  check_reference_round_and_rollout(fleet, options.agents, "gemma3-tiny",
                                    train_sentencepiece(fleet.path("spm"), tinystories_train().substr(0, 100000), 512));
}

TEST_CASE("Fleet round with exports: the importance matrix federated = centralized bit for bit, each export listed and exportable" *
          doctest::timeout(180)) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["exports"] = {"imatrix", "imatrix-gguf", "gguf", "onnx-qdq", "tensorrt-cache"};
  const nlohmann::json report = fleet.run_round(settings);
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 3);
  // One agent's importance sums can pass 2^31, but they travel in 21-bit limbs: the round masks in
  // 32-bit lanes, and the sums read back are exact (the imatrix below matches the centralized one).
  CHECK(report["secure_aggregation"]["lane_bits"] == 32);
  REQUIRE(report["exports"].size() == 5);
  std::map<std::string, std::string> made;
  for (const auto& exported : report["exports"]) {
    CHECK_MESSAGE(!exported.contains("error"), exported.dump());
    made[exported["format"].get<std::string>()] = exported["path"].get<std::string>();
  }

  // Centralized: the same text through fedcal-model, with importance sums; then the same exports.
  const std::string fp32 = fp32_package_path(fleet, model);
  std::string all;
  for (int i = 0; i < options.agents; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string central = calibrate_centrally(fleet, fp32, all, kSequences * options.agents, "central", "--importance");
  const std::string round = std::to_string(report["round"].get<int64_t>());
  CHECK(read_bytes(fleet.coordinator_dir() + "/artifacts/round-" + round + ".stats") == read_bytes(central));
  const std::string fedcal_model = built_binary("fedcal-model") + " export --threads 1 --model " + fp32;
  const auto imatrix = run_command(fedcal_model + " --format imatrix --stats " + central + " --name 'fedcal round " + round + "' -o " +
                                       fleet.path("central.imatrix"),
                                   true);
  REQUIRE_MESSAGE(imatrix.exit_code == 0, imatrix.output);
  CHECK(read_bytes(made["imatrix"]) == read_bytes(fleet.path("central.imatrix")));
  const auto imatrix_gguf = run_command(fedcal_model + " --format imatrix-gguf --stats " + central + " --name 'fedcal round " + round +
                                            "' -o " + fleet.path("central.imatrix.gguf"),
                                        true);
  REQUIRE_MESSAGE(imatrix_gguf.exit_code == 0, imatrix_gguf.output);
  CHECK(read_bytes(made["imatrix-gguf"]) == read_bytes(fleet.path("central.imatrix.gguf")));
  const auto gguf = run_command(fedcal_model + " --format gguf --type q8_0 --name 'fedcal round " + round + "' -o " + fleet.path("central.gguf"), true);
  REQUIRE_MESSAGE(gguf.exit_code == 0, gguf.output);
  CHECK(read_bytes(made["gguf"]) == read_bytes(fleet.path("central.gguf")));
  // The fleet package's scales, as fedcal-model exports them from the package file.
  const std::string package = report["models"][0]["sha256"].get<std::string>();
  const std::string package_path = fleet.coordinator_dir() + "/artifacts/" + package + ".fcpkg";
  const auto cache = run_command(built_binary("fedcal-model") + " export --model " + package_path + " --format tensorrt-cache -o " +
                                     fleet.path("central.cache"),
                                 true);
  REQUIRE_MESSAGE(cache.exit_code == 0, cache.output);
  CHECK(read_bytes(made["tensorrt-cache"]) == read_bytes(fleet.path("central.cache")));

  // `models list` shows them under the round's package; `models export` copies one the round made and
  // makes one it did not (the FP32 ONNX graph, from the model the round calibrated).
  const nlohmann::json models = fleet.admin({{"command", "models.list"}});
  const int64_t fleet_model = report["models"][0]["model"].get<int64_t>();
  for (const auto& entry : models["models"]) {
    if (entry["id"].get<int64_t>() == fleet_model) CHECK(entry["exports"].size() == 5);
  }
  const nlohmann::json copied =
      fleet.admin({{"command", "models.export"}, {"id", fleet_model}, {"format", "imatrix"}, {"output", fleet.path("copy.imatrix")}});
  CHECK(copied["copied"] == true);
  CHECK(read_bytes(fleet.path("copy.imatrix")) == read_bytes(made["imatrix"]));
  const nlohmann::json onnx =
      fleet.admin({{"command", "models.export"}, {"id", fleet_model}, {"format", "onnx"}, {"output", fleet.path("fp32.onnx")}});
  CHECK(onnx["copied"] == false);
  CHECK(read_bytes(fleet.path("fp32.onnx")).size() == onnx["bytes"].get<size_t>());
  // An FP32 model has no round statistics and no INT8 scales.
  CHECK_THROWS_WITH(fleet.admin({{"command", "models.export"}, {"id", model}, {"format", "imatrix"}, {"output", fleet.path("none.imatrix")}}),
                    doctest::Contains("model 1 was not made by a round"));
  CHECK_THROWS_WITH(fleet.admin({{"command", "models.export"}, {"id", model}, {"format", "onnx-qdq"}, {"output", fleet.path("none.onnx")}}),
                    doctest::Contains("needs static INT8 layers"));
}

TEST_CASE("Fleet round: agents dying after their masked input (n - t of them) do not change the sum" * doctest::timeout(180) *
          doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 6;  // complete graph: 6 holders per secret, t = 4, so 2 may drop
  MiniFleet fleet(options);
  fleet.start_coordinator();
  for (int i = 0; i < 6; ++i) fleet.start_agent(i, i >= 4 ? "fault_injection = \"exit-after-masked-input\"" : "");
  fleet.wait_online(6);
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["lane_bits"] = 64;  // the counts would fit 32-bit lanes: this round runs the 64-bit arithmetic end to end
  const nlohmann::json report = fleet.run_round(settings);
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["secure_aggregation"]["lane_bits"] == 64);
  CHECK(fleet.agent(4).wait_exit(std::chrono::seconds(1)) == 17);
  CHECK(fleet.agent(5).wait_exit(std::chrono::seconds(1)) == 17);
  // The dead agents' inputs count: they were masked in before they died.
  CHECK(report["contributors"] == 6);
  std::string all;
  for (int i = 0; i < 6; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string central = calibrate_centrally(fleet, fp32_package_path(fleet, model), all, 6 * kSequences, "central");
  CHECK(read_bytes(fleet.coordinator_dir() + "/artifacts/round-1.stats") == read_bytes(central));
}

TEST_CASE("Fleet round: more than n - t agents dying fails the round cleanly, with the reason" * doctest::timeout(180) *
          doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 6;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  for (int i = 0; i < 6; ++i) fleet.start_agent(i, i >= 3 ? "fault_injection = \"exit-after-masked-input\"" : "");
  fleet.wait_online(6);
  const int64_t model = fleet.import_model();
  const nlohmann::json report = fleet.run_round(round_settings(model));
  CHECK(report["stage"] == "failed");
  CHECK(report["failure"].get<std::string>().find("shares of agent") != std::string::npos);
  // Nothing was produced from a partial sum.
  CHECK_FALSE(fs::exists(fleet.coordinator_dir() + "/artifacts/round-1.stats"));
  CHECK(fleet.admin({{"command", "models.list"}})["models"].size() == 1);
}

TEST_CASE("Coordinator killed mid-round: the round fails cleanly on restart, the state is intact, the next round works" *
          doctest::timeout(180) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  options.lines_per_agent = 40;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["sequences_per_agent"] = 30;
  settings["seq_len"] = 256;
  fleet.admin({{"command", "round.start"}, {"settings", settings}});
  fleet.kill_coordinator();
  fleet.start_coordinator();
  const nlohmann::json failed = fleet.wait_round(1, std::chrono::seconds(10));
  CHECK(failed["stage"] == "failed");
  CHECK(failed["failure"].get<std::string>().find("restarted during stage") != std::string::npos);
  CHECK(fleet.admin({{"command", "agents.list"}})["agents"].size() == 3);
  CHECK(fleet.admin({{"command", "models.list"}})["models"].size() == 1);
  // The agents reconnect by themselves and take part in the next round.
  fleet.wait_online(3);
  const nlohmann::json next = fleet.run_round(round_settings(model));
  CHECK_MESSAGE(next["stage"] == "done", next.dump(2));
}

TEST_CASE("Enrollment: an unenrolled key gets nothing, a bad token is refused, a revoked agent is cut off at once" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();

  // A token used once cannot enroll a second key.
  const std::string token = fleet.admin({{"command", "token.create"}})["token"].get<std::string>();
  const std::string key = fleet.admin({{"command", "status"}})["curve_public_key"].get<std::string>();
  const std::string endpoint = fleet.admin({{"command", "status"}})["listen"].get<std::string>();
  auto enroll = [&](const std::string& state) {
    return run_command(built_binary("fedcal-agent") + " --config /nonexistent enroll --coordinator " + endpoint +
                           " --coordinator-key '" + key + "' --state-dir " + fleet.path(state) + " --token " + token,
                       true);
  };
  CHECK(enroll("first").exit_code == 0);
  const auto second = enroll("second");
  CHECK(second.exit_code != 0);
  CHECK(second.output.find("token is unknown, already used or expired") != std::string::npos);
  // Provisioning: tokens in a batch from the CLI, one per line.
  const auto batch = run_command(built_binary("fedcal-coordinator") + " --config " + fleet.path("coordinator.toml") +
                                 " token create --count 3 --json");
  REQUIRE(batch.exit_code == 0);
  const auto tokens = nlohmann::json::parse(batch.output)["tokens"];
  REQUIRE(tokens.size() == 3);
  CHECK(tokens[0] != tokens[1]);

  // An agent whose key was never enrolled (its enrollment file copied from another agent) is refused.
  fs::create_directories(fleet.path("impostor/state"));
  fs::create_directories(fleet.path("impostor/text"));
  fs::copy_file(fleet.path("agent-0/state/enrollment.json"), fleet.path("impostor/state/enrollment.json"));
  write_text(fleet.path("impostor/text/a.txt"), "Once upon a time.\n");
  std::string config = read_bytes(fleet.path("agent-0/agent.toml"));
  config = config.substr(0, config.find("enroll_token"));
  write_text(fleet.path("impostor/agent.toml"), config);
  REQUIRE(run_command(built_binary("fedcal-agent") + " --config " + fleet.path("impostor/agent.toml") + " keys").exit_code == 0);
  Process impostor({built_binary("fedcal-agent"), "--config", fleet.path("impostor/agent.toml"), "run"},
                   fleet.path("impostor.log"));
  CHECK(impostor.wait_exit(std::chrono::seconds(20)) == 3);
  CHECK(read_bytes(fleet.path("impostor.log")).find("not enrolled") != std::string::npos);

  // Revoking a running agent cuts it off; it is not in the next round.
  fleet.admin({{"command", "agents.revoke"}, {"id", fleet.agent_id(0)}});
  CHECK(fleet.agent(0).wait_exit(std::chrono::seconds(20)) == 3);
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model, 2);
  const nlohmann::json report = fleet.run_round(settings);
  CHECK(report["stage"] == "done");
  CHECK(report["announced"] == 2);
  const auto audit = fleet.admin({{"command", "audit"}, {"limit", 200}}).dump();
  CHECK(audit.find("the key is not enrolled") != std::string::npos);
  CHECK(audit.find("the agent is revoked") != std::string::npos);
}

TEST_CASE("Malformed, replayed and misdirected messages are refused, answered and logged, and the coordinator carries on" *
          doctest::timeout(60) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 0;
  options.max_message_bytes = 4 << 20;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  ProbeClient probe(fleet);
  const auto code = [](wire::ErrorReply::Code value) { return static_cast<int>(value); };

  std::vector<std::byte> garbage(40, std::byte{0x5a});
  probe.send_raw(garbage);
  CHECK(probe.reply() == std::make_pair(std::string("error"), code(wire::ErrorReply::Code::BAD_MESSAGE)));

  OutgoingMessage hello;
  hello.body().initHello().setName("probe");
  const auto hello_bytes = hello.encode(uint64_t{1} << 62);
  probe.send_raw(hello_bytes);
  CHECK(probe.reply() == std::make_pair(std::string("welcome"), -1));
  probe.send_raw(hello_bytes);  // the same bytes again: a replay
  CHECK(probe.reply() == std::make_pair(std::string("error"), code(wire::ErrorReply::Code::REPLAYED)));

  OutgoingMessage keys;  // a coordinator-to-agent message
  keys.body().initRoundKeys().setRoundId(1);
  probe.send_raw(keys.encode((uint64_t{1} << 62) + 1));
  CHECK(probe.reply() == std::make_pair(std::string("error"), code(wire::ErrorReply::Code::BAD_MESSAGE)));

  OutgoingMessage masked;  // for a round that was never started
  write_u64_vector({1, 2, 3}, masked.body().initMaskedInput().initValues(24));
  probe.send_raw(masked.encode((uint64_t{1} << 62) + 2));
  CHECK(probe.reply() == std::make_pair(std::string("error"), code(wire::ErrorReply::Code::BAD_MESSAGE)));

  // Over ZMQ_MAXMSGSIZE: libzmq drops the connection before anything reaches fedcal.
  std::vector<std::byte> huge(8 << 20, std::byte{0});
  probe.send_raw(huge);
  CHECK_FALSE(probe.reply(std::chrono::milliseconds(500)).has_value());

  CHECK(fleet.admin({{"command", "status"}}).contains("curve_public_key"));
  const std::string audit = fleet.admin({{"command", "audit"}, {"limit", 100}}).dump();
  CHECK(audit.find("replayed 'hello'") != std::string::npos);
  CHECK(audit.find("malformed Cap'n Proto") != std::string::npos);
  CHECK(audit.find("'roundKeys'") != std::string::npos);
  CHECK(audit.find("'maskedInput' for round 0, which was never started") != std::string::npos);
}

TEST_CASE("Importing a large model while a round runs: heartbeats keep being answered, no agent looks dropped" *
          doctest::timeout(300)) {
  FleetOptions options;
  options.agents = 4;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fleet.wait_online(4);
  const int64_t model = fleet.import_model();
  // A model of the SmolLM-135M shape (135M parameters, 540 MB in FP32): loading, hashing, re-writing
  // and signing it takes seconds, longer than the agents' 1.5 s liveness timeout.
  const auto synth = run_command(
      built_binary("fedcal-model") + " synth --preset smollm-135m --seed 3 --format hf -o " + fleet.path("large"), true);
  REQUIRE_MESSAGE(synth.exit_code == 0, synth.output);
  ProbeClient probe(fleet);
  OutgoingMessage hello;
  hello.body().initHello().setName("probe");
  uint64_t sequence = uint64_t{1} << 62;
  probe.send_raw(hello.encode(sequence++));
  REQUIRE(probe.wait_for("welcome"));

  nlohmann::json settings = round_settings(model);
  settings["max_agents"] = 4;  // the probe is online too, and never joins
  const int64_t round = fleet.admin({{"command", "round.start"}, {"settings", settings}})["round"].get<int64_t>();
  const auto started = std::chrono::steady_clock::now();
  auto import = std::async(std::launch::async, [&] {
    const std::string tokenizer = project_tokenizer_path();
    return fleet.admin({{"command", "models.import"}, {"path", fleet.path("large")}, {"tokenizer", tokenizer}}, 240000)["id"]
        .get<int64_t>();
  });
  // Heartbeats while the import runs: each is answered at once.
  double slowest_ms = 0;
  int heartbeats = 0;
  while (import.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    OutgoingMessage heartbeat;
    heartbeat.body().initHeartbeat();
    const auto sent = std::chrono::steady_clock::now();
    probe.send_raw(heartbeat.encode(sequence++));
    REQUIRE(probe.wait_for("heartbeat", std::chrono::milliseconds(5000)));
    slowest_ms = std::max(slowest_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sent).count());
    ++heartbeats;
  }
  const double import_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  CHECK(import.get() > model);
  MESSAGE("import took " << import_ms << " ms; " << heartbeats << " heartbeats answered, the slowest in " << slowest_ms << " ms");
  CHECK(import_ms > options.agent_timeout_ms);  // else this test could not tell a blocked loop from a free one
  CHECK(slowest_ms < options.agent_timeout_ms / 2.0);
  const nlohmann::json report = fleet.wait_round(round, std::chrono::seconds(120));
  CHECK(report["stage"] == "done");
  CHECK(report["contributors"] == 4);
}

TEST_CASE("Text that is not UTF-8, too long or full of control characters neither stops nor fools the coordinator" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  std::string euros;
  for (int i = 0; i < 43; ++i) euros += "\xE2\x82\xAC";  // 129 bytes: the name limit (128) falls inside a character
  ProbeClient probe(fleet, euros);
  // A round is collecting while the hostile text arrives (a crash then used to fail the round).
  fleet.start_agents();
  fleet.wait_online(3);
  nlohmann::json settings = round_settings(fleet.import_model());
  settings["max_agents"] = 3;
  const int64_t round = fleet.admin({{"command", "round.start"}, {"settings", settings}})["round"].get<int64_t>();
  uint64_t sequence = uint64_t{1} << 62;
  OutgoingMessage hello;
  auto body = hello.body().initHello();
  body.setName("probe");
  auto profile = body.initProfile();
  profile.setArch(std::string("\xFF\xFE"));
  profile.setVersion(std::string(100000, 'v'));
  auto labels = profile.initLabels(2);
  labels.set(0, "pi4");
  labels.set(1, std::string("\xC3"));
  probe.send_raw(hello.encode(sequence++));
  CHECK(probe.reply() == std::make_pair(std::string("welcome"), -1));
  OutgoingMessage error;
  error.body().initError().setMessage("disk full\nround 99: done\x1B[2J");
  probe.send_raw(error.encode(sequence++));

  const std::string replacement = "\xEF\xBF\xBD";
  nlohmann::json listed;
  const nlohmann::json agents = fleet.admin({{"command", "agents.list"}})["agents"];
  for (const auto& agent : agents) {
    if (agent["name"] == euros.substr(0, 126)) listed = agent;  // cut at a character boundary
  }
  REQUIRE_MESSAGE(listed.is_object(), agents.dump());
  CHECK(listed["profile"]["arch"] == replacement + replacement);
  CHECK(listed["profile"]["version"].get<std::string>().size() == 64);
  CHECK(listed["profile"]["labels"] == nlohmann::json{"pi4", replacement});
  // The daemon kept serving the honest agents: the round completes without the attacker.
  const nlohmann::json report = fleet.wait_round(round, std::chrono::seconds(90));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 3);
  // The operator's audit listing and the coordinator's log keep the agent's text on one line.
  const auto audit = run_command(built_binary("fedcal-coordinator") + " --config " + fleet.path("coordinator.toml") + " audit");
  REQUIRE(audit.exit_code == 0);
  CHECK(audit.output.find("disk full\\nround 99: done\\x1b[2J") != std::string::npos);
  CHECK(audit.output.find("\nround 99") == std::string::npos);
  std::ifstream log(fleet.path("coordinator.log"));
  const std::string log_text{std::istreambuf_iterator<char>(log), {}};
  CHECK(log_text.find("disk full\\nround 99: done\\x1b[2J") != std::string::npos);
  CHECK(log_text.find("\nround 99") == std::string::npos);
  CHECK(log_text.find('\x1B') == std::string::npos);
}

TEST_CASE("An announced agent that heartbeats but never joins does not hold the round: it starts with the joined agents after "
          "the grace" *
          doctest::timeout(120) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  options.join_grace_ms = 2000;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  ProbeClient idler(fleet, "idler");
  uint64_t sequence = uint64_t{1} << 62;
  idler.keep_alive(&sequence);
  OutgoingMessage hello;
  hello.body().initHello().setName("idler");
  idler.send_raw(hello.encode(sequence++));
  REQUIRE(idler.wait_for("welcome"));
  fleet.start_agents();
  fleet.wait_online(4);
  const int64_t model = fleet.import_model();
  const int64_t id = fleet.admin({{"command", "round.start"}, {"settings", round_settings(model)}})["round"].get<int64_t>();
  REQUIRE(idler.wait_for("roundAnnounce"));
  // The idler stays online (heartbeats) and never joins; the join timeout is 60 s.
  const auto started = std::chrono::steady_clock::now();
  nlohmann::json status;
  while (std::chrono::steady_clock::now() - started < std::chrono::seconds(40)) {
    idler.wait_for("nothing", std::chrono::milliseconds(1500));  // heartbeats every 500 ms meanwhile
    status = fleet.admin({{"command", "round.status"}, {"id", id}});
    if (status["stage"] == "done" || status["stage"] == "failed") break;
  }
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  CHECK(status["contributors"] == 3);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(30));
  CHECK(read_log(fleet).find("the others did not join within") != std::string::npos);
}

TEST_CASE("A participant that joins with low-order X25519 keys is refused, and the round completes without it" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  RoundBesideRawClient attack(3);  // the attacker never counts
  // All zero: every agreement would fail.
  attack.raw->send_raw(join_bytes(attack.round, Key32{}, Key32{}, true, attack.sequence++));
  std::optional<std::pair<std::string, int>> reply;
  do reply = attack.raw->reply();
  while (reply && reply->first != "error");
  CHECK(reply == std::make_pair(std::string("error"), static_cast<int>(wire::ErrorReply::Code::BAD_MESSAGE)));
  CHECK(attack.report()["contributors"] == 3);
  CHECK(attack.audited("a low-order X25519 public key"));
}

TEST_CASE("A participant whose shares do not decrypt is named by its neighbours and excluded, and the round completes" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  RoundBesideRawClient attack(4);
  // Valid keys at join; then garbage where the encrypted shares belong.
  const DecodedEnvelope keys = attack.join(X25519KeyPair::generate().public_key(), X25519KeyPair::generate().public_key());
  const auto round_keys = keys.envelope().getBody().getRoundKeys();
  const uint32_t index = round_keys.getIndex();
  std::vector<EncryptedShare> garbage;
  for (const uint32_t holder : graph_neighbours(read_round_keys_config(round_keys, 3), index)) {
    garbage.push_back({index, holder, std::vector<uint8_t>(32 + 12 + 2 * 32 + 16, 0x5a)});  // an ephemeral key, then AES-GCM
  }
  attack.share_keys(garbage, std::nullopt);
  CHECK(attack.report()["contributors"] == 3);
  CHECK(attack.audited("does not decrypt: agent"));
  CHECK(attack.audited("excluded from round"));
  CHECK(attack.fleet->admin({{"command", "status"}})["online_agents"] >= 3);  // the honest agents
}

TEST_CASE(
    "A false complaint naming every neighbour is checked: their shares open, the complainer is left out, and the round "
    "completes" *
    doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  RoundBesideRawClient attack(4);
  attack.complain_falsely_about_every_share();
  // Was: the 3 honest agents excluded, and the round failed (fewer than 3 left).
  const nlohmann::json report = attack.report();
  CHECK(report["contributors"] == 3);
  CHECK(attack.audited("false complaint"));
  CHECK_FALSE(attack.audited("excluded from round"));
  // The first opening settled it: no other share of an honest agent was opened.
  const nlohmann::json complaints = report["secure_aggregation"]["complaints"];
  REQUIRE(complaints.size() == 1);
  CHECK(complaints[0]["excluded"] == complaints[0]["complainer"]);
  CHECK(complaints[0]["why"] == "a false complaint");
}

TEST_CASE("A participant that reveals wrong unmasking shares is outvoted and named, and the round completes" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  RoundBesideRawClient attack(4);
  // An honest participant up to unmasking, contributing zeros; every share it reveals is wrong.
  attack.participate(std::vector<uint64_t>(attack.round.vector_length, 0), /*wrong_reveals=*/true);
  CHECK(attack.report()["contributors"] == 4);  // its zeros are in the sum; its lies are not
  CHECK(attack.audited("wrong unmasking shares"));
}

TEST_CASE("A malformed admin request (two frames, not JSON, unknown command) is answered and the daemon carries on" *
          doctest::timeout(60) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 1;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fleet.wait_online(1);
  zmq::context_t context(1);
  zmq::socket_t admin(context, zmq::socket_type::req);
  admin.set(zmq::sockopt::linger, 0);
  const coordinator::AdminAccess access = coordinator::AdminAccess::read(fleet.coordinator_dir());
  access.configure_client(admin);
  admin.connect(access.endpoint);
  const auto reply = [&] {
    zmq::pollitem_t item{admin.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(3000));
    REQUIRE((item.revents & ZMQ_POLLIN));
    zmq::message_t message;
    (void)admin.recv(message);
    return nlohmann::json::parse(message.to_string_view());
  };
  admin.send(zmq::str_buffer(R"({"command": "status"})"), zmq::send_flags::sndmore);
  admin.send(zmq::str_buffer("extra"), zmq::send_flags::none);
  const nlohmann::json two_frames = reply();
  CHECK(two_frames["ok"] == false);
  CHECK(two_frames["error"].get<std::string>().find("one frame") != std::string::npos);
  admin.send(zmq::str_buffer("{not json"), zmq::send_flags::none);
  CHECK(reply()["ok"] == false);
  admin.send(zmq::str_buffer(R"({"command": "frobnicate"})"), zmq::send_flags::none);
  CHECK(reply()["error"] == "unknown command 'frobnicate'");
  CHECK(fleet.admin({{"command", "status"}}).contains("curve_public_key"));
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * options.agent_timeout_ms));  // its heartbeats kept being answered
  CHECK(fleet.admin({{"command", "status"}})["online_agents"] == 1);
}

TEST_CASE("Replay protection survives a coordinator restart and cannot lock an honest agent out" * doctest::timeout(120) *
          doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  SUBCASE("a hello replayed after a restart (SIGKILL) is refused, and the reply says where to continue") {
    ProbeClient probe(fleet);
    OutgoingMessage hello;
    hello.body().initHello().setName("probe");
    const auto bytes = hello.encode((uint64_t{1} << 62) + 7);
    probe.send_raw(bytes);
    REQUIRE(probe.reply() == std::make_pair(std::string("welcome"), -1));
    fleet.kill_coordinator();
    fleet.start_coordinator();
    ProbeClient again(fleet, CurveKeyPair::read(fleet.path("probe/curve.key")));
    again.send_raw(bytes);
    CHECK(again.reply() == std::make_pair(std::string("error"), static_cast<int>(wire::ErrorReply::Code::REPLAYED)));
  }
  SUBCASE("a message far ahead of an agent's counter (its key used elsewhere): the agent continues by itself") {
    fleet.start_agents();
    fleet.wait_online(3);
    ProbeClient ahead(fleet, CurveKeyPair::read(fleet.path("agent-0/state/curve.key")));
    OutgoingMessage heartbeat;
    heartbeat.body().initHeartbeat();
    ahead.send_raw(heartbeat.encode(uint64_t{1} << 62));  // every later number of the real agent is now "seen"
    CHECK(ahead.reply() == std::make_pair(std::string("heartbeat"), -1));
    // The real agent's next heartbeat is refused with the number to continue at; it does, and says hello again.
    const bool recovered = eventually(
        [&] {
          std::ifstream log(fleet.path("agent-0/agent.log"));
          const std::string text{std::istreambuf_iterator<char>(log), {}};
          return text.find("continuing at message number " + std::to_string((uint64_t{1} << 62) + 1)) != std::string::npos;
        },
        std::chrono::seconds(20));
    CHECK(recovered);
    const int64_t model = fleet.import_model();
    const nlohmann::json report = fleet.run_round(round_settings(model));
    CHECK(report["stage"] == "done");
    CHECK(report["contributors"] == 3);
  }
}

// `count` plain TCP connections to the coordinator at `endpoint` (tcp://HOST:PORT) from the
// loopback address `source`, which never say a word; closed when the object dies.
class IdleConnections {
 public:
  IdleConnections(const std::string& endpoint, const std::string& source, int count) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
    ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ::inet_pton(AF_INET, source.c_str(), &from.sin_addr);
    for (int i = 0; i < count; ++i) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);  // non-blocking: a full backlog cannot hang us
      REQUIRE(fd >= 0);
      fds_.push_back(fd);
      REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) == 0);
      const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to));
      REQUIRE((rc == 0 || errno == EINPROGRESS));
    }
  }
  ~IdleConnections() {
    for (const int fd : fds_) ::close(fd);
  }

 private:
  std::vector<int> fds_;
};

TEST_CASE("The agent's serving socket: only the key of serve.json gets answers, and 1,100 local connections neither stop the "
          "agent nor keep it from answering afterwards" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 1;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fleet.wait_online(1);
  const std::string access_path = fleet.path("agent-0/state/serve.json");
  REQUIRE(eventually([&] { return fs::exists(access_path); }, std::chrono::seconds(10)));
  CHECK((fs::status(access_path).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
  const char* no_model = "no active model yet";
  CHECK_THROWS_WITH_AS(edge_agent::local_request(access_path, {{"command", "score"}, {"text", "Once upon a time"}}),
                       doctest::Contains(no_model), Error);
  // Another key (another local user who learned the port and the server's key) gets nothing.
  LocalAccess stranger = LocalAccess::read(access_path, "fedcal-agent run");
  stranger.client = CurveKeyPair::generate();
  CHECK_THROWS_AS(json_request(stranger.endpoint, {{"command", "score"}, {"text", "x"}}, 1000, "fedcal-agent run",
                               [&](zmq::socket_t& socket) { stranger.configure_client(socket); }),
                  Error);

  // A flood of plain TCP connections, more than the agent's default soft file limit of 1,024.
  raise_file_limit();
  const int port = std::stoi(stranger.endpoint.substr(stranger.endpoint.rfind(':') + 1));
  std::vector<int> flood;
  for (int i = 0; i < 1100; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) flood.push_back(fd);
    else ::close(fd);
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  CHECK(fleet.agent(0).running());
  for (const int fd : flood) ::close(fd);
  CHECK(fleet.agent(0).running());
  CHECK_THROWS_WITH_AS(edge_agent::local_request(access_path, {{"command", "score"}, {"text", "Once upon a time"}}),
                       doctest::Contains(no_model), Error);
  CHECK(fleet.admin({{"command", "status"}})["online_agents"] == 1);
}

TEST_CASE("A flood of idle TCP connections from many addresses cannot take the coordinator's file descriptors or stop it" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 2;
  options.coordinator_file_limit = 128;  // agent connections: at most 64 (the rest is the reserve)
  options.coordinator_extra = "max_connections_per_address = 8\nhandshake_timeout_ms = 2000\n";
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fleet.wait_online(2);
  const std::string endpoint = fleet.admin({{"command", "status"}})["listen"].get<std::string>();
  {
    // 400 connections from 20 addresses: more than the process has descriptors. Before the guard,
    // the next admin call aborted the daemon inside libzmq (ipc accept failing with EMFILE).
    std::vector<std::unique_ptr<IdleConnections>> flood;
    for (int address = 2; address < 22; ++address) {
      flood.push_back(std::make_unique<IdleConnections>(endpoint, "127.0.0." + std::to_string(address), 20));
    }
    CHECK(eventually([&] { return read_log(fleet).find("new ones are cut") != std::string::npos; }, std::chrono::seconds(10)));
    // During the flood the admin socket may be unable to accept; it must not take the daemon down.
    for (int i = 0; i < 3; ++i) {
      try {
        fleet.admin({{"command", "status"}}, 1000);
      } catch (const std::exception&) {
      }
    }
  }
  // Still serving: the admin socket answers, both agents stayed online, and a new agent enrolls.
  const nlohmann::json status = fleet.admin({{"command", "status"}});
  CHECK(status["online_agents"] == 2);
  ProbeClient probe(fleet);
  OutgoingMessage hello;
  hello.body().initHello().setName("after the flood");
  probe.send_raw(hello.encode(uint64_t{1} << 62));  // above the enrollment's number
  CHECK(probe.wait_for("welcome"));
  fleet.admin({{"command", "shutdown"}});  // the totals are written at the latest when it stops
  CHECK(eventually([&] { return read_log(fleet).find("agent connections cut") != std::string::npos; }, std::chrono::seconds(10)));
}

// Agent i's check of the "fleet" package as its log prints it: KL and top-1 (a fraction).
std::pair<double, double> logged_check(MiniFleet& fleet, int i) {
  std::ifstream in(fleet.path("agent-" + std::to_string(i) + "/agent.log"));
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  const size_t at = text.rfind("fleet model: KL ");
  REQUIRE_MESSAGE(at != std::string::npos, text);
  const double kl = std::stod(text.substr(at + 16));
  const double top1 = std::stod(text.substr(text.find("top-1 ", at) + 6)) / 100;
  return {kl, top1};
}

TEST_CASE("A participant's forged local report is refused or counted as one agent's bounded share, and the round completes" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agent(0, "fault_injection = \"exit-after-checks\"\n");  // checks, then dies before reporting
  fleet.start_agent(1);
  fleet.start_agent(2);
  fleet.wait_online(3);
  const int64_t model = fleet.import_model();
  const int64_t round = fleet.admin({{"command", "round.start"}, {"settings", round_settings(model, 3)}})["round"].get<int64_t>();
  REQUIRE(fleet.agent(0).wait_exit(std::chrono::seconds(90)) == 17);

  // Agent 0's key in the attacker's hands: it reports what no check produced.
  ProbeClient forger(fleet, CurveKeyPair::read(fleet.path("agent-0/state/curve.key")));
  uint64_t sequence = uint64_t{1} << 62;
  const auto report = [&](std::initializer_list<const char*> labels, uint64_t tokens, double kl, double top1) {
    OutgoingMessage message;
    forged_local_report(message, round, labels, tokens, kl, top1);
    forger.send_raw(message.encode(sequence++));
  };
  const auto bad_message = std::make_pair(std::string("error"), static_cast<int>(wire::ErrorReply::Code::BAD_MESSAGE));
  report({"fleet", "fleet"}, 100, 0.0, 1.0);  // the same label twice
  // On a new connection for agent 0's key, the round first sends again what agent 0 still lacks.
  CHECK(forger.reply() == std::make_pair(std::string("roundResult"), -1));
  CHECK(forger.reply() == bad_message);
  report({"fleet"}, uint64_t{1000000000000000000}, 0.0, 1.0);  // 10^18 tokens
  CHECK(forger.reply() == bad_message);
  report({"fleet"}, 4096, 0.0, 1.0);  // perfect figures, within bounds: one agent's share, acknowledged
  CHECK(forger.reply() == std::make_pair(std::string("roundAck"), -1));
  CHECK_FALSE(forger.reply(std::chrono::milliseconds(1000)).has_value());

  const nlohmann::json status = fleet.wait_round(round, std::chrono::seconds(60));
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  const nlohmann::json checks = status["checks"]["fleet"];
  CHECK(checks["agents"] == 3);
  const auto [kl1, top1_1] = logged_check(fleet, 1);
  const auto [kl2, top1_2] = logged_check(fleet, 2);
  CHECK(kl1 > 0);
  // The forged KL 0 and top-1 1.0 count as one agent of three, no more.
  CHECK(checks["mean_kl"].get<double>() == doctest::Approx((kl1 + kl2 + 0.0) / 3).epsilon(1e-3));
  CHECK(checks["top1_agreement"].get<double>() == doctest::Approx((top1_1 + top1_2 + 1.0) / 3).epsilon(1e-3));
  CHECK(fleet.admin({{"command", "audit"}, {"limit", 100}}).dump().find("checked twice") != std::string::npos);
}

// Resident memory of a process, in bytes (/proc/PID/status VmRSS).
int64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  FAIL("no VmRSS for process " << pid);
  return 0;
}

TEST_CASE("An enrolled agent gets chunks only of what it was assigned, and requesting them without reading holds a bounded share "
          "of the coordinator's memory" *
          doctest::timeout(120) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 0;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  const int64_t model = fleet.import_model();
  const std::string sha = fleet.admin({{"command", "models.list"}})["models"][0]["sha256"].get<std::string>();
  REQUIRE(fleet.admin({{"command", "models.list"}})["models"][0]["id"] == model);
  ProbeClient hoarder(fleet, "hoarder", /*receive_queue=*/1);
  uint64_t sequence = uint64_t{1} << 62;
  OutgoingMessage hello;
  hello.body().initHello().setName("hoarder");
  hoarder.send_raw(hello.encode(sequence++));
  REQUIRE(hoarder.wait_for("welcome"));
  const auto request_chunk = [&] {
    OutgoingMessage request;
    auto body = request.body().initChunkRequest();
    body.setSha256(sha);
    body.setOffset(0);
    body.setLength(1 << 20);
    hoarder.send_raw(request.encode(sequence++));
  };
  // An agent gets only what it was assigned: nothing yet.
  request_chunk();
  CHECK(hoarder.reply() == std::make_pair(std::string("error"), static_cast<int>(wire::ErrorReply::Code::NOT_FOUND)));
  // A round announced to it assigns it the round's model.
  fleet.admin({{"command", "round.start"}, {"settings", round_settings(model, 2)}});
  REQUIRE(hoarder.wait_for("roundAnnounce"));
  request_chunk();
  CHECK(hoarder.reply() == std::make_pair(std::string("chunk"), -1));
  const int64_t before = resident_bytes(fleet.coordinator().pid());
  // 1,000 requests of 1 MiB each (the coordinator's chunk size), none of the replies read.
  const int requests = 1000;
  for (int i = 0; i < requests; ++i) request_chunk();
  // Every request handled: the coordinator answers the admin socket from the same loop, after them.
  std::this_thread::sleep_for(std::chrono::seconds(2));
  REQUIRE(fleet.admin({{"command", "status"}}).contains("online_agents"));  // it still answers
  const int64_t grown = resident_bytes(fleet.coordinator().pid()) - before;
  MESSAGE("coordinator memory grew by " << grown / (1 << 20) << " MiB for " << requests << " unread 1 MiB chunk replies");
  CHECK(grown < int64_t{128} << 20);  // 16 queued replies of 1 MiB, and the allocator's slack (was ~1 GiB)
  CHECK(read_log(fleet).find("cannot deliver a message") != std::string::npos);
}

TEST_CASE("An agent's flood of error messages is recorded within its budget and cannot push enrollments or exclusions out of "
          "the audit log" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 2;
  options.coordinator_extra = "refusals_per_window = 5\nrate_window_ms = 3000\naudit_max_entries = 100\n";
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fleet.wait_online(2);
  const auto audit = [&fleet] { return fleet.admin({{"command", "audit"}, {"limit", 1000}}); };
  const auto count = [](const nlohmann::json& entries, const std::string& event) {
    return std::count_if(entries["audit"].begin(), entries["audit"].end(),
                         [&](const nlohmann::json& entry) { return entry["event"] == event; });
  };
  REQUIRE(count(audit(), "enrolled") == 2);

  // 2,000 error messages from one enrolled agent, well within what its connection may send.
  ProbeClient flooder(fleet, "flooder");
  uint64_t sequence = uint64_t{1} << 62;
  OutgoingMessage hello;
  hello.body().initHello().setName("flooder");
  flooder.send_raw(hello.encode(sequence++));
  REQUIRE(flooder.wait_for("welcome"));
  for (int i = 0; i < 2000; ++i) {
    OutgoingMessage error;
    error.body().initError().setMessage("disk full " + std::to_string(i));
    flooder.send_raw(error.encode(sequence++));
  }
  // Once its window ends, one entry sums up the rest.
  CHECK(eventually([&] { return count(audit(), "error messages over budget") == 1; }, std::chrono::seconds(15)));
  const nlohmann::json entries = audit();
  CHECK(count(entries, "agent error") == 5);
  CHECK(count(entries, "enrolled") == 3);  // the two agents and the flooder, still there
  CHECK(entries.dump().find("1995 more error messages of agent") != std::string::npos);
  CHECK(fleet.admin({{"command", "status"}})["online_agents"] >= 2);
}

TEST_CASE("A flood of refused messages is answered and recorded within a budget per key and address, then summed up" *
          doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 2;
  options.coordinator_extra = "refusals_per_window = 5\nrate_window_ms = 5000\n";
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fleet.wait_online(2);
  const int64_t audit_before = fleet.admin({{"command", "status"}})["audit_entries"].get<int64_t>();

  // One enrolled key replays the same message 600 times: 5 are answered, the rest dropped.
  ProbeClient flooder(fleet, "flooder");
  OutgoingMessage hello;
  hello.body().initHello().setName("flooder");
  const auto hello_bytes = hello.encode(uint64_t{1} << 62);
  flooder.send_raw(hello_bytes);
  REQUIRE(flooder.wait_for("welcome"));
  for (int i = 0; i < 600; ++i) flooder.send_raw(hello_bytes);
  int answered = 0;
  while (flooder.reply(std::chrono::milliseconds(1000))) ++answered;
  CHECK(answered == 5);

  // Fresh keys from the same address, each enrolling with a bad token: the address's budget holds.
  std::vector<std::unique_ptr<ProbeClient>> strangers;
  for (int i = 0; i < 12; ++i) {
    strangers.push_back(std::make_unique<ProbeClient>(fleet, CurveKeyPair::generate()));
    OutgoingMessage enroll;
    auto body = enroll.body().initEnroll();
    body.setToken("not-a-token");
    body.setName("stranger");
    strangers.back()->send_raw(enroll.encode(1));
  }
  int enroll_answers = 0;
  for (auto& stranger : strangers) enroll_answers += stranger->reply(std::chrono::milliseconds(300)).has_value();
  CHECK(enroll_answers <= 5);
  // Nothing is kept for the unknown keys: replay state is held for the 3 enrolled keys only.
  CHECK(fleet.admin({{"command", "status"}})["replay_state_keys"] == 3);

  // The honest agents were served throughout, and the daemon answers.
  CHECK(fleet.admin({{"command", "status"}})["online_agents"] >= 2);
  // Once the window ends, one entry per source sums up what was dropped.
  CHECK(eventually(
      [&] {
        const std::string audit = fleet.admin({{"command", "audit"}, {"limit", 100}}).dump();
        return audit.find("past its budget of 5") != std::string::npos && audit.find("refusals over budget") != std::string::npos;
      },
      std::chrono::seconds(10)));
  const int64_t audit_after = fleet.admin({{"command", "status"}})["audit_entries"].get<int64_t>();
  CHECK(audit_after - audit_before < 40);
}

TEST_CASE(
    "Daemon conventions: --version, SIGHUP ignored, --json anywhere, bad values named, the CLI fails at once without its daemon" *
    doctest::timeout(60)) {
  for (const char* binary : {"fedcal-coordinator", "fedcal-agent", "fedcal-model"}) {
    const auto version = run_command(built_binary(binary) + " --version");
    CHECK(version.exit_code == 0);
    CHECK(version.output == std::string(binary) + " " + FEDCAL_VERSION + "\n");
  }
  FleetOptions options;
  options.agents = 1;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  fleet.wait_online(1);
  fleet.coordinator().signal(SIGHUP);
  fleet.agent(0).signal(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * options.agent_timeout_ms));
  CHECK(fleet.coordinator().running());
  CHECK(fleet.agent(0).running());
  CHECK(fleet.admin({{"command", "status"}})["online_agents"] == 1);
  CHECK(read_log(fleet).find("SIGHUP ignored") != std::string::npos);
  std::ifstream agent_log(fleet.path("agent-0/agent.log"));
  CHECK(std::string(std::istreambuf_iterator<char>(agent_log), {}).find("SIGHUP ignored") != std::string::npos);

  // --json after the subcommand too; a value that is not a percentage is refused by name.
  const std::string cli = built_binary("fedcal-coordinator") + " --config " + fleet.path("coordinator.toml");
  const auto keys = run_command(cli + " keys --json");
  CHECK(keys.exit_code == 0);
  CHECK(nlohmann::json::parse(keys.output, nullptr, false).contains("curve_public_key"));
  // Values with a unit are checked as they are parsed: a usage error (exit 2) naming the option.
  const auto waves = run_command(cli + " rollout start --model 1 --waves 5%,abc", true);
  CHECK(waves.exit_code == 2);
  CHECK(waves.output.find("--waves: 'abc' is not a percentage") != std::string::npos);
  const auto soak = run_command(cli + " rollout start --model 1 --soak 30x", true);
  CHECK(soak.exit_code == 2);
  CHECK(soak.output.find("--soak: '30x' is not a duration") != std::string::npos);
  const int64_t model = fleet.import_model();
  const auto rollout = run_command(cli + " rollout start --json --model " + std::to_string(model) +
                                   " --waves 50,100% --min-healthy 75% --soak 2min --wave-timeout 1.5h");
  REQUIRE(rollout.exit_code == 0);
  const nlohmann::json rollout_settings = nlohmann::json::parse(rollout.output)["settings"];
  CHECK(rollout_settings["soak_ms"] == 120000);
  CHECK(rollout_settings["wave_timeout_ms"] == 5400000);
  CHECK(rollout_settings["min_healthy"] == 75.0);
  CHECK(rollout_settings["waves"] == nlohmann::json::array({50.0, 100.0}));
  CHECK(run_command(cli + " rollout abort").exit_code == 0);
  // A round that needs more agents than are online starts, with a warning.
  const auto start = run_command(cli + " round start --model " + std::to_string(model) + " --min-agents 3", true);
  CHECK(start.exit_code == 0);
  CHECK(start.output.find("warning: 1 agent(s) online, the round needs at least 3") != std::string::npos);
  // With no recipe option, the engine's recipe, printed; without reference_text no smoothing or target.
  CHECK(start.output.find("[recipe] recipe recommended for runtime engine") != std::string::npos);
  CHECK_MESSAGE(
      start.output.find("chosen: method = \"mse\", per_channel = true, fallback = \"fine-grained\"") != std::string::npos,
      start.output);
  CHECK(start.output.find("without smoothing and without a KL target") != std::string::npos);

  fleet.kill_coordinator();  // admin.json stays behind, naming a port nobody listens on
  const auto started = std::chrono::steady_clock::now();
  const auto listing =
      run_command(built_binary("fedcal-coordinator") + " --config " + fleet.path("coordinator.toml") + " agents list", true);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
  CHECK(listing.exit_code != 0);
  CHECK(listing.output.find("nothing listens on tcp://127.0.0.1:") != std::string::npos);
}

TEST_CASE("A handler that throws something other than fedcal::Error does not stop the coordinator" * doctest::timeout(60) *
          doctest::test_suite("fleet robustness")) {
  FleetOptions options;
  options.agents = 0;
  options.coordinator_fault_injection = "throw-on-agent-error";  // that handler throws std::logic_error
  MiniFleet fleet(options);
  fleet.start_coordinator();
  ProbeClient probe(fleet);
  uint64_t sequence = uint64_t{1} << 62;
  OutgoingMessage error;
  error.body().initError().setMessage("disk full");
  probe.send_raw(error.encode(sequence++));
  CHECK(probe.reply() == std::make_pair(std::string("error"), static_cast<int>(wire::ErrorReply::Code::INTERNAL)));
  // Still serving: the admin socket answers, and the same agent's next message is handled.
  CHECK(fleet.admin({{"command", "status"}}).contains("curve_public_key"));
  OutgoingMessage hello;
  hello.body().initHello().setName("probe");
  probe.send_raw(hello.encode(sequence++));
  CHECK(probe.reply() == std::make_pair(std::string("welcome"), -1));
  const std::string audit = fleet.admin({{"command", "audit"}, {"limit", 20}}).dump();
  CHECK(audit.find("internal error") != std::string::npos);
  CHECK(audit.find("fault injection: throw-on-agent-error") != std::string::npos);
}

TEST_CASE(
    "Fleet round with distributed DP: noise reaches the aggregate, and too little data for the budget fails with the reason" *
    doctest::timeout(120)) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["dp_epsilon"] = 8.0;
  const nlohmann::json report = fleet.run_round(settings);
  // Worst-case sensitivity of one 64-token sequence is ~145,000 counts, so the noise (stddev ~90,000
  // per count at epsilon 8) dwarfs 3 agents x 10 sequences of signal: no model is built from it.
  CHECK(report["stage"] == "failed");
  CHECK(report["failure"].get<std::string>().find("too little data for that budget") != std::string::npos);
  CHECK(report["differential_privacy"]["epsilon"] == 8.0);
  CHECK(report["differential_privacy"]["delta"] == 1e-5);
  CHECK(report["differential_privacy"]["noise_stddev_per_agent"].get<double>() > 10000);
  std::string all;
  for (int i = 0; i < 3; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string exact = calibrate_centrally(fleet, fp32_package_path(fleet, model), all, 3 * kSequences, "central");
  const CalibrationStats noised = read_stats(fleet.coordinator_dir() + "/artifacts/round-1.stats");
  const CalibrationStats truth = read_stats(exact);
  CHECK(noised.counts != truth.counts);
  CHECK(noised.sequences == truth.sequences);  // the totals carry no noise
}

#ifdef FEDCAL_AARCH64_BUILD

// The aarch64 cross build (deploy/cross/build-aarch64.sh) run under qemu-aarch64-static.
// `binary` of the aarch64 build under qemu; `cpu` (e.g. cortex-a72, a Raspberry Pi 4's core: no dot
// product) or qemu's default, which has every extension.
std::vector<std::string> aarch64_launcher(const std::string& binary, const std::string& cpu = "") {
  const std::string build = FEDCAL_AARCH64_BUILD;
  const std::string libraries = build + "/sysroot/usr/lib/aarch64-linux-gnu:" + build + "/sysroot/lib/aarch64-linux-gnu";
  std::vector<std::string> argv = {"/usr/bin/env", "QEMU_LD_PREFIX=/usr/aarch64-linux-gnu", "LD_LIBRARY_PATH=" + libraries,
                                   "qemu-aarch64-static"};
  if (!cpu.empty()) argv.insert(argv.end(), {"-cpu", cpu});
  argv.push_back(build + "/bin/" + binary);
  return argv;
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& arg : argv) out += "'" + arg + "' ";
  return out;
}

TEST_CASE("Fleet round: an agent too old to mask in 32-bit lanes makes the round use 64-bit lanes for everyone" *
          doctest::timeout(120)) {
  FleetOptions options;
  options.agents = 3;
  options.stage_timeout_ms = 3000;  // the old agent never sends its shares: the round goes on without it
  options.agent_timeout_ms = 60000;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  // The "old agent": an enrolled client whose join leaves narrowLanes unset, as an agent built before
  // the field existed sends it.
  ProbeClient old_agent(fleet);
  uint64_t sequence = uint64_t{1} << 62;
  const RawClientRound round = start_round_beside(fleet, old_agent, sequence, 4, 4);
  old_agent.send_raw(join_bytes(round, X25519KeyPair::generate().public_key(), X25519KeyPair::generate().public_key(),
                                /*narrow_lanes=*/false, sequence++));
  REQUIRE(old_agent.wait_for("roundKeys"));

  const nlohmann::json report = fleet.wait_round(round.id, std::chrono::seconds(90));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["secure_aggregation"]["participants"] == 4);
  CHECK(report["secure_aggregation"]["lane_bits"] == 64);
  CHECK(report["contributors"] == 3);
}

TEST_CASE(
    "Heterogeneous fleet: an aarch64 agent under qemu (a Cortex-A72: no INT8 dot product) joins a round next to x86-64 "
    "agents, the aggregate is exact, and one round makes a package per device class that the rollout hands out" *
    doctest::timeout(400)) {
  FleetOptions options;
  options.agents = 4;
  options.agent_timeout_ms = 5000;  // emulated, the aarch64 agent is ~100x slower
  MiniFleet fleet(options);
  fleet.start_coordinator();
  for (int i = 0; i < 3; ++i) fleet.start_agent(i);
  // Emulated, it checks each package on 64 held-out tokens, not 256 (20 s of the test's 52 s were its checks).
  fleet.start_agent(3, "eval_max_tokens = 64", aarch64_launcher("fedcal-agent", "cortex-a72"));
  fleet.wait_online(4, std::chrono::seconds(60));
  const nlohmann::json agents = fleet.admin({{"command", "agents.list"}});
  std::set<std::string> arches;
  int64_t arm_agent = 0;
  for (const auto& agent : agents["agents"]) {
    arches.insert(agent["profile"]["arch"].get<std::string>());
    if (agent["profile"]["arch"] == "aarch64") {
      arm_agent = agent["id"].get<int64_t>();
      const auto& isa = agent["profile"]["isa_features"];
      CHECK(std::find(isa.begin(), isa.end(), "neon") != isa.end());
      CHECK(std::find(isa.begin(), isa.end(), "dotprod") == isa.end());  // a Cortex-A72 has none
    }
  }
  CHECK(arches == std::set<std::string>{"aarch64", "x86_64"});

  // A package with fine-grained layers (the engine recipe's fallback): the round also builds a static
  // one for the device without a dot product, and that device checks it.
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["fine_grained"] = {"layers.0.w2", "classifier"};
  const nlohmann::json report = fleet.run_round(settings, std::chrono::seconds(300));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 4);
  const nlohmann::json fleet_result = result_model(report, "fleet"), static_result = result_model(report, "class:static");
  const int64_t fleet_package = fleet_result["model"].get<int64_t>(), static_package = static_result["model"].get<int64_t>();
  const std::string fleet_sha = fleet_result["sha256"].get<std::string>(), static_sha = static_result["sha256"].get<std::string>();
  CHECK(report["checks"]["fleet"]["agents"] == 3);
  CHECK(report["checks"]["class:static"]["agents"] == 1);
  CHECK(report["checks"]["class:static"]["mean_kl"].get<double>() < 0.05);
  // The rollout of the fleet package hands each device class its package.
  const nlohmann::json rollout = fleet.run_rollout({{"model_id", fleet_package},
                                                    {"waves", {100.0}},
                                                    {"max_kl", 0.05},
                                                    {"max_slowdown", 50.0},
                                                    {"min_healthy", 100.0},
                                                    {"wave_timeout_ms", 240000},
                                                    {"soak_ms", 0}},
                                                   std::chrono::seconds(300));
  REQUIRE_MESSAGE(rollout["stage"] == "done", rollout.dump(2));
  CHECK(rollout["static_model"] == static_package);
  for (const auto& target : rollout["agents"]) {
    const bool arm = target["agent"] == arm_agent;
    CHECK(target["package"] == (arm ? "class:static" : "fleet"));
    CHECK(target["report"]["active_sha256"] == (arm ? static_sha : fleet_sha));
  }

  // Each device's statistics, computed by that device's own build: x86 natively, aarch64 under qemu.
  const std::string fp32 = fp32_package_path(fleet, model);
  std::string x86_text;
  for (int i = 0; i < 3; ++i) x86_text += fleet.calibration_text(i, kSequences);
  const std::string x86 = calibrate_centrally(fleet, fp32, x86_text, 3 * kSequences, "x86");
  write_text(fleet.path("arm.txt"), fleet.calibration_text(3, kSequences));
  const auto arm = run_command(join_command(aarch64_launcher("fedcal-model")) + "calibrate --quiet --threads 1 --model " + fp32 +
                                   " --text " + fleet.path("arm.txt") + " --sequences " + std::to_string(kSequences) +
                                   " --seq-len " + std::to_string(kSeqLen) + " -o " + fleet.path("arm.stats"),
                               true);
  REQUIRE_MESSAGE(arm.exit_code == 0, arm.output);
  const auto merged = run_command(
      built_binary("fedcal-model") + " merge-stats " + x86 + " " + fleet.path("arm.stats") + " -o " + fleet.path("merged.stats"),
      true);
  REQUIRE_MESSAGE(merged.exit_code == 0, merged.output);
  // Integer counts add up exactly whatever kernels produced them.
  CHECK(read_bytes(fleet.coordinator_dir() + "/artifacts/round-1.stats") == read_bytes(fleet.path("merged.stats")));

  // NEON and AVX FP32 kernels round differently, so a few values land in a neighbouring bucket.
  const std::string x86_of_arm_shard =
      calibrate_centrally(fleet, fp32, fleet.calibration_text(3, kSequences), kSequences, "x86-arm-shard");
  const CalibrationStats on_x86 = read_stats(x86_of_arm_shard), on_arm = read_stats(fleet.path("arm.stats"));
  uint64_t moved = 0, total = 0;
  for (size_t i = 0; i < on_x86.counts.size(); ++i) {
    moved += on_x86.counts[i] > on_arm.counts[i] ? on_x86.counts[i] - on_arm.counts[i] : 0;
    total += on_x86.counts[i];
  }
  MESSAGE("aarch64 vs x86-64 statistics of the same text: " << moved << " of " << total << " values in another bucket");
  CHECK(moved * 1000 < total);  // well under 0.1%
}

#endif  // FEDCAL_AARCH64_BUILD

TEST_CASE("Fleet round with a device group: its agents get and check their own variant of the package" * doctest::timeout(120)) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agent(0);
  fleet.start_agent(1);
  fleet.start_agent(2, "labels = [\"lowram\"]");
  fleet.wait_online(3);
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);  // per-channel by default
  settings["group_variants"] = {{"lowram", {{"per_channel", false}, {"keep_fp32", {"classifier"}}}}};
  const nlohmann::json report = fleet.run_round(settings);
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  std::map<std::string, nlohmann::json> models;
  for (const auto& entry : report["models"]) models[entry["label"].get<std::string>()] = entry;
  REQUIRE(models.count("fleet") == 1);
  REQUIRE(models.count("group:lowram") == 1);
  CHECK(models["fleet"]["sha256"] != models["group:lowram"]["sha256"]);
  CHECK(models["group:lowram"]["description"].get<std::string>().find("per-tensor, FP32: classifier") != std::string::npos);
  CHECK(report["checks"]["fleet"]["agents"] == 2);
  CHECK(report["checks"]["group:lowram"]["agents"] == 1);
  // The group's package keeps the classifier in FP32, so it is larger.
  CHECK(models["group:lowram"]["bytes"].get<int64_t>() > models["fleet"]["bytes"].get<int64_t>());
}

TEST_CASE("Fleet round with fine-grained layers: the package mixes static and fine-grained layers, and the agents' check is closer to FP32" *
          doctest::timeout(120)) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  for (int i = 0; i < 3; ++i) fleet.start_agent(i);
  fleet.wait_online(3);
  const int64_t model = fleet.import_model();
  const nlohmann::json plain = fleet.run_round(round_settings(model));
  REQUIRE_MESSAGE(plain["stage"] == "done", plain.dump(2));
  // The layers that lose the most in static INT8 (docs/QUANTIZATION.md): every down projection and the classifier.
  nlohmann::json settings = round_settings(model);
  settings["fine_grained"] = {"layers.0.w2", "layers.1.w2", "layers.2.w2", "layers.3.w2", "classifier"};
  const nlohmann::json mixed = fleet.run_round(settings);
  REQUIRE_MESSAGE(mixed["stage"] == "done", mixed.dump(2));
  std::string description;
  for (const auto& entry : mixed["models"]) {
    if (entry["label"] == "fleet") description = entry["description"].get<std::string>();
  }
  CHECK(description.find("fine-grained: classifier layers.0.w2 layers.1.w2 layers.2.w2 layers.3.w2,") != std::string::npos);
  const double plain_kl = plain["checks"]["fleet"]["mean_kl"].get<double>(), mixed_kl = mixed["checks"]["fleet"]["mean_kl"].get<double>();
  MESSAGE("agents' check, fleet package: KL " << plain_kl << " static, " << mixed_kl << " with 5 layers fine-grained");
  CHECK(mixed["checks"]["fleet"]["agents"] == 3);
  CHECK(mixed_kl < 0.6 * plain_kl);
}

TEST_CASE(
    "Fleet round with 4-bit weights: rounded by the fleet's importance sums, the package equals fedcal-model quantize "
    "--weight-bits 4 on the union of the agents' text bit for bit, the agents check it, and a rollout takes it" *
    doctest::timeout(180)) {
  FleetOptions options;
  options.agents = 3;
  options.reference_text = true;  // and the baseline on public text
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["weight_bits"] = 4;
  settings["fine_grained"] = {"classifier"};
  const nlohmann::json report = fleet.run_round(settings);
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 3);
  const nlohmann::json fleet_model = result_model(report, "fleet");
  CHECK(fleet_model["description"].get<std::string>().find(
            "4-bit weights in groups of 32 (non-uniform grid, importance-weighted rounding)") != std::string::npos);
  // The baseline on the public text rounds by that text's importance sums (it was rounded plainly, so
  // the report compared the fleet's statistics with no statistics).
  CHECK(result_model(report, "public")["description"].get<std::string>().find("importance-weighted rounding") !=
        std::string::npos);
  // The agents' local checks of the 4-bit package.
  CHECK(report["checks"]["fleet"]["agents"] == 3);
  const double kl = report["checks"]["fleet"]["mean_kl"].get<double>();
  MESSAGE("agents' check of the 4-bit package: mean KL " << kl);
  CHECK(kl > 0.0);
  CHECK(report["checks"]["fleet"]["top1_agreement"].get<double>() > 0.8);

  // Centralized: the union of the agents' text with importance sums, then the same quantization.
  const std::string fp32 = fp32_package_path(fleet, model);
  std::string all;
  for (int i = 0; i < options.agents; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string central = calibrate_centrally(fleet, fp32, all, kSequences * options.agents, "central", "--importance");
  const std::string round = std::to_string(report["round"].get<int64_t>());
  CHECK(read_bytes(fleet.coordinator_dir() + "/artifacts/round-" + round + ".stats") == read_bytes(central));
  const std::string central_package = fleet.path("central.fcpkg");
  const auto quantize = run_command(built_binary("fedcal-model") + " quantize --threads 1 --model " + fp32 + " --stats " +
                                        central + " --weight-bits 4 --fine-grained classifier --per-channel --sign " +
                                        fleet.coordinator_dir() + "/signing.key -o " + central_package,
                                    true);
  REQUIRE_MESSAGE(quantize.exit_code == 0, quantize.output);
  CHECK(sha256_file_hex(central_package) == fleet_model["sha256"].get<std::string>());
  const auto inspect = run_command(built_binary("fedcal-model") + " inspect --tensors --model " + central_package, true);
  CHECK(inspect.output.find("qgnl4") != std::string::npos);

  // A rollout of it.
  nlohmann::json rollout_settings = {
      {"model_id", fleet_model["model"]}, {"waves", {100.0}}, {"max_slowdown", 50.0}, {"max_kl", 50.0}, {"soak_ms", 0}};
  const nlohmann::json rollout = fleet.run_rollout(rollout_settings);
  REQUIRE_MESSAGE(rollout["stage"] == "done", rollout.dump(2));
  for (const auto& agent : fleet.admin({{"command", "agents.list"}})["agents"])
    CHECK(agent["active_model"] == fleet_model["sha256"]);
}

// The follow-up round the coordinator starts after smoothing round `smoothing` (polled on round.status).
// Its quantizing stage with target_kl runs ~150 forward passes of the reference windows: seconds in the
// optimized build, 156 s alone and over 180 s beside other tests under ASan on an AVX2-only VM.
nlohmann::json follow_up_of(MiniFleet& fleet, int64_t smoothing) {
  int64_t next = 0;
  REQUIRE(eventually(
      [&] {
        const nlohmann::json latest = fleet.admin({{"command", "round.status"}});
        if (latest["round"].get<int64_t>() > smoothing && latest["settings"]["smoothing_round"] == smoothing) next = latest["round"].get<int64_t>();
        return next != 0;
      },
      std::chrono::seconds(60)));
  return fleet.wait_round(next, std::chrono::seconds(480));
}

TEST_CASE(
    "Fleet round with the engine's recommended recipe (no recipe option given: smoothing, mse per-channel, target KL "
    "'dynamic*0.8', fine-grained fallback): importance sums, a smoothed FP32 model, a follow-up round on it whose mixed "
    "package is at least as faithful as the dynamic baseline on the agents' held-out text" *
    doctest::timeout(700)) {
  FleetOptions options;
  options.agents = 3;
  options.reference_text = true;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  for (int i = 0; i < 3; ++i) fleet.start_agent(i);
  fleet.wait_online(3);
  const int64_t model = fleet.import_model();
  // What `round start` sends with no recipe option: the runtime (engine) and recipe "recommended".
  nlohmann::json settings = round_settings(model);
  settings.erase("method");
  settings.erase("per_channel");
  settings["recipe"] = "recommended";
  const nlohmann::json smoothing = fleet.run_round(settings);
  REQUIRE_MESSAGE(smoothing["stage"] == "done", smoothing.dump(2));
  const nlohmann::json& chosen = smoothing["settings"];
  CHECK(chosen["runtime"] == "engine");
  CHECK(chosen["method"] == "mse");
  CHECK(chosen["per_channel"] == true);
  CHECK(chosen["smooth"] == true);
  CHECK(chosen["target_kl"] == "dynamic*0.8");
  CHECK(chosen["fallback"] == "fine-grained");
  REQUIRE(chosen["recipe_notes"].size() == 1);
  CHECK(chosen["recipe_notes"][0].get<std::string>().find("recipe recommended for runtime engine") != std::string::npos);
  // Its result is an FP32 model: every site of the 4 layers measured, the choices in the report.
  REQUIRE(smoothing["models"].size() == 1);
  CHECK(smoothing["models"][0]["label"] == "smoothed");
  const int64_t smoothed_model = smoothing["models"][0]["model"].get<int64_t>();
  CHECK(smoothing["smoothing"]["model"] == smoothed_model);
  CHECK(smoothing["smoothing"]["sites"].size() == 16);
  CHECK(smoothing["reports"] == 0);  // nothing to check: the package comes from the follow-up
  CHECK(smoothing["checks"].empty());
  const nlohmann::json models = fleet.admin({{"command", "models.list"}});
  bool listed = false;
  for (const auto& entry : models["models"]) {
    if (entry["id"] == smoothed_model) listed = entry["kind"] == "fp32";
  }
  CHECK(listed);

  const nlohmann::json follow_up = follow_up_of(fleet, smoothing["round"].get<int64_t>());
  REQUIRE_MESSAGE(follow_up["stage"] == "done", follow_up.dump(2));
  CHECK(follow_up["model"] == smoothed_model);
  CHECK_FALSE(follow_up["settings"]["smooth"].get<bool>());
  std::string description;
  for (const auto& entry : follow_up["models"]) {
    if (entry["label"] == "fleet") description = entry["description"].get<std::string>();
  }
  CHECK(description.find("(dynamic*0.8: the dynamic baseline's) on the reference text") != std::string::npos);
  const auto& checks = follow_up["checks"];
  const double mixed_kl = checks["fleet"]["mean_kl"].get<double>(), dynamic_kl = checks["dynamic"]["mean_kl"].get<double>();
  MESSAGE(description << "; agents' held-out KL " << mixed_kl << " (dynamic " << dynamic_kl << ", public "
                      << checks["public"]["mean_kl"].get<double>() << ")");
  CHECK(checks["fleet"]["agents"] == 3);
  CHECK(mixed_kl <= 1.1 * dynamic_kl);
}

TEST_CASE(
    "Fleet round with 4-bit weights and smooth: AWQ's input-channel scaling from the fleet's importance sums, chosen as "
    "fedcal-model smooth --weight-bits 4 chooses it on the reference text, then a follow-up round whose 4-bit package "
    "the agents check" *
    doctest::timeout(400)) {
  FleetOptions options;
  options.agents = 3;
  options.reference_text = true;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["weight_bits"] = 4;
  settings["fine_grained"] = {"classifier"};
  settings["smooth"] = true;
  const nlohmann::json scaling = fleet.run_round(settings);
  REQUIRE_MESSAGE(scaling["stage"] == "done", scaling.dump(2));
  REQUIRE(scaling["models"].size() == 1);
  CHECK(scaling["models"][0]["description"].get<std::string>().find("AWQ scaling for 4-bit weights") != std::string::npos);
  const nlohmann::json& sites = scaling["smoothing"]["sites"];
  CHECK(sites.size() == 16);

  // The same choice from the round's aggregate and the coordinator's reference text, by the CLI.
  const std::string round = std::to_string(scaling["round"].get<int64_t>());
  const auto smooth =
      run_command(built_binary("fedcal-model") + " smooth --threads 1 --json --weight-bits 4 --model " +
                      fp32_package_path(fleet, model) + " --stats " + fleet.coordinator_dir() + "/artifacts/round-" + round +
                      ".stats --text " + fleet.path("public.txt") + " -o " + fleet.path("awq.fcpkg"),
                  false);
  REQUIRE_MESSAGE(smooth.exit_code == 0, smooth.output);
  const nlohmann::json central = nlohmann::json::parse(smooth.output);
  CHECK(central["sites"] == sites);
  int scaled = 0;
  for (const auto& site : sites) {
    scaled += !site["alpha"].is_null();
    CHECK(site["error_with"].get<double>() <= site["error_without"].get<double>());
  }
  MESSAGE(scaled << " of 16 sites scaled");
  CHECK(central["smoothed"] == scaled);

  const nlohmann::json follow_up = follow_up_of(fleet, scaling["round"].get<int64_t>());
  REQUIRE_MESSAGE(follow_up["stage"] == "done", follow_up.dump(2));
  CHECK(follow_up["settings"]["weight_bits"] == 4);
  const nlohmann::json fleet_model = result_model(follow_up, "fleet");
  CHECK(fleet_model["description"].get<std::string>().find("importance-weighted rounding") != std::string::npos);
  CHECK(follow_up["checks"]["fleet"]["agents"] == 3);
  CHECK(follow_up["checks"]["fleet"]["top1_agreement"].get<double>() > 0.8);
}

// "fleet" only: the follow-up rule, checked once in build/ (33 s under the sanitizers; the crash
// matrix and the other SIGKILL tests keep recovery's code paths in the sanitizer tier).
TEST_CASE("Crash between a smoothing round and its follow-up: the restarted coordinator starts the follow-up" *
          doctest::timeout(400) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  options.reference_text = true;
  options.coordinator_fault_injection = "kill-entering:done";
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["smooth"] = true;
  const auto started = fleet.admin({{"command", "round.start"}, {"settings", settings}});
  REQUIRE(fleet.coordinator().wait_exit(std::chrono::seconds(120)) == 128 + SIGKILL);
  fleet.set_coordinator_fault_injection("");
  fleet.start_coordinator();
  const nlohmann::json follow_up = follow_up_of(fleet, started["round"].get<int64_t>());
  CHECK_MESSAGE(follow_up["stage"] == "done", follow_up.dump(2));
  CHECK(follow_up["checks"]["fleet"]["agents"] == 3);
}

}  // namespace
}  // namespace fedcal::testing

// fedcal-relay with real processes: agents enrolled, calibrating, aggregated and rolled out through a
// relay beside agents connected directly, their heartbeats answered at the relay, a revoked agent cut
// off there.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "edge_agent/agent.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/quantization_points.h"
#include "models/quant/quantize.h"
#include "protocol/relay_frames.h"
#include "protocol/wire.h"
#include "secagg/crypto.h"
#include "secagg/relay_group_frames.h"
#include "secagg/secagg_wire.h"
#include "secagg/secure_aggregation.h"
#include "tests/coordinator/mini_fleet.h"
#include "tests/coordinator/raw_client.h"
#include "tests/tcp_forwarder.h"
#include "transport/curve.h"

namespace fedcal::testing {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace

TEST_CASE(
    "Agents through a relay: enrolled, heartbeats answered at the relay, a round federated = centralized with direct "
    "agents, a rollout, and a revoked agent cut off" *
    doctest::timeout(240) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  options.relayed_agents = 2;  // agents 0 and 1 through the relay, agent 2 directly
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  // Their registry entries were made through the relay: enrollment passes through it.
  for (int i = 0; i < 2; ++i)
    CHECK(read_file(fleet.path("agent-" + std::to_string(i) + "/agent.log")).find("connected as agent") != std::string::npos);

  // Heartbeats: the relayed agents' are answered at the relay and reported as presence; the
  // coordinator answers only the direct agent's (one per 300 ms).
  const nlohmann::json before = fleet.admin({{"command", "status"}});
  const auto start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const nlohmann::json after = fleet.admin({{"command", "status"}});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double heartbeats = after["heartbeats_answered"].get<double>() - before["heartbeats_answered"].get<double>();
  const double presence = after["relay_presence"].get<double>() - before["relay_presence"].get<double>();
  MESSAGE("in ", seconds, " s: ", heartbeats, " heartbeats answered by the coordinator, ", presence,
          " presence entries from the relay");
  CHECK(heartbeats <= seconds / 0.3 + 3);      // the direct agent's only (three agents' would be ~30)
  CHECK(presence >= 2 * (seconds / 0.3) / 2);  // both relayed agents, one entry per 300 ms report (at least half of them)
  CHECK(after["online_agents"] == 3);

  // A round with relayed and direct agents: the statistics equal the centralized ones bit for bit.
  const int64_t model = fleet.import_model();
  const nlohmann::json report = fleet.run_round(round_settings(model));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 3);
  CHECK(report["checks"]["fleet"]["agents"] == 3);
  std::string all;
  for (int i = 0; i < options.agents; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string central =
      calibrate_centrally(fleet, fp32_package_path(fleet, model), all, kSequences * options.agents, "central");
  CHECK(read_file(fleet.coordinator_dir() + "/artifacts/round-1.stats") == read_file(central));

  // A rollout of its package reaches the relayed agents (downloads in chunks through the relay).
  const int64_t quantized = report["models"][0]["model"].get<int64_t>();
  nlohmann::json settings = {
      {"model_id", quantized}, {"waves", {100.0}}, {"max_slowdown", 50.0}, {"max_kl", 50.0}, {"soak_ms", 0}};
  const nlohmann::json rollout = fleet.run_rollout(settings);
  REQUIRE_MESSAGE(rollout["stage"] == "done", rollout.dump(2));
  const nlohmann::json agents = fleet.admin({{"command", "agents.list"}});
  const std::string sha = report["models"][0]["sha256"].get<std::string>();
  for (const auto& agent : agents["agents"]) CHECK(agent["active_model"] == sha);

  // Revoked: the relay is told at once, stops answering its heartbeats, and the coordinator refuses the
  // next one it forwards: the agent stops (exit status 3, refused).
  fleet.admin({{"command", "agents.revoke"}, {"id", fleet.agent_id(1)}});
  const std::optional<int> exit_code = fleet.agent(1).wait_exit(std::chrono::seconds(15));
  REQUIRE(exit_code.has_value());
  CHECK(*exit_code == edge_agent::kExitRefused);
  CHECK(fleet.agent(0).running());
  CHECK(eventually([&] { return fleet.admin({{"command", "status"}})["online_agents"] == 2; }, std::chrono::seconds(10)));
}

TEST_CASE(
    "Secure aggregation per group at the relay: two groups of three, their opened sums equal the centralized statistics "
    "bit for bit, the relay holds only masked vectors and sealed shares, the coordinator only self-masked group sums" *
    doctest::timeout(240) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 6;
  options.relayed_agents = 6;
  options.capture = true;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["relay_group_size"] = 3;
  const nlohmann::json report = fleet.run_round(settings);
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 6);
  CHECK(report["checks"]["fleet"]["agents"] == 6);
  REQUIRE(report["relay_groups"].size() == 2);
  for (const auto& group : report["relay_groups"]) {
    CHECK(group["members"] == 3);
    CHECK(group["masked"] == 3);
    CHECK(group["revealed"] == 3);
  }
  CHECK(report["stage_ms"].contains("aggregating"));

  std::string all;
  for (int i = 0; i < options.agents; ++i) all += fleet.calibration_text(i, kSequences);
  const std::string central =
      calibrate_centrally(fleet, fp32_package_path(fleet, model), all, kSequences * options.agents, "central");
  CHECK(read_file(fleet.coordinator_dir() + "/artifacts/round-1.stats") == read_file(central));

  // What the coordinator received from agents: their joins and reports, nothing of the secure
  // aggregation's stages (those ran at the relay; the coordinator got each group's self-masked sum).
  const int lane_bits = report["relay_groups"][0]["lane_bits"].get<int>();
  REQUIRE(lane_bits == 32);
  std::map<wire::Envelope::Body::Which, int> kinds;
  std::vector<std::vector<uint64_t>> group_sums;  // as the coordinator received them: under self-masks
  std::ifstream in(fleet.capture_path(), std::ios::binary);
  uint64_t header[2];
  while (in.read(reinterpret_cast<char*>(header), sizeof(header))) {
    std::vector<std::byte> bytes(header[1]);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (header[0] == UINT64_MAX) {
      const DecodedMessage result = decode_message<wire::RelayGroupResult>(bytes, bytes.size(), "group result");
      const auto values = result.root<wire::RelayGroupResult>().getSelfMaskedSum();
      group_sums.push_back(read_lane_vector(values, values.size() / 4, lane_bits, "selfMaskedSum"));
      continue;
    }
    DecodedEnvelope decoded = decode_envelope(bytes);
    ++kinds[decoded.envelope().getBody().which()];
  }
  CHECK(group_sums.size() == 2);
  for (const std::vector<uint64_t>& sum : group_sums) CHECK(looks_uniform(sum, lane_bits));
  CHECK(kinds[wire::Envelope::Body::JOIN] >= 6);
  CHECK(kinds[wire::Envelope::Body::LOCAL_REPORT] >= 6);
  CHECK(kinds[wire::Envelope::Body::SHARE_KEYS] == 0);
  CHECK(kinds[wire::Envelope::Body::MASKED_INPUT] == 0);
  CHECK(kinds[wire::Envelope::Body::UNMASK_SHARES] == 0);
  // What the relay received: each agent's masked vector, independent of its true statistics and
  // uniform; and every share it was shown in the clear is a mask-key share (none here: nobody dropped).
  std::map<std::string, int64_t> agent_of_key;
  const nlohmann::json agents = fleet.admin({{"command", "agents.list"}});
  for (const auto& agent : agents["agents"]) agent_of_key[agent["public_key"].get<std::string>()] = agent["id"].get<int64_t>();
  std::map<int64_t, std::vector<uint64_t>> masked;
  int clear_shares = 0, sealed = 0;
  std::ifstream relay_in(fleet.relay_capture_path(), std::ios::binary);
  std::string key(40, '\0');
  uint64_t size = 0;
  while (relay_in.read(key.data(), 40) && relay_in.read(reinterpret_cast<char*>(&size), sizeof(size))) {
    std::vector<std::byte> bytes(size);
    relay_in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
    DecodedEnvelope decoded = decode_envelope(bytes);
    const auto body = decoded.envelope().getBody();
    if (body.which() == wire::Envelope::Body::MASKED_INPUT) {
      const auto values = body.getMaskedInput().getValues();
      REQUIRE_MESSAGE(agent_of_key.count(key), key);
      masked[agent_of_key.at(key)] = read_lane_vector(values, values.size() / 4, lane_bits, "values");
    }
    if (body.which() == wire::Envelope::Body::UNMASK_SHARES) {
      clear_shares += static_cast<int>(body.getUnmaskShares().getShares().size());
      sealed += body.getUnmaskShares().getSealedSelfMaskShares().size() > 0 ? 1 : 0;
    }
  }
  CHECK(masked.size() == 6);
  CHECK(clear_shares == 0);
  CHECK(sealed == 6);
  const std::string fp32 = fp32_package_path(fleet, model);
  for (int i = 0; i < options.agents; ++i) {
    const std::vector<uint64_t> truth = contribution_vector(read_stats(
        calibrate_centrally(fleet, fp32, fleet.calibration_text(i, kSequences), kSequences, "agent" + std::to_string(i))));
    const std::vector<uint64_t>& vector = masked.at(fleet.agent_id(i));
    REQUIRE(vector.size() == truth.size());
    size_t equal = 0;
    for (size_t k = 0; k < vector.size(); ++k) equal += vector[k] == truth[k] ? 1 : 0;
    CHECK(equal < 3);  // a uniform 32-bit value equals the true count with probability 2^-32
    CHECK(looks_uniform(vector, lane_bits));
  }
  const std::string relay_log = read_file(fleet.path("relay.log"));
  CHECK(relay_log.find("group 1: secure aggregation of 3 members here") != std::string::npos);
  CHECK(relay_log.find("group 2: 3 of 3 members in the sum, 3 revealed") != std::string::npos);
}

TEST_CASE(
    "At the relay, a false complaint naming every neighbour is checked: their shares open, the complainer is left out, "
    "and the group's sum is the three honest members'" *
    doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  RoundBesideRawClient attack(4, 3, {{"relay_group_size", 4}});
  attack.complain_falsely_about_every_share();
  // Was: every neighbour excluded on the complaint alone, and the group failed (fewer than its
  // threshold left).
  const nlohmann::json report = attack.report();
  CHECK(report["contributors"] == 3);
  REQUIRE(report["relay_groups"].size() == 1);
  CHECK(report["relay_groups"][0]["masked"] == 3);
  const std::string relay_log = read_file(attack.fleet->path("relay.log"));
  CHECK_MESSAGE(relay_log.find("(a false complaint)") != std::string::npos, relay_log);
  CHECK(relay_log.find("is excluded") == std::string::npos);
  // The first opening settled it: one share opened, no other.
  size_t asked = 0;
  for (size_t at = relay_log.find("is asked to open its share"); at != std::string::npos;
       at = relay_log.find("is asked to open its share", at + 1))
    ++asked;
  CHECK(asked == 1);
}

TEST_CASE(
    "At the relay, a member whose shares do not decrypt is named by its neighbours, does not open them when asked, and is "
    "excluded: the group's sum is the three honest members'" *
    doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  RoundBesideRawClient attack(4, 3, {{"relay_group_size", 4}});
  // Valid keys at join; then garbage where the encrypted shares belong, and no answer to the relay's
  // request to open one.
  const DecodedEnvelope keys = attack.join(X25519KeyPair::generate().public_key(), X25519KeyPair::generate().public_key());
  const auto round_keys = keys.envelope().getBody().getRoundKeys();
  const uint32_t index = round_keys.getIndex();
  std::vector<EncryptedShare> garbage;
  for (const uint32_t holder : graph_neighbours(read_round_keys_config(round_keys, 3), index))
    garbage.push_back({index, holder, std::vector<uint8_t>(32 + 12 + 2 * 32 + 16, 0x5a)});  // an ephemeral key, then AES-GCM
  Key32 commitment;
  commitment.fill(0x11);  // a group member must send one (checked by the coordinator only if it were a survivor)
  attack.share_keys(garbage, commitment);
  const nlohmann::json report = attack.report();
  CHECK(report["contributors"] == 3);
  const std::string relay_log = read_file(attack.fleet->path("relay.log"));
  CHECK_MESSAGE(relay_log.find("is asked to open its share") != std::string::npos, relay_log);
  // Excluded by the first complaint whose check ends (no opening within the timeout, or a second
  // complaint against a member whose one opening is spent), whichever comes first.
  CHECK_MESSAGE(relay_log.find("member " + std::to_string(index) + " is excluded") != std::string::npos, relay_log);
}

TEST_CASE(
    "Scales as the median of relay groups' (group_scales median): three groups' opened sums stored, adding up to the "
    "aggregate, and every static scale of the package the median of the three groups', not the aggregate's" *
    doctest::timeout(240) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 6;
  options.relayed_agents = 6;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model, 2);
  settings["relay_group_size"] = 2;
  settings["group_scales"] = "median";
  const nlohmann::json report = fleet.run_round(settings);
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  REQUIRE(report["relay_groups"].size() == 3);
  const nlohmann::json fleet_model = result_model(report, "fleet");
  CHECK(fleet_model["description"].get<std::string>().find("scales the median of 3 relay groups'") != std::string::npos);

  // The groups' statistics as stored: they add up to the aggregate, count for count.
  const std::string artifacts = fleet.coordinator_dir() + "/artifacts";
  const CalibrationStats aggregate = read_stats(artifacts + "/round-1.stats");
  std::vector<CalibrationStats> groups;
  for (int g = 1; g <= 3; ++g) groups.push_back(read_stats(artifacts + "/round-1.group-" + std::to_string(g) + ".stats"));
  CHECK_FALSE(std::filesystem::exists(artifacts + "/round-1.group-4.stats"));
  for (size_t i = 0; i < aggregate.counts.size(); ++i) {
    if (groups[0].counts[i] + groups[1].counts[i] + groups[2].counts[i] != aggregate.counts[i]) FAIL("count " << i << " differs");
  }

  // Each static layer's input and output parameters: the median of the groups' (recomputed here
  // from the stored files), and at some point not the aggregate's.
  const nlohmann::json models = fleet.admin({{"command", "models.list"}});
  LoadedModel package;
  for (const auto& entry : models["models"]) {
    if (entry["id"].get<int64_t>() == fleet_model["model"].get<int64_t>()) package = load_model(entry["path"].get<std::string>());
  }
  REQUIRE_MESSAGE(!package.int8.empty(), models.dump());
  const ScaleMethodSpec method = ScaleMethodSpec::parse(report["settings"]["method"].get<std::string>());
  const bool asymmetric = report["settings"]["asymmetric"].get<bool>();
  auto median_of = [&](int point) {
    std::vector<std::span<const uint64_t>> counts;
    for (const CalibrationStats& group : groups) counts.push_back(group.point(point));
    const ScaleMethodSpec chosen = point == logits_point(package.model.config) ? ScaleMethodSpec{ScaleMethod::kMinMax} : method;
    return median_activation_params(aggregate.layout, counts, chosen, asymmetric);
  };
  int checked = 0, unlike_aggregate = 0;
  for (const LinearSite& site : linear_sites(package.model.config)) {
    const auto layer = package.int8.find(site.name);
    if (layer == package.int8.end() || layer->second.weights.per_group()) continue;
    CAPTURE(site.name);
    CHECK(layer->second.input == median_of(site.input_point));
    CHECK(layer->second.output == median_of(site.output_point));
    unlike_aggregate +=
        layer->second.input == activation_params(aggregate.layout, aggregate.point(site.input_point), method, asymmetric) ? 0 : 1;
    ++checked;
  }
  CHECK(checked >= 10);
  CHECK(unlike_aggregate > 0);
}

TEST_CASE(
    "A relay's link to the coordinator drops and comes back while its groups run: their results arrive on the new "
    "connection and are taken by the relay's key" *
    doctest::timeout(240) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 6;
  options.relayed_agents = 6;
  options.lines_per_agent = 64;
  options.agent_coordinator_timeout_ms = 20000;  // their heartbeats go unanswered while the relay's answers are held
  MiniFleet fleet(options);
  // The relay reaches the coordinator through `upstream`, which the test cuts; the agents reach the
  // relay through `downstream`, which holds what the relay sends them, so the groups wait meanwhile.
  TcpForwarder upstream(fleet.relay_upstream_port()), downstream(fleet.relay_port());
  fleet.route_relay_via(upstream.port());
  fleet.route_relayed_agents_via(downstream.port());
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["relay_group_size"] = 3;
  settings["sequences_per_agent"] = 64;
  settings["seq_len"] = 128;
  // A first round: the agents download the model (through the relay, which a hold would stop).
  REQUIRE(fleet.run_round(settings)["stage"] == "done");

  const int64_t round = fleet.admin({{"command", "round.start"}, {"settings", settings}})["round"].get<int64_t>();
  // Once every agent has the announcement (and calibrates, a second or so), hold the relay's messages
  // to them: the groups' first requests wait there.
  const std::string announced = "round " + std::to_string(round) + ": 64 sequences";
  auto logged = [&](const std::string& file, const std::string& text) {
    return read_file(fleet.path(file)).find(text) != std::string::npos;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int i = 0; i < options.agents; ++i) {
    while (!logged("agent-" + std::to_string(i) + "/agent.log", announced) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  downstream.hold(true);
  // Both groups started at the relay (over the first connection), none finished: cut it.
  REQUIRE(eventually([&] { return logged("relay.log", "round " + std::to_string(round) + " group 2: secure aggregation of 3"); },
                     std::chrono::seconds(60)));
  CHECK_FALSE(logged("relay.log", "round " + std::to_string(round) + " group 1: 3 of 3"));
  const int64_t connections = upstream.accepted();
  upstream.cut();
  REQUIRE(eventually([&] { return upstream.accepted() > connections; }, std::chrono::seconds(10)));  // the relay reconnected
  downstream.hold(false);

  const nlohmann::json report = fleet.wait_round(round, std::chrono::seconds(120));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 6);
  for (const auto& group : report["relay_groups"]) CHECK(group["revealed"] == 3);
  // Both results came over the new connection: more than their self-masked sums' bytes since the cut.
  const uint64_t lanes =
      contribution_length(read_stats(fleet.coordinator_dir() + "/artifacts/round-" + std::to_string(round) + ".stats"));
  MESSAGE(upstream.bytes_to_target_since_cut(), " bytes to the coordinator since the cut; two sums of ", lanes, " 32-bit lanes");
  CHECK(upstream.bytes_to_target_since_cut() > static_cast<int64_t>(2 * lanes * 4));
  CHECK(read_file(fleet.path("coordinator.log")).find("is not this relay's") == std::string::npos);
}

TEST_CASE(
    "A group's result sent by another configured relay is refused and logged, and the group's own relay's result is "
    "taken" *
    doctest::timeout(120) * doctest::test_suite("fleet robustness")) {
  const CurveKeyPair other = CurveKeyPair::generate();
  FleetOptions options;
  options.agents = 3;
  options.relayed_agents = 3;
  options.other_relay_key = other.public_key;
  MiniFleet fleet(options);
  // The agents reach the relay through `downstream`, which holds what the relay sends them: the group
  // then waits at its first stage, and the coordinator for its result.
  TcpForwarder downstream(fleet.relay_port());
  fleet.route_relayed_agents_via(downstream.port());
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["relay_group_size"] = 3;
  REQUIRE(fleet.run_round(settings)["stage"] == "done");  // the agents download the model (a hold would stop it)
  const int64_t round = fleet.admin({{"command", "round.start"}, {"settings", settings}})["round"].get<int64_t>();
  const std::string announced = "round " + std::to_string(round) + ": ";
  for (int i = 0; i < options.agents; ++i) {
    REQUIRE(eventually(
        [&] { return read_file(fleet.path("agent-" + std::to_string(i) + "/agent.log")).find(announced) != std::string::npos; },
        std::chrono::seconds(60)));
  }
  downstream.hold(true);
  REQUIRE(eventually(
      [&] {
        return read_file(fleet.path("relay.log")).find("round " + std::to_string(round) + " group 1: secure aggregation of 3") !=
               std::string::npos;
      },
      std::chrono::seconds(60)));
  // The other relay (a key in `relays`, its own connection) sends a result for that group.
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  configure_curve_client(socket, other, fleet.admin({{"command", "status"}})["curve_public_key"].get<std::string>(),
                         SocketLimits{});
  socket.connect("tcp://127.0.0.1:" + std::to_string(fleet.relay_upstream_port()));
  RelayGroupResult forged;
  forged.round_id = static_cast<uint64_t>(round);
  forged.aggregate.config.round_id = static_cast<uint64_t>(round);
  forged.aggregate.config.group_id = 1;
  forged.failure = "forged";
  const std::vector<std::byte> payload = encode_group_result(forged);
  socket.send(zmq::buffer(kRelayFrameTag), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(kRelayGroupResultFrame), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
  // "refused relay KEY (ADDRESS): a group result: round R group 1 is not this relay's"
  const std::string refusal = "a group result: round " + std::to_string(round) + " group 1 is not this relay's";
  const bool refused = eventually(
      [&] {
        const std::string log = read_file(fleet.path("coordinator.log"));
        const size_t at = log.find(refusal);
        return at != std::string::npos && log.rfind("refused relay " + other.public_key + " (", at) != std::string::npos;
      },
      std::chrono::seconds(10));
  downstream.hold(false);
  CHECK_MESSAGE(refused, read_file(fleet.path("coordinator.log")));
  const nlohmann::json report = fleet.wait_round(round, std::chrono::seconds(60));
  REQUIRE_MESSAGE(report["stage"] == "done", report.dump(2));
  CHECK(report["contributors"] == 3);
  CHECK(report["relay_groups"][0]["revealed"] == 3);
}

}  // namespace fedcal::testing

// fedcal-coordinator: the daemon (`serve`) and the operator's CLI, which talks to the running daemon
// over its local admin socket.
#include <CLI/CLI.hpp>

#include <sys/resource.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/signing.h"
#include "coordinator/admin_client.h"
#include "coordinator/cli/report_format.h"
#include "coordinator/coordinator_config.h"
#include "coordinator/server.h"
#include "transport/curve.h"

namespace {

using namespace fedcal;
using namespace fedcal::coordinator;

std::atomic<bool> g_stop{false};  // set by SIGINT/SIGTERM; the only state a signal handler may touch
void on_signal(int) { g_stop = true; }

struct Common {
  std::string config = "/etc/fedcal/coordinator.toml";
  bool json = false;
};

CoordinatorConfig load(const Common& common) { return CoordinatorConfig::load(common.config); }

nlohmann::json call(const Common& common, const nlohmann::json& request) {
  return admin_request(load(common).admin_endpoint(), request);
}

void print(const Common& common, const nlohmann::json& reply, const std::string& human) {
  std::fputs(common.json ? (reply.dump(2) + "\n").c_str() : human.c_str(), stdout);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedcal coordinator: federated INT8 calibration rounds over a fleet of edge agents"};
  app.require_subcommand(1);
  Common common;
  app.add_option("-c,--config", common.config, "Coordinator config file (TOML, see deploy/coordinator.toml)")
      ->capture_default_str();
  app.add_flag("--json", common.json, "Print replies as JSON for scripts");

  CLI::App* serve = app.add_subcommand("serve", "Run the coordinator daemon (creates keys and database on first start)");
  serve->callback([&] {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    // One file descriptor per connected agent: take the hard limit.
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
    }
    Server server(load(common));
    server.run(g_stop);
  });

  CLI::App* keys = app.add_subcommand("keys", "Print the coordinator's CURVE public key (agents need it) and signing public key");
  keys->callback([&] {
    const CoordinatorConfig config = load(common);
    const CurveKeyPair curve = CurveKeyPair::read(config.curve_key_path());
    const SigningKey signing = SigningKey::read_private_key(config.signing_key_path());
    print(common, {{"curve_public_key", curve.public_key}, {"signing_public_key", signing.public_key_hex()}},
          fmt::format("CURVE public key:   {}\nsigning public key: {}\n", curve.public_key, signing.public_key_hex()));
  });

  CLI::App* token = app.add_subcommand("token", "Enrollment tokens")->require_subcommand(1);
  int valid_hours = 0;
  CLI::App* token_create = token->add_subcommand("create", "Create a one-time enrollment token");
  token_create->add_option("--valid-hours", valid_hours,
                           "Hours the token stays valid (default: token_valid_hours of the config)");
  token_create->callback([&] {
    nlohmann::json request = {{"command", "token.create"}};
    if (valid_hours > 0) request["valid_hours"] = valid_hours;
    const auto reply = call(common, request);
    print(common, reply,
          fmt::format("{}\n(one-time, valid {} h) enroll an agent with:\n  fedcal-agent enroll --config AGENT.toml --token {}\n"
                      "with coordinator_key = \"{}\" in AGENT.toml\n",
                      reply["token"].get<std::string>(), reply["valid_hours"].get<int>(), reply["token"].get<std::string>(),
                      reply["coordinator_key"].get<std::string>()));
  });

  CLI::App* agents = app.add_subcommand("agents", "The fleet registry")->require_subcommand(1);
  agents->add_subcommand("list", "Enrolled agents, online state and hardware profile")->callback([&] {
    const auto reply = call(common, {{"command", "agents.list"}});
    print(common, reply, format_agents(reply));
  });
  int64_t revoke_id = 0;
  CLI::App* revoke = agents->add_subcommand("revoke", "Revoke an agent: its connections and messages are refused at once");
  revoke->add_option("id", revoke_id, "Agent id")->required();
  revoke->callback([&] {
    print(common, call(common, {{"command", "agents.revoke"}, {"id", revoke_id}}), fmt::format("agent {} revoked\n", revoke_id));
  });

  CLI::App* models = app.add_subcommand("models", "Models and artifacts")->require_subcommand(1);
  std::string import_path, import_tokenizer, import_description;
  CLI::App* import_command = models->add_subcommand(
      "import", "Import an FP32 model (llama2.c, Hugging Face folder or fedcal package) as a signed package");
  import_command->add_option("path", import_path, "Model file or folder")->required()->check(CLI::ExistingPath);
  import_command->add_option("--tokenizer", import_tokenizer, "Tokenizer file (needed for llama2.c checkpoints)");
  import_command->add_option("--description", import_description, "Free text shown in `models list`");
  import_command->callback([&] {
    const auto reply =
        call(common, {{"command", "models.import"},
                      {"path", std::filesystem::absolute(import_path).string()},
                      {"tokenizer", import_tokenizer.empty() ? "" : std::filesystem::absolute(import_tokenizer).string()},
                      {"description", import_description}});
    print(
        common, reply,
        fmt::format("model {}: {} ({:.2f} MB, sha256 {})\n", reply["id"].get<int64_t>(), reply["description"].get<std::string>(),
                    reply["bytes"].get<double>() / 1e6, reply["sha256"].get<std::string>()));
  });
  models->add_subcommand("list", "Imported models and round results")->callback([&] {
    const auto reply = call(common, {{"command", "models.list"}});
    print(common, reply, format_models(reply));
  });

  CLI::App* round = app.add_subcommand("round", "Calibration rounds")->require_subcommand(1);
  nlohmann::json settings = nlohmann::json::object();
  int64_t model_id = 0;
  int min_agents = 3, max_agents = 0, sequences = 64, seq_len = 128, neighbours = 0, threshold = 0, lane_bits = 0;
  std::string method = "percentile:99.99";
  bool per_channel = false, asymmetric = false, wait = false;
  std::vector<std::string> keep_fp32;
  double dp_epsilon = 0, dp_delta = 1e-5;
  CLI::App* start = round->add_subcommand("start", "Start a calibration round on an imported FP32 model");
  start->add_option("--model", model_id, "Model id (see `models list`)")->required();
  start->add_option("--min-agents", min_agents, "Fewer joined agents fail the round; the sum of fewer is never unmasked")
      ->capture_default_str();
  start->add_option("--max-agents", max_agents, "Stop taking participants at this many (0: all online)")->capture_default_str();
  start->add_option("--sequences-per-agent", sequences, "Calibration sequences (lines of private text) per agent")
      ->capture_default_str();
  start->add_option("--seq-len", seq_len, "Tokens per sequence at most")->capture_default_str();
  start->add_option("--method", method, "minmax | percentile:P | entropy | mse")->capture_default_str();
  start->add_flag("--per-channel", per_channel, "Per-output-channel INT8 weights");
  start->add_flag("--asymmetric", asymmetric, "Asymmetric activations (zero points)");
  start->add_option("--keep-fp32", keep_fp32, "Linear layers to keep in FP32 (e.g. classifier, layers.0.w2)");
  start->add_option("--dp-epsilon", dp_epsilon, "Distributed differential privacy: epsilon (0: off)");
  start->add_option("--dp-delta", dp_delta, "Distributed differential privacy: delta")->capture_default_str();
  start->add_option("--neighbours", neighbours, "Secure-aggregation graph degree (0: automatic)");
  start->add_option("--threshold", threshold, "Shamir threshold (0: a majority of share holders)");
  start->add_option("--lane-bits", lane_bits,
                    "Bits per masked value: 0 (default) = 32 when every sum fits below 2^31, else 64; or 32 / 64");
  start->add_flag("--wait", wait, "Wait for the round to finish, then print its report");
  std::vector<std::string> variants;
  start->add_option(
      "--variant", variants,
      "A package for one device group: LABEL:per-channel|per-tensor[:keep=LAYER,LAYER] (agents with the label get it)");
  bool watch = false;
  auto wait_for = [&](int64_t id, bool live) {
    std::string last;
    while (true) {
      const auto reply = call(common, {{"command", "round.status"}, {"id", id}});
      const std::string text = format_round(reply);
      const std::string stage = reply.value("stage", std::string());
      const bool over = stage == "done" || stage == "failed";
      if (live && text != last && !common.json) std::fprintf(stderr, "%s", (text + "\n").c_str());
      last = text;
      if (over) return reply;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  };
  start->callback([&] {
    settings = {
        {"model_id", model_id},   {"min_agents", min_agents}, {"max_agents", max_agents},   {"sequences_per_agent", sequences},
        {"seq_len", seq_len},     {"method", method},         {"per_channel", per_channel}, {"asymmetric", asymmetric},
        {"keep_fp32", keep_fp32}, {"dp_epsilon", dp_epsilon}, {"dp_delta", dp_delta},       {"neighbours", neighbours},
        {"threshold", threshold}, {"lane_bits", lane_bits}};
    nlohmann::json group_variants = nlohmann::json::object();
    for (const std::string& variant : variants) {
      const auto first = variant.find(':');
      if (first == std::string::npos) throw Error("--variant " + variant + ": expected LABEL:per-channel|per-tensor[:keep=...]");
      const std::string label = variant.substr(0, first);
      std::string rest = variant.substr(first + 1), keep;
      if (const auto second = rest.find(':'); second != std::string::npos) {
        keep = rest.substr(second + 1);
        rest = rest.substr(0, second);
        if (keep.rfind("keep=", 0) != 0) throw Error("--variant " + variant + ": the third part must be keep=LAYER,...");
        keep = keep.substr(5);
      }
      if (rest != "per-channel" && rest != "per-tensor") throw Error("--variant " + variant + ": per-channel or per-tensor");
      nlohmann::json kept = nlohmann::json::array();
      std::stringstream layers(keep);
      for (std::string layer; std::getline(layers, layer, ',');) {
        if (!layer.empty()) kept.push_back(layer);
      }
      group_variants[label] = {{"per_channel", rest == "per-channel"}, {"keep_fp32", kept}};
    }
    settings["group_variants"] = group_variants;
    auto reply = call(common, {{"command", "round.start"}, {"settings", settings}});
    if (wait) reply = wait_for(reply["round"].get<int64_t>(), true);
    print(common, reply, format_round(reply));
    if (wait && reply.value("stage", std::string()) == "failed")
      throw Error("round failed: " + reply.value("failure", std::string()));
  });
  int64_t status_id = 0;
  CLI::App* status = round->add_subcommand("status", "A round's stage and progress (the latest round by default)");
  status->add_option("id", status_id, "Round id");
  status->add_flag("--watch", watch, "Follow the round live until it ends");
  status->callback([&] {
    nlohmann::json request = {{"command", "round.status"}};
    if (status_id) request["id"] = status_id;
    auto reply = call(common, request);
    if (watch) reply = wait_for(reply["round"].get<int64_t>(), true);
    print(common, reply, format_round(reply));
  });
  int64_t report_id = 0;
  CLI::App* report = round->add_subcommand("report", "The accuracy/speed report of a round's result");
  report->add_option("id", report_id, "Round id")->required();
  report->callback([&] {
    const auto reply = call(common, {{"command", "round.report"}, {"id", report_id}});
    print(common, reply, format_round(reply));
  });
  round->add_subcommand("abort", "Fail the running round")->callback([&] {
    const auto reply = call(common, {{"command", "round.abort"}});
    print(common, reply, format_round(reply));
  });

  CLI::App* rollout = app.add_subcommand("rollout", "Staged rollouts of a model to the fleet")->require_subcommand(1);
  int64_t rollout_model = 0;
  std::string waves = "5%,50%,100%", group, min_healthy = "90%";
  double max_kl = 0.05, max_slowdown = 1.5;
  int wave_timeout_ms = 600000, soak_ms = 30000;
  bool rollout_watch = false;
  CLI::App* rollout_start =
      rollout->add_subcommand("start", "Roll a model out in waves with health gates and automatic rollback");
  rollout_start->add_option("--model", rollout_model, "Model id (see `models list`)")->required();
  rollout_start->add_option("--waves", waves, "Cumulative percentages of the targets per wave")->capture_default_str();
  rollout_start->add_option("--group", group, "Only agents with this label (from their config)");
  rollout_start->add_option("--max-kl", max_kl, "Healthy: KL vs the agent's previous model at most this (nats/token)")
      ->capture_default_str();
  rollout_start->add_option("--max-slowdown", max_slowdown, "Healthy: previous/new decoding speed at most this")
      ->capture_default_str();
  rollout_start->add_option("--min-healthy", min_healthy, "A wave passes when this share of its reporting agents is healthy")
      ->capture_default_str();
  rollout_start->add_option("--wave-timeout-ms", wave_timeout_ms, "A wave waits at most this long for reports")
      ->capture_default_str();
  rollout_start
      ->add_option("--soak-ms", soak_ms, "After a wave's last report, watch it this long (crashes count) before its gate")
      ->capture_default_str();
  auto percent = [](std::string text) {
    if (!text.empty() && text.back() == '%') text.pop_back();
    return std::stod(text);
  };
  auto show_rollout = [&](const nlohmann::json& reply) {
    std::string text =
        fmt::format("rollout {}: {} (model {}, wave {} of {})\n", reply.value("rollout", 0), reply.value("stage", std::string()),
                    reply.value("model", 0), reply.value("wave", 0) + 1, reply["waves"].size());
    if (!reply.value("reason", std::string()).empty()) text += "  reason: " + reply["reason"].get<std::string>() + "\n";
    text += "  agents:";
    for (const auto& [state, count] : reply["counts"].items()) text += fmt::format(" {} {}", count.get<int>(), state);
    text += "\n";
    for (const auto& agent : reply["agents"]) {
      const auto& check = agent["report"];
      text += fmt::format("    agent {:>4}  wave {}  {:<12}", agent["agent"].get<int64_t>(), agent["wave"].get<int>() + 1,
                          agent["status"].get<std::string>());
      if (check.is_object()) {
        text += fmt::format("  KL {:.5f}  top-1 {:.1f}%  {:.0f} vs {:.0f} tok/s", check.value("mean_kl", 0.0),
                            100 * check.value("top1_agreement", 0.0), check.value("tokens_per_second", 0.0),
                            check.value("previous_tokens_per_second", 0.0));
        if (!check.value("error", std::string()).empty()) text += "  error: " + check["error"].get<std::string>();
      }
      text += "\n";
    }
    print(common, reply, text);
  };
  rollout_start->callback([&] {
    nlohmann::json wave_list = nlohmann::json::array();
    std::stringstream stream(waves);
    std::string item;
    while (std::getline(stream, item, ',')) wave_list.push_back(percent(item));
    show_rollout(call(common, {{"command", "rollout.start"},
                               {"settings",
                                {{"model_id", rollout_model},
                                 {"waves", wave_list},
                                 {"group", group},
                                 {"max_kl", max_kl},
                                 {"max_slowdown", max_slowdown},
                                 {"min_healthy", percent(min_healthy)},
                                 {"wave_timeout_ms", wave_timeout_ms},
                                 {"soak_ms", soak_ms}}}}));
  });
  CLI::App* rollout_status = rollout->add_subcommand("status", "The current (or last) rollout, per agent");
  rollout_status->add_flag("--watch", rollout_watch, "Follow it live until it ends");
  rollout_status->callback([&] {
    nlohmann::json reply = call(common, {{"command", "rollout.status"}});
    while (rollout_watch) {
      const std::string stage = reply.value("stage", std::string());
      if (stage != "running" && stage != "paused") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      reply = call(common, {{"command", "rollout.status"}});
    }
    show_rollout(reply);
  });
  for (const char* action : {"pause", "resume", "abort", "rollback"}) {
    rollout->add_subcommand(action, std::string("Rollout: ") + action)->callback([&common, &show_rollout, action] {
      show_rollout(call(common, {{"command", std::string("rollout.") + action}}));
    });
  }

  int audit_limit = 50;
  CLI::App* audit = app.add_subcommand("audit", "The latest audit log entries (enrollments, refusals, rounds)");
  audit->add_option("--limit", audit_limit, "Entries")->capture_default_str();
  audit->callback([&] {
    const auto reply = call(common, {{"command", "audit"}, {"limit", audit_limit}});
    std::string text;
    for (const auto& entry : reply["audit"]) {
      text += fmt::format("{} {:<12} {:<16} {}\n", entry["at_ms"].get<int64_t>(), entry["actor"].get<std::string>(),
                          entry["event"].get<std::string>(), entry["detail"].get<std::string>());
    }
    print(common, reply, text);
  });
  app.add_subcommand("shutdown", "Stop the running daemon")->callback([&] {
    print(common, call(common, {{"command", "shutdown"}}), "stopping\n");
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "fedcal-coordinator: %s\n", error.what());
    return fedcal::process_exit_code(fedcal::kind_of(error));
  } catch (...) {
    std::fprintf(stderr, "fedcal-coordinator: an exception of unknown type\n");
    return fedcal::process_exit_code(fedcal::ErrorKind::kInternal);
  }
  return 0;
}

// fedcal-agent: the edge agent daemon (`run`) and its enrollment.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "common/command_line.h"
#include "common/error.h"
#include "common/file_util.h"
#include "edge_agent/agent.h"
#include "edge_agent/agent_config.h"
#include "edge_agent/enrollment.h"
#include "edge_agent/local_server.h"
#include "transport/curve.h"

namespace {

std::atomic<bool> g_stop{false};  // set by SIGINT/SIGTERM
void on_signal(int) { g_stop = true; }
// SIGHUP neither stops the agent (an exit would count against the active model's crash gate) nor
// reloads it; it says so with write(2), which a signal handler may call.
void on_hangup(int) {
  static constexpr char kLine[] =
      "[agent] SIGHUP ignored: the configuration is read at start; restart the agent to apply a change\n";
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, kLine, sizeof(kLine) - 1);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace fedcal;
  using namespace fedcal::edge_agent;
  CLI::App app{"fedcal edge agent: calibrates models on this device's private text and takes part in secure aggregation"};
  app.require_subcommand(1);
  std::string config_path = "/etc/fedcal/agent.toml";
  app.add_option("-c,--config", config_path, "Agent config file (TOML, see deploy/agent.toml)")->capture_default_str();
  int exit_code = 0;

  std::string token, coordinator, coordinator_key, state_dir, name;
  CLI::App* enroll_command =
      app.add_subcommand("enroll", "Register this agent's key with the coordinator using a one-time token");
  enroll_command->add_option("--token", token, "Token from `fedcal-coordinator token create`")->required();
  enroll_command->add_option("--coordinator", coordinator, "tcp://HOST:PORT (default: the config's)");
  enroll_command->add_option("--coordinator-key", coordinator_key, "The coordinator's CURVE public key (default: the config's)");
  enroll_command->add_option("--state-dir", state_dir, "Where keys and enrollment are kept (default: the config's)");
  enroll_command->add_option("--name", name, "Name shown in `agents list` (default: the config's, else the host name)");
  enroll_command->callback([&] {
    std::optional<AgentConfig> config;
    if (std::filesystem::exists(config_path)) config = AgentConfig::load(config_path);
    if (coordinator.empty() && config) coordinator = config->coordinator;
    if (coordinator_key.empty() && config) coordinator_key = config->coordinator_key;
    if (state_dir.empty()) state_dir = config ? config->state_dir : "/var/lib/fedcal-agent";
    if (name.empty()) name = config ? config->name : "agent";
    if (coordinator.empty() || coordinator_key.empty())
      throw Error("--coordinator and --coordinator-key are needed (or a --config with them)");
    const Enrollment enrollment = fedcal::edge_agent::enroll(state_dir, coordinator, coordinator_key, token, name);
    std::printf("enrolled as agent %lld with %s; state in %s\n", static_cast<long long>(enrollment.agent_id), coordinator.c_str(),
                state_dir.c_str());
  });

  CLI::App* run = app.add_subcommand("run", "Run the agent daemon (enrolls first with enroll_token if the config has one)");
  run->callback([&] {
    const AgentConfig config = AgentConfig::load(config_path);
    if (!Enrollment::read(config.enrollment_path()) && !config.enroll_token.empty()) {
      fedcal::edge_agent::enroll(config.state_dir, config.coordinator, config.coordinator_key, config.enroll_token, config.name);
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGHUP, on_hangup);
    Agent agent(config);
    exit_code = agent.run(g_stop);
  });

  std::string prompt, score_file;
  int max_tokens = 64;
  float temperature = 0;
  bool json = false;
  CLI::App* generate =
      app.add_subcommand("generate", "Continue a prompt with the device's active model (through the running agent)");
  generate->add_option("--prompt", prompt, "Text to continue")->required();
  generate->add_option("--max-tokens", max_tokens, "Tokens to generate at most")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  generate->add_option("--temperature", temperature, "0: greedy")->capture_default_str()->check(CLI::Range(0.0f, 100.0f));
  generate->add_flag("--json", json, "Print the reply as JSON");
  generate->callback([&] {
    const AgentConfig config = AgentConfig::load(config_path);
    const auto reply =
        local_request(config.serve_access_path(),
                      {{"command", "generate"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", temperature}});
    if (json)
      std::printf("%s\n", reply.dump(2).c_str());
    else
      std::printf("%s%s\n", prompt.c_str(), reply["text"].get<std::string>().c_str());
  });
  CLI::App* score =
      app.add_subcommand("score", "Perplexity of a text under the device's active model (through the running agent)");
  score->add_option("--text", score_file, "UTF-8 text file")->required()->check(CLI::ExistingFile);
  score->add_flag("--json", json, "Print the reply as JSON");
  score->callback([&] {
    const AgentConfig config = AgentConfig::load(config_path);
    const auto reply = local_request(config.serve_access_path(), {{"command", "score"}, {"text", read_utf8_text_file(score_file)}});
    if (json)
      std::printf("%s\n", reply.dump(2).c_str());
    else
      std::printf("%lld tokens, perplexity %.4f (model %s)\n", static_cast<long long>(reply["tokens"].get<int64_t>()),
                  reply["perplexity"].get<double>(), reply["model"].get<std::string>().substr(0, 16).c_str());
  });

  CLI::App* keys = app.add_subcommand("keys", "Print this agent's CURVE public key (created if missing)");
  keys->callback([&] {
    const AgentConfig config = AgentConfig::load(config_path);
    std::filesystem::create_directories(config.state_dir);
    std::printf("%s\n", CurveKeyPair::read_or_create(config.curve_key_path()).public_key.c_str());
  });

  const int status = run_command_line<CLI::ParseError>(app, "fedcal-agent", argc, argv);
  return status != 0 ? status : exit_code;
}

// fedcal-relay: the relay daemon (`serve`) and its key (`key`, for the coordinator's `relays`).
#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "common/command_line.h"
#include "relay/relay.h"
#include "relay/relay_config.h"
#include "transport/curve.h"

namespace {

std::atomic<bool> g_stop{false};  // set by SIGINT/SIGTERM
void on_signal(int) { g_stop = true; }

}  // namespace

int main(int argc, char** argv) {
  using namespace fedcal;
  using namespace fedcal::relay;
  CLI::App app{
      "fedcal relay: agents connect here instead of to the coordinator; their messages are forwarded to it unchanged, "
      "their heartbeats answered here and reported once per presence interval"};
  app.require_subcommand(1);
  std::string config_path = "/etc/fedcal/relay.toml";
  app.add_option("-c,--config", config_path, "Relay config file (TOML, see deploy/relay.toml)")->capture_default_str();

  CLI::App* serve = app.add_subcommand("serve", "Run the relay daemon");
  serve->callback([&] {
    const RelayConfig config = RelayConfig::load(config_path);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    Relay relay(config);
    relay.run(g_stop);
  });
  CLI::App* key = app.add_subcommand(
      "key",
      "Print the relay's CURVE public key (created if missing): list it in the coordinator's `relays`, and give it to "
      "agents as their coordinator_key");
  key->callback([&] {
    const RelayConfig config = RelayConfig::load(config_path);
    std::filesystem::create_directories(config.state_dir);
    std::printf("%s\n", CurveKeyPair::read_or_create(config.curve_key_path()).public_key.c_str());
  });
  return run_command_line<CLI::ParseError>(app, "fedcal-relay", argc, argv);
}

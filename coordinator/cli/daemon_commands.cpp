// fedcal-coordinator serve | keys | shutdown
#include <fmt/format.h>

#include <unistd.h>

#include <atomic>
#include <csignal>

#include "common/signing.h"
#include "coordinator/cli/commands.h"
#include "coordinator/server.h"
#include "transport/curve.h"

namespace fedcal::coordinator {
namespace {

std::atomic<bool> g_stop{false};  // set by SIGINT/SIGTERM; the only state a signal handler may touch
void on_signal(int) { g_stop = true; }
// SIGHUP (a closed terminal, `systemctl reload`) neither stops the daemon nor reloads it; it says so
// with write(2), which a signal handler may call.
void on_hangup(int) {
  static constexpr char kLine[] =
      "[coordinator] SIGHUP ignored: the configuration is read at start; restart the daemon to apply a change\n";
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, kLine, sizeof(kLine) - 1);
}

}  // namespace

void add_daemon_commands(CLI::App& app, const CliContext& context) {
  CLI::App* serve = app.add_subcommand("serve", "Run the coordinator daemon (creates keys and database on first start)");
  serve->callback([&context] {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGHUP, on_hangup);
    Server server(context.load());
    server.run(g_stop);
  });

  CLI::App* keys = app.add_subcommand("keys", "Print the coordinator's CURVE public key (agents need it) and signing public key");
  keys->callback([&context] {
    const CoordinatorConfig config = context.load();
    const CurveKeyPair curve = CurveKeyPair::read(config.curve_key_path());
    const SigningKey signing = SigningKey::read_private_key(config.signing_key_path());
    context.print({{"curve_public_key", curve.public_key}, {"signing_public_key", signing.public_key_hex()}},
                  fmt::format("CURVE public key:   {}\nsigning public key: {}\n", curve.public_key, signing.public_key_hex()));
  });

  app.add_subcommand("shutdown", "Stop the running daemon")->callback([&context] {
    context.print(context.call({{"command", "shutdown"}}), "stopping\n");
  });
}

}  // namespace fedcal::coordinator

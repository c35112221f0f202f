// fedcal-coordinator rollout start | status | pause | resume | abort | rollback
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "common/error.h"
#include "coordinator/cli/commands.h"
#include "coordinator/cli/report_format.h"
#include "coordinator/cli/unit_validators.h"

namespace fedcal::coordinator {
namespace {

struct RolloutStartOptions {
  int64_t model = 0;
  std::vector<double> waves = {5, 50, 100};
  std::string group;
  double max_kl = 0.05, max_slowdown = 1.5, min_healthy = 90;
  int wave_timeout_ms = 600000, soak_ms = 30000, min_failing = 2;
};

constexpr int64_t kWeekMs = int64_t{7} * 86400 * 1000;

}  // namespace

void add_rollout_commands(CLI::App& app, const CliContext& context) {
  CLI::App* rollout = app.add_subcommand("rollout", "Staged rollouts of a model to the fleet")->require_subcommand(1);
  auto o = std::make_shared<RolloutStartOptions>();
  CLI::App* start = rollout->add_subcommand("start", "Roll a model out in waves with health gates and automatic rollback");
  start->add_option("--model", o->model, "Model id (see `models list`)")->required()->check(CLI::PositiveNumber);
  start->add_option("--waves", o->waves, "Cumulative percentages of the targets per wave (default 5%,50%,100%)")
      ->delimiter(',')
      ->transform(percentage());
  start->add_option("--group", o->group, "Only agents with this label (from their config)");
  start->add_option("--max-kl", o->max_kl, "Healthy: KL vs the agent's previous model at most this (nats/token)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 50.0));
  start->add_option("--max-slowdown", o->max_slowdown, "Healthy: previous/new decoding speed at most this (e.g. 1.5: 50% slower)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1000.0));
  start->add_option("--min-healthy", o->min_healthy, "A wave passes when this share of its reporting agents is healthy (default 90%)")
      ->transform(percentage());
  start
      ->add_option("--min-failing", o->min_failing,
                   "...and fails only when at least this many agents fail (or all targets, if fewer): one agent's report "
                   "cannot veto a rollout")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  start->add_option("--wave-timeout,--wave-timeout-ms", o->wave_timeout_ms,
                    "A wave waits at most this long for reports (default 10min; 30s, 2h, or milliseconds)")
      ->transform(duration_ms(1000, kWeekMs));
  start->add_option("--soak,--soak-ms", o->soak_ms,
                    "After a wave's last report, watch it this long (crashes count) before its gate (default 30s)")
      ->transform(duration_ms(0, kWeekMs));
  const auto show = [&context](const nlohmann::json& reply) { context.print(reply, format_rollout(reply)); };
  start->callback([&context, o, show] {
    show(context.call({{"command", "rollout.start"},
                       {"settings",
                        {{"model_id", o->model},
                         {"waves", o->waves},
                         {"group", o->group},
                         {"max_kl", o->max_kl},
                         {"max_slowdown", o->max_slowdown},
                         {"min_healthy", o->min_healthy},
                         {"min_failing", o->min_failing},
                         {"wave_timeout_ms", o->wave_timeout_ms},
                         {"soak_ms", o->soak_ms}}}}));
  });
  auto watch = std::make_shared<bool>(false);
  CLI::App* status = rollout->add_subcommand("status", "The current (or last) rollout, per agent");
  status->add_flag("--watch", *watch, "Follow it live: print it again at every change until it ends (--json: one line each)");
  status->callback([&context, watch, show] {
    nlohmann::json reply = context.call({{"command", "rollout.status"}});
    if (!*watch) {
      show(reply);
      return;
    }
    std::string last;
    for (;;) {
      const std::string now = reply.dump();
      if (now != last) {
        if (context.json) {
          std::printf("%s\n", now.c_str());
        } else {
          std::printf("--- %s\n%s", format_utc_time(wall_ms()).c_str(), format_rollout(reply).c_str());
        }
        std::fflush(stdout);
        last = now;
      }
      const std::string stage = reply.value("stage", std::string());
      if (stage != "running" && stage != "paused") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      reply = context.call({{"command", "rollout.status"}});
    }
  });
  for (const char* action : {"pause", "resume", "abort", "rollback"}) {
    rollout->add_subcommand(action, std::string("Rollout: ") + action)->callback([&context, show, action] {
      show(context.call({{"command", std::string("rollout.") + action}}));
    });
  }
}

}  // namespace fedcal::coordinator

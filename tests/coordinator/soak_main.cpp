// fedcal_soak: back-to-back rounds and rollouts on a loopback fleet (a real coordinator and real
// agents) with random SIGKILLs of agents and of the coordinator, each restarted at once. Counts how
// each round and rollout ended: done, failed (or rolled back) with a reason, or hung (not over within
// its bound) - and exits 1 if any hung or ended without a reason. Not a test (minutes); docs/BENCHMARKS.md
// records its result.
//   build/bin/fedcal_soak [--rounds 50] [--rollouts 10] [--agents 5] [--seed 1] [--json FILE]
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "tests/coordinator/mini_fleet.h"

namespace fedcal::testing {
namespace {

struct Tally {
  std::map<std::string, int> outcomes;  // "done", "failed", "rolled_back", "hung", "no reason"
  std::map<std::string, int> reasons;   // failure reasons, cut at the first ':' or ';'
  void add(const std::string& outcome, const std::string& reason) {
    ++outcomes[outcome];
    if (!reason.empty() && outcome != "done") ++reasons[reason.substr(0, reason.find_first_of(":;(["))];
  }
  nlohmann::json to_json() const { return {{"outcomes", outcomes}, {"reasons", reasons}}; }
};

class Soak {
 public:
  Soak(int agents, uint32_t seed) : random_(seed) {
    FleetOptions options;
    options.agents = agents;
    options.lines_per_agent = 24;
    options.stage_timeout_ms = 8000;
    fleet_ = std::make_unique<MiniFleet>(options);
    fleet_->start_coordinator();
    fleet_->start_agents();
    model_ = fleet_->import_model();
  }

  // One round with (maybe) one kill; returns its outcome.
  void round(int k, Tally& tally) {
    // Two kinds of rounds, so the rollouts can alternate between two different packages (each a real
    // switch with a previous slot to go back to).
    const nlohmann::json settings = {{"model_id", model_},  {"min_agents", 3},
                                     {"sequences_per_agent", 6},
                                     {"seq_len", 48},       {"method", k % 2 ? "percentile:99.99" : "mse"},
                                     {"per_channel", true}};
    int64_t id = 0;
    if (!admin_retrying([&] { id = fleet_->admin({{"command", "round.start"}, {"settings", settings}})["round"].get<int64_t>(); })) {
      tally.add("hung", "the coordinator did not accept a round start");
      return;
    }
    const std::string kill = maybe_kill();
    const auto [outcome, reason] = wait_over("round.status", id, std::chrono::seconds(120));
    if (outcome == "done") last_done_round_[k % 2] = id;
    std::printf("round %2d (%d): %-9s %-32s %s\n", k, static_cast<int>(id), outcome.c_str(), kill.c_str(), reason.c_str());
    std::fflush(stdout);
    tally.add(outcome == "failed" && reason.empty() ? "no reason" : outcome, reason);
  }

  void rollout(int k, Tally& tally) {
    nlohmann::json result;
    admin_retrying([&] { result = fleet_->admin({{"command", "round.status"}, {"id", last_done_round_[k % 2]}}); });
    if (!result.contains("models") || result["models"].empty()) {
      tally.add("hung", "no round produced a package to roll out");
      return;
    }
    const int64_t package = result["models"][0]["model"].get<int64_t>();
    const nlohmann::json settings = {{"model_id", package},      {"waves", {40.0, 100.0}}, {"max_kl", 0.05},
                                     {"max_slowdown", 50.0},     {"min_healthy", 100.0},   {"min_failing", 1},
                                     {"wave_timeout_ms", 20000}, {"soak_ms", 1000}};
    bool started = false;
    admin_retrying([&] {
      fleet_->admin({{"command", "rollout.start"}, {"settings", settings}});
      started = true;
    });
    if (!started) {
      tally.add("hung", "the coordinator did not accept a rollout start");
      return;
    }
    const std::string kill = maybe_kill();
    const auto [outcome, reason] = wait_over("rollout.status", 0, std::chrono::seconds(120));
    std::printf("rollout %2d: %-11s %-32s %s\n", k, outcome.c_str(), kill.c_str(), reason.c_str());
    std::fflush(stdout);
    tally.add(outcome == "rolled_back" && reason.empty() ? "no reason" : outcome, reason);
  }

 private:
  // With probability 1/3 kills the coordinator, 1/3 a random agent, after 0-3 s; restarts it.
  std::string maybe_kill() {
    const int what = std::uniform_int_distribution<int>(0, 2)(random_);
    const int delay_ms = std::uniform_int_distribution<int>(0, 3000)(random_);
    if (what == 2) return "no kill";
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    if (what == 0) {
      fleet_->kill_coordinator();
      fleet_->start_coordinator();
      return "coordinator killed at " + std::to_string(delay_ms) + " ms";
    }
    const int agent = std::uniform_int_distribution<int>(0, fleet_->options().agents - 1)(random_);
    fleet_->agent(agent).signal(SIGKILL);
    fleet_->agent(agent).wait_exit(std::chrono::seconds(5));
    fleet_->start_agent(agent);
    return "agent " + std::to_string(agent) + " killed at " + std::to_string(delay_ms) + " ms";
  }

  // Polls `command` until its stage is final; "hung" after `bound`.
  std::pair<std::string, std::string> wait_over(const char* command, int64_t id, std::chrono::seconds bound) {
    nlohmann::json status;
    const bool over = eventually(
        [&] {
          try {
            nlohmann::json request = {{"command", command}};
            if (id > 0) request["id"] = id;
            status = fleet_->admin(request);
          } catch (const std::exception&) {
            return false;  // restarting
          }
          const std::string stage = status.value("stage", "");
          return stage == "done" || stage == "failed" || stage == "rolled_back" || stage == "halted" || stage == "aborted";
        },
        bound);
    if (!over) return {"hung", status.dump()};
    std::string reason = status.value("failure", status.value("reason", ""));
    if (status.contains("counts")) reason += " [" + status["counts"].dump() + "]";  // a rollout's agents by status
    return {status["stage"].get<std::string>(), reason};
  }

  template <typename Body>
  bool admin_retrying(Body&& body) {
    return eventually(
        [&] {
          try {
            body();
            return true;
          } catch (const std::exception&) {
            return false;
          }
        },
        std::chrono::seconds(30));
  }

  std::mt19937 random_;
  std::unique_ptr<MiniFleet> fleet_;
  int64_t model_ = 0;
  int64_t last_done_round_[2] = {0, 0};  // the last done round of each kind
};

}  // namespace
}  // namespace fedcal::testing

int main(int argc, char** argv) {
  int rounds = 50, rollouts = 10, agents = 5;
  uint32_t seed = 1;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--rounds") rounds = std::stoi(value);
    else if (flag == "--rollouts") rollouts = std::stoi(value);
    else if (flag == "--agents") agents = std::stoi(value);
    else if (flag == "--seed") seed = static_cast<uint32_t>(std::stoul(value));
    else if (flag == "--json") json_path = value;
    else {
      std::cerr << "usage: fedcal_soak [--rounds N] [--rollouts N] [--agents N] [--seed N] [--json FILE]\n";
      return 2;
    }
  }
  using fedcal::testing::Tally;
  Tally round_tally, rollout_tally;
  const auto started = std::chrono::steady_clock::now();
  {
    fedcal::testing::Soak soak(agents, seed);
    for (int k = 1; k <= rounds; ++k) soak.round(k, round_tally);
    for (int k = 1; k <= rollouts; ++k) soak.rollout(k, rollout_tally);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const nlohmann::json summary = {{"rounds", round_tally.to_json()},
                                  {"rollouts", rollout_tally.to_json()},
                                  {"seed", seed},
                                  {"agents", agents},
                                  {"seconds", seconds}};
  std::cout << summary.dump(2) << "\n";
  if (!json_path.empty()) std::ofstream(json_path) << summary.dump(2) << "\n";
  const bool bad = round_tally.outcomes.count("hung") || round_tally.outcomes.count("no reason") ||
                   rollout_tally.outcomes.count("hung") || rollout_tally.outcomes.count("no reason");
  return bad ? 1 : 0;
}

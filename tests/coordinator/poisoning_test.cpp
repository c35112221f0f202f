// A participant that plays the secure-aggregation protocol correctly but contributes falsified
// statistics: secure aggregation hides whose they are, so the coordinator judges what they do to the
// package (coordinator/plausibility_check.h) before it publishes one.
#include <doctest/doctest.h>

#include <algorithm>
#include <functional>

#include "models/quant/activation_histogram.h"
#include "tests/coordinator/raw_client.h"

namespace fedcal::testing {
namespace {

// An honest participant's statistics (attack.round.honest), rewritten point by point by `rewrite`, as
// the contribution vector of the round beside which the raw client runs.
std::vector<uint64_t> falsified_contribution(RoundBesideRawClient& attack,
                                             const std::function<void(const HistogramLayout&, std::span<uint64_t>)>& rewrite) {
  CalibrationStats stats = attack.round.honest;
  for (size_t point = 0; point < stats.points.size(); ++point) rewrite(stats.layout, stats.point(point));
  std::vector<uint64_t> vector = contribution_vector(stats);
  REQUIRE(vector.size() == attack.round.vector_length);
  return vector;
}

// The slot of one point's counts a magnitude falls in.
size_t slot_of(const HistogramLayout& layout, float magnitude) {
  std::vector<uint64_t> one(layout.counts_per_point(), 0);
  const float value[] = {magnitude};
  accumulate_histogram(layout, value, one);
  return static_cast<size_t>(std::find(one.begin(), one.end(), 1u) - one.begin());
}

// Every value of a point moved to the slot of `magnitude` (its total count kept).
void move_all(std::span<uint64_t> counts, size_t slot) {
  uint64_t total = 0;
  for (uint64_t& count : counts) total += std::exchange(count, 0);
  counts[slot] = total;
}

bool round_models_listed(MiniFleet& fleet, int64_t round) {
  const nlohmann::json models = fleet.admin({{"command", "models.list"}});
  for (const auto& model : models["models"]) {
    if (model["round"].is_number() && model["round"].get<int64_t>() == round) return true;
  }
  return false;
}

TEST_CASE(
    "A participant whose statistics put each point's whole count in the top bucket: the round fails with the "
    "coordinator's figures and publishes nothing" *
    doctest::timeout(180) * doctest::test_suite("fleet robustness")) {
  RoundBesideRawClient attack(6, 5);  // 1 of 6
  attack.participate(falsified_contribution(attack, [](const HistogramLayout& layout, std::span<uint64_t> counts) {
    move_all(counts, HistogramSlots::sign_block(layout, false) + static_cast<size_t>(layout.buckets()));
  }));
  const nlohmann::json status = attack.fleet->wait_round(attack.round.id, std::chrono::seconds(120));
  REQUIRE_MESSAGE(status["stage"] == "failed", status.dump(2));
  const std::string failure = status["failure"].get<std::string>();
  CHECK_MESSAGE(failure.find("the fleet package is implausible, not published") != std::string::npos, failure);
  CHECK_MESSAGE(failure.find("x the calibration-free baseline") != std::string::npos, failure);
  CHECK(status["models"].empty());
  CHECK_FALSE(round_models_listed(*attack.fleet, attack.round.id));
  CHECK(attack.audited("implausible"));
}

TEST_CASE(
    "The same participant behind a relay, in one of three groups, with group_scales median: its group is outvoted, and "
    "the round publishes a package the agents find faithful" *
    doctest::timeout(180) * doctest::test_suite("fleet")) {
  // With group_scales sum instead, this round fails as the one above (measured: KL 4.9 on the sampled
  // documents, 1,233x its recipe's).
  RoundBesideRawClient attack(6, 5, {{"relay_group_size", 2}, {"min_agents", 2}, {"group_scales", "median"}});  // 1 of 6
  attack.participate(falsified_contribution(attack, [](const HistogramLayout& layout, std::span<uint64_t> counts) {
    move_all(counts, HistogramSlots::sign_block(layout, false) + static_cast<size_t>(layout.buckets()));
  }));
  const nlohmann::json status = attack.fleet->wait_round(attack.round.id, std::chrono::seconds(120));
  REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
  CHECK(status["contributors"] == 6);
  CHECK(status["relay_groups"].size() == 3);
  CHECK(round_models_listed(*attack.fleet, attack.round.id));
  // The honest agents' checks of the package on their held-out text (the raw client sends none).
  CHECK(status["checks"]["fleet"]["agents"] == 5);
  const double kl = status["checks"]["fleet"]["mean_kl"].get<double>(),
               dynamic = status["checks"]["dynamic"]["mean_kl"].get<double>();
  MESSAGE("agents' check: fleet package KL " << kl << ", dynamic baseline " << dynamic);
  CHECK(kl < 10 * dynamic);
}

TEST_CASE(
    "A participant whose statistics put each point's whole count at twice its largest value: the round fails, "
    "not published" *
    doctest::timeout(180) * doctest::test_suite("fleet")) {
  RoundBesideRawClient attack(4);
  attack.participate(falsified_contribution(attack, [](const HistogramLayout& layout, std::span<uint64_t> counts) {
    const double largest = summarize_histogram(layout, counts).max_abs;
    move_all(counts, slot_of(layout, static_cast<float>(2 * largest)));
  }));
  const nlohmann::json status = attack.fleet->wait_round(attack.round.id, std::chrono::seconds(120));
  MESSAGE(status.value("failure", std::string("(done)")));
  REQUIRE_MESSAGE(status["stage"] == "failed", status.dump(2));
  CHECK(status["failure"].get<std::string>().find("implausible") != std::string::npos);
}

TEST_CASE(
    "trim_agents reaches the round's scales: its package says how its clips were bounded, and a fleet too small for it "
    "fails with the reason" *
    doctest::timeout(120) * doctest::test_suite("fleet")) {
  FleetOptions options;
  options.agents = 3;
  MiniFleet fleet(options);
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  nlohmann::json settings = round_settings(model);
  settings["trim_agents"] = 2;  // two of three could have sent over half the tokens
  const nlohmann::json refused = fleet.run_round(settings);
  REQUIRE(refused["stage"] == "failed");
  CHECK_MESSAGE(refused["failure"].get<std::string>().find("trim_agents = 2: 2 participants could have sent up to 1280") !=
                    std::string::npos,
                refused["failure"]);
  settings["trim_agents"] = 1;
  settings["sequences_per_agent"] = 2;  // one participant's most: 128 of the round's ~1,900 tokens
  settings["max_kl_ratio"] = 0;
  const nlohmann::json done = fleet.run_round(settings);
  REQUIRE_MESSAGE(done["stage"] == "done", done.dump(2));
  const std::string description = result_model(done, "fleet")["description"].get<std::string>();
  CHECK_MESSAGE(description.find("clips at most 2x the largest value once the top") != std::string::npos, description);
}

TEST_CASE("One value beyond the histogram's range is counted at its top: the round completes and its report names the point" *
          doctest::timeout(180) * doctest::test_suite("fleet")) {
  RoundBesideRawClient attack(4);
  attack.participate(falsified_contribution(attack, [](const HistogramLayout& layout, std::span<uint64_t> counts) {
    counts[HistogramSlots::sign_block(layout, false) + static_cast<size_t>(layout.buckets()) + 1] += 1;  // overflow
  }));
  const nlohmann::json status = attack.report();
  CHECK(status["contributors"] == 4);
  REQUIRE(status.contains("coordinator_checks"));
  const nlohmann::json& check = status["coordinator_checks"][0];
  CHECK(check["label"] == "fleet");
  CHECK(check["passed"] == true);
  CHECK(check["overflow"].size() > 0);
  for (const auto& [point, count] : check["overflow"].items()) CHECK(count == 1);
}

}  // namespace
}  // namespace fedcal::testing

// The status page's rendering (coordinator/status_page.h) from admin-reply JSON; the page served by
// a real coordinator and loaded in a browser is in http_endpoint_test.cpp.
#include "coordinator/status_page.h"

#include <cmath>

#include "coordinator/speed_figure.h"

#include <doctest/doctest.h>

namespace fedcal::coordinator {
namespace {

size_t occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

nlohmann::json agent(int64_t id, const std::string& name, const std::string& state, const std::string& problem) {
  return {{"id", id},
          {"name", name},
          {"state", state},
          {"failing", !problem.empty()},
          {"problem", problem},
          {"last_seen_ms", 1000},
          {"active_model", "0123456789abcdef"},
          {"profile", {{"arch", "aarch64"}, {"isa_features", {"neon", "dotprod"}}, {"labels", {"pi5", "<lab>"}}}}};
}

nlohmann::json target(int64_t id, int wave, const std::string& status, nlohmann::json report) {
  return {{"agent", id}, {"wave", wave}, {"status", status}, {"report", std::move(report)}};
}

nlohmann::json report(double kl, double previous_tokens_per_second) {
  return {{"activated", true}, {"mean_kl", kl}, {"top1_agreement", 0.97}, {"tokens_per_second", 900.0},
          {"previous_tokens_per_second", previous_tokens_per_second}, {"tokens_per_second_spread", 0.1}, {"crashes", 0},
          {"error", ""}};
}

StatusPageInput fleet() {
  StatusPageInput input;
  input.now_ms = 151000;
  input.coordinator = {{"listen", "tcp://0.0.0.0:5555"}, {"agent_connections", 3}};
  input.agents = {agent(1, "pi-1", "online", ""), agent(2, "pi-2", "offline", "offline: silent for 60 s"),
                  agent(3, "<script>alert(1)</script>", "online", "no private text: 'a & b' \"quoted\"\x1b[31m")};
  input.rounds = {{{"round", 2},
                   {"model", 1},
                   {"stage", "failed"},
                   {"failure", "only 1 agents joined (at least 2 needed)"},
                   {"joined", 1},
                   {"contributors", 0},
                   {"agents", {{{"agent", 3}, {"state", "declined"}, {"reason", "no private text"}}}}}};
  input.rollout = {{"rollout", 4},
                   {"model", 7},
                   {"stage", "halted"},
                   {"reason", "wave 2: 1 of 2 healthy"},
                   {"wave", 1},
                   {"waves", {50.0, 100.0}},
                   {"settings", {{"max_kl", 0.01}, {"max_slowdown", 1.5}, {"min_healthy", 90.0}, {"soak_ms", 30000}}},
                   {"agents",
                    {target(1, 0, "healthy", report(0.004, 800)), target(2, 1, "unhealthy", report(0.05, 800)),
                     target(3, 1, "sent", nullptr)}}};
  return input;
}

TEST_CASE("Status page: failing agents with their problems, the rollout's health chart, rounds with reasons") {
  const std::string page = render_status_page(fleet());
  CHECK(page.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(page.find("<b>2</b> failing") != std::string::npos);
  CHECK(page.find("Failing agents") != std::string::npos);
  CHECK(page.find("offline: silent for 60 s") != std::string::npos);
  CHECK(page.find("aarch64 / neon dotprod") != std::string::npos);
  CHECK(page.find("2 min ago") != std::string::npos);
  // One bar per target; the one above twice the limit is cut and marked; the waiting one is grey.
  CHECK(occurrences(page, "<rect class=\"bar\"") == 3);
  CHECK(occurrences(page, "&#9650;") == 1);
  CHECK(page.find("agent 1: healthy, KL 0.00400, top-1 97.0%, 900 (+-5%) vs 800 (+-0%) tok/s") != std::string::npos);
  CHECK(page.find("gate: KL &#8804; 0.01") != std::string::npos);
  CHECK(page.find("Reason: wave 2: 1 of 2 healthy") != std::string::npos);
  CHECK(page.find("only 1 agents joined (at least 2 needed)") != std::string::npos);
  CHECK(page.find("agent 3 declined: no private text") != std::string::npos);
}

TEST_CASE("Status page: what agents wrote is escaped - no markup, no terminal escapes") {
  const std::string page = render_status_page(fleet());
  CHECK(page.find("<script") == std::string::npos);
  CHECK(page.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(page.find("&#39;a &amp; b&#39; &quot;quoted&quot;\\x1b[31m") != std::string::npos);
  CHECK(page.find("&lt;lab&gt;") != std::string::npos);
  CHECK(page.find('\x1b') == std::string::npos);
}

TEST_CASE("Status page: a first rollout has no KL to show, and says so") {
  StatusPageInput input = fleet();
  input.rollout["agents"] = {target(1, 0, "healthy", report(0, 0)), target(2, 0, "healthy", report(0, 0))};
  const std::string page = render_status_page(input);
  CHECK(page.find("KL n/a (no previous model to compare with)") != std::string::npos);
  CHECK(page.find("No KL to show yet") != std::string::npos);
  CHECK(occurrences(page, "fill=\"#bdbdbd\"><title>") == 2);
}

TEST_CASE("Speed figures: a spread above +-25% is shown as noisy, not as a number (status page and reports)") {
  CHECK(speed_figure(412.4, 0.08) == "412 (+-4%)");
  CHECK(speed_figure(14.666, 0.5, 2, "x") == "14.67x (+-25%)");  // at the bound: still a measurement
  CHECK(speed_figure(14.666, 4.18, 2, "x") == "noisy (+-209%)");
  CHECK(speed_figure(1, std::nan("")) == "noisy (+-nan%)");
  CHECK_FALSE(is_noisy(kNoisySpread));
  CHECK(is_noisy(kNoisySpread * 1.01));
  StatusPageInput input = fleet();
  nlohmann::json swinging = report(0.004, 800);
  swinging["tokens_per_second_spread"] = 4.18;
  input.rollout["agents"] = nlohmann::json::array({target(1, 0, "healthy", swinging)});
  const std::string page = render_status_page(input);
  CHECK(page.find("agent 1: healthy, KL 0.00400, top-1 97.0%, noisy (+-209%) vs 800 (+-0%) tok/s") != std::string::npos);
  CHECK(page.find("900 (+-209%)") == std::string::npos);
}

TEST_CASE("Status page: no rounds, no rollout, and a fleet larger than a table") {
  StatusPageInput input;
  for (int64_t id = 1; id <= static_cast<int64_t>(kStatusPageMaxAgentRows) + 20; ++id)
    input.agents.push_back(agent(id, "a", "offline", "offline: never connected"));
  input.rollout = nullptr;
  const std::string page = render_status_page(input);
  CHECK(page.find("No rollout yet.") != std::string::npos);
  CHECK(page.find("No rounds yet.") != std::string::npos);
  CHECK(page.find("and 20 more: <code>fedcal-coordinator agents list --failing</code>") != std::string::npos);
  CHECK(page.find("and 20 more: <code>fedcal-coordinator agents list</code>") != std::string::npos);
  CHECK(page.find("<svg") == std::string::npos);
}

}  // namespace
}  // namespace fedcal::coordinator

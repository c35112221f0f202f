#include "coordinator/cli/report_format.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/clock.h"
#include "common/text.h"
#include "coordinator/speed_figure.h"

namespace fedcal::coordinator {
namespace {

double number(const nlohmann::json& json, const char* key) {
  return json.contains(key) && json[key].is_number() ? json[key].get<double>() : 0.0;
}

std::string format_export(const nlohmann::json& exported, const std::string& indent) {
  const std::string origin = exported.contains("round") ? fmt::format("round {} ", exported["round"].get<int64_t>()) : "";
  if (exported.contains("error")) {
    return fmt::format("{}{}export {}: FAILED: {}\n", indent, origin, exported.value("format", std::string()),
                       escape_controls(exported["error"].get<std::string>()));
  }
  return fmt::format("{}{}export {}: {} ({:.2f} MB)\n", indent, origin, exported.value("format", std::string()),
                     exported.value("path", std::string()), number(exported, "bytes") / 1e6);
}

}  // namespace

std::string format_round(const nlohmann::json& round) {
  std::string out = fmt::format("round {}: {}\n", round.value("round", 0), round.value("stage", std::string("?")));
  if (round.contains("failure")) out += fmt::format("  failed: {}\n", escape_controls(round["failure"].get<std::string>()));
  if (round.contains("settings")) {
    const auto& s = round["settings"];
    out += fmt::format("  model {} | {} sequences x {} tokens per agent | {}{} | at least {} agents | for runtime {}\n",
                       s.value("model_id", 0), s.value("sequences_per_agent", 0), s.value("seq_len", 0),
                       s.value("method", std::string()), s.value("per_channel", false) ? " per-channel" : " per-tensor",
                       s.value("min_agents", 0), s.value("runtime", std::string("engine")));
    for (const auto& note : s.value("recipe_notes", nlohmann::json::array()))
      if (note.is_string()) out += fmt::format("  {}\n", escape_controls(note.get<std::string>()));
    if (s.value("smooth", false)) out += "  smoothing round: importance sums -> a smoothed FP32 model, then a follow-up round on it\n";
    if (s.value("smoothing_round", 0) != 0)
      out += fmt::format("  follow-up of smoothing round {} (its smoothed model)\n", s.value("smoothing_round", 0));
    if (!s.value("target_kl", std::string()).empty())
      out += fmt::format("  mixed precision: target KL {} on the reference text, layers to {}\n", s.value("target_kl", std::string()),
                         s.value("fallback", std::string("fp32")));
  }
  out += fmt::format("  agents: {} announced, {} joined, {} contributed\n", round.value("announced", 0), round.value("joined", 0),
                     round.value("contributors", 0));
  if (round.contains("secure_aggregation")) {
    const auto& a = round["secure_aggregation"];
    out += fmt::format("  secure aggregation: n={} neighbours={} threshold={} lanes={}-bit | shared {} masked {} revealed {}\n",
                       a.value("participants", 0), a.value("neighbours", 0), a.value("threshold", 0), a.value("lane_bits", 64),
                       a.value("shared", 0), a.value("masked", 0), a.value("revealed", 0));
  }
  if (round.contains("differential_privacy")) {
    const auto& dp = round["differential_privacy"];
    if (dp.is_string())
      out += "  differential privacy: off\n";
    else {
      out += fmt::format("  differential privacy: ({}, {})-DP, {}, noise stddev {:.1f} per agent (guarantee with >= {} agents)\n",
                         number(dp, "epsilon"), number(dp, "delta"), dp.value("mechanism", std::string()),
                         number(dp, "noise_stddev_per_agent"), dp.value("guarantee_holds_with_at_least_agents", 0));
    }
  }
  if (round.contains("models")) {
    for (const auto& model : round["models"]) {
      out += fmt::format("  {} model {}: {} ({:.2f} MB, {:.1f}% of FP32) sha256 {}\n", model.value("label", std::string()),
                         model.value("model", 0), model.value("description", std::string()), number(model, "bytes") / 1e6,
                         100.0 * number(model, "bytes") / std::max(1.0, number(round, "fp32_bytes")),
                         model.value("sha256", std::string()).substr(0, 16));
    }
  }
  if (round.contains("smoothing") && round["smoothing"].is_object()) {
    const auto& smoothing = round["smoothing"];
    out += fmt::format("  smoothing: {} of {} sites (alpha per site by the static INT8 error on the reference text):",
                       smoothing.value("smoothed_sites", 0), smoothing.value("sites", nlohmann::json::array()).size());
    for (const auto& site : smoothing.value("sites", nlohmann::json::array())) {
      if (site.contains("alpha") && site["alpha"].is_number())
        out += fmt::format(" {} {:.2f}", site.value("site", std::string()), site["alpha"].get<double>());
    }
    out += "\n";
  }
  for (const auto& check : round.value("coordinator_checks", nlohmann::json::array())) {
    out += fmt::format(
        "  coordinator's check of the {} package on {} ({:.0f} tokens): KL {:.5f}, at most {:.5f} = {} x max(its "
        "recipe calibrated there {:.5f}, dynamic {:.5f})\n",
        check.value("label", std::string()), escape_controls(check.value("text", std::string())), number(check, "tokens"),
        number(check, "mean_kl"), number(check, "bound"), number(check, "max_ratio"), number(check, "same_recipe_kl"),
        number(check, "dynamic_kl"));
    const nlohmann::json overflow = check.value("overflow", nlohmann::json::object());
    for (const auto& [point, count] : overflow.items())
      out += fmt::format("    {} value(s) at {} reached the histogram's top 2^{} and were counted there\n", count.dump(), point,
                         check.value("max_exponent", 0));
  }
  for (const auto& exported : round.value("exports", nlohmann::json::array())) out += format_export(exported, "  ");
  if (round.contains("checks") && round["checks"].is_object() && !round["checks"].empty()) {
    out += "  local checks on the agents' held-out text (accuracy: mean over agents, each counted once; speed: median\n"
           "  over agents, with the range over agents and the median run-to-run spread on one agent; dynamic: the\n"
           "  fleet package's INT8 weights with per-token activation scales, the baseline that needs no calibration):\n";
    // The label column fits the longest label ("dynamic-blocks", "group:<label>").
    size_t width = 8;
    for (const auto& [label, check] : round["checks"].items()) width = std::max(width, label.size());
    out += fmt::format("    {:<{}} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8}  {}\n", "model", width, "agents", "tokens",
                       "ppl FP32", "ppl INT8", "KL", "top-1", "tok/s INT8", "speedup", "speedup range, run spread");
    for (const auto& [label, check] : round["checks"].items()) {
      if (number(check, "tokens") == 0) {
        out += fmt::format("    {:<{}} {:>6} (no reports)\n", label, width, check.value("agents", 0));
        continue;
      }
      const nlohmann::json range = check.value("decode_speedup_range", nlohmann::json::array());
      const std::string speedup_range = range.size() == 2 && range[0].is_number() && range[1].is_number()
                                            ? fmt::format("{:.2f}-{:.2f}x", range[0].get<double>(), range[1].get<double>())
                                            : std::string("-");
      // A speed whose run-to-run spread is above the bound is no measurement (speed_figure.h).
      const double spread = number(check, "decode_run_spread");
      const bool noisy = is_noisy(spread);
      out += fmt::format(
          "    {:<{}} {:>6} {:>9.0f} {:>9.3f} {:>9.3f} {:>9.5f} {:>10.2f}% {:>11} {:>8}  {}\n", label, width,
          check.value("agents", 0), number(check, "tokens"), number(check, "perplexity_fp32"), number(check, "perplexity_int8"),
          number(check, "mean_kl"), 100 * number(check, "top1_agreement"),
          noisy ? std::string("noisy") : fmt::format("{:.1f}", number(check, "decode_tokens_per_second_int8")),
          noisy ? std::string("noisy") : fmt::format("{:.2f}x", number(check, "decode_speedup")),
          noisy ? fmt::format("run-to-run +-{:.0f}% (above +-{:.0f}%: not a measurement)", 50 * spread, 50 * kNoisySpread)
                : fmt::format("{}, +-{:.0f}%", speedup_range, 50 * spread));
    }
  }
  if (round.contains("agents") && round["agents"].is_array()) {
    // Only the agents that did not get through: the rest are in the counts above.
    for (const auto& agent : round["agents"]) {
      const std::string state = agent.value("state", std::string());
      if (state != "left" && state != "declined" && state != "dropped" && !agent.contains("reason")) continue;
      out += fmt::format("  agent {} {}{}: {}{}\n", agent.value("agent", 0), state,
                         agent.contains("stage") ? " in " + agent["stage"].get<std::string>() : std::string(),
                         agent.contains("cause") ? agent["cause"].get<std::string>() + ": " : std::string(),
                         escape_controls(agent.value("reason", std::string("(went silent)"))));
    }
  }
  if (round.contains("stage_ms") && !round["stage_ms"].empty()) {
    out += "  stage times:";
    for (const char* stage : {"collecting", "sharing", "masking", "unmasking", "aggregating", "quantizing", "evaluating"}) {
      if (round["stage_ms"].contains(stage))
        out += fmt::format(" {} {:.2f}s", stage, round["stage_ms"][stage].get<double>() / 1000);
    }
    out += "\n";
  }
  return out;
}

std::string format_agents(const nlohmann::json& agents) {
  const int64_t now = wall_ms();
  std::string out = fmt::format("{:>4}  {:<20} {:<8} {:<9} {:<14} {:>5} {:>6}  {:<12} {:>9}  {:<14} {}\n", "id", "name", "state",
                                "arch", "ISA", "cores", "RAM GB", "active", "seen", "labels", "problem");
  for (const auto& agent : agents["agents"]) {
    const auto& profile = agent["profile"];
    // The last `most` strings of a profile list, joined.
    const auto joined = [&profile](const char* key, size_t most) {
      std::vector<std::string> items;
      for (const auto& item : profile.value(key, nlohmann::json::array())) {
        if (item.is_string()) items.push_back(item.get<std::string>());
      }
      if (items.size() > most) items.erase(items.begin(), items.end() - static_cast<ptrdiff_t>(most));
      return fmt::format("{}", fmt::join(items, ","));
    };
    const std::string labels = joined("labels", SIZE_MAX);
    const std::string isa = joined("isa_features", 2);  // listed the most capable last: the last two say enough here
    const int64_t seen = agent.value("last_seen_ms", int64_t{0});
    const std::string seen_text = seen <= 0 ? "never" : fmt::format("{}s ago", std::max<int64_t>(0, (now - seen) / 1000));
    const std::string problem = agent.value("problem", std::string());
    out += fmt::format("{:>4}  {:<20} {:<8} {:<9} {:<14} {:>5} {:>6.1f}  {:<12} {:>9}  {:<14} {}\n", agent["id"].get<int64_t>(),
                       escape_controls(agent["name"].get<std::string>()), agent.value("state", std::string("?")),
                       escape_controls(profile.value("arch", std::string("-"))), escape_controls(isa.empty() ? "-" : isa),
                       profile.value("cores", 0),
                       number(profile, "ram_bytes") / 1e9, agent.value("active_model", std::string()).substr(0, 12), seen_text,
                       escape_controls(labels), escape_controls(problem));
  }
  return out;
}

std::string format_models(const nlohmann::json& models) {
  std::string out = fmt::format("{:>4}  {:<5} {:>10}  {:<16}  {}\n", "id", "kind", "MB", "sha256", "description");
  for (const auto& model : models["models"]) {
    out += fmt::format("{:>4}  {:<5} {:>10.2f}  {:<16}  {}\n", model["id"].get<int64_t>(), model["kind"].get<std::string>(),
                       model["bytes"].get<double>() / 1e6, model["sha256"].get<std::string>().substr(0, 16),
                       model["description"].get<std::string>());
    for (const auto& exported : model.value("exports", nlohmann::json::array())) out += format_export(exported, "      ");
  }
  return out;
}

std::string format_rollout(const nlohmann::json& reply) {
  std::string text =
      fmt::format("rollout {}: {} (model {}, wave {} of {})\n", reply.value("rollout", 0), reply.value("stage", std::string()),
                  reply.value("model", 0), reply.value("wave", 0) + 1, reply["waves"].size());
  if (!reply.value("reason", std::string()).empty()) text += "  reason: " + reply["reason"].get<std::string>() + "\n";
  if (reply.value("static_model", nlohmann::json()).is_number_integer())
    text += fmt::format("  devices without an INT8 dot product get the same round's static package, model {}\n",
                        reply["static_model"].get<int64_t>());
  text += "  agents:";
  for (const auto& [state, count] : reply["counts"].items()) text += fmt::format(" {} {}", count.get<int>(), state);
  text += "\n";
  for (const auto& agent : reply["agents"]) {
    const auto& check = agent["report"];
    text += fmt::format("    agent {:>4}  wave {}  {:<12}", agent["agent"].get<int64_t>(), agent["wave"].get<int>() + 1,
                        agent["status"].get<std::string>());
    if (agent.value("package", std::string("fleet")) != "fleet")
      text += fmt::format("  ({} package)", escape_controls(agent["package"].get<std::string>()));
    if (check.is_object()) {
      // The figures its gate judged (kept after a rollback); n/a where there was nothing to compare with.
      const double previous = check.value("previous_tokens_per_second", 0.0);
      if (!check.value("activated", false)) {
        // a failed activation: no figures
      } else if (previous > 0) {
        text += fmt::format("  KL {:.5f}  top-1 {:.1f}%  {} vs {} tok/s", check.value("mean_kl", 0.0),
                            100 * check.value("top1_agreement", 0.0),
                            speed_figure(check.value("tokens_per_second", 0.0), check.value("tokens_per_second_spread", 0.0)),
                            speed_figure(previous, check.value("previous_tokens_per_second_spread", 0.0)));
      } else {
        text += fmt::format("  KL n/a  top-1 n/a  {:.0f} tok/s (no previous model to compare with)",
                            check.value("tokens_per_second", 0.0));
      }
      if (check.value("reference_checked", false))
        text += fmt::format("  vs FP32: KL {:.5f}  top-1 {:.1f}%", check.value("reference_kl", 0.0),
                            100 * check.value("reference_top1_agreement", 0.0));
      if (check.value("crashes", 0) > 0) text += fmt::format("  crashes {}", check["crashes"].get<int>());
      if (check.value("rolled_back", false)) text += "  (rolled back)";
      if (!check.value("error", std::string()).empty()) text += "  error: " + escape_controls(check["error"].get<std::string>());
    }
    text += "\n";
  }
  return text;
}

std::string format_audit(const nlohmann::json& reply) {
  std::string text;
  for (const auto& entry : reply["audit"]) {
    text +=
        fmt::format("{} {:<12} {:<16} {}\n", format_utc_time(entry["at_ms"].get<int64_t>()), escape_controls(entry["actor"].get<std::string>()),
                    escape_controls(entry["event"].get<std::string>()), escape_controls(entry["detail"].get<std::string>()));
  }
  return text;
}

}  // namespace fedcal::coordinator

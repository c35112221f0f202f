#include "coordinator/status_page.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <vector>

#include "common/clock.h"
#include "common/text.h"
#include "coordinator/speed_figure.h"

namespace fedcal::coordinator {
namespace {

// Text from the fleet, safe inside HTML text and attribute values.
std::string html(std::string_view text) {
  std::string out;
  for (const char c : escape_controls(text)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string text_of(const nlohmann::json& json, const char* key) {
  return json.is_object() && json.contains(key) && json[key].is_string() ? json[key].get<std::string>() : std::string();
}

double number_of(const nlohmann::json& json, const char* key) {
  return json.is_object() && json.contains(key) && json[key].is_number() ? json[key].get<double>() : 0.0;
}

int64_t integer_of(const nlohmann::json& json, const char* key) {
  return json.is_object() && json.contains(key) && json[key].is_number_integer() ? json[key].get<int64_t>() : 0;
}

std::string ago(int64_t then_ms, int64_t now_ms) {
  if (then_ms <= 0) return "never";
  const int64_t seconds = std::max<int64_t>(0, now_ms - then_ms) / 1000;
  if (seconds < 120) return fmt::format("{} s ago", seconds);
  if (seconds < 7200) return fmt::format("{} min ago", seconds / 60);
  if (seconds < 172800) return fmt::format("{} h ago", seconds / 3600);
  return fmt::format("{} days ago", seconds / 86400);
}

// The colour of a rollout target status, a round stage or an agent state.
const char* colour(std::string_view status) {
  if (status == "healthy" || status == "done" || status == "online") return "#2e7d32";
  if (status == "unhealthy" || status == "failed" || status == "halted") return "#c62828";
  if (status == "rolling_back" || status == "rolled_back" || status == "aborted") return "#ef6c00";
  if (status == "sent" || status == "running") return "#1565c0";
  if (status == "paused") return "#6a1b9a";
  return "#9e9e9e";  // pending, offline, revoked, a stage in progress
}

std::string badge(const std::string& status) {
  return fmt::format("<span class=\"badge\" style=\"background:{}\">{}</span>", colour(status), html(status));
}

// The strings of the list `key` of an agent's hardware profile (labels, ISA features), joined.
std::string profile_list(const nlohmann::json& agent, const char* key, const char* separator) {
  std::string joined;
  const nlohmann::json profile = agent.value("profile", nlohmann::json::object());
  if (profile.is_object() && profile.contains(key) && profile[key].is_array()) {
    for (const auto& item : profile[key]) {
      if (item.is_string()) joined += (joined.empty() ? "" : separator) + item.get<std::string>();
    }
  }
  return joined;
}

void agent_rows(std::string& out, const std::vector<const nlohmann::json*>& agents, int64_t now_ms, const char* more_command) {
  out += "<table><tr><th>id</th><th>name</th><th>state</th><th>arch / ISA</th><th>labels</th><th>active model</th>"
         "<th>last seen</th><th>problem</th></tr>\n";
  for (size_t i = 0; i < agents.size() && i < kStatusPageMaxAgentRows; ++i) {
    const nlohmann::json& agent = *agents[i];
    std::string isa = text_of(agent.value("profile", nlohmann::json::object()), "arch");
    if (!profile_list(agent, "isa_features", " ").empty()) isa += " / " + profile_list(agent, "isa_features", " ");
    out += fmt::format(
        "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>\n",
        agent.value("failing", false) ? " class=\"failing\"" : "", integer_of(agent, "id"), html(text_of(agent, "name")),
        badge(text_of(agent, "state")), html(isa), html(profile_list(agent, "labels", ", ")), html(text_of(agent, "active_model").substr(0, 12)),
        ago(integer_of(agent, "last_seen_ms"), now_ms), html(text_of(agent, "problem")));
  }
  out += "</table>\n";
  if (agents.size() > kStatusPageMaxAgentRows) {
    out += fmt::format("<p class=\"note\">and {} more: <code>{}</code></p>\n", agents.size() - kStatusPageMaxAgentRows,
                       more_command);
  }
}

// Counts by state, and the failing agents with their problems.
void fleet_section(std::string& out, const StatusPageInput& input) {
  std::map<std::string, int> by_state;
  std::vector<const nlohmann::json*> failing;
  for (const auto& agent : input.agents) {
    ++by_state[text_of(agent, "state")];
    if (agent.value("failing", false)) failing.push_back(&agent);
  }
  out += "<section><h2>Fleet</h2>\n<p class=\"tiles\">";
  out += fmt::format("<span class=\"tile\"><b>{}</b> enrolled</span>", input.agents.size());
  for (const char* state : {"online", "offline", "revoked"}) {
    out += fmt::format("<span class=\"tile\" style=\"border-color:{}\"><b>{}</b> {}</span>", colour(state), by_state[state], state);
  }
  out += fmt::format("<span class=\"tile\" style=\"border-color:#c62828\"><b>{}</b> failing</span></p>\n", failing.size());
  if (failing.empty()) {
    out += "<p>No agent reports a problem.</p>\n";
  } else {
    out += "<h3>Failing agents</h3>\n";
    agent_rows(out, failing, input.now_ms, "fedcal-coordinator agents list --failing");
  }
  out += "</section>\n";
}

void agents_section(std::string& out, const StatusPageInput& input) {
  std::vector<const nlohmann::json*> all;
  for (const auto& agent : input.agents) all.push_back(&agent);
  out += "<section><h2>Agents</h2>\n";
  agent_rows(out, all, input.now_ms, "fedcal-coordinator agents list");
  out += "</section>\n";
}

// The gate's figures of one rollout target: KL against its previous model, or nothing to compare.
struct TargetFigure {
  int64_t agent = 0;
  int wave = 0;
  std::string status;
  bool has_kl = false;
  double kl = 0;
  std::string detail;  // the bar's tooltip
};

std::vector<TargetFigure> target_figures(const nlohmann::json& rollout) {
  std::vector<TargetFigure> figures;
  for (const auto& agent : rollout.value("agents", nlohmann::json::array())) {
    TargetFigure figure;
    figure.agent = integer_of(agent, "agent");
    figure.wave = static_cast<int>(integer_of(agent, "wave"));
    figure.status = text_of(agent, "status");
    figure.detail = fmt::format("agent {}: {}", figure.agent, figure.status);
    const nlohmann::json report = agent.value("report", nlohmann::json());
    if (report.is_object() && report.value("activated", false) && report.value("reference_checked", false)) {
      // Judged against the FP32 original (the gate's KL then).
      figure.has_kl = true;
      figure.kl = number_of(report, "reference_kl");
      figure.detail += fmt::format(", KL vs FP32 {:.5f}, top-1 {:.1f}%, {:.0f} tok/s", figure.kl,
                                   100 * number_of(report, "reference_top1_agreement"), number_of(report, "tokens_per_second"));
    } else if (report.is_object() && report.value("activated", false)) {
      if (number_of(report, "previous_tokens_per_second") > 0) {
        figure.has_kl = true;
        figure.kl = number_of(report, "mean_kl");
        figure.detail +=
            fmt::format(", KL {:.5f}, top-1 {:.1f}%, {} vs {} tok/s", figure.kl, 100 * number_of(report, "top1_agreement"),
                        speed_figure(number_of(report, "tokens_per_second"), number_of(report, "tokens_per_second_spread")),
                        speed_figure(number_of(report, "previous_tokens_per_second"),
                                     number_of(report, "previous_tokens_per_second_spread")));
      } else {
        figure.detail += ", KL n/a (no previous model to compare with)";
      }
    }
    if (report.is_object() && integer_of(report, "crashes") > 0) figure.detail += fmt::format(", {} crash(es)", integer_of(report, "crashes"));
    if (report.is_object() && !text_of(report, "error").empty()) figure.detail += ", error: " + text_of(report, "error");
    figures.push_back(std::move(figure));
  }
  std::stable_sort(figures.begin(), figures.end(), [](const TargetFigure& a, const TargetFigure& b) {
    return a.wave != b.wave ? a.wave < b.wave : a.agent < b.agent;
  });
  return figures;
}

// One bar per target agent, grouped by wave: its KL against the gate's limit (a dashed line), in the
// colour of its status; a short grey bar where there is no KL yet (or nothing to compare with).
void health_chart(std::string& out, const nlohmann::json& rollout) {
  const std::vector<TargetFigure> figures = target_figures(rollout);
  if (figures.empty()) return;
  const double max_kl = std::max(1e-9, number_of(rollout.value("settings", nlohmann::json::object()), "max_kl"));
  constexpr double kWidth = 960, kHeight = 240, kLeft = 60, kRight = 10, kTop = 20, kBottom = 40;
  const double plot_width = kWidth - kLeft - kRight, plot_height = kHeight - kTop - kBottom;
  const double top_kl = 2 * max_kl;  // the axis ends at twice the limit; higher bars are cut and marked
  const double slot = plot_width / static_cast<double>(figures.size());
  const double bar = std::max(1.0, std::min(24.0, slot * 0.8));
  const auto y_of = [&](double kl) { return kTop + plot_height * (1 - std::min(kl, top_kl) / top_kl); };
  out += fmt::format(
      "<svg id=\"rollout-health\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "role=\"img\" aria-label=\"KL of each agent of the rollout against the gate's limit\">\n",
      kWidth, kHeight);
  out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\n", kLeft, kTop, plot_width,
                     plot_height);
  for (const double kl : {0.0, max_kl, top_kl}) {
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{:.3g}</text>\n", kLeft - 4, y_of(kl) + 4, kl);
  }
  out += fmt::format("<text x=\"12\" y=\"{:.1f}\" font-size=\"11\" transform=\"rotate(-90 12 {:.1f})\" text-anchor=\"middle\">KL vs previous</text>\n",
                     kTop + plot_height / 2, kTop + plot_height / 2);
  int wave = -1;
  for (size_t i = 0; i < figures.size(); ++i) {
    const TargetFigure& figure = figures[i];
    const double x = kLeft + slot * static_cast<double>(i);
    if (figure.wave != wave) {
      wave = figure.wave;
      if (i > 0) {
        out += fmt::format("<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#888\"/>\n", x, kTop, kTop + plot_height + 30);
      }
      out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"12\">wave {}</text>\n", x + 3, kHeight - 8, wave + 1);
    }
    const double height = figure.has_kl ? std::max(1.0, kTop + plot_height - y_of(figure.kl)) : 4.0;
    const char* fill = figure.has_kl ? colour(figure.status) : "#bdbdbd";
    out += fmt::format("<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{}</title></rect>\n",
                       x + (slot - bar) / 2, kTop + plot_height - height, bar, height, fill, html(figure.detail));
    if (figure.has_kl && figure.kl > top_kl) {
      out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#c62828\">&#9650;</text>\n",
                         x + slot / 2, kTop + 10);
    }
  }
  out += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#c62828\" stroke-dasharray=\"6 4\"/>\n", kLeft,
                     kLeft + plot_width, y_of(max_kl));
  out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\" fill=\"#c62828\">gate: KL &#8804; {:.3g}</text>\n",
                     kLeft + plot_width - 4, y_of(max_kl) - 4, max_kl);
  out += "</svg>\n";
  const bool any_kl = std::any_of(figures.begin(), figures.end(), [](const TargetFigure& f) { return f.has_kl; });
  out += any_kl ? "<p class=\"note\">One bar per agent (hover for its figures); grey: no figures yet, or no previous model to compare with.</p>\n"
                : "<p class=\"note\">No KL to show yet: no agent has reported against a previous model (grey: waiting, or a first model).</p>\n";
}

void rollout_section(std::string& out, const nlohmann::json& rollout) {
  out += "<section><h2>Rollout</h2>\n";
  if (!rollout.is_object()) {
    out += "<p>No rollout yet.</p></section>\n";
    return;
  }
  const nlohmann::json settings = rollout.value("settings", nlohmann::json::object());
  const nlohmann::json waves = rollout.value("waves", nlohmann::json::array());
  out += fmt::format("<p>Rollout {} of model {}: {} &mdash; wave {} of {}.", integer_of(rollout, "rollout"), integer_of(rollout, "model"),
                     badge(text_of(rollout, "stage")), integer_of(rollout, "wave") + 1, waves.size());
  out += fmt::format(" Gate: KL &#8804; {:.3g}, slowdown &#8804; {:.2g}x, at least {:.0f}% healthy, soak {} s.</p>\n",
                     number_of(settings, "max_kl"), number_of(settings, "max_slowdown"), number_of(settings, "min_healthy"),
                     integer_of(settings, "soak_ms") / 1000);
  if (!text_of(rollout, "reason").empty()) out += fmt::format("<p class=\"reason\">Reason: {}</p>\n", html(text_of(rollout, "reason")));
  // Per wave: how many of its agents are in each status.
  std::map<int, std::map<std::string, int>> by_wave;
  for (const auto& agent : rollout.value("agents", nlohmann::json::array())) ++by_wave[static_cast<int>(integer_of(agent, "wave"))][text_of(agent, "status")];
  out += "<table><tr><th>wave</th><th>share of targets</th><th>agents</th></tr>\n";
  for (const auto& [wave, counts] : by_wave) {
    std::string cells;
    for (const auto& [status, count] : counts) cells += fmt::format("{} {} ", count, badge(status));
    const double share = wave < static_cast<int>(waves.size()) && waves[wave].is_number() ? waves[wave].get<double>() : 0.0;
    out += fmt::format("<tr><td>{}</td><td>up to {:.0f}%</td><td>{}</td></tr>\n", wave + 1, share, cells);
  }
  out += "</table>\n";
  health_chart(out, rollout);
  out += "</section>\n";
}

void rounds_section(std::string& out, const StatusPageInput& input) {
  out += "<section><h2>Rounds</h2>\n";
  if (input.rounds.empty()) {
    out += "<p>No rounds yet.</p></section>\n";
    return;
  }
  out += "<table><tr><th>round</th><th>model</th><th>stage</th><th>joined</th><th>contributors</th><th>stage times</th>"
         "<th>failure, and agents that did not get through</th></tr>\n";
  for (const auto& round : input.rounds) {
    std::string times;
    const nlohmann::json stage_ms = round.value("stage_ms", nlohmann::json::object());
    for (const char* stage : {"collecting", "sharing", "masking", "unmasking", "aggregating", "quantizing", "evaluating"}) {
      if (stage_ms.is_object() && stage_ms.contains(stage) && stage_ms[stage].is_number())
        times += fmt::format("{} {:.1f}s<br>", stage, stage_ms[stage].get<double>() / 1000);
    }
    std::string problems;
    if (!text_of(round, "failure").empty()) problems += "<b>" + html(text_of(round, "failure")) + "</b><br>";
    for (const auto& agent : round.value("agents", nlohmann::json::array())) {
      const std::string state = text_of(agent, "state");
      if (state != "left" && state != "declined" && state != "dropped" && !agent.contains("reason")) continue;
      problems += fmt::format("agent {} {}{}: {}<br>", integer_of(agent, "agent"), html(state),
                              text_of(agent, "stage").empty() ? "" : " in " + html(text_of(agent, "stage")),
                              html(text_of(agent, "reason").empty() ? "(went silent)" : text_of(agent, "reason")));
    }
    out += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"small\">{}</td><td class=\"small\">{}</td></tr>\n",
                       integer_of(round, "round"), integer_of(round, "model"), badge(text_of(round, "stage")), integer_of(round, "joined"),
                       integer_of(round, "contributors"), times, problems);
  }
  out += "</table></section>\n";
}

constexpr const char* kStyle = R"(
body { font-family: sans-serif; margin: 1.5em; color: #212121; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.4em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
tr.failing td { background: #fff3f3; }
.badge { color: #fff; border-radius: 3px; padding: 1px 6px; font-size: 0.85em; }
.tiles .tile { display: inline-block; border: 2px solid #90a4ae; border-radius: 4px; padding: 4px 10px; margin-right: 8px; }
.note, .small { color: #616161; font-size: 0.85em; }
.reason { color: #c62828; }
.mono { font-family: monospace; }
)";

}  // namespace

std::string render_status_page(const StatusPageInput& input) {
  std::string out = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                    "<meta http-equiv=\"refresh\" content=\"10\">\n<title>fedcal fleet</title>\n<style>";
  out += kStyle;
  out += "</style></head><body>\n<h1>fedcal fleet</h1>\n";
  const nlohmann::json& coordinator = input.coordinator;
  out += fmt::format("<p class=\"note\">Coordinator {} &mdash; {} agent connection(s) &mdash; page of {}, refreshed every 10 s.</p>\n",
                     html(text_of(coordinator, "listen")), integer_of(coordinator, "agent_connections"),
                     html(format_utc_time(input.now_ms)));
  fleet_section(out, input);
  rollout_section(out, input.rollout);
  rounds_section(out, input);
  agents_section(out, input);
  out += "</body></html>\n";
  return out;
}

}  // namespace fedcal::coordinator

// The coordinator's admin commands (the CLI's requests on the local admin socket), one table entry
// each. Commands that load or write models do that work on a worker thread and finish on the event
// loop (store writes stay on the loop's thread), so agents keep being served meanwhile.
#include <fmt/ranges.h>

#include <algorithm>
#include <future>

#include "common/clock.h"
#include "common/error.h"
#include "coordinator/database_guard.h"
#include "coordinator/model_export.h"
#include "coordinator/model_import.h"
#include "coordinator/server.h"

namespace fedcal::coordinator {
namespace {

nlohmann::json agent_json(const AgentRecord& agent, bool online) {
  nlohmann::json profile = nlohmann::json::parse(agent.profile_json, nullptr, false);
  return {{"id", agent.id},
          {"name", agent.name},
          {"public_key", agent.public_key},
          {"enrolled_at_ms", agent.enrolled_at_ms},
          {"revoked", agent.revoked_at_ms.has_value()},
          {"online", online},
          {"last_seen_ms", agent.last_seen_ms},
          {"active_model", agent.active_model_sha},
          {"last_error", agent.last_error},
          {"last_error_ms", agent.last_error_ms},
          {"contradicting_reports", agent.contradicting_reports},
          {"last_contradiction", agent.last_contradiction},
          {"profile", profile.is_discarded() ? nlohmann::json::object() : profile}};
}

nlohmann::json model_json(const ModelRecord& model, const std::vector<ExportRecord>& exports) {
  return {{"id", model.id},
          {"sha256", model.sha256},
          {"kind", model.kind},
          {"bytes", model.bytes},
          {"description", model.description},
          {"path", model.path},
          {"round", model.round_id ? nlohmann::json(*model.round_id) : nlohmann::json(nullptr)},
          {"exports", exports_json(exports)}};
}

Server::AdminReply now(nlohmann::json reply) { return {std::move(reply), {}}; }

}  // namespace

Server::AgentView Server::agent_view(const AgentRecord& agent, int64_t wall_now) const {
  AgentView view;
  view.online = is_online(agent.id);
  view.state = agent.revoked_at_ms ? "revoked" : view.online ? "online" : "offline";
  const auto session = sessions_.find(agent.id);
  view.crashes = session == sessions_.end() ? 0u : session->second.crashes_since_activation;
  view.last_seen_ms = session == sessions_.end() ? agent.last_seen_ms : session->second.last_seen_ms;
  if (agent.revoked_at_ms) return view;
  if (!agent.last_error.empty()) view.problems.push_back(agent.last_error);
  if (view.crashes > 0) view.problems.push_back(fmt::format("{} crash(es) since its model was activated", view.crashes));
  if (agent.contradicting_reports >= 2) {
    view.problems.push_back(fmt::format("its rollout health reports contradicted the fleet {} times (last: {})",
                                        agent.contradicting_reports, agent.last_contradiction));
  }
  if (!view.online) {
    view.problems.push_back(view.last_seen_ms > 0 ? fmt::format("offline: silent for {} s",
                                                                std::max<int64_t>(0, wall_now - view.last_seen_ms) / 1000)
                                                  : "offline: never connected");
  }
  return view;
}

void Server::handle_admin() {
  const std::vector<zmq::message_t> frames = receive_multipart(admin_);
  if (frames.empty()) return;
  try {
    // REP answers each request once, whatever its frames: all are read, one reply goes back.
    if (frames.size() != 1) fail("an admin request is one frame of JSON, not {}", frames.size());
    AdminReply reply = start_command(nlohmann::json::parse(frames[0].to_string_view()));
    if (reply.later.valid()) {
      pending_admin_ = std::move(reply.later);  // answered by finish_admin once the worker is done
      return;
    }
    send_admin_reply(std::move(reply.now));
  } catch (const std::exception& error) {
    send_admin_error(error.what());
  }
}

Server::AdminReply Server::start_command(const nlohmann::json& request) {
  const std::string command = request.at("command").get<std::string>();
  const auto it = admin_commands_.find(command);
  if (it == admin_commands_.end()) fail("unknown command '{}'", command);
  return it->second(request);
}

nlohmann::json Server::run_command(const nlohmann::json& request) {
  AdminReply reply = start_command(request);
  return reply.later.valid() ? reply.later.get()() : std::move(reply.now);
}

void Server::finish_admin() {
  if (!pending_admin_.valid() || pending_admin_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  try {
    const std::function<nlohmann::json()> finish = pending_admin_.get();
    send_admin_reply(finish());
  } catch (const std::exception& error) {
    send_admin_error(error.what());
  }
}

void Server::send_admin_reply(nlohmann::json reply) {
  reply["ok"] = true;
  const std::string text = reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  admin_.send(zmq::buffer(text), zmq::send_flags::none);
}

void Server::send_admin_error(const std::string& message) {
  const nlohmann::json reply = {{"ok", false}, {"error", message}};
  const std::string text = reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  admin_.send(zmq::buffer(text), zmq::send_flags::none);
}

nlohmann::json Server::round_json(int64_t id, bool agents) {
  if (round_ && round_->id() == id && !round_->finished()) return round_->status(agents);
  const auto record = store_.round(id);
  if (!record) fail("no round {}", id);
  nlohmann::json json = record->report_json.empty() ? nlohmann::json::object() : nlohmann::json::parse(record->report_json);
  json["round"] = record->id;
  json["stage"] = name(record->stage);
  if (!record->failure.empty()) json["failure"] = record->failure;
  return json;
}

nlohmann::json Server::agents_list(const nlohmann::json& request) {
  // Filters: state (online, offline, revoked), label, failing (an unresolved problem, crashes of its
  // active model, or silence); sorted by id, name, last_seen (newest first) or state.
  const std::string state = request.value("state", "");
  const std::string label = request.value("label", "");
  const bool failing_only = request.value("failing", false);
  const std::string sort = request.value("sort", "id");
  if (!state.empty() && state != "online" && state != "offline" && state != "revoked")
    fail("state '{}': one of online, offline, revoked", state);
  if (sort != "id" && sort != "name" && sort != "last_seen" && sort != "state")
    fail("sort '{}': one of id, name, last_seen, state", sort);
  const int64_t wall_now = wall_ms();
  std::vector<nlohmann::json> selected;
  for (const AgentRecord& agent : store_.agents()) {
    const AgentView view = agent_view(agent, wall_now);
    if (failing_only && view.problems.empty()) continue;
    if (!state.empty() && state != view.state) continue;
    if (!label.empty() && !agent_labels(agent).count(label)) continue;
    nlohmann::json entry = agent_json(agent, view.online);
    entry["last_seen_ms"] = view.last_seen_ms;
    entry["crashes_since_activation"] = view.crashes;
    entry["state"] = view.state;
    entry["failing"] = !view.problems.empty();
    entry["problem"] = fmt::format("{}", fmt::join(view.problems, "; "));
    selected.push_back(std::move(entry));
  }
  std::stable_sort(selected.begin(), selected.end(), [&](const nlohmann::json& a, const nlohmann::json& b) {
    if (sort == "name") return a["name"].get<std::string>() < b["name"].get<std::string>();
    if (sort == "last_seen") return a["last_seen_ms"].get<int64_t>() > b["last_seen_ms"].get<int64_t>();
    if (sort == "state") return a["state"].get<std::string>() < b["state"].get<std::string>();
    return a["id"].get<int64_t>() < b["id"].get<int64_t>();
  });
  return {{"agents", selected}};
}

nlohmann::json Server::rollout_json() {
  if (rollout_) return rollout_->status();
  const auto records = store_.rollouts();
  return records.empty() ? nlohmann::json(nullptr) : Rollout::stored_status(*this, records.back());
}

void Server::register_admin_commands() {
  admin_commands_["status"] = [this](const nlohmann::json&) {
    return now({{"role", "leader"},
                {"listen", config_.listen},
                {"curve_public_key", curve_keys_.public_key},
                {"signing_public_key", signing_key_.public_key_hex()},
                {"online_agents", online_agents().size()},
                {"agent_connections", connection_guard_->open()},
                {"audit_entries", store_.audit_entries()},
                {"replay_state_keys", last_sequence_.size()},
                {"package_url", config_.package_url},
                {"package_chunk_bytes_sent", counters_.package_bytes_sent},
                {"heartbeats_answered", counters_.heartbeats_answered},
                {"relay_presence", relay_presence_entries_},
                {"database", config_.database_name()},
                {"database_statements", store_.database().statements_run()},
                {"metrics", http_ ? "http://" + http_->address() + "/metrics" : ""},
                {"status_page", http_ ? "http://" + http_->address() + "/" : ""},
                {"round", round_ ? nlohmann::json(round_->id()) : nlohmann::json(nullptr)}});
  };
  admin_commands_["token.create"] = [this](const nlohmann::json& request) {
    const int hours = request.value("valid_hours", config_.token_valid_hours);
    if (hours < 1 || hours > 24 * 365) fail("valid_hours = {}: must be 1..8760", hours);
    const int count = request.value("count", 1);
    if (count < 1 || count > 10000) fail("count = {}: must be 1..10000 tokens per request", count);
    const std::vector<std::string> tokens = store_.create_tokens(count, int64_t{hours} * 3600 * 1000);
    store_.audit("operator", count == 1 ? "token created" : "tokens created",
                 count == 1 ? fmt::format("valid {} h", hours) : fmt::format("{} tokens, valid {} h", count, hours));
    nlohmann::json reply = {{"valid_hours", hours}, {"coordinator_key", curve_keys_.public_key}};
    if (count == 1)
      reply["token"] = tokens.front();
    else
      reply["tokens"] = tokens;
    return now(reply);
  };
  admin_commands_["agents.list"] = [this](const nlohmann::json& request) { return now(agents_list(request)); };
  admin_commands_["agents.revoke"] = [this](const nlohmann::json& request) {
    const int64_t id = request.at("id").get<int64_t>();
    if (!store_.revoke_agent(id)) fail("no enrolled, unrevoked agent {}", id);
    registry_cache_.clear();  // refused from its next message on
    const auto session = sessions_.find(id);
    if (session != sessions_.end()) {
      cut_at_relay(session->second.route);  // its relay stops answering its heartbeats at once
      sessions_.erase(session);
    }
    store_.audit("operator", "agent revoked", std::to_string(id));
    return now({{"revoked", id}});
  };
  admin_commands_["models.import"] = [this](const nlohmann::json& request) {
    const std::string path = request.at("path").get<std::string>();
    const std::string tokenizer = request.value("tokenizer", "");
    const std::string description = request.value("description", "");
    log(fmt::format("importing {} (on a worker)", path));
    AdminReply reply;
    reply.later = std::async(std::launch::async, [this, path, tokenizer, description]() -> std::function<nlohmann::json()> {
      const ModelRecord imported =
          import_model_file(path, tokenizer, description, signing_key_, ArtifactStore(config_.artifacts_dir()));
      return [this, imported, path] {
        ModelRecord model = imported;
        model.id = store_.add_model(model);
        store_.audit("operator", "model imported", fmt::format("model {} from {}", model.id, path));
        return model_json(*store_.model(model.id), {});
      };
    });
    return reply;
  };
  admin_commands_["db.backup"] = [this](const nlohmann::json&) {
    AdminReply reply;
    const std::string destination = backup_path(config_, "manual");
    reply.later = std::async(std::launch::async, [this, destination]() -> std::function<nlohmann::json()> {
      const int64_t bytes = backup_database(config_, destination);
      return [this, destination, bytes] {
        store_.audit("operator", "database backed up", destination);
        return nlohmann::json{{"backup", destination}, {"bytes", bytes}};
      };
    });
    return reply;
  };
  admin_commands_["models.list"] = [this](const nlohmann::json&) {
    nlohmann::json models = nlohmann::json::array();
    for (const ModelRecord& model : store_.models()) models.push_back(model_json(model, store_.exports(model.id)));
    return now({{"models", models}});
  };
  admin_commands_["models.export"] = [this](const nlohmann::json& request) {
    const int64_t id = request.at("id").get<int64_t>();
    const std::string format = request.at("format").get<std::string>();
    const std::string output = request.at("output").get<std::string>();
    if (std::find(kRuntimeExportFormats.begin(), kRuntimeExportFormats.end(), format) == kRuntimeExportFormats.end())
      fail("unknown export format '{}' (known: {})", format, fmt::join(kRuntimeExportFormats, ", "));
    if (output.empty() || output.front() != '/') fail("output '{}': an absolute path on the coordinator's machine", output);
    ModelExportSource source;
    const auto model = store_.model(id);
    if (!model) fail("no model {} (see `models list`)", id);
    source.model = *model;
    if (model->round_id) {
      if (const auto round = store_.round(*model->round_id)) source.fp32_source = store_.model(round->model_id);
      // (A smoothing round's FP32 model differs from the one its statistics were recorded on.)
      if (model->kind == "int8") source.round_stats = store_.aggregate_path(*model->round_id);
    }
    for (const ExportRecord& made : store_.exports(id)) {
      if (made.format == format && made.error.empty()) source.made = made;
    }
    log(fmt::format("exporting model {} as {} to {} (on a worker)", id, format, output));
    AdminReply reply;
    reply.later = std::async(std::launch::async, [this, source, format, output]() -> std::function<nlohmann::json()> {
      const RuntimeExportSummary summary = export_stored_model(source, format, output, signing_key_);
      return [this, summary, source, format, output] {
        store_.audit("operator", "model exported", fmt::format("model {} as {} to {}", source.model.id, format, output));
        return nlohmann::json{{"model", source.model.id}, {"format", format},       {"output", output},
                              {"bytes", summary.bytes},   {"summary", summary.text}, {"copied", source.made.has_value()}};
      };
    });
    return reply;
  };
  admin_commands_["round.start"] = [this](const nlohmann::json& request) {
    if (round_ && !round_->finished()) fail("round {} is still running (stage '{}')", round_->id(), name(round_->stage()));
    const RoundSettings settings = RoundSettings::from_json(request.at("settings"), !config().reference_text.empty());
    const auto model = store_.model(settings.model_id);
    if (!model) fail("no model {} (see `models list`)", settings.model_id);
    AdminReply reply;
    reply.later = std::async(std::launch::async, [this, settings, model = *model]() -> std::function<nlohmann::json()> {
      const RoundModel loaded = load_round_model(model);
      return [this, settings, model, loaded] {
        if (round_ && !round_->finished()) fail("round {} started meanwhile", round_->id());
        round_ = Round::start(*this, settings, model, loaded);
        return round_->status();
      };
    });
    return reply;
  };
  const auto round_status = [this](const nlohmann::json& request) {
    int64_t id = request.value("id", int64_t{0});
    if (id == 0) {
      const auto rounds = store_.rounds();
      if (rounds.empty()) fail("no rounds yet");
      id = rounds.back().id;
    }
    // "agents": false leaves out the per-agent list of a running round (what a poller of a round of
    // thousands wants: the list is a database read and a JSON entry per agent).
    return now(round_json(id, request.value("agents", true)));
  };
  admin_commands_["round.status"] = round_status;
  admin_commands_["round.report"] = round_status;
  admin_commands_["round.abort"] = [this](const nlohmann::json&) {
    if (!round_ || round_->finished()) fail("no round is running");
    round_->fail_round("aborted by the operator");
    return now(round_json(round_->id()));
  };
  admin_commands_["rollout.start"] = [this](const nlohmann::json& request) {
    if (rollout_ && (rollout_->stage() == RolloutStage::kRunning || rollout_->stage() == RolloutStage::kPaused)) {
      fail("rollout {} is {}; abort it first", rollout_->id(), name(rollout_->stage()));
    }
    const RolloutSettings settings = RolloutSettings::from_json(request.at("settings"));
    const auto model = store_.model(settings.model_id);
    if (!model) fail("no model {} (see `models list`)", settings.model_id);
    std::vector<int64_t> targets;
    for (const AgentRecord& agent : store_.agents()) {
      if (agent.revoked_at_ms) continue;
      if (!settings.group.empty() && !agent_labels(agent).count(settings.group)) continue;
      targets.push_back(agent.id);
    }
    rollout_ = Rollout::start(*this, settings, *model, targets);
    return now(rollout_->status());
  };
  // The rollout's operator commands act on the active rollout; status also shows the last one.
  const auto rollout_command = [this](void (*act)(Rollout&)) {
    return [this, act](const nlohmann::json&) {
      if (!rollout_) {
        if (act != nullptr) fail("no rollout is active");
        nlohmann::json last = rollout_json();
        if (last.is_null()) fail("no rollouts yet");
        return now(std::move(last));
      }
      if (act != nullptr) act(*rollout_);
      return now(rollout_->status());
    };
  };
  admin_commands_["rollout.status"] = rollout_command(nullptr);
  admin_commands_["rollout.pause"] = rollout_command([](Rollout& rollout) { rollout.pause(); });
  admin_commands_["rollout.resume"] = rollout_command([](Rollout& rollout) { rollout.resume(); });
  admin_commands_["rollout.abort"] = rollout_command([](Rollout& rollout) { rollout.abort(); });
  admin_commands_["rollout.rollback"] =
      rollout_command([](Rollout& rollout) { rollout.rollback("rolled back by the operator"); });
  admin_commands_["audit"] = [this](const nlohmann::json& request) {
    nlohmann::json entries = nlohmann::json::array();
    const int limit = request.value("limit", 50);
    if (limit < 1 || limit > 100000) fail("limit = {}: 1 to 100000", limit);
    for (const auto& entry : store_.audit_log(limit, request.value("actor", ""))) {
      entries.push_back({{"at_ms", entry.at_ms}, {"actor", entry.actor}, {"event", entry.event}, {"detail", entry.detail}});
    }
    return now({{"audit", entries}});
  };
  admin_commands_["shutdown"] = [this](const nlohmann::json&) {
    shutdown_requested_ = true;
    return now({{"stopping", true}});
  };
}

}  // namespace fedcal::coordinator

// The store's contract, run on both engines: SQLite (the default) and PostgreSQL (a server of the
// test's own, tests/postgres_server.h). Every case runs once per backend.
#include "coordinator/store.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <thread>

#include "common/error.h"
#include "coordinator/database_guard.h"
#include "tests/postgres_server.h"
#include "tests/test_support.h"

namespace fedcal::coordinator {
namespace {

// Where one backend's database lives; open() connects a new Store to it (a restart).
class Backend {
 public:
  explicit Backend(const std::string& engine) : engine_(engine) {
    if (engine == "postgresql") {
      server_ = std::make_unique<testing::PostgresServer>();
      url_ = server_->create_database();
    }
  }
  std::unique_ptr<Store> open() const {
    if (engine_ == "sqlite") return std::make_unique<Store>(dir_.path("c.db"));
    return std::make_unique<Store>(open_postgres(url_), dir_.path("postgres.ledger"));
  }
  const std::string& engine() const { return engine_; }
  testing::PostgresServer* server() const { return server_.get(); }
  const testing::ScratchDir& dir() const { return dir_; }

 private:
  std::string engine_;
  testing::ScratchDir dir_;
  std::unique_ptr<testing::PostgresServer> server_;
  std::string url_;
};

const char* const kEngines[] = {"sqlite", "postgresql"};

ModelRecord test_model(char letter) {
  ModelRecord model;
  model.sha256 = std::string(64, letter);
  model.kind = "fp32";
  model.path = std::string("/artifacts/") + letter;
  model.bytes = 10;
  model.description = "m";
  return model;
}

TEST_CASE("Store contract: a token enrolls one key once, and revoked keys cannot come back") {
  for (const char* engine : kEngines) {
    CAPTURE(engine);
    const Backend backend(engine);
    const auto store = backend.open();
    const std::string token = store->create_token(60000);
    CHECK_FALSE(store->redeem_token("not-a-token", "key-a", "a").has_value());
    const auto id = store->redeem_token(token, "key-a", "a");
    REQUIRE(id.has_value());
    CHECK_FALSE(store->redeem_token(token, "key-b", "b").has_value());  // used
    CHECK(store->agent_by_key("key-a")->name == "a");
    CHECK(store->agent(*id)->public_key == "key-a");
    CHECK(store->revoke_agent(*id));
    CHECK_FALSE(store->revoke_agent(*id));
    CHECK(store->agent(*id)->revoked_at_ms.has_value());
    CHECK_FALSE(store->redeem_token(store->create_token(60000), "key-a", "again").has_value());
    CHECK_FALSE(store->redeem_token(store->create_token(-1), "key-c", "expired").has_value());
    const auto second = store->redeem_token(store->create_token(60000), "key-d", "d");
    REQUIRE(second.has_value());
    CHECK(*second > *id);
    CHECK(store->agents().size() == 2);
    // Tokens made in a batch are distinct and each enrolls one key.
    const std::vector<std::string> batch = store->create_tokens(3, 60000);
    REQUIRE(batch.size() == 3);
    CHECK(std::set<std::string>(batch.begin(), batch.end()).size() == 3);
    CHECK(store->redeem_token(batch[1], "key-e", "e").has_value());
    CHECK_FALSE(store->redeem_token(batch[1], "key-f", "f").has_value());
    CHECK(store->redeem_token(batch[2], "key-f", "f").has_value());
  }
}

TEST_CASE("Store contract: state survives reopening, rounds keep their stage, the schema refuses unknown kinds") {
  for (const char* engine : kEngines) {
    CAPTURE(engine);
    const Backend backend(engine);
    int64_t round = 0, model_id = 0;
    {
      const auto store = backend.open();
      model_id = store->add_model(test_model('a'));
      CHECK(store->add_model(test_model('a')) == model_id);  // content-addressed: the same file once
      round = store->create_round(model_id, "{}");
      store->set_round_stage(round, RoundStage::kMasking, "");
      store->audit("operator", "test", "detail");
    }
    const auto reopened = backend.open();
    CHECK(reopened->round(round)->stage == RoundStage::kMasking);
    CHECK(reopened->round(round)->model_id == model_id);
    CHECK(reopened->models().size() == 1);
    CHECK(reopened->model_by_sha(std::string(64, 'a'))->id == model_id);
    CHECK(reopened->audit_log(10).front().event == "test");
    // A model kind the schema does not know is refused by the database itself ...
    ModelRecord bad = test_model('b');
    bad.kind = "int4";
    CHECK_THROWS_WITH(reopened->add_model(bad), doctest::Contains("coordinator database: add model"));
    // ... and so is a round of a model that does not exist (foreign keys are on).
    CHECK_THROWS(reopened->create_round(model_id + 100, "{}"));
    CHECK(reopened->rounds().size() == 1);
  }
}

TEST_CASE("Store contract: rounds, participants, aggregates and exports") {
  for (const char* engine : kEngines) {
    CAPTURE(engine);
    const Backend backend(engine);
    const auto store = backend.open();
    const int64_t model = store->add_model(test_model('a'));
    const int64_t round = store->create_round(model, R"({"min_agents":2})");
    const int64_t agent = *store->redeem_token(store->create_token(60000), "key-a", "a");
    const int64_t other = *store->redeem_token(store->create_token(60000), "key-b", "b");
    store->add_participant(round, agent, 0);
    store->add_participant(round, other, 1);
    // Statuses are written in one commit per flush (the daemon's loop turn), and read back before it.
    const int64_t commits = store->database().commits();
    store->set_participant_status(round, agent, ParticipantStatus::kMasked);
    store->set_participant_status(round, other, ParticipantStatus::kShared);
    CHECK(store->database().commits() == commits);
    store->flush_pending();
    CHECK(store->database().commits() == commits + 1);
    store->set_participant_status(round, other, ParticipantStatus::kDropped, "offline");
    store->save_participant_report(round, agent, R"({"ok":true})");
    std::vector<Store::Participant> participants = store->participants(round);
    REQUIRE(participants.size() == 2);
    CHECK(participants[0].status == ParticipantStatus::kReported);
    CHECK(participants[0].report_json == R"({"ok":true})");
    CHECK(participants[1].reason == "offline");
    // Added again: starts over.
    store->add_participant(round, other, 3);
    participants = store->participants(round);
    CHECK(participants[1].index == 3);
    CHECK(participants[1].status == ParticipantStatus::kJoined);
    CHECK(participants[1].reason.empty());

    store->save_aggregate(round, "/stats/1", std::string(64, 'c'), 2, 10, 1000);
    CHECK(store->round(round)->stage == RoundStage::kQuantizing);                  // in the same transaction
    store->save_aggregate(round, "/stats/1b", std::string(64, 'c'), 2, 10, 1000);  // replaced
    CHECK(store->aggregate_path(round) == "/stats/1b");
    const int64_t round2 = store->create_round(model, "{}");
    store->save_aggregate(round2, "/stats/2", std::string(64, 'd'), 2, 10, 1000);
    CHECK(store->aggregates_beyond(1) == std::vector<std::pair<int64_t, std::string>>{{round, "/stats/1b"}});
    CHECK(store->aggregates_beyond(5).empty());
    store->forget_aggregate(round);
    CHECK_FALSE(store->aggregate_path(round).has_value());

    const int64_t result = store->add_model(test_model('e'));
    store->set_round_models(round, result, std::nullopt);
    CHECK(store->round(round)->result_model_id == result);
    CHECK_FALSE(store->round(round)->baseline_model_id.has_value());
    store->set_round_report(round, R"({"report":1})");
    store->set_round_stage(round, RoundStage::kFailed, "why");
    CHECK(store->round(round)->failure == "why");

    ExportRecord made;
    made.model_id = model;
    made.format = "gguf";
    made.path = "/exports/1";
    store->add_export(made);
    made.path = "/exports/2";  // the same model, format and no round: replaces
    store->add_export(made);
    made.round_id = round;  // a round's: kept apart
    made.path = "/exports/3";
    store->add_export(made);
    const std::vector<ExportRecord> exports = store->exports(model);
    REQUIRE(exports.size() == 2);
    CHECK(exports[0].path == "/exports/2");
    CHECK_FALSE(exports[0].round_id.has_value());
    CHECK(exports[1].round_id == round);
    const std::set<std::string> paths = store->artifact_paths();
    CHECK(paths.count("/exports/3") == 1);
    CHECK(paths.count("/stats/2") == 1);
    CHECK(paths.count(std::string("/artifacts/a")) == 1);

    const int64_t rollout = store->create_rollout(result, "{}");
    store->save_rollout(rollout, RolloutStage::kRunning, "", R"({"wave":0})",
                        {{agent, 0, "sent", "fleet", ""}, {other, 1, "pending", "class:static", ""}});
    store->save_rollout(rollout, RolloutStage::kPaused, "operator", R"({"wave":1})",
                        {{agent, 0, "healthy", "fleet", R"({"kl":0})"}});
    REQUIRE(store->rollouts().size() == 1);
    CHECK(store->rollouts()[0].stage == RolloutStage::kPaused);
    CHECK(store->rollouts()[0].state_json == R"({"wave":1})");
    const std::vector<Store::RolloutTarget> targets = store->rollout_targets(rollout);
    REQUIRE(targets.size() == 2);
    CHECK(targets[0].status == "healthy");  // only the changed row was written again
    CHECK(targets[0].report_json == R"({"kl":0})");
    CHECK(targets[1].status == "pending");
    CHECK(targets[1].package == "class:static");
  }
}

TEST_CASE("Store contract: agents' heartbeats, sequences, problems and their active model") {
  for (const char* engine : kEngines) {
    CAPTURE(engine);
    const Backend backend(engine);
    const auto store = backend.open();
    const int64_t a = *store->redeem_token(store->create_token(60000), "key-a", "a");
    const int64_t b = *store->redeem_token(store->create_token(60000), "key-b", "b");
    const std::string profile = R"({"arch":"aarch64","labels":["pi"]})";
    store->record_hello(a, 1000, profile, 1, "");
    store->agents_seen({{a, 2000}, {b, 3000}});
    store->save_sequences({{"key-a", uint64_t{1} << 40}, {"key-b", 7}});
    store->set_agent_problem(b, 4000, "disk full");
    store->note_contradiction(b, "wave 1");
    store->note_contradiction(b, "wave 2");
    store->set_active_model(a, std::string(64, 'f'));
    const AgentRecord first = *store->agent(a);
    CHECK(first.last_seen_ms == 2000);
    CHECK(agent_labels(first) == std::set<std::string>{"pi"});
    CHECK(first.last_sequence == uint64_t{1} << 40);
    CHECK(store->active_model(a) == std::string(64, 'f'));
    const AgentRecord second = *store->agent(b);
    CHECK(second.last_error == "disk full");
    CHECK(second.contradicting_reports == 2);
    CHECK(second.last_contradiction == "wave 2");
    CHECK(store->active_model(999).empty());
    // A hello: one statement, one commit; the stored problem comes back.
    const int64_t commits = store->database().commits();
    CHECK(store->record_hello(b, 5000, R"({"arch":"x86_64"})", 42, std::string(64, 'e')) == "disk full");
    CHECK(store->database().commits() == commits + 1);
    const AgentRecord hello = *store->agent(b);
    CHECK(hello.last_seen_ms == 5000);
    CHECK(hello.profile_json == R"({"arch":"x86_64"})");
    CHECK(hello.last_sequence == 42);
    CHECK(hello.active_model_sha == std::string(64, 'e'));

    // A flush of many agents: 587 = 512 + 64 + 8 + 3 rows, one statement per chunk.
    std::vector<std::pair<int64_t, int64_t>> seen;
    std::vector<std::pair<std::string, uint64_t>> sequences;
    for (int i = 0; i < 587; ++i) {
      const std::string key = "many-" + std::to_string(i);
      const int64_t id = *store->redeem_token(store->create_token(60000), key, key);
      seen.emplace_back(id, 100000 + i);
      sequences.emplace_back(key, uint64_t{1000} + static_cast<uint64_t>(i));
    }
    const int64_t before = store->database().statements_run();
    store->agents_seen(seen);
    store->save_sequences(sequences);
    CHECK(store->database().statements_run() - before == 2 * (1 + 1 + 1 + 3));
    for (const auto& [id, at_ms] : seen) {
      const AgentRecord agent = *store->agent(id);
      CHECK(agent.last_seen_ms == at_ms);
      CHECK(agent.last_sequence == static_cast<uint64_t>(at_ms - 100000 + 1000));
    }
    CHECK(store->agent(a)->last_seen_ms == 2000);  // the others untouched
  }
}

TEST_CASE("Store contract: ids are never reused, also after the rows are gone (the ledger)") {
  for (const char* engine : kEngines) {
    CAPTURE(engine);
    const Backend backend(engine);
    int64_t round = 0, rollout = 0;
    {
      const auto store = backend.open();
      const int64_t model = store->add_model(test_model('a'));
      round = store->create_round(model, "{}");
      rollout = store->create_rollout(model, "{}");
    }
    // The rows go (as with a restore of an older backup); the ledger beside the database remembers.
    if (backend.server() != nullptr) {
      backend.server()->psql("fedcal_1", "DELETE FROM rollouts; DELETE FROM rounds");
    } else {
      const auto store = backend.open();
      store->database().execute("DELETE FROM rollouts");
      store->database().execute("DELETE FROM rounds");
    }
    const auto reopened = backend.open();
    const int64_t model = reopened->models().at(0).id;
    CHECK(reopened->create_round(model, "{}") == round + 1);
    CHECK(reopened->create_rollout(model, "{}") == rollout + 1);
    CHECK_FALSE(reopened->round_id_issued(round + 2));
    CHECK(reopened->round_id_issued(round));
  }
}

TEST_CASE("Store contract: the audit log keeps its newest entries up to the cap") {
  for (const char* engine : kEngines) {
    CAPTURE(engine);
    const Backend backend(engine);
    const auto store = backend.open();
    for (int i = 0; i < 1000; ++i) store->audit("flooder", "refused", std::to_string(i));
    CHECK(store->audit_entries() == 1000);  // the default cap is far above
    store->set_audit_max_entries(100);      // trims at once ...
    CHECK(store->audit_entries() == 100);
    CHECK(store->audit_log(1).front().detail == "999");  // ... the oldest
    for (int i = 1000; i < 2000; ++i) store->audit("flooder", "refused", std::to_string(i));
    CHECK(store->audit_entries() <= 100 + 256);  // and every 256 inserts after
    CHECK(store->audit_entries() >= 100);
    CHECK(store->audit_log(1).front().detail == "1999");
    CHECK(store->audit_log(5, "nobody").empty());
  }
}

TEST_CASE("Store contract: a flood of volume entries never pushes the others out of the audit log") {
  for (const char* engine : kEngines) {
    CAPTURE(engine);
    const Backend backend(engine);
    const auto store = backend.open();
    store->set_audit_max_entries(100);
    for (int i = 0; i < 3; ++i) store->audit("agent " + std::to_string(i), "enrolled", "board");
    for (int i = 0; i < 5000; ++i) store->audit_volume("key K", "refused", std::to_string(i));
    store->set_audit_max_entries(100);  // trim now
    const std::vector<Store::AuditEntry> entries = store->audit_log(1000);
    CHECK(entries.size() == 103);
    CHECK(std::count_if(entries.begin(), entries.end(), [](const auto& entry) { return entry.event == "enrolled"; }) == 3);
    CHECK(entries.front().detail == "4999");
    // The others have their own cap.
    for (int i = 0; i < 300; ++i) store->audit("operator", "token created", std::to_string(i));
    store->set_audit_max_entries(100);
    CHECK(store->audit_entries() == 200);
  }
}

TEST_CASE("Store on PostgreSQL: an unreachable server is an I/O error naming the database, without its password") {
  try {
    open_postgres("postgresql://fedcal:secret@/nowhere?host=/nonexistent-socket-dir");
    FAIL("connected to nothing");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::kIo);
    CHECK(std::string(error.what()).find("postgresql://fedcal:***@/nowhere") != std::string::npos);
    CHECK(std::string(error.what()).find("secret") == std::string::npos);
  }
}

TEST_CASE("Store on PostgreSQL: one connection leads at a time, and a connection the server cut off is never reopened") {
  testing::PostgresServer server;
  const std::string url = server.create_database();
  auto first = open_postgres(url);
  auto second = open_postgres(url);
  CHECK(first->try_lead(kLeadLock));
  CHECK_FALSE(second->try_lead(kLeadLock));
  first.reset();  // the session ends: its lead with it (once the server's backend has exited)
  bool led = false;
  for (int i = 0; i < 100 && !led; ++i) {
    led = second->try_lead(kLeadLock);
    if (!led) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(led);
  CHECK(second->connected());
  CHECK(second->query("SELECT 1").at(0).int64(0) == 1);  // prepared while connected, as the daemon's lead check is

  // Cut off (pg_terminate_backend, as a partition would): the next statement fails, and so does every
  // later one: a silent reconnect would be a session without the lead.
  server.psql("fedcal_1",
              "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'fedcal_1' AND pid <> "
              "pg_backend_pid()");
  CHECK_THROWS_AS(second->query("SELECT 1"), Error);
  CHECK_FALSE(second->connected());
  CHECK_THROWS_AS(second->query("SELECT 1"), Error);
  CHECK(open_postgres(url)->try_lead(kLeadLock));  // the lead is free for a standby
}

}  // namespace
}  // namespace fedcal::coordinator

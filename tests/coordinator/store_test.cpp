#include "coordinator/store.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "common/error.h"
#include "tests/test_support.h"

namespace fedcal::coordinator {
namespace {

TEST_CASE("Store: a token enrolls one key once, and revoked keys cannot come back") {
  testing::ScratchDir dir;
  Store store(dir.path("c.db"));
  const std::string token = store.create_token(60000);
  CHECK_FALSE(store.redeem_token("not-a-token", "key-a", "a").has_value());
  const auto id = store.redeem_token(token, "key-a", "a");
  REQUIRE(id.has_value());
  CHECK_FALSE(store.redeem_token(token, "key-b", "b").has_value());  // used
  CHECK(store.agent_by_key("key-a")->name == "a");
  CHECK(store.revoke_agent(*id));
  CHECK_FALSE(store.revoke_agent(*id));
  CHECK_FALSE(store.redeem_token(store.create_token(60000), "key-a", "again").has_value());
  CHECK_FALSE(store.redeem_token(store.create_token(-1), "key-c", "expired").has_value());
}

TEST_CASE("Store: state survives reopening, rounds keep their stage") {
  testing::ScratchDir dir;
  int64_t round = 0;
  {
    Store store(dir.path("c.db"));
    ModelRecord model;
    model.sha256 = std::string(64, 'a');
    model.kind = "fp32";
    model.path = "/x";
    model.bytes = 10;
    model.description = "m";
    const int64_t id = store.add_model(model);
    CHECK(store.add_model(model) == id);  // content-addressed: the same file once
    round = store.create_round(id, "{}");
    store.set_round_stage(round, RoundStage::kMasking);
    store.audit("operator", "test", "detail");
  }
  Store reopened(dir.path("c.db"));
  CHECK(reopened.round(round)->stage == RoundStage::kMasking);
  CHECK(reopened.models().size() == 1);
  CHECK(reopened.audit_log(10).front().event == "test");
  // A model kind the schema does not know is refused by the database itself.
  ModelRecord bad;
  bad.sha256 = std::string(64, 'b');
  bad.kind = "int4";
  CHECK_THROWS(reopened.add_model(bad));
}

TEST_CASE("Store: the audit log keeps its newest entries up to the cap") {
  testing::ScratchDir dir;
  Store store(dir.path("c.db"));
  for (int i = 0; i < 1000; ++i) store.audit("flooder", "refused", std::to_string(i));
  CHECK(store.audit_entries() == 1000);  // the default cap is far above
  store.set_audit_max_entries(100);      // trims at once ...
  CHECK(store.audit_entries() == 100);
  CHECK(store.audit_log(1).front().detail == "999");  // ... the oldest
  for (int i = 1000; i < 2000; ++i) store.audit("flooder", "refused", std::to_string(i));
  CHECK(store.audit_entries() <= 100 + 256);  // and every 256 inserts after
  CHECK(store.audit_entries() >= 100);
  CHECK(store.audit_log(1).front().detail == "1999");
}

TEST_CASE("Store: a flood of volume entries never pushes the others out of the audit log") {
  testing::ScratchDir dir;
  Store store(dir.path("c.db"));
  store.set_audit_max_entries(100);
  for (int i = 0; i < 3; ++i) store.audit("agent " + std::to_string(i), "enrolled", "board");
  for (int i = 0; i < 5000; ++i) store.audit_volume("key K", "refused", std::to_string(i));
  store.set_audit_max_entries(100);  // trim now
  const std::vector<Store::AuditEntry> entries = store.audit_log(1000);
  CHECK(entries.size() == 103);
  CHECK(std::count_if(entries.begin(), entries.end(), [](const auto& entry) { return entry.event == "enrolled"; }) == 3);
  CHECK(entries.front().detail == "4999");
  // The others have their own cap.
  for (int i = 0; i < 300; ++i) store.audit("operator", "token created", std::to_string(i));
  store.set_audit_max_entries(100);
  CHECK(store.audit_entries() == 200);
}

}  // namespace
}  // namespace fedcal::coordinator

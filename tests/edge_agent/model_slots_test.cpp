#include "edge_agent/model_slots.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <vector>

#include "tests/test_support.h"

namespace fedcal::edge_agent {
namespace {

using testing::write_text;

// Two packages in the state folder's models/.
struct TwoPackages {
  testing::ScratchDir dir;
  const std::string a = std::string(64, 'a'), b = std::string(64, 'b');
  TwoPackages() {
    std::filesystem::create_directories(dir.path("models"));
    for (const std::string& sha : {a, b}) write_text(dir.path("models/" + sha + ".fcpkg"), "package");
  }
};

TEST_CASE("Model slots: unclean exits count across restarts, a switch, or a rollback while running, starts again at 0") {
  TwoPackages packages;
  testing::ScratchDir& dir = packages.dir;
  const std::string& a = packages.a;
  const std::string& b = packages.b;
  {
    ModelSlots slots(dir.path(""));
    slots.record_start();  // first start: no marker yet
    CHECK(slots.crashes_since_activation() == 0);
    slots.activate(a);
    slots.activate(b);
  }  // no record_clean_exit: a crash
  {
    ModelSlots slots(dir.path(""));
    slots.record_start();
    CHECK(slots.crashes_since_activation() == 1);
  }  // and another
  ModelSlots slots(dir.path(""));
  CHECK(slots.crashes_since_activation() == 1);  // kept on disk
  slots.record_start();
  CHECK(slots.crashes_since_activation() == 2);
  CHECK(slots.rollback());  // b -> a, while running
  CHECK(slots.active() == a);
  CHECK(slots.crashes_since_activation() == 0);
  slots.record_clean_exit();
  ModelSlots after(dir.path(""));
  after.record_start();
  CHECK(after.crashes_since_activation() == 0);  // the clean exit left no marker
  CHECK(after.active() == a);
  CHECK(after.previous() == b);
  CHECK(after.recovery().empty());
}

TEST_CASE("Model slots: a damaged slots.json (truncated, wrong types, a missing package) is set aside, the agent starts with none "
          "and says why") {
  const std::vector<std::pair<std::string, std::string>> damaged = {
      {"{\"active\": \"aaaa", "not a JSON object"},
      {"{\"active\": 7}", "'active' is not a string"},
      {"{\"active\": \"../../etc/passwd\"}", "'active' is not a SHA-256"},
      {"{\"active\": \"" + std::string(64, 'c') + "\"}", "names a package that is not in models/"},
      {"{\"crashes_since_activation\": -1}", "'crashes_since_activation' is not a count"}};
  for (const auto& entry : damaged) {
    const std::string& text = entry.first;
    const std::string& why = entry.second;
    CAPTURE(text);
    TwoPackages packages;
    write_text(packages.dir.path("slots.json"), text);
    ModelSlots slots(packages.dir.path(""));
    CHECK(slots.active().empty());
    CHECK(slots.previous().empty());
    CHECK(slots.recovery().find(why) != std::string::npos);
    CHECK(slots.recovery().find("slots.json") != std::string::npos);
    CHECK(std::filesystem::exists(packages.dir.path("slots.json.damaged")));
    slots.activate(packages.a);  // and it works on
    CHECK(ModelSlots(packages.dir.path("")).active() == packages.a);
  }
}

}  // namespace
}  // namespace fedcal::edge_agent

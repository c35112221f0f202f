#include "secagg/complaint_checks.h"

#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

namespace fedcal {
namespace {

// What the rules asked of their owner, in order.
struct ComplaintOwner {
  std::set<uint32_t> out;
  std::vector<std::string> events;
  ComplaintChecks checks{{
      [this](uint32_t p) { return out.count(p) > 0; },
      [this](uint32_t accused, uint32_t complainer) {
        events.push_back("ask " + std::to_string(accused) + " for " + std::to_string(complainer));
      },
      [this](uint32_t complainer, uint32_t accused, const std::string& why) {
        out.insert(accused);
        events.push_back("exclude " + std::to_string(accused) + " (" + std::to_string(complainer) + "): " + why);
      },
      [this](uint32_t complainer, uint32_t accused) {
        out.insert(complainer);
        events.push_back("false " + std::to_string(complainer) + " about " + std::to_string(accused));
      },
  }};
  void complain(uint32_t complainer, const std::vector<uint32_t>& accused, int64_t now_ms) {
    for (const uint32_t a : accused) {
      if (!checks.open(complainer, a)) checks.add(complainer, a);
    }
    checks.ask_next(complainer, now_ms);
  }
};

TEST_CASE("Complaint checks: one opening at a time per complainer, once per accused, a false complaint drops the rest") {
  ComplaintOwner owner;
  owner.complain(1, {2, 3}, 0);
  CHECK(owner.events == std::vector<std::string>{"ask 2 for 1"});  // one at a time
  CHECK(owner.checks.asked(2, 1));
  CHECK_FALSE(owner.checks.asked(3, 1));
  // Another complainer about the one already asked: excluded unopened.
  owner.complain(4, {2}, 5);
  CHECK(owner.events.back() == "exclude 2 (4): a second complaint against it (its one opening is spent)");
  // Its opening fails for complainer 1 (it is out already: nothing more), and 3 is asked next.
  owner.checks.settle(2, 1, /*opens=*/false, 10);
  CHECK(owner.events.back() == "ask 3 for 1");
  // 3's share opens: complainer 1 was wrong, and its complaints end.
  owner.checks.settle(3, 1, /*opens=*/true, 20);
  CHECK(owner.events.back() == "false 1 about 3");
  CHECK(owner.checks.empty());
}

TEST_CASE("Complaint checks: an opening that fails excludes the accused, and one not answered in time too") {
  ComplaintOwner owner;
  owner.complain(0, {1}, 100);
  owner.checks.settle(1, 0, /*opens=*/false, 150);
  CHECK(owner.events.back() == "exclude 1 (0): its share does not open with the key it revealed");
  owner.complain(0, {2}, 200);
  owner.checks.settle_stale(1199, 1000);  // not yet
  CHECK(owner.events.back() == "ask 2 for 0");
  owner.checks.settle_stale(1200, 1000);
  CHECK(owner.events.back() == "exclude 2 (0): it did not open its share within 1000 ms");
  CHECK(owner.checks.empty());
  // An answer after the timeout finds no open request.
  CHECK_FALSE(owner.checks.asked(2, 0));
  // An accused already out is never asked.
  owner.out.insert(5);
  const size_t events = owner.events.size();
  owner.complain(3, {5}, 300);
  CHECK(owner.events.size() == events);
  CHECK(owner.checks.empty());
}

}  // namespace
}  // namespace fedcal

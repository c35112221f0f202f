#include <doctest/doctest.h>

#include <set>

#include "edge_agent/interval.h"

namespace fedcal::edge_agent {
namespace {

// The moment a Backoff first becomes due at or after `from` (1 ms steps).
int64_t next_due(const Backoff& backoff, int64_t from) {
  for (int64_t t = from;; ++t) {
    if (backoff.due(t)) return t;
  }
}

TEST_CASE("Hello backoff: a few waits of the base, then doubling to the cap, each drawn from its upper half") {
  Backoff backoff(1000, 10000, 7);
  CHECK(backoff.due(0));  // the first hello at once
  int64_t now = 0;
  const int64_t expected[] = {1000, 1000, 1000, 1000, 1000, 2000, 4000, 8000, 10000, 10000};
  for (const int64_t wait : expected) {
    backoff.sent(now);
    CHECK(backoff.wait_ms() == wait);
    const int64_t due = next_due(backoff, now);
    CHECK(due - now >= wait / 2);
    CHECK(due - now < wait);
    now = due;
  }
  backoff.answered();
  backoff.sent(now);
  CHECK(backoff.wait_ms() == 1000);  // answered: from the base again
}

TEST_CASE("Hello backoff: a fleet that loses its coordinator at one moment comes back spread over the base period") {
  std::set<int64_t> first_tries;
  for (uint64_t agent = 0; agent < 1000; ++agent) {
    Backoff backoff(2000, 30000, agent);
    backoff.lost(50000);
    const int64_t due = next_due(backoff, 50000);
    CHECK(due < 52000);
    first_tries.insert(due / 100);  // which 100 ms slot
  }
  CHECK(first_tries.size() == 20);  // every slot of the 2 s has some (was: all at 50.000 s)
}

}  // namespace
}  // namespace fedcal::edge_agent

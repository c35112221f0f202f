#include "edge_agent/model_slots.h"

#include <doctest/doctest.h>

#include "tests/test_support.h"

namespace fedcal::edge_agent {
namespace {

TEST_CASE("Model slots: unclean exits count across restarts, a switch, or a rollback while running, starts again at 0") {
  testing::ScratchDir dir;
  {
    ModelSlots slots(dir.path(""));
    slots.record_start();  // first start: no marker yet
    CHECK(slots.crashes_since_activation() == 0);
    slots.activate("a");
    slots.activate("b");
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
  CHECK(slots.active() == "a");
  CHECK(slots.crashes_since_activation() == 0);
  slots.record_clean_exit();
  ModelSlots after(dir.path(""));
  after.record_start();
  CHECK(after.crashes_since_activation() == 0);  // the clean exit left no marker
  CHECK(after.active() == "a");
  CHECK(after.previous() == "b");
}

}  // namespace
}  // namespace fedcal::edge_agent

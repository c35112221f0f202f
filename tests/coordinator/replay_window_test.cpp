#include "coordinator/replay_window.h"

#include <doctest/doctest.h>

namespace fedcal::coordinator {
namespace {

TEST_CASE("Replay window: out-of-order numbers within 64 are accepted once, anything seen or too old is refused") {
  ReplayWindow window(100);  // after a restart: only the highest is known
  CHECK_FALSE(window.accept(100));
  CHECK_FALSE(window.accept(99));  // unknown whether it was seen: refused
  CHECK(window.accept(105));
  CHECK(window.accept(103));  // the old connection's last message, after the new one's first
  CHECK_FALSE(window.accept(103));
  CHECK(window.accept(101));
  CHECK(window.accept(104));
  CHECK(window.accept(102));
  CHECK_FALSE(window.accept(100));  // seen before the restart
  CHECK_FALSE(window.accept(105));
  CHECK(window.last() == 105);

  CHECK(window.accept(105 + 64));  // 105 is now the oldest number in the window
  CHECK_FALSE(window.accept(105));
  CHECK(window.accept(106));
  CHECK_FALSE(window.accept(104));  // too far behind
  CHECK(window.accept(1000));       // a jump past the whole window
  CHECK_FALSE(window.accept(169));
  CHECK(window.accept(999));
  CHECK(window.accept(1000 - 64));
  CHECK_FALSE(window.accept(1000 - 65));
}

TEST_CASE("Replay window: a fresh key accepts its first number, then only new ones") {
  ReplayWindow window;
  CHECK(window.accept(1));
  CHECK_FALSE(window.accept(1));
  CHECK(window.accept(3));
  CHECK(window.accept(2));
  CHECK_FALSE(window.accept(0));  // 0 is never valid: it is the starting highest
}

}  // namespace
}  // namespace fedcal::coordinator

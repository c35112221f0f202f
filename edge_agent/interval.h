// A periodic duty of the agent on the monotonic clock (heartbeats, hello retries, chunk-request
// retries): due once its period has passed since it was last done; trigger() makes it due at once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

#include "common/clock.h"

namespace fedcal::edge_agent {

class Interval {
 public:
  explicit Interval(int64_t period_ms) : period_ms_(period_ms) {}
  bool due(int64_t now_ms) const { return now_ms - last_ms_ >= period_ms_; }
  void done(int64_t now_ms) { last_ms_ = now_ms; }
  void trigger() { last_ms_ = kNever; }
  int64_t period_ms() const { return period_ms_; }
  void set_period(int64_t period_ms) { period_ms_ = period_ms; }

 private:
  static constexpr int64_t kNever = INT64_MIN / 2;
  int64_t period_ms_;
  int64_t last_ms_ = kNever;
};

// Retries of a request nobody answers (hello until welcomed): the first try after a loss comes at a
// random moment within `base`; the next kSteadyTries wait about `base` (a short outage, e.g. a paused
// coordinator, costs no more than a period), then each wait doubles up to `cap`. Every wait is drawn
// at random from its upper half. A fleet that lost its coordinator at one moment (a restart) thus
// comes back spread out, and says hello less and less often while the coordinator stays away,
// instead of all every period at once (a reconnect storm).
class Backoff {
 public:
  Backoff(int64_t base_ms, int64_t cap_ms, uint64_t seed) : base_ms_(base_ms), cap_ms_(cap_ms), random_(seed) {}
  bool due(int64_t now_ms) const { return now_ms >= next_ms_; }
  // A try went out at `now_ms`: the next one after a wait twice the last (from base), at most cap.
  static constexpr int kSteadyTries = 5;
  void sent(int64_t now_ms) {
    ++tries_;
    wait_ms_ = tries_ <= kSteadyTries ? base_ms_ : std::min(cap_ms_, wait_ms_ * 2);
    next_ms_ = now_ms + wait_ms_ / 2 + draw(wait_ms_ - wait_ms_ / 2);
  }
  // Answered: a later loss starts from base again.
  void answered() { tries_ = 0; }
  // The answers stopped at `now_ms`: the first try within base from now.
  void lost(int64_t now_ms) {
    tries_ = 0;
    next_ms_ = now_ms + draw(base_ms_);
  }
  void trigger() { next_ms_ = kNow; }
  void set_base(int64_t base_ms) { base_ms_ = std::min(base_ms, cap_ms_); }
  int64_t wait_ms() const { return wait_ms_; }

 private:
  int64_t draw(int64_t below) { return below <= 0 ? 0 : std::uniform_int_distribution<int64_t>(0, below - 1)(random_); }
  static constexpr int64_t kNow = INT64_MIN / 2;
  int64_t base_ms_, cap_ms_;
  int64_t wait_ms_ = 0;
  int tries_ = 0;
  int64_t next_ms_ = kNow;
  std::mt19937_64 random_;
};

}  // namespace fedcal::edge_agent

// A periodic duty of the agent on the monotonic clock (heartbeats, hello retries, chunk-request
// retries): due once its period has passed since it was last done; trigger() makes it due at once.
#pragma once

#include <cstdint>

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

}  // namespace fedcal::edge_agent

// Per-source budgets for work that does not serve the fleet (refused messages and connections,
// failed enrollments): each source - a CURVE key or a peer address - gets `per_window` events per
// window; what goes over is counted, not handled, and reported once per window as a total.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fedcal::coordinator {

class RateLimiter {
 public:
  struct Overflow {
    std::string source;  // kOtherSources: the sources past `max_sources`, together
    uint64_t dropped = 0;
  };
  static constexpr const char* kOtherSources = "other sources";

  // Windows are fixed, `window_ms` long; at most `max_sources` are told apart per window (a flood
  // of fresh keys shares one budget beyond that, so memory stays bounded).
  RateLimiter(uint32_t per_window, int64_t window_ms, size_t max_sources = 4096);

  // Counts one event of `source` at monotonic time `now_ms`; true while it is within the budget.
  bool allow(const std::string& source, int64_t now_ms);
  // Once the window holding the counted events has ended (or `force`), the sources that went over
  // budget in it, most dropped first, and a fresh window; empty otherwise.
  std::vector<Overflow> take_overflow(int64_t now_ms, bool force = false);
  int64_t window_ms() const { return window_ms_; }

 private:
  uint32_t per_window_;
  int64_t window_ms_;
  size_t max_sources_;
  int64_t window_start_ms_ = -1;
  std::map<std::string, uint64_t> counts_;  // this window's events by source
};

}  // namespace fedcal::coordinator

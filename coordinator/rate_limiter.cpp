#include "coordinator/rate_limiter.h"

#include <algorithm>

namespace fedcal::coordinator {

RateLimiter::RateLimiter(uint32_t per_window, int64_t window_ms, size_t max_sources)
    : per_window_(per_window), window_ms_(window_ms), max_sources_(max_sources) {}

bool RateLimiter::allow(const std::string& source, int64_t now_ms) {
  if (window_start_ms_ < 0 || (counts_.empty() && now_ms - window_start_ms_ >= window_ms_)) window_start_ms_ = now_ms;
  auto entry = counts_.find(source);
  if (entry == counts_.end()) {
    entry = counts_.emplace(counts_.size() < max_sources_ ? source : std::string(kOtherSources), 0).first;
  }
  return ++entry->second <= per_window_;
}

std::vector<RateLimiter::Overflow> RateLimiter::take_overflow(int64_t now_ms, bool force) {
  std::vector<Overflow> out;
  if (counts_.empty() || (!force && now_ms - window_start_ms_ < window_ms_)) return out;
  for (const auto& [source, count] : counts_) {
    if (count > per_window_) out.push_back({source, count - per_window_});
  }
  std::sort(out.begin(), out.end(), [](const Overflow& a, const Overflow& b) { return a.dropped > b.dropped; });
  counts_.clear();
  window_start_ms_ = now_ms;
  return out;
}

}  // namespace fedcal::coordinator

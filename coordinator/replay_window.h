// Replay protection for one agent key: the highest sequence number accepted, and which of the 64
// below it were seen (as IPsec's anti-replay window). Numbers only grow on the agent, but messages
// can arrive out of order when a connection is replaced (the old one's last messages after the new
// one's first): one never seen within the window is accepted, any number seen before is refused.
#pragma once

#include <cstdint>

namespace fedcal::coordinator {

class ReplayWindow {
 public:
  static constexpr uint64_t kWidth = 64;

  // After a restart only the highest number is known (the store keeps it): the window starts full,
  // so everything at or below it is refused.
  explicit ReplayWindow(uint64_t last = 0) : last_(last) {}

  uint64_t last() const { return last_; }

  // Accepts `sequence` (and remembers it) if it is new: above the highest, or within the window and
  // not seen. False for a replay or a number too far behind.
  bool accept(uint64_t sequence) {
    if (sequence > last_) {
      const uint64_t shift = sequence - last_;
      // Bit i: last_ - 1 - i was seen. The old highest becomes bit shift - 1.
      seen_below_ = shift >= kWidth ? 0 : (seen_below_ << shift) | (uint64_t{1} << (shift - 1));
      if (shift == kWidth) seen_below_ = uint64_t{1} << (kWidth - 1);
      last_ = sequence;
      return true;
    }
    const uint64_t behind = last_ - sequence;  // >= 0
    if (behind == 0 || behind > kWidth) return false;
    const uint64_t bit = uint64_t{1} << (behind - 1);
    if (seen_below_ & bit) return false;
    seen_below_ |= bit;
    return true;
  }

 private:
  uint64_t last_;
  uint64_t seen_below_ = ~uint64_t{0};  // bit i: sequence last_ - 1 - i was accepted (or is unknown)
};

}  // namespace fedcal::coordinator

// The two clocks: monotonic time for deadlines and liveness (never steps), wall time for what is
// shown or stored.
#pragma once

#include <chrono>
#include <cstdint>

namespace fedcal {

// Milliseconds on the monotonic clock.
inline int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Milliseconds since the Unix epoch.
inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace fedcal

// The two clocks: monotonic time for deadlines and liveness (never steps), wall time for what is
// shown or stored.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace fedcal {

// Milliseconds on the monotonic clock.
inline int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Milliseconds since the Unix epoch.
inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "2026-11-30T08:45:00.123Z": a wall-clock time in milliseconds as ISO 8601, UTC.
std::string format_utc_time(int64_t wall_ms);

}  // namespace fedcal

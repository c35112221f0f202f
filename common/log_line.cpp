#include "common/log_line.h"

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/text.h"

namespace fedcal {

std::string log_line(LogLevel level, std::string_view who, std::string_view text) {
  const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  const std::string body = fmt::format("[{}] {}", who, escape_controls(text));
  if (journal) return fmt::format("<{}>{}", level == LogLevel::kError ? 3 : level == LogLevel::kWarning ? 4 : 6, body);
  const char* name = level == LogLevel::kError ? "ERROR" : level == LogLevel::kWarning ? "WARN " : "INFO ";
  return fmt::format("{} {} {}", format_utc_time(wall_ms()), name, body);
}

void write_log(LogLevel level, std::string_view who, std::string_view text) {
  const std::string line = log_line(level, who, text) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace fedcal

// One line of a daemon's log (stderr): a level, the time, who, and the text on one line with control
// characters escaped. Under systemd (JOURNAL_STREAM set) the line starts with the kernel-style
// priority "<3>" / "<4>" / "<6>" instead, which journald turns into the entry's level, and carries no
// time (journald stamps it).
#pragma once

#include <string>
#include <string_view>

namespace fedcal {

enum class LogLevel { kError, kWarning, kInfo };

// "2026-11-30T08:45:00.123Z WARN  [coordinator] refused ..." (or "<4>[coordinator] refused ...").
std::string log_line(LogLevel level, std::string_view who, std::string_view text);

// Writes log_line(...) and a newline to stderr, flushed.
void write_log(LogLevel level, std::string_view who, std::string_view text);

}  // namespace fedcal

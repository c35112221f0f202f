#include "models/cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace fedcal::cli {

Progress::Progress(std::string tag, bool quiet)
    : tag_(std::move(tag)), quiet_(quiet), terminal_(::isatty(STDERR_FILENO) == 1), last_(std::chrono::steady_clock::now()) {}

void Progress::update(const std::string& text, bool done) {
  if (quiet_) return;
  if (terminal_) {
    std::fprintf(stderr, "\r%s %s%s", tag_.c_str(), text.c_str(), done ? "\n" : "");
    open_line_ = !done;
  } else {
    const auto now = std::chrono::steady_clock::now();
    if (!done && now - last_ < std::chrono::seconds(5)) return;
    last_ = now;
    std::fprintf(stderr, "%s %s\n", tag_.c_str(), text.c_str());
  }
  std::fflush(stderr);
}

}  // namespace fedcal::cli

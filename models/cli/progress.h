// Progress of long work on stderr, fit for where stderr goes: on a terminal one line rewritten in
// place; otherwise (a log file, a pipe, systemd's journal) a plain line at most every 5 s and one at
// the end, so logs get no carriage returns. stdout stays clean for results (--json).
#pragma once

#include <chrono>
#include <string>

namespace fedcal::cli {

class Progress {
 public:
  // `tag`: "[calibrate]"; `quiet`: print nothing.
  Progress(std::string tag, bool quiet);
  // The current state; `done` says it is the last one.
  void update(const std::string& text, bool done = false);

 private:
  std::string tag_;
  bool quiet_;
  bool terminal_;
  bool open_line_ = false;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace fedcal::cli

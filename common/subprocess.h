// Runs another program and waits for it: argv as given (no shell), its stdout and stderr captured
// together. For tools the product drives (pg_dump, pg_restore), not for anything on a hot path.
#pragma once

#include <string>
#include <vector>

namespace fedcal {

struct ProgramResult {
  int exit_code = -1;  // 128 + signal if it was killed by one
  std::string output;  // stdout and stderr, interleaved as written
};

// Throws Error (kIo) naming the program if it cannot be started (not installed: kNotFound).
ProgramResult run_program(const std::vector<std::string>& argv);

}  // namespace fedcal

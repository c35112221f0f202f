// An exclusive lock on a daemon's state folder, held for the object's life (flock on STATE/lock, which
// also names the holder): a second daemon with the same folder is refused at start, and so is
// `db restore` while a daemon holds it - also one that is stopped (SIGSTOP) and answers nothing.
#pragma once

#include <string>

namespace fedcal::coordinator {

class StateLock {
 public:
  // Creates the folder if needed; throws Error naming it and the holder when another process has
  // the lock. `holder` says what takes it ("fedcal-coordinator serve").
  StateLock(const std::string& state_dir, const std::string& holder);
  ~StateLock();
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace fedcal::coordinator

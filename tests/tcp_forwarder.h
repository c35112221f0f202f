// A TCP forwarder on loopback for network-fault tests: it accepts connections on its own port and
// pumps bytes both ways to a target port, on a thread. `cut()` closes every connection it holds (as a
// dropped link would; later connections are forwarded again); `hold(true)` stops carrying bytes from
// the target (they wait in the kernel, nothing is lost) until `hold(false)`. Counts what it carried
// toward the target since the last cut, so a test can tell which connection a message took.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace fedcal::testing {

class TcpForwarder {
 public:
  explicit TcpForwarder(int target_port);  // listens on a free loopback port
  ~TcpForwarder();
  TcpForwarder(const TcpForwarder&) = delete;
  TcpForwarder& operator=(const TcpForwarder&) = delete;

  int port() const { return port_; }
  void cut();
  void hold(bool on) {
    hold_ = on;
    wake();
  }
  int64_t accepted() const { return accepted_; }
  int64_t bytes_to_target_since_cut() const { return to_target_since_cut_; }

 private:
  struct Pair {
    int client = -1, target = -1;
  };
  void run();
  void close_all();
  void wake();

  int target_port_;
  int listener_ = -1;
  int port_ = 0;
  int wake_[2] = {-1, -1};  // a pipe: cut() and the destructor wake the thread's poll
  std::atomic<bool> stop_{false}, cut_{false}, hold_{false};
  std::atomic<int64_t> accepted_{0}, to_target_since_cut_{0};
  std::vector<Pair> pairs_;  // the thread's own
  std::thread thread_;
};

}  // namespace fedcal::testing

// Bounds the connections a listening socket holds, so that no flood of TCP connections can take
// every file descriptor of the process. libzmq accepts connections itself; the guard reads the
// socket's monitor events and, for each connection accepted beyond `per_address` from one peer
// address or beyond `total` in all, shuts the connection down (libzmq then closes it).
#pragma once

#include <zmq.hpp>

#include <cstdint>
#include <map>
#include <string>

namespace fedcal {

class ConnectionGuard {
 public:
  struct Limits {
    size_t total = 0;
    size_t per_address = 0;
  };
  // What the guard did since the last `take_report`.
  struct Report {
    std::map<std::string, uint64_t> cut;  // by peer address
    uint64_t accept_failures = 0;         // libzmq could not accept (EMFILE, ENFILE, ...)
    int last_accept_errno = 0;
    size_t open = 0;  // connections open now
  };

  ConnectionGuard(zmq::context_t& context, zmq::socket_t& watched, const std::string& name, Limits limits);
  // Poll this for ZMQ_POLLIN, then call handle_events().
  zmq::socket_t& events() { return monitor_; }
  void handle_events();
  Report take_report();
  bool has_news() const { return !report_.cut.empty() || report_.accept_failures > 0; }
  size_t open() const { return open_.size(); }
  const Limits& limits() const { return limits_; }

 private:
  void accepted(int fd);
  void closed(int fd);

  Limits limits_;
  zmq::socket_t monitor_;
  std::map<int, std::string> open_;           // file descriptor -> peer address
  std::map<std::string, size_t> by_address_;  // open connections per peer address
  Report report_;
};

// Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the limit now in force.
size_t raise_file_limit();
// A daemon's agent connections within `file_limit` descriptors: all but a reserve (its database,
// files being sent, its other sockets) in all, and `per_address` from one address.
ConnectionGuard::Limits connection_limits(size_t file_limit, size_t per_address);

}  // namespace fedcal

// A read-only HTTP endpoint for Prometheus: GET /metrics answers the text exposition format
// (version 0.0.4), anything else 404. It lives in the daemon's event loop - its listening socket and
// connections are polled beside the ZeroMQ sockets, all non-blocking - so it needs no thread and
// renders from the daemon's own state. Bounded: at most kMaxConnections open at once (more wait in
// the kernel's backlog), a request of at most 4 KiB, each connection closed after its answer or after
// 2 s. Meant for a loopback or management address (config metrics_listen), not the internet.
#pragma once

#include <zmq.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace fedcal::coordinator {

class MetricsEndpoint {
 public:
  static constexpr size_t kMaxConnections = 16;

  // Listens on `address` ("127.0.0.1:9470"; port 0 picks one); throws Error naming it on failure.
  // `render` produces the body of /metrics.
  MetricsEndpoint(const std::string& address, std::function<std::string()> render);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // "127.0.0.1:PORT" as bound.
  const std::string& address() const { return bound_; }
  // Appends what to poll (the listening socket, each open connection) to `items`.
  void add_poll_items(std::vector<zmq::pollitem_t>& items) const;
  // Accepts, reads and answers what is ready; closes what is done or too slow.
  void handle(int64_t monotonic_ms);

 private:
  struct Connection {
    int fd;
    int64_t opened_ms;
    std::string request;
  };
  void answer(Connection& connection);

  int listener_ = -1;
  std::string bound_;
  std::function<std::string()> render_;
  std::vector<Connection> connections_;
};

}  // namespace fedcal::coordinator

// A read-only HTTP endpoint: GET of one of its routes answers what the route renders (the
// coordinator's: /metrics in Prometheus' text format, / the status page), any other path 404, any
// other method 405. Every answer forbids scripts and outside resources (Content-Security-Policy) and
// content sniffing. It lives in the daemon's event loop - its listening socket and
// connections are polled beside the ZeroMQ sockets, all non-blocking - so it needs no thread and
// renders from the daemon's own state. Bounded: at most kMaxConnections open at once, kMaxPerAddress
// from one address (a new connection evicts the oldest unanswered one, so connections that trickle
// their headers cannot keep a scraper out), a request of at most 4 KiB, each connection closed after
// its answer or after 2 s. Meant for a loopback or management address (config metrics_listen), not the internet.
#pragma once

#include <zmq.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace fedcal::coordinator {

class HttpEndpoint {
 public:
  static constexpr size_t kMaxConnections = 16;
  static constexpr size_t kMaxPerAddress = 8;

  struct Route {
    std::string content_type;
    std::function<std::string()> render;  // the body, rendered per request
  };

  // Listens on `address` ("127.0.0.1:9470"; port 0 picks one) and answers GET `path` with `routes`
  // (path -> route); throws Error naming the address on failure.
  HttpEndpoint(const std::string& address, std::map<std::string, Route> routes);
  ~HttpEndpoint();
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // "127.0.0.1:PORT" as bound.
  const std::string& address() const { return bound_; }
  uint64_t evicted() const { return evicted_; }  // connections closed unanswered to make room
  // Appends what to poll (the listening socket, each open connection) to `items`.
  void add_poll_items(std::vector<zmq::pollitem_t>& items) const;
  // Accepts, reads and answers what is ready; closes what is done or too slow.
  void handle(int64_t monotonic_ms);

 private:
  struct Connection {
    int fd;
    int64_t opened_ms;
    std::string request;
    uint32_t address;  // IPv4, network order
  };
  void answer(Connection& connection);
  void evict_oldest(const std::function<bool(const Connection&)>& which);

  int listener_ = -1;
  std::string bound_;
  uint64_t evicted_ = 0;
  std::map<std::string, Route> routes_;
  std::vector<Connection> connections_;
};

}  // namespace fedcal::coordinator

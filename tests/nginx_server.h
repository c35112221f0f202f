// An nginx of the tests' own: Debian's /usr/sbin/nginx in a scratch folder, one process (no daemon,
// no master), listening on loopback, stopped when the object goes. It runs the shipped site files of
// deploy/nginx/ with their addresses and folders replaced, so the tests exercise what users install.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/coordinator/mini_fleet.h"
#include "tests/test_support.h"

namespace fedcal::testing {

// A TCP port on 127.0.0.1 free a moment ago.
int free_tcp_port();

// deploy/nginx/NAME with each key of `replacements` replaced by its value; throws if a key is not in it
// (the shipped file changed: the test must follow).
std::string deploy_nginx_site(const std::string& name, const std::map<std::string, std::string>& replacements);

class NginxServer {
 public:
  // Starts nginx with `site` inside its http block; waits until `port` answers (throws with nginx's
  // error log if it does not within 10 s).
  NginxServer(const std::string& site, int port);
  ~NginxServer();
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  const std::string& dir() const { return dir_.root(); }
  // What the access log says was served: path, status, body bytes, the Range asked for.
  struct Served {
    std::string uri;
    int status = 0;
    uint64_t bytes = 0;
    std::string range;
  };
  std::vector<Served> served() const;

 private:
  ScratchDir dir_;
  int port_;
  std::unique_ptr<Process> process_;
};

}  // namespace fedcal::testing

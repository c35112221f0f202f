#include "tests/nginx_server.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/file_util.h"

namespace fedcal::testing {
namespace fs = std::filesystem;

namespace {

bool answers(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool connected = connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  close(fd);
  return connected;
}

}  // namespace

int free_tcp_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
    throw std::runtime_error("bind to port 0 failed");
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

std::string deploy_nginx_site(const std::string& name, const std::map<std::string, std::string>& replacements) {
  std::string text = read_text_file(std::string(FEDCAL_SOURCE_DIR) + "/deploy/nginx/" + name);
  for (const auto& [from, to] : replacements) {
    const size_t at = text.find(from);
    if (at == std::string::npos) throw std::runtime_error("deploy/nginx/" + name + " has no '" + from + "' to replace");
    text.replace(at, from.size(), to);
  }
  return text;
}

NginxServer::NginxServer(const std::string& site, int port) : port_(port) {
  if (!fs::exists("/usr/sbin/nginx"))
    throw std::runtime_error("no /usr/sbin/nginx: install Debian's `nginx` (deploy/install-deps.sh)");
  const std::string root = dir_.root();
  for (const char* temp : {"body", "proxy", "fastcgi", "uwsgi", "scgi"}) fs::create_directories(root + "/temp/" + temp);
  const std::string config = fmt::format(R"(master_process off;
daemon off;
error_log {0}/error.log info;
pid {0}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  log_format fedcal '$uri $status $body_bytes_sent "$http_range"';
  access_log {0}/access.log fedcal;
  default_type application/octet-stream;
  sendfile on;
  client_body_temp_path {0}/temp/body;
  proxy_temp_path {0}/temp/proxy;
  fastcgi_temp_path {0}/temp/fastcgi;
  uwsgi_temp_path {0}/temp/uwsgi;
  scgi_temp_path {0}/temp/scgi;
{1}
}}
)",
                                         root, site);
  write_text(root + "/nginx.conf", config);
  process_ = std::make_unique<Process>(std::vector<std::string>{"/usr/sbin/nginx", "-p", root, "-c", root + "/nginx.conf"},
                                       root + "/stderr.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!answers(port_)) {
    if (!process_->running() || std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("nginx did not start: " + read_text_file(root + "/stderr.log") +
                               (fs::exists(root + "/error.log") ? read_text_file(root + "/error.log") : ""));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

NginxServer::~NginxServer() {
  process_->signal(SIGQUIT);  // graceful: finishes what it serves
  if (!process_->wait_exit(std::chrono::seconds(5))) process_->signal(SIGKILL);
}

std::vector<NginxServer::Served> NginxServer::served() const {
  std::vector<Served> out;
  std::ifstream log(dir_.root() + "/access.log");
  for (std::string line; std::getline(log, line);) {
    std::istringstream fields(line);
    Served entry;
    fields >> entry.uri >> entry.status >> entry.bytes;
    std::getline(fields, entry.range);
    const size_t open = entry.range.find('"'), close = entry.range.rfind('"');
    entry.range = open == std::string::npos || close <= open ? "" : entry.range.substr(open + 1, close - open - 1);
    if (entry.range == "-") entry.range.clear();
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace fedcal::testing

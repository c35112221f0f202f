#include "edge_agent/http_fetch.h"

#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>

#include "common/error.h"

namespace fedcal::edge_agent {
namespace {

constexpr size_t kMaxHeadBytes = 16384;
constexpr size_t kMaxHeaders = 100;

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) text.remove_suffix(1);
  return text;
}

bool parse_u64(std::string_view text, uint64_t& value) {
  if (text.empty()) return false;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size();
}

// A socket closed when it goes.
class Connection {
 public:
  explicit Connection(int fd) : fd_(fd) {}
  ~Connection() {
    if (fd_ >= 0) close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

using Clock = std::chrono::steady_clock;

// Waits until `fd` is ready for `events` or the deadline passes (then throws).
void wait_ready(int fd, short events, Clock::time_point deadline, const std::string& url, const char* doing) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) fail_as(ErrorKind::kIo, "{}: timed out {}", url, doing);
    pollfd item{fd, events, 0};
    const int ready = poll(&item, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready > 0) return;
    if (ready < 0 && errno != EINTR) fail_as(ErrorKind::kIo, "{}: {}: {}", url, doing, std::strerror(errno));
  }
}

int connect_to(const HttpUrl& target, Clock::time_point deadline, const std::string& url) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int error = getaddrinfo(target.host.c_str(), target.port.c_str(), &hints, &found); error != 0)
    fail_as(ErrorKind::kIo, "{}: cannot resolve {}: {}", url, target.host, gai_strerror(error));
  std::string last_error = "no address";
  for (addrinfo* address = found; address != nullptr; address = address->ai_next) {
    const int fd = socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, address->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, address->ai_addr, address->ai_addrlen) == 0 || errno == EINPROGRESS) {
      try {
        wait_ready(fd, POLLOUT, deadline, url, "connecting");
      } catch (const Error&) {
        close(fd);
        freeaddrinfo(found);
        throw;
      }
      int error = 0;
      socklen_t length = sizeof error;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error == 0) {
        freeaddrinfo(found);
        return fd;
      }
      last_error = std::strerror(error);
    } else {
      last_error = std::strerror(errno);
    }
    close(fd);
  }
  freeaddrinfo(found);
  fail_as(ErrorKind::kIo, "{}: cannot connect: {}", url, last_error);
}

}  // namespace

HttpUrl parse_http_url(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) fail("package url '{}': only http:// urls (packages are verified, a cache needs no TLS)", url);
  const std::string rest = url.substr(kScheme.size());
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  HttpUrl out;
  out.path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.empty()) fail("package url '{}': no host", url);
  if (authority.front() == '[') {  // [IPv6]:port
    const size_t close_bracket = authority.find(']');
    if (close_bracket == std::string::npos) fail("package url '{}': unclosed [", url);
    out.host = authority.substr(1, close_bracket - 1);
    if (close_bracket + 1 < authority.size()) {
      if (authority[close_bracket + 1] != ':') fail("package url '{}': junk after ]", url);
      out.port = authority.substr(close_bracket + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) out.port = authority.substr(colon + 1);
  }
  uint64_t port = 0;
  if (out.host.empty() || !parse_u64(out.port, port) || port == 0 || port > 65535)
    fail("package url '{}': bad host or port", url);
  for (const char c : out.path) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
      fail("package url '{}': spaces or control characters in the path", url);
  }
  return out;
}

HttpResponseHead parse_http_response_head(std::string_view head) {
  if (head.size() > kMaxHeadBytes) fail("HTTP response head of {} bytes (at most {})", head.size(), kMaxHeadBytes);
  const size_t line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  // HTTP/1.x SP 3DIGIT [SP reason]
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' '))
    fail("not an HTTP/1.x status line: '{}'", status_line.substr(0, 80));
  HttpResponseHead out;
  for (size_t i = 9; i < 12; ++i) {
    if (status_line[i] < '0' || status_line[i] > '9') fail("not an HTTP status code: '{}'", status_line.substr(9, 3));
    out.status = out.status * 10 + (status_line[i] - '0');
  }
  std::string_view rest = line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);
  while (!rest.empty()) {
    const size_t end = rest.find("\r\n");
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 2);
    if (line.empty()) continue;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) fail("HTTP header line without a name: '{}'", line.substr(0, 80));
    if (out.headers.size() >= kMaxHeaders) fail("more than {} HTTP headers", kMaxHeaders);
    out.headers[lower(trim(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
  }
  return out;
}

FetchedRange fetch_range(const std::string& url, uint64_t offset, uint64_t length, int timeout_ms) {
  if (length == 0) fail_as(ErrorKind::kInternal, "{}: a range of 0 bytes", url);
  const HttpUrl target = parse_http_url(url);
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const Connection connection(connect_to(target, deadline, url));
  const std::string host = target.host.find(':') != std::string::npos ? "[" + target.host + "]" : target.host;
  const std::string request =
      fmt::format("GET {} HTTP/1.1\r\nHost: {}:{}\r\nRange: bytes={}-{}\r\nUser-Agent: fedcal-agent\r\nConnection: close\r\n\r\n",
                  target.path, host, target.port, offset, offset + length - 1);
  for (size_t sent = 0; sent < request.size();) {
    wait_ready(connection.fd(), POLLOUT, deadline, url, "sending the request");
    const ssize_t n = send(connection.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
      fail_as(ErrorKind::kIo, "{}: sending the request: {}", url, std::strerror(errno));
    if (n > 0) sent += static_cast<size_t>(n);
  }
  // The head, then the body into its place.
  std::string received;
  size_t head_end = std::string::npos;
  char buffer[65536];
  const auto read_some = [&]() -> size_t {
    for (;;) {
      wait_ready(connection.fd(), POLLIN, deadline, url, "waiting for the response");
      const ssize_t n = recv(connection.fd(), buffer, sizeof buffer, 0);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EAGAIN && errno != EINTR) fail_as(ErrorKind::kIo, "{}: reading the response: {}", url, std::strerror(errno));
    }
  };
  while (head_end == std::string::npos) {
    const size_t n = read_some();
    if (n == 0) fail_as(ErrorKind::kIo, "{}: the connection closed before the response head ended", url);
    received.append(buffer, n);
    head_end = received.find("\r\n\r\n");
    if (head_end == std::string::npos && received.size() > kMaxHeadBytes)
      fail("{}: a response head over {} bytes", url, kMaxHeadBytes);
  }
  const HttpResponseHead head =
      with_context([&] { return url; }, [&] { return parse_http_response_head(std::string_view(received).substr(0, head_end)); });
  if (head.status == 404) fail_as(ErrorKind::kNotFound, "{}: 404 not found", url);
  FetchedRange out;
  uint64_t body_bytes = 0;
  const auto content_length = head.headers.find("content-length");
  if (content_length == head.headers.end() || !parse_u64(content_length->second, body_bytes))
    fail("{}: HTTP {} without a Content-Length", url, head.status);
  if (head.status == 206) {
    // Content-Range: bytes FIRST-LAST/TOTAL
    const auto range = head.headers.find("content-range");
    uint64_t first = 0, last = 0;
    const std::string text = range == head.headers.end() ? "" : range->second;
    const size_t dash = text.find('-'), slash = text.find('/');
    if (text.rfind("bytes ", 0) != 0 || dash == std::string::npos || slash == std::string::npos || dash > slash ||
        !parse_u64(std::string_view(text).substr(6, dash - 6), first) ||
        !parse_u64(std::string_view(text).substr(dash + 1, slash - dash - 1), last) ||
        !parse_u64(std::string_view(text).substr(slash + 1), out.total) || last < first || last >= out.total ||
        last - first + 1 != body_bytes)
      fail("{}: HTTP 206 with Content-Range '{}' for {} bytes", url, text, body_bytes);
    if (first != offset) fail("{}: asked for bytes from {}, got them from {}", url, offset, first);
    out.offset = first;
  } else if (head.status == 200) {
    if (offset != 0) fail("{}: the server ignores ranges (HTTP 200 for bytes from {})", url, offset);
    out.total = body_bytes;
    body_bytes = std::min(body_bytes, length);
  } else {
    fail_as(head.status >= 500 ? ErrorKind::kIo : ErrorKind::kInvalidInput, "{}: HTTP {}", url, head.status);
  }
  if (body_bytes > length) fail("{}: {} bytes for a range of {}", url, body_bytes, length);
  out.data.reserve(body_bytes);
  const size_t already = std::min<size_t>(received.size() - head_end - 4, body_bytes);
  out.data.insert(out.data.end(), received.begin() + static_cast<std::ptrdiff_t>(head_end + 4),
                  received.begin() + static_cast<std::ptrdiff_t>(head_end + 4 + already));
  while (out.data.size() < body_bytes) {
    const size_t n = read_some();
    if (n == 0) fail_as(ErrorKind::kIo, "{}: the connection closed after {} of {} bytes", url, out.data.size(), body_bytes);
    const size_t keep = std::min<size_t>(n, body_bytes - out.data.size());
    out.data.insert(out.data.end(), buffer, buffer + keep);
  }
  return out;
}

}  // namespace fedcal::edge_agent

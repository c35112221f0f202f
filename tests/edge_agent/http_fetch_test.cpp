// The agent's HTTP package fetch against the shipped nginx configs (deploy/nginx/), run by a real nginx.
#include "edge_agent/http_fetch.h"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <chrono>
#include <future>
#include <random>
#include <thread>

#include "common/error.h"
#include "common/sha256.h"
#include "tests/nginx_server.h"

namespace fedcal::edge_agent {
namespace {

using testing::NginxServer;

constexpr uint64_t kRange = 4 << 20;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<uint8_t> out(n);
  for (uint8_t& byte : out) byte = static_cast<uint8_t>(random());
  return out;
}

std::string write_package(const std::string& dir, const std::vector<uint8_t>& bytes) {
  const std::string sha = sha256_hex(std::as_bytes(std::span(bytes)));
  testing::write_text(dir + "/" + sha + ".fcpkg", std::string(bytes.begin(), bytes.end()));
  return sha;
}

// The whole file, range by range, as an agent fetches it.
std::vector<uint8_t> fetch_all(const std::string& url) {
  std::vector<uint8_t> out;
  uint64_t total = 1;
  while (out.size() < total) {
    const FetchedRange range = fetch_range(url, out.size(), kRange, 20000);
    REQUIRE(range.offset == out.size());
    total = range.total;
    out.insert(out.end(), range.data.begin(), range.data.end());
  }
  return out;
}

ErrorKind kind_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& error) {
    return error.kind();
  }
  return ErrorKind::kInternal;
}

TEST_CASE(
    "HTTP package fetch: ranges from the shipped origin, 404 for anything but a package, and the shipped cache serves "
    "eight boards from one copy of each slice") {
  testing::ScratchDir artifacts;
  const std::vector<uint8_t> bytes = random_bytes((10 << 20) + 123, 1);
  const std::string sha = write_package(artifacts.root(), bytes);
  testing::write_text(artifacts.path("round-1.stats"), "private aggregate");

  const int origin_port = testing::free_tcp_port();
  NginxServer origin(
      testing::deploy_nginx_site("fedcal-origin.conf", {{"listen 7780;", fmt::format("listen 127.0.0.1:{};", origin_port)},
                                                        {"/var/lib/fedcal/artifacts/", artifacts.root() + "/"}}),
      origin_port);
  const std::string url = origin.url("/fedcal/" + sha + ".fcpkg");
  const FetchedRange first = fetch_range(url, 0, kRange, 10000);
  CHECK(first.offset == 0);
  CHECK(first.total == bytes.size());
  CHECK(std::equal(first.data.begin(), first.data.end(), bytes.begin()));
  const FetchedRange tail = fetch_range(url, 8 << 20, kRange, 10000);
  CHECK(tail.data.size() == bytes.size() - (8 << 20));  // the last range is shorter
  CHECK(std::equal(tail.data.begin(), tail.data.end(), bytes.begin() + (8 << 20)));
  CHECK_THROWS_WITH(fetch_range(url, bytes.size(), kRange, 10000), doctest::Contains("HTTP 416"));
  CHECK(kind_of([&] { fetch_range(origin.url("/fedcal/round-1.stats"), 0, kRange, 10000); }) == ErrorKind::kNotFound);
  CHECK(kind_of([&] { fetch_range(origin.url("/fedcal/" + std::string(64, 'a') + ".fcpkg"), 0, kRange, 10000); }) ==
        ErrorKind::kNotFound);
  // nginx logs a request after answering it: wait for the five above to be in the log (else the
  // last 404 can be counted with the cache's requests below).
  for (int waited = 0; origin.served().size() < 5 && waited < 500; ++waited)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const size_t origin_requests_before = origin.served().size();
  REQUIRE(origin_requests_before == 5);

  const int cache_port = testing::free_tcp_port();
  testing::ScratchDir cache_dir;
  NginxServer cache(
      testing::deploy_nginx_site("fedcal-cache.conf", {{"listen 7790;", fmt::format("listen 127.0.0.1:{};", cache_port)},
                                                       {"/var/cache/nginx/fedcal", cache_dir.root()},
                                                       {"coordinator.example:7780", fmt::format("127.0.0.1:{}", origin_port)}}),
      cache_port);
  std::vector<std::future<std::vector<uint8_t>>> boards;
  for (int i = 0; i < 8; ++i) boards.push_back(std::async(std::launch::async, fetch_all, cache.url("/fedcal/" + sha + ".fcpkg")));
  for (auto& board : boards) CHECK(board.get() == bytes);
  // The origin saw each 4 MiB slice once: one copy of the package, whatever the number of boards
  // (once the last answers are logged; waiting longer would only let a fourth show).
  for (int waited = 0; (origin.served().size() < origin_requests_before + 3 || cache.served().size() < 8 * 3) && waited < 500;
       ++waited)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const std::vector<NginxServer::Served> served = origin.served();
  uint64_t origin_bytes = 0;
  for (size_t i = origin_requests_before; i < served.size(); ++i) {
    CHECK(served[i].status == 206);
    origin_bytes += served[i].bytes;
  }
  CHECK(served.size() - origin_requests_before == 3);
  CHECK(origin_bytes == bytes.size());
  CHECK(cache.served().size() == 8 * 3);
}

TEST_CASE("HTTP package fetch: bad urls, a refused connection and malformed response heads are errors that say what") {
  CHECK_THROWS_WITH(parse_http_url("https://cache/fedcal/"), doctest::Contains("only http://"));
  CHECK_THROWS_WITH(parse_http_url("http://cache:0/x"), doctest::Contains("bad host or port"));
  CHECK_THROWS_WITH(parse_http_url("http:///x"), doctest::Contains("no host"));
  CHECK_THROWS_WITH(parse_http_url("http://cache/a b"), doctest::Contains("spaces or control characters"));
  const HttpUrl v6 = parse_http_url("http://[::1]:8080/fedcal/");
  CHECK(v6.host == "::1");
  CHECK(v6.port == "8080");
  CHECK(v6.path == "/fedcal/");
  CHECK(parse_http_url("http://cache").path == "/");

  const HttpResponseHead head = parse_http_response_head("HTTP/1.1 206 Partial Content\r\nContent-Length:  5 \r\nX-A: b");
  CHECK(head.status == 206);
  CHECK(head.headers.at("content-length") == "5");
  CHECK(head.headers.at("x-a") == "b");
  CHECK(parse_http_response_head("HTTP/1.0 200").status == 200);
  CHECK_THROWS_WITH(parse_http_response_head("SSH-2.0-OpenSSH"), doctest::Contains("not an HTTP/1.x status line"));
  CHECK_THROWS_WITH(parse_http_response_head("HTTP/1.1 2x6 OK"), doctest::Contains("not an HTTP status code"));
  CHECK_THROWS_WITH(parse_http_response_head("HTTP/1.1 200 OK\r\nno colon here"), doctest::Contains("without a name"));
  std::string many = "HTTP/1.1 200 OK";
  for (int i = 0; i < 101; ++i) many += fmt::format("\r\nh{}: v", i);
  CHECK_THROWS_WITH(parse_http_response_head(many), doctest::Contains("more than 100"));

  const int closed_port = testing::free_tcp_port();  // nothing listens
  CHECK(kind_of([&] { fetch_range(fmt::format("http://127.0.0.1:{}/x.fcpkg", closed_port), 0, 10, 2000); }) == ErrorKind::kIo);
}

}  // namespace
}  // namespace fedcal::edge_agent

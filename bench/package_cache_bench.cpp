// fedcal-bench-package-cache: a package to many downloaders through one nginx cache running the shipped
// configs (deploy/nginx/fedcal-origin.conf and fedcal-cache.conf, in nginx processes of the bench's
// own), each downloader fetching the whole file in 4 MiB ranges with the agent's own code
// (edge_agent/http_fetch.h), `--concurrency` at a time. Prints how many copies the origin served, the
// cache's hit ratio, the time and the throughput. Needs Debian's nginx.
//   fedcal-bench-package-cache [--bytes 143000000] [--downloaders 1000] [--concurrency 100] [--json]
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <CLI/CLI.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "common/error.h"
#include "common/sha256.h"
#include "edge_agent/http_fetch.h"
#include "tests/nginx_server.h"

namespace {

using namespace fedcal;
using Clock = std::chrono::steady_clock;
constexpr uint64_t kRange = 4 << 20;

int run(uint64_t bytes, int downloaders, int concurrency, bool json) {
  testing::ScratchDir artifacts, cache_dir;
  std::string package(bytes, '\0');
  std::mt19937_64 random(1);
  for (size_t i = 0; i + 8 <= package.size(); i += 8) {
    const uint64_t word = random();
    std::memcpy(package.data() + i, &word, 8);
  }
  const std::string sha = sha256_hex(std::as_bytes(std::span(package.data(), package.size())));
  testing::write_text(artifacts.path(sha + ".fcpkg"), package);
  package.clear();
  package.shrink_to_fit();

  const int origin_port = testing::free_tcp_port(), cache_port = testing::free_tcp_port();
  const testing::NginxServer origin(
      testing::deploy_nginx_site("fedcal-origin.conf", {{"listen 7780;", fmt::format("listen 127.0.0.1:{};", origin_port)},
                                                        {"/var/lib/fedcal/artifacts/", artifacts.root() + "/"}}),
      origin_port);
  const testing::NginxServer cache(
      testing::deploy_nginx_site("fedcal-cache.conf", {{"listen 7790;", fmt::format("listen 127.0.0.1:{};", cache_port)},
                                                       {"/var/cache/nginx/fedcal", cache_dir.root()},
                                                       {"coordinator.example:7780", fmt::format("127.0.0.1:{}", origin_port)}}),
      cache_port);
  const std::string url = cache.url("/fedcal/" + sha + ".fcpkg");

  std::atomic<int> next{0}, failed{0};
  std::atomic<uint64_t> received{0};
  std::string first_error;
  std::mutex error_mutex;
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      for (int d = next++; d < downloaders; d = next++) {
        try {
          uint64_t have = 0, total = 1;
          while (have < total) {
            const edge_agent::FetchedRange range = edge_agent::fetch_range(url, have, kRange, 120000);
            total = range.total;
            have += range.data.size();
          }
          if (total != bytes) fail("{} bytes, expected {}", total, bytes);
          received += have;
        } catch (const std::exception& error) {
          ++failed;
          const std::lock_guard lock(error_mutex);
          if (first_error.empty()) first_error = error.what();
        }
        if (!json && (d + 1) % 100 == 0) std::fprintf(stderr, "  %d downloaders done\n", d + 1);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  uint64_t origin_bytes = 0;
  size_t origin_requests = 0;
  for (const auto& served : origin.served()) {
    origin_bytes += served.bytes;
    ++origin_requests;
  }
  const size_t cache_requests = cache.served().size();
  const nlohmann::json result = {
      {"package_bytes", bytes},
      {"downloaders", downloaders},
      {"concurrency", concurrency},
      {"failed", failed.load()},
      {"first_error", first_error},
      {"seconds", seconds},
      {"bytes_delivered", received.load()},
      {"gigabytes_per_second", static_cast<double>(received.load()) / seconds / 1e9},
      {"origin_requests", origin_requests},
      {"origin_bytes_served", origin_bytes},
      {"origin_copies", static_cast<double>(origin_bytes) / static_cast<double>(bytes)},
      {"cache_requests", cache_requests},
      {"cache_hit_ratio", cache_requests == 0 ? 0.0 : 1.0 - static_cast<double>(origin_requests) / static_cast<double>(cache_requests)}};
  if (json) {
    std::printf("%s\n", result.dump(2).c_str());
  } else {
    std::printf("%d downloaders x %.1f MB through one cache (%d at a time): %.1f s, %.2f GB/s delivered, %d failed\n", downloaders,
                static_cast<double>(bytes) / 1e6, concurrency, seconds, result["gigabytes_per_second"].get<double>(), failed.load());
    std::printf("origin: %zu requests, %.2f copies of the package; cache: %zu requests, hit ratio %.4f\n", origin_requests,
                result["origin_copies"].get<double>(), cache_requests, result["cache_hit_ratio"].get<double>());
    if (!first_error.empty()) std::printf("first error: %s\n", first_error.c_str());
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("A package to many downloaders through one nginx cache (the shipped configs)");
  uint64_t bytes = 143000000;
  int downloaders = 1000, concurrency = 100;
  bool json = false;
  app.add_option("--bytes", bytes, "Package size")->check(CLI::Range(uint64_t{1}, uint64_t{1} << 34));
  app.add_option("--downloaders", downloaders, "Downloaders, each fetching the whole package")->check(CLI::Range(1, 1000000));
  app.add_option("--concurrency", concurrency, "Downloaders at a time")->check(CLI::Range(1, 4096));
  app.add_flag("--json", json, "JSON output");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(bytes, downloaders, concurrency, json);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "fedcal-bench-package-cache: %s\n", error.what());
    return 1;
  }
}

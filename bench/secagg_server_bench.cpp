// fedcal-bench-secagg: the coordinator's side of secure aggregation alone, in process, at fleet sizes
// a round on loopback cannot reach here. Clients (the real library) do their part untimed; what is
// timed is each server stage - add_shares for everyone, shares_for for everyone, the masked inputs,
// the revealed shares and unmasked_sum - with a short vector, so the graph and share bookkeeping (what
// grows with n) is what the figures show, not the mask expansion (which grows with the vector).
//   fedcal-bench-secagg [--agents 128,512,2000] [--length 64] [--dropouts 0.05]
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "secagg/secure_aggregation.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void run(uint32_t n, uint64_t length, double dropouts) {
  using namespace fedcal;
  SecAggConfig config;
  config.round_id = 1;
  config.participants = n;
  config.neighbours = default_neighbours(n);
  config.threshold = default_threshold(config.neighbours);
  config.vector_length = length;
  config.lane_bits = 32;
  config.graph_seed = random_key();
  std::vector<SecAggClient> clients(n);
  std::vector<AdvertisedKeys> keys;
  for (auto& client : clients) keys.push_back(client.advertise());
  std::map<uint32_t, AdvertisedKeys> by_index;
  for (uint32_t u = 0; u < n; ++u) by_index[u] = keys[u];
  std::vector<std::vector<EncryptedShare>> sent(n);
  for (uint32_t u = 0; u < n; ++u) sent[u] = clients[u].share_keys(config, u, by_index);

  SecAggServer server(config, keys);
  auto start = Clock::now();
  for (uint32_t u = 0; u < n; ++u) server.add_shares(u, std::move(sent[u]), clients[u].self_mask_commitment());
  const double sharing = seconds_since(start);

  std::vector<std::vector<EncryptedShare>> delivered(n);
  start = Clock::now();
  for (uint32_t u = 0; u < n; ++u) delivered[u] = server.shares_for(u);
  const double forwarding = seconds_since(start);

  const auto dropped = static_cast<uint32_t>(dropouts * n);  // the last ones mask nothing
  std::vector<std::vector<uint64_t>> masked(n);
  const std::vector<uint64_t> input(length, 1);
  for (uint32_t u = 0; u + dropped < n; ++u) masked[u] = clients[u].mask_input(input, delivered[u]);
  start = Clock::now();
  for (uint32_t u = 0; u + dropped < n; ++u) server.add_masked_input(u, std::move(masked[u]));
  const double masking = seconds_since(start);

  const std::vector<uint32_t> survivors(server.survivors().begin(), server.survivors().end());
  std::vector<std::vector<RevealedShare>> revealed(n);
  for (const uint32_t u : survivors) revealed[u] = clients[u].unmask(survivors);
  start = Clock::now();
  for (const uint32_t u : survivors) server.add_revealed(u, revealed[u]);
  const double revealing = seconds_since(start);
  start = Clock::now();
  std::string why;
  const auto sum = server.unmasked_sum(&why, 1);
  const double unmasking = seconds_since(start);
  if (!sum || (*sum)[0] != survivors.size()) {
    std::fprintf(stderr, "n = %u: the sum is wrong: %s\n", n, why.c_str());
    std::exit(1);
  }
  std::printf("| %u | %u / %u | %u | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.1f |\n", n, config.neighbours, config.threshold,
              dropped, sharing, forwarding, masking, revealing, unmasking, sharing + forwarding + masking + revealing + unmasking,
              static_cast<double>(server.masked_bytes()) / 1e6);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The coordinator's secure-aggregation stages alone, in process, at fleet sizes"};
  std::vector<uint32_t> agents{128, 512, 2000};
  uint64_t length = 64;
  double dropouts = 0.05;
  app.add_option("--agents", agents, "Fleet sizes")->delimiter(',');
  app.add_option("--length", length, "Values per vector (short: the bookkeeping is measured, not the masks)");
  app.add_option("--dropouts", dropouts, "Share of agents that vanish after sharing (their masks are rebuilt)")
      ->check(CLI::Range(0.0, 0.3));
  CLI11_PARSE(app, argc, argv);
  std::printf(
      "| agents | k / t | dropouts | add_shares (s) | shares_for (s) | masked inputs (s) | revealed (s) | unmasked_sum, 1 thread "
      "(s) | "
      "server total (s) | masked inputs held (MB) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const uint32_t n : agents) run(n, length, dropouts);
  return 0;
}

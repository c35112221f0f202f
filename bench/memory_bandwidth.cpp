// fedcal-membw: the machine's sustained memory read bandwidth, to compare decode weight traffic with.
// Each thread sums its slice of a buffer much larger than the last-level cache; best of several passes.
//   fedcal-membw [--mb 1024] [--threads 1,2] [--passes 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

float sum_slice(const float* data, size_t count) {
  // Eight independent accumulators so the loop is bound by loads, not by the add latency.
  float acc[8] = {};
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += data[i + j];
  }
  for (; i < count; ++i) acc[0] += data[i];
  float total = 0;
  for (float a : acc) total += a;
  return total;
}

double measure(const std::vector<float>& buffer, int threads, int passes) {
  double best = 0;
  std::vector<float> sums(threads);
  for (int pass = 0; pass < passes; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    const size_t slice = buffer.size() / threads;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] { sums[t] = sum_slice(buffer.data() + t * slice, slice); });
    }
    for (auto& worker : workers) worker.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(slice * threads * sizeof(float)) / seconds / 1e9);
  }
  if (sums[0] == 12345.678f) std::puts("");  // keep the sums observable
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  size_t megabytes = 1024;
  std::vector<int> thread_counts{1, 2};
  int passes = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--mb" && i + 1 < argc) {
      megabytes = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--passes" && i + 1 < argc) {
      passes = std::atoi(argv[++i]);
    } else if (arg == "--threads" && i + 1 < argc) {
      thread_counts.clear();
      std::string list = argv[++i];
      for (size_t pos = 0; pos < list.size();) {
        size_t comma = list.find(',', pos);
        thread_counts.push_back(std::atoi(list.substr(pos, comma - pos).c_str()));
        pos = comma == std::string::npos ? list.size() : comma + 1;
      }
    } else {
      std::fprintf(stderr, "usage: fedcal-membw [--mb MEGABYTES] [--threads 1,2,...] [--passes N]\n");
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  if (megabytes < 1 || passes < 1) {
    std::fprintf(stderr, "fedcal-membw: --mb and --passes must be positive\n");
    return 2;
  }
  std::vector<float> buffer(megabytes * (1 << 20) / sizeof(float), 1.0f);
  for (int threads : thread_counts) {
    if (threads < 1) continue;
    std::printf("read bandwidth, %d thread(s), %zu MB buffer: %.2f GB/s (best of %d)\n", threads, megabytes,
                measure(buffer, threads, passes), passes);
  }
  return 0;
}

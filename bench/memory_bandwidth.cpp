// fedcal-membw: the machine's sustained memory bandwidth, to compare decode weight traffic with.
// STREAM-style kernels over buffers much larger than the last-level cache, each thread on its own
// slice, best of several passes:
//   read:   sum += a[i]              (bytes counted: 4 per element; what decoding weights does)
//   triad:  a[i] = b[i] + s * c[i]   (bytes counted: 12 per element, as STREAM counts them)
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

void triad_slice(float* a, const float* b, const float* c, size_t count) {
  for (size_t i = 0; i < count; ++i) a[i] = b[i] + 3.0f * c[i];
}

// Best GB/s of `passes` runs of `kernel(thread, first, count)` over `elements`, counting `bytes_per_element`.
template <typename Kernel>
double measure(size_t elements, int threads, int passes, double bytes_per_element, Kernel kernel) {
  double best = 0;
  const size_t slice = elements / threads;
  for (int pass = 0; pass < passes; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) workers.emplace_back([&, t] { kernel(t, t * slice, slice); });
    for (auto& worker : workers) worker.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(slice * threads) * bytes_per_element / seconds / 1e9);
  }
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
  const size_t elements = megabytes * (1 << 20) / sizeof(float);
  std::vector<float> a(elements, 1.0f), b(elements, 2.0f), c(elements, 0.5f);
  std::vector<float> sums(1024);
  for (int threads : thread_counts) {
    if (threads < 1 || threads > 1024) continue;
    const double read = measure(elements, threads, passes, 4.0,
                                [&](int t, size_t first, size_t count) { sums[t] = sum_slice(a.data() + first, count); });
    const double triad = measure(elements, threads, passes, 12.0, [&](int, size_t first, size_t count) {
      triad_slice(a.data() + first, b.data() + first, c.data() + first, count);
    });
    std::printf("%d thread(s), %zu MB per array: read %.2f GB/s, triad %.2f GB/s (best of %d)\n", threads, megabytes, read, triad,
                passes);
  }
  if (sums[0] == 12345.678f) std::puts("");  // keep the sums observable
  return 0;
}

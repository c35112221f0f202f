#include "tests/test_support.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fedcal::testing {
namespace fs = std::filesystem;

ScratchDir::ScratchDir() {
  std::string pattern = (fs::temp_directory_path() / "fedcal-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot create a scratch folder");
  root_ = pattern;
}

ScratchDir::~ScratchDir() {
  if (std::getenv("FEDCAL_KEEP_TEST_DIRS") != nullptr) {
    std::fprintf(stderr, "kept %s\n", root_.c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(root_, ec);
}

std::string project_model_path() { return std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m/model.bin"; }
std::string project_tokenizer_path() { return std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m/tokenizer.model"; }

std::string transformers5_copy(const ScratchDir& dir, const std::string& folder) {
  const std::string copy = dir.path("v5");
  std::filesystem::create_directories(copy);
  std::filesystem::copy_file(folder + "/model.safetensors", copy + "/model.safetensors");
  std::filesystem::copy_file(folder + "/config.transformers5.json", copy + "/config.json");
  return copy;
}

std::string tinystories_path() { return std::string(FEDCAL_SOURCE_DIR) + "/data/tinystories/tinystories-sample.txt"; }

namespace {
std::string read_lines(int first, int last) {
  std::ifstream in(tinystories_path(), std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + tinystories_path());
  std::string line, out;
  for (int number = 1; std::getline(in, line); ++number) {
    if (number >= first && number <= last) out += line + "\n";
  }
  return out;
}
}  // namespace

std::string tinystories_train() { return read_lines(1, 7003); }
std::string tinystories_heldout() { return read_lines(7004, 8659); }

bool looks_uniform(const std::vector<uint64_t>& lanes, int lane_bits) {
  std::vector<double> bins(16, 0);
  for (const uint64_t value : lanes) bins[value >> (lane_bits - 4)] += 1;
  const double expected = static_cast<double>(lanes.size()) / 16;
  double chi2 = 0;
  for (const double count : bins) chi2 += (count - expected) * (count - expected) / expected;
  return chi2 < 45;
}

double relative_error(std::span<const float> actual, const std::vector<double>& expected) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(actual[i]) - expected[i]));
    max_ref = std::max(max_ref, std::abs(expected[i]));
  }
  return max_diff / std::max(max_ref, 1e-30);
}

double mean_kl(std::span<const float> reference, std::span<const float> logits, int vocab) {
  const size_t width = static_cast<size_t>(vocab), rows = reference.size() / width;
  auto log_softmax = [width](const float* row, std::vector<double>& out) {
    const double max = *std::max_element(row, row + width);
    double sum = 0;
    for (size_t v = 0; v < width; ++v) sum += std::exp(row[v] - max);
    for (size_t v = 0; v < width; ++v) out[v] = row[v] - max - std::log(sum);
  };
  std::vector<double> p(width), q(width);
  double total = 0;
  for (size_t t = 0; t < rows; ++t) {
    log_softmax(reference.data() + t * width, p);
    log_softmax(logits.data() + t * width, q);
    for (size_t v = 0; v < width; ++v) total += std::exp(p[v]) * (p[v] - q[v]);
  }
  return total / static_cast<double>(rows);
}

std::vector<int> random_tokens(std::mt19937& rng, int vocab_size, int length) {
  std::vector<int> tokens{1};
  for (int i = 1; i < length; ++i) tokens.push_back(static_cast<int>(rng() % static_cast<unsigned>(vocab_size)));
  return tokens;
}

std::string built_binary(const std::string& name) { return std::string(FEDCAL_BIN_DIR) + "/" + name; }

CommandResult run_command(const std::string& command, bool capture_stderr) {
  const std::string full = command + (capture_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(full.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

namespace {
std::string oracles_dir() { return std::string(FEDCAL_SOURCE_DIR) + "/tests/oracles"; }
}  // namespace

std::string oracles_missing() {
  if (run_command("node --version").exit_code != 0) return "node is not installed (deploy/install-deps.sh installs it)";
  if (!std::filesystem::exists(oracles_dir() + "/node_modules/.fedcal-installed-lock")) {
    return "the npm test oracles are not installed: run tests/oracles/install.sh";
  }
  return "";
}

CommandResult run_oracle(const std::string& script, const std::string& arguments) {
  const std::string command = "node '" + oracles_dir() + "/" + script + "' " + arguments;
  CommandResult result = run_command(command);
  if (result.exit_code != 0) result.output = run_command(command, true).output;  // with node's message
  return result;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace fedcal::testing

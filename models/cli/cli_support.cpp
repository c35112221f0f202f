#include "models/cli/cli_support.h"

#include <sys/resource.h>

#include <filesystem>
#include <thread>

namespace fedcal::cli {
namespace fs = std::filesystem;

void add_model_options(CLI::App& command, ModelOptions& options, bool with_tokenizer) {
  command.add_option("-m,--model", options.model, "Model: llama2.c .bin file or Hugging Face folder")->required();
  if (with_tokenizer) {
    command.add_option("--tokenizer", options.tokenizer,
                       "Tokenizer file (llama2.c tokenizer.bin, sentencepiece .model or tokenizer.json); "
                       "required for llama2.c checkpoints");
  }
  command.add_option("-t,--threads", options.threads, "Worker threads for XNNPACK and attention (default: all cores)")
      ->check(CLI::Range(0, 1024));
}

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

size_t peak_resident_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports kilobytes
}

size_t model_file_bytes(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return fs::file_size(path, ec);
  size_t total = 0;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    if (entry.is_regular_file(ec)) total += entry.file_size(ec);
  }
  return total;
}

}  // namespace fedcal::cli

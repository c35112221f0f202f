// Options and helpers shared by fedcal-model's subcommands.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

namespace fedcal::cli {

struct ModelOptions {
  std::string model;
  std::optional<std::string> tokenizer;
  int threads = 0;  // 0: every core
};

// Adds --model (required), --tokenizer and --threads to `command`.
void add_model_options(CLI::App& command, ModelOptions& options, bool with_tokenizer = true);
int resolve_threads(int requested);
// Peak resident set size of this process, in bytes.
size_t peak_resident_bytes();
// Bytes on disk of a model file, or of every file in a model folder.
size_t model_file_bytes(const std::string& path);

}  // namespace fedcal::cli

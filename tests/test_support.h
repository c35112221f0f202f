// Helpers shared by the tests: scratch folders, the shared TinyStories split, logits comparison.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace fedcal::testing {

// A fresh folder removed (with its content) when the object dies, unless FEDCAL_KEEP_TEST_DIRS is set.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path(const std::string& name) const { return root_ + "/" + name; }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

// A reference checkpoint of tests/reference/ (`folder`) with its transformers 5.x config
// (config.transformers5.json) as the config.json of a copy in dir/v5; returns that folder.
std::string transformers5_copy(const ScratchDir& dir, const std::string& folder);

// data/tinystories/tinystories-sample.txt split as its README fixes it.
std::string tinystories_path();
std::string tinystories_train();    // lines 1-7003
std::string tinystories_heldout();  // lines 7004-8659

// The project's trained model (models/tinystories-1.8m): its llama2.c checkpoint and sentencepiece model.
std::string project_model_path();
std::string project_tokenizer_path();
// The same paths as constants, for the tests that name them often.
inline const std::string kProjectModel = project_model_path();
inline const std::string kProjectTokenizer = project_tokenizer_path();

// max |a - b| / max |b|: error relative to the scale of the reference row.
double relative_error(std::span<const float> actual, const std::vector<double>& expected);

// Whether the top 4 bits of `lanes` (each lane_bits wide) spread evenly over their 16 values:
// chi-square with 15 degrees of freedom below 45 (p ~ 1e-4 for a uniform source). What a masked vector
// looks like; true counts are tiny, all in the lowest bin.
bool looks_uniform(const std::vector<uint64_t>& lanes, int lane_bits);

// The mean KL divergence KL(softmax(reference) || softmax(logits)) per row of `vocab` logits, in nats.
double mean_kl(std::span<const float> reference, std::span<const float> logits, int vocab);

// `length` tokens: <s> (1), then random ones below `vocab_size`.
std::vector<int> random_tokens(std::mt19937& rng, int vocab_size, int length);

// Path of a binary built into build/bin.
std::string built_binary(const std::string& name);

// Runs a shell command, returns its exit code and captures stdout (and stderr when asked).
struct CommandResult {
  int exit_code;
  std::string output;
};
CommandResult run_command(const std::string& command, bool capture_stderr = false);

// The independent implementations from npm that tests compare fedcal with (tests/oracles, installed by
// tests/oracles/install.sh, which deploy/install-deps.sh and tests/run_all.sh run). Empty when they
// are installed, else what is missing and the command that installs it.
std::string oracles_missing();
// Runs `node tests/oracles/SCRIPT ARGUMENTS`; stdout is the output.
CommandResult run_oracle(const std::string& script, const std::string& arguments);

void write_text(const std::string& path, const std::string& text);

}  // namespace fedcal::testing

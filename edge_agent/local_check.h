// The agent's local check of a quantized package: on its own held-out text, KL divergence and top-1
// agreement against the FP32 model, both perplexities, and batch-1 decoding speed of both (the
// median of several runs that alternate between the two models, with the runs' relative spread).
// Only these figures leave the device.
#pragma once

#include <string>

#include "common/signing.h"
#include "models/engine/transformer.h"
#include "edge_agent/agent_config.h"

namespace fedcal::edge_agent {

struct LocalCheck {
  std::string label;
  uint64_t tokens = 0;
  double mean_kl = 0;
  double top1_agreement = 0;
  double mean_nll = 0;
  double reference_mean_nll = 0;
  double decode_tokens_per_second = 0;            // median of the runs
  double reference_decode_tokens_per_second = 0;  // median of the runs
  double decode_spread = 0;                       // (fastest - slowest) / median of the runs
  double reference_decode_spread = 0;
};

struct LocalCheckOptions {
  int threads = 0;  // 0: default_threads of the model (models/engine/xnn_runtime.h)
  int max_tokens = 4096;
  int decode_tokens = 16;  // per run
  int decode_runs = 5;
  // How the candidate's INT8 linears quantize activations: its static scales, or per token at run
  // time (the calibration-free baseline a round reports next to its calibrated packages).
  ActivationQuantization activations = ActivationQuantization::kStatic;
  // The calibration-free baseline: INT8 weights quantized from the FP32 model at the package's weight
  // granularity, every linear the package has in INT8, none of them fine-grained (a mixed package's
  // fine-grained layers would make the baseline partly fine-grained), instead of the package's own.
  bool weights_from_fp32 = false;
};

// The options of an agent's config.
LocalCheckOptions local_check_options(const AgentConfig& config);

// Both packages are verified against `coordinator_key`. `reference` is the FP32 model (round
// results, `require_int8`) or the agent's previous active model (rollouts). Throws Error naming what failed.
LocalCheck check_package(const std::string& label, const std::string& reference, const std::string& candidate,
                         const SigningKey& coordinator_key, const std::string& heldout_text, const LocalCheckOptions& options,
                         bool require_int8 = true);

// A package with nothing to compare with: verified, loaded, and timed decoding.
LocalCheck self_test(const std::string& package, const SigningKey& coordinator_key, const LocalCheckOptions& options);

}  // namespace fedcal::edge_agent

// The quantization job at the end of a round: global statistics -> scales -> the signed INT8 package,
// and, where the operator configured public reference text, the same recipe calibrated only on that
// text (the baseline the report compares against). A smoothing round's job (settings.smooth) instead
// folds SmoothQuant from the fleet's importance sums into the FP32 model. Runs on a worker thread;
// touches no shared state.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/plausibility_check.h"
#include "coordinator/round_settings.h"
#include "models/quant/calibration_stats.h"

namespace fedcal::coordinator {

struct QuantizationJobInput {
  int64_t round_id = 0;
  std::string fp32_package;  // the round's model
  // A smoothing round's follow-up: the model before smoothing, where target_kl "dynamic" measures.
  std::string unsmoothed_package;
  CalibrationStats stats;    // the aggregate
  // Each opened relay group's sum, in group order: the scales' source with settings.group_scales "median".
  std::vector<CalibrationStats> group_stats;
  RoundSettings settings;
  std::string signing_key_path;
  std::string artifacts_dir;
  std::string reference_text;  // empty: no baseline
  int threads = 1;
  // Some participant has no INT8 dot product (has_int8_dot_product): when the fleet package has
  // fine-grained layers, a static package (those layers in FP32) is built for that device class too.
  bool static_class = false;
  int stall_ms = 0;  // tests (fault_injection stall-quantizing): the job waits this long before it starts
};

struct BuiltPackage {
  std::string path;  // artifacts_dir/<sha256>.fcpkg
  std::string sha256;
  int64_t bytes = 0;
  std::string description;
  bool created = false;  // StoredArtifact::created
};

// A file for another runtime (settings.exports), made from the fleet package and statistics. One that
// cannot be made (e.g. GGUF of a tokenizer it cannot carry) has its error and no file: the round's
// package does not depend on it.
struct BuiltExport {
  std::string format;
  std::string path;  // artifacts_dir/<sha256>.<extension>; "" on error
  std::string sha256;
  int64_t bytes = 0;
  std::string description;
  std::string error;
  bool created = false;
};

// A smoothing round's result (settings.smooth): the FP32 model with SmoothQuant folded in.
struct BuiltSmoothing {
  BuiltPackage package;
  nlohmann::json sites;  // per site: name, alpha (null: left as it was), static INT8 error without and with
  int smoothed_sites = 0;
};

struct QuantizationJobResult {
  std::optional<BuiltSmoothing> smoothed;  // a smoothing round's only result: the others are empty
  BuiltPackage fleet;
  std::vector<BuiltExport> exports;  // in settings.exports order
  std::optional<BuiltPackage> baseline;
  std::map<std::string, BuiltPackage> groups;  // by label: settings.group_variants
  std::optional<BuiltPackage> static_class;    // for devices without an INT8 dot product (kStaticClassLabel)
  std::vector<PlausibilityCheck> checks;       // the coordinator's, of the fleet package and each group's (passed)

  // The artifacts this job wrote that no file had before it (what to remove when its round is aborted
  // and its result dropped).
  std::vector<std::string> created_files() const;
};

// Throws Error with the reason (e.g. a quantization point the fleet never saw values at, or a package
// that fails the coordinator's plausibility check: then nothing of the round is stored).
QuantizationJobResult run_quantization_job(const QuantizationJobInput& input);

}  // namespace fedcal::coordinator

// `fedcal-coordinator models export ID --format FORMAT -o PATH`: a stored model in another runtime's
// format (models/format/runtime_export.h). A file a round already made (`round start --export`) is
// copied; anything else is made now from what the store holds: a round's INT8 package gives its
// scales (onnx-qdq, tensorrt-cache), the FP32 model it was calibrated from (gguf, onnx) and the
// round's aggregate statistics (imatrix, when the round recorded importance sums). Touches no shared
// state, so it runs on a worker thread.
#pragma once

#include <optional>
#include <string>

#include "common/signing.h"
#include "coordinator/store.h"
#include "models/format/runtime_export.h"

namespace fedcal::coordinator {

struct ModelExportSource {
  ModelRecord model;
  std::optional<ModelRecord> fp32_source;  // the FP32 model a round's package was calibrated from
  std::optional<std::string> round_stats;  // that round's aggregate statistics
  std::optional<ExportRecord> made;        // the round's own export in this format, if it made one
};

RuntimeExportSummary export_stored_model(const ModelExportSource& source, const std::string& format, const std::string& output,
                                         const SigningKey& signing_key);

}  // namespace fedcal::coordinator

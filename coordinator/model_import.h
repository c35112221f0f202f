// Model import: an FP32 model in any format fedcal reads, or an INT8 package built elsewhere, loaded
// (which checks it), then re-written as a package this coordinator signs into the artifact store.
// Touches no shared state, so it runs on a worker thread while the daemon keeps serving agents; the
// caller records the returned model in the store.
#pragma once

#include <string>

#include "common/signing.h"
#include "coordinator/artifact_store.h"
#include "coordinator/store.h"

namespace fedcal::coordinator {

// The model as stored (id unset). `tokenizer` may be empty (found beside the model); `description`
// empty: one is written from the model's shape and origin.
ModelRecord import_model_file(const std::string& path, const std::string& tokenizer, const std::string& description,
                              const SigningKey& signing_key, const ArtifactStore& artifacts);

}  // namespace fedcal::coordinator

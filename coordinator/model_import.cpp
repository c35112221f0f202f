#include "coordinator/model_import.h"

#include <fmt/format.h>

#include <optional>

#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/quant/calibration.h"

namespace fedcal::coordinator {

ModelRecord import_model_file(const std::string& path, const std::string& tokenizer, const std::string& description,
                              const SigningKey& signing_key, const ArtifactStore& artifacts) {
  LoadedModel loaded = load_model(path);
  const TokenizerFile tokenizer_file =
      find_tokenizer(loaded, tokenizer.empty() ? std::nullopt : std::optional<std::string>(tokenizer));
  PackageProvenance provenance;
  if (loaded.package) provenance = loaded.package->provenance;
  if (provenance.source_model_sha256.empty()) provenance.source_model_sha256 = model_fingerprint(loaded.model);
  PackageWriteOptions options;
  options.signing_key = &signing_key;
  const StoredArtifact stored = artifacts.add_package([&](const std::string& temporary) {
    write_model_package(temporary, loaded.model, loaded.int8, tokenizer_file.file, provenance, options);
  });
  ModelRecord model;
  model.sha256 = stored.sha256;
  model.kind = loaded.int8.empty() ? "fp32" : "int8";
  model.path = stored.path;
  model.bytes = stored.bytes;
  model.description = description.empty()
                          ? fmt::format("{} {} from {}", loaded.int8.empty() ? "FP32" : "INT8 " + provenance.method,
                                        loaded.model.config.describe(), path)
                          : description;
  return model;
}

}  // namespace fedcal::coordinator

#include "tests/coordinator/fake_host.h"

#include <filesystem>

#include "common/signing.h"
#include "coordinator/artifact_store.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/quant/calibration.h"

namespace fedcal::testing {

FakeHost::FakeHost(const ScratchDir& dir) {
  config_.state_dir = dir.path("coordinator");
  config_.threads = 1;
  std::filesystem::create_directories(config_.artifacts_dir());
  store_ = std::make_unique<coordinator::Store>(config_.database_path());
  SigningKey key = SigningKey::generate();
  key.write_private_key(config_.signing_key_path());
}

std::vector<int64_t> FakeHost::enroll(int count) {
  std::vector<int64_t> ids;
  for (int i = 0; i < count; ++i) {
    const std::string token = store_->create_token(3600 * 1000);
    const std::string key = std::string(39, 'a') + static_cast<char>('A' + i);
    ids.push_back(*store_->redeem_token(token, key, "agent" + std::to_string(i)));
    online.insert(ids.back());
  }
  return ids;
}

coordinator::ModelRecord FakeHost::import_project_model() {
  const std::string dir = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m";
  const LoadedModel loaded = load_model(dir + "/model.bin");
  const TokenizerFile tokenizer = find_tokenizer(loaded, dir + "/tokenizer.bin");
  PackageProvenance provenance;
  provenance.source_model_sha256 = model_fingerprint(loaded.model);
  const SigningKey key = SigningKey::read_private_key(config_.signing_key_path());
  PackageWriteOptions options;
  options.signing_key = &key;
  const coordinator::StoredArtifact stored =
      coordinator::ArtifactStore(config_.artifacts_dir()).add_package([&](const std::string& path) {
        write_model_package(path, loaded.model, {}, tokenizer.file, provenance, options);
      });
  coordinator::ModelRecord model;
  model.sha256 = stored.sha256;
  model.kind = "fp32";
  model.path = stored.path;
  model.bytes = stored.bytes;
  model.description = "the project's model";
  model.id = store_->add_model(model);
  return model;
}

void FakeHost::restart() {
  store_.reset();
  store_ = std::make_unique<coordinator::Store>(config_.database_path());
  online.clear();
  sent.clear();
  drop_to_offline = true;
}

void FakeHost::send(int64_t agent_id, OutgoingMessage& message) {
  if (drop_to_offline && !online.count(agent_id)) return;
  const std::vector<std::byte> bytes = message.encode(++sequence_);
  auto decoded_message = std::make_shared<DecodedEnvelope>(decode_envelope(bytes));
  sent.push_back({agent_id, body_name(decoded_message->envelope()), decoded_message});
}

std::vector<SentMessage> FakeHost::take(int64_t agent, const std::string& kind) {
  std::vector<SentMessage> out, rest;
  for (SentMessage& message : sent) (message.agent == agent && message.kind == kind ? out : rest).push_back(std::move(message));
  sent = std::move(rest);
  return out;
}

DecodedEnvelope decoded(OutgoingMessage& message) { return decode_envelope(message.encode(1)); }

}  // namespace fedcal::testing

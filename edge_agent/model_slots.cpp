#include "edge_agent/model_slots.h"

#include <nlohmann/json.hpp>

#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"

namespace fedcal::agent {

ModelSlots::ModelSlots(std::string state_dir) : state_dir_(std::move(state_dir)) {
  const std::string path = state_dir_ + "/slots.json";
  if (!std::filesystem::exists(path)) return;
  const nlohmann::json json = nlohmann::json::parse(read_text_file(path), nullptr, false);
  if (json.is_discarded() || !json.is_object()) fail("{}: not a JSON object", path);
  active_ = json.value("active", std::string());
  previous_ = json.value("previous", std::string());
}

void ModelSlots::activate(const std::string& sha256) {
  if (sha256 == active_) return;
  previous_ = active_;
  active_ = sha256;
  save();
}

bool ModelSlots::rollback() {
  if (previous_.empty()) return false;
  std::swap(active_, previous_);
  save();
  return true;
}

void ModelSlots::save() const {
  write_file_atomically(state_dir_ + "/slots.json", nlohmann::json{{"active", active_}, {"previous", previous_}}.dump() + "\n",
                        0600);
}

}  // namespace fedcal::agent

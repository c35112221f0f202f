#include "edge_agent/model_slots.h"

#include <nlohmann/json.hpp>

#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"

namespace fedcal::edge_agent {

ModelSlots::ModelSlots(std::string state_dir) : state_dir_(std::move(state_dir)) {
  const std::string path = state_dir_ + "/slots.json";
  if (!std::filesystem::exists(path)) return;
  const nlohmann::json json = nlohmann::json::parse(read_text_file(path), nullptr, false);
  if (json.is_discarded() || !json.is_object()) fail("{}: not a JSON object", path);
  active_ = json.value("active", std::string());
  previous_ = json.value("previous", std::string());
  crashes_ = json.value("crashes_since_activation", 0u);
}

void ModelSlots::record_start() {
  const std::string marker = state_dir_ + "/running";
  if (std::filesystem::exists(marker)) {
    ++crashes_;
    save();
  }
  write_file_atomically(marker, std::string("running\n"), 0600);
}

void ModelSlots::record_clean_exit() const { std::filesystem::remove(state_dir_ + "/running"); }

void ModelSlots::activate(const std::string& sha256) {
  if (sha256 == active_) return;
  previous_ = active_;
  active_ = sha256;
  crashes_ = 0;
  save();
}

bool ModelSlots::rollback() {
  if (previous_.empty()) return false;
  std::swap(active_, previous_);
  crashes_ = 0;
  save();
  return true;
}

void ModelSlots::save() const {
  const nlohmann::json json = {{"active", active_}, {"previous", previous_}, {"crashes_since_activation", crashes_}};
  write_file_atomically(state_dir_ + "/slots.json", json.dump() + "\n", 0600);
}

}  // namespace fedcal::edge_agent

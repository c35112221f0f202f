#include "edge_agent/model_slots.h"

#include <nlohmann/json.hpp>

#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"

namespace fedcal::edge_agent {

namespace {

bool is_sha256(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

ModelSlots::ModelSlots(std::string state_dir) : state_dir_(std::move(state_dir)) {
  const std::string path = state_dir_ + "/slots.json";
  if (!std::filesystem::exists(path)) return;
  // A damaged file (truncated, wrong types, a slot whose package is gone) does not stop the agent:
  // it starts with no active model, keeps the file aside and says why; the next rollout sets one.
  std::string damage;
  try {
    const nlohmann::json json = nlohmann::json::parse(read_text_file(path), nullptr, false);
    if (json.is_discarded() || !json.is_object()) fail("not a JSON object");
    const auto slot = [&](const char* key) {
      const nlohmann::json value = json.value(key, nlohmann::json(""));
      if (!value.is_string()) fail("'{}' is not a string", key);
      const std::string sha = value.get<std::string>();
      if (!sha.empty() && !is_sha256(sha)) fail("'{}' is not a SHA-256", key);
      if (!sha.empty() && !std::filesystem::exists(this->path(sha))) fail("'{}' names a package that is not in models/", key);
      return sha;
    };
    active_ = slot("active");
    previous_ = slot("previous");
    const nlohmann::json crashes = json.value("crashes_since_activation", nlohmann::json(0));
    if (!crashes.is_number_unsigned()) fail("'crashes_since_activation' is not a count");
    crashes_ = crashes.get<unsigned>();
  } catch (const std::exception& error) {
    damage = error.what();
  }
  if (damage.empty()) return;
  active_.clear();
  previous_.clear();
  crashes_ = 0;
  const std::string aside = path + ".damaged";
  std::error_code ignored;
  std::filesystem::rename(path, aside, ignored);
  recovery_ = fmt::format("{} was damaged ({}); kept as {}; starting with no active model until the next rollout", path, damage,
                          aside);
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

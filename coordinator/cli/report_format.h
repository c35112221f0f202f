// Human-readable renderings of the admin replies (the --json flag prints them raw instead).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace fedcal::coordinator {

std::string format_round(const nlohmann::json& round);
std::string format_agents(const nlohmann::json& agents);
std::string format_models(const nlohmann::json& models);
std::string format_rollout(const nlohmann::json& rollout);
std::string format_audit(const nlohmann::json& audit);

}  // namespace fedcal::coordinator

#include "coordinator/stages.h"

#include <array>
#include <string>

#include "common/error.h"

namespace fedcal::coordinator {
namespace {

template <typename Enum>
struct Names;
template <>
struct Names<RoundStage> {
  static constexpr const char* kWhat = "round stage";
  static constexpr std::array<std::string_view, 9> kNames = {"collecting", "sharing",    "masking", "unmasking", "aggregating",
                                                             "quantizing", "evaluating", "done",    "failed"};
};
template <>
struct Names<ParticipantStatus> {
  static constexpr const char* kWhat = "participant status";
  static constexpr std::array<std::string_view, 6> kNames = {"joined", "shared", "masked", "revealed", "reported", "dropped"};
};
template <>
struct Names<RolloutStage> {
  static constexpr const char* kWhat = "rollout stage";
  static constexpr std::array<std::string_view, 6> kNames = {"running", "paused", "halted", "done", "rolled_back", "aborted"};
};
template <>
struct Names<TargetStatus> {
  static constexpr const char* kWhat = "rollout target status";
  static constexpr std::array<std::string_view, 7> kNames = {"pending", "sent",         "healthy",    "unhealthy",
                                                             "failed",  "rolling_back", "rolled_back"};
};

template <typename Enum>
std::string_view name_of(Enum value) {
  const auto index = static_cast<size_t>(value);
  return index < Names<Enum>::kNames.size() ? Names<Enum>::kNames[index] : "invalid";
}

template <typename Enum>
Enum parse(std::string_view text) {
  for (size_t i = 0; i < Names<Enum>::kNames.size(); ++i) {
    if (Names<Enum>::kNames[i] == text) return static_cast<Enum>(i);
  }
  fail("'{}' is not a {}", text, Names<Enum>::kWhat);
}

}  // namespace

std::string_view name(RoundStage stage) { return name_of(stage); }
std::string_view name(ParticipantStatus status) { return name_of(status); }
std::string_view name(RolloutStage stage) { return name_of(stage); }
std::string_view name(TargetStatus status) { return name_of(status); }

RoundStage parse_round_stage(std::string_view text) { return parse<RoundStage>(text); }
ParticipantStatus parse_participant_status(std::string_view text) { return parse<ParticipantStatus>(text); }
RolloutStage parse_rollout_stage(std::string_view text) { return parse<RolloutStage>(text); }
TargetStatus parse_target_status(std::string_view text) { return parse<TargetStatus>(text); }

template <typename Enum>
std::string sql_names() {
  std::string out;
  for (const std::string_view name : Names<Enum>::kNames) out += (out.empty() ? "'" : ", '") + std::string(name) + "'";
  return out;
}
template std::string sql_names<RoundStage>();
template std::string sql_names<ParticipantStatus>();
template std::string sql_names<RolloutStage>();

}  // namespace fedcal::coordinator

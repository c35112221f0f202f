// The states of the coordinator's persisted state machines, as enums. Their names are what the
// store's CHECK constraints allow and what the admin JSON shows; text becomes an enum only through
// parse_*, which throws Error on anything else (a damaged database, a bad admin request).
#pragma once

#include <string_view>

namespace fedcal::coordinator {

// A calibration round (see round.h for what each stage does).
// kAggregating: a round with relay groups (round_settings.h relay_group_size) while the relays run
// the secure-aggregation stages of their groups, instead of sharing, masking and unmasking.
enum class RoundStage { kCollecting, kSharing, kMasking, kUnmasking, kAggregating, kQuantizing, kEvaluating, kDone, kFailed };
// A participant of a round, by the last stage it answered.
enum class ParticipantStatus { kJoined, kShared, kMasked, kRevealed, kReported, kDropped };
// A rollout (see rollout.h).
enum class RolloutStage { kRunning, kPaused, kHalted, kDone, kRolledBack, kAborted };
// One target agent of a rollout.
enum class TargetStatus { kPending, kSent, kHealthy, kUnhealthy, kFailed, kRollingBack, kRolledBack };

std::string_view name(RoundStage stage);
std::string_view name(ParticipantStatus status);
std::string_view name(RolloutStage stage);
std::string_view name(TargetStatus status);

RoundStage parse_round_stage(std::string_view text);
ParticipantStatus parse_participant_status(std::string_view text);
RolloutStage parse_rollout_stage(std::string_view text);
TargetStatus parse_target_status(std::string_view text);

// "'collecting', 'sharing', ..." for a CHECK (... IN (...)) constraint.
template <typename Enum>
std::string sql_names();

inline bool is_final(RoundStage stage) { return stage == RoundStage::kDone || stage == RoundStage::kFailed; }
inline bool is_final(RolloutStage stage) {
  return stage == RolloutStage::kDone || stage == RolloutStage::kRolledBack || stage == RolloutStage::kAborted;
}

}  // namespace fedcal::coordinator

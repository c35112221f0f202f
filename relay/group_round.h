// Secure aggregation for one group of a round, run at the relay its members are connected to
// (secagg/group_unmasking.h). The coordinator sends the group (members, their advertised keys, the
// group's graph, the round's X25519 key, signed); the relay runs the three stages a coordinator runs
// for a round without groups - roundKeys, sharesForYou, unmaskRequest to its members, their
// shareKeys, maskedInput and unmaskShares back - and, when they are over, hands the coordinator the
// group's sum with the pairwise masks removed and the survivors' self-masks still on, with the
// self-mask shares the members sealed to the coordinator. It never holds a member's vector, nor the
// group's sum.
// A stage ends when every member still in the group has answered, or at the group's stage timeout.
// A complaint (a share that does not decrypt) is checked by the coordinator's rules
// (secagg/complaint_checks.h), with a third of the stage timeout for an opening. In a group whose
// members seal shares under static keys (older agents) a complaint cannot be checked: the senders it
// names are excluded on it alone.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "protocol/wire.h"
#include "secagg/complaint_checks.h"
#include "secagg/relay_group_frames.h"

namespace fedcal::relay {

class GroupRound {
 public:
  // Sends one message to a member, by its index in the group.
  using Send = std::function<void(uint32_t index, OutgoingMessage& message)>;
  using Log = std::function<void(const std::string& line)>;
  // Starts the first stage: every member is sent its roundKeys. Throws Error for a group whose
  // configuration does not hold together.
  GroupRound(RelayGroupStart start, Send send, Log log, int64_t now_ms);

  uint64_t round_id() const { return start_.config.round_id; }
  uint64_t group_id() const { return start_.config.group_id; }
  const RelayGroupStart& start() const { return start_; }

  // A stage message (shareKeys, maskedInput, shareOpening, unmaskShares) of this round from member `index`: taken,
  // or dropped as a copy or late. Returns the kind to acknowledge. Throws Error for a malformed or
  // misplaced message (the member is then left out, with the reason logged).
  std::string handle(uint32_t index, wire::Envelope::Body::Reader body);
  // The member left the round (its roundLeave): no stage waits for it.
  void leave(uint32_t index);
  // The member is on a new connection: the current stage's request goes again if it has not answered
  // (what was sent on the old one may be lost; an answer that crosses it comes again as a copy).
  void resend(uint32_t index);
  // Ends a stage whose members have all answered or whose deadline passed; true once the group is
  // over (result() is ready).
  bool tick(int64_t now_ms);
  RelayGroupResult result() const;

 private:
  enum class Stage { kSharing, kMasking, kUnmasking, kDone };
  void begin_masking(int64_t now_ms);
  void begin_unmasking(int64_t now_ms);
  void finish();
  void fail_group(const std::string& why);
  void send_round_keys(uint32_t index);
  void send_shares(uint32_t index);
  void send_unmask_request(uint32_t index);
  void abort_member(uint32_t index, const std::string& why);  // roundAbort: the group goes on without it
  void complain(uint32_t complainer, const std::vector<uint32_t>& senders);
  void ask_opening(uint32_t accused, uint32_t complainer);      // shareOpenRequest
  void complaint_false(uint32_t complainer, uint32_t accused);  // the complainer left out
  void exclude_senders(uint32_t complainer, const std::vector<uint32_t>& senders, const std::string& why);
  bool waiting_for(const std::set<uint32_t>& pool, const std::set<uint32_t>& answered) const;

  RelayGroupStart start_;
  Send send_;
  Log log_;
  std::unique_ptr<SecAggServer> server_;
  Stage stage_ = Stage::kSharing;
  int64_t deadline_ms_ = 0;
  std::set<uint32_t> left_;  // left the round, or left out
  std::set<uint32_t> all_;
  std::vector<AdvertisedKeys> keys_;  // the members', by index
  bool changed_ = true;               // something arrived since the last tick looked
  ComplaintChecks complaint_checks_{{
      [this](uint32_t member) { return server_->excluded().count(member) > 0; },
      [this](uint32_t accused, uint32_t complainer) { ask_opening(accused, complainer); },
      [this](uint32_t complainer, uint32_t accused, const std::string& why) { exclude_senders(complainer, {accused}, why); },
      [this](uint32_t complainer, uint32_t accused) { complaint_false(complainer, accused); },
  }};
  int64_t now_ms_ = 0;  // of the last tick: when a complaint that arrives between ticks asks
  std::string failure_;
  std::vector<uint64_t> self_masked_sum_;
};

}  // namespace fedcal::relay

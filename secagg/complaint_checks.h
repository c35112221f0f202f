// Checking complaints in secure aggregation with ephemeral share keys, the one set of rules that the
// coordinator's rounds (coordinator/round.cpp) and the relays' groups (relay/group_round.cpp) follow.
//
// A participant (the complainer) names senders whose shares to it do not decrypt. Each named sender
// (the accused) is asked to open its share - the ephemeral secret that sealed it - one complaint at a
// time per complainer, and each accused at most once per round: a second complaint against one
// already asked excludes it unopened. A share that opens makes the complaint false: the complainer
// is left out and its other complaints are dropped. One that does not open, or no opening within
// the timeout, excludes the accused. What "asked", "excluded" and "left out" do is the owner's
// (Actions); this class keeps the open complaints and applies the rules.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace fedcal {

class ComplaintChecks {
 public:
  struct Actions {
    std::function<bool(uint32_t participant)> excluded;                      // already out of the sum
    std::function<void(uint32_t accused, uint32_t complainer)> ask_opening;  // send it the request
    std::function<void(uint32_t complainer, uint32_t accused, const std::string& why)> exclude;
    std::function<void(uint32_t complainer, uint32_t accused)> complaint_false;  // leave the complainer out
  };
  explicit ComplaintChecks(Actions actions) : actions_(std::move(actions)) {}

  // Whether `complainer` has an open complaint about `accused` (a second one is a copy).
  bool open(uint32_t complainer, uint32_t accused) const;
  // Records a new complaint (after the owner checked that `accused` sent `complainer` a share).
  void add(uint32_t complainer, uint32_t accused);
  // Asks for the opening of `complainer`'s next complaint, unless one is being checked.
  void ask_next(uint32_t complainer, int64_t now_ms);
  // Whether `accused` was asked to open its share to `complainer` and has not answered.
  bool asked(uint32_t accused, uint32_t complainer) const;
  // The answer: whether the share opened with the secret `accused` revealed.
  void settle(uint32_t accused, uint32_t complainer, bool opens, int64_t now_ms);
  // Excludes each accused asked `timeout_ms` or more ago that has not answered.
  void settle_stale(int64_t now_ms, int64_t timeout_ms);
  bool empty() const { return disputes_.empty(); }

 private:
  struct Dispute {
    uint32_t complainer = 0, accused = 0;
    int64_t asked_at_ms = -1;  // -1: not asked yet (one at a time per complainer)
  };
  Actions actions_;
  std::vector<Dispute> disputes_;
  std::set<uint32_t> opened_;  // accused asked to open a share: once per round each
};

}  // namespace fedcal

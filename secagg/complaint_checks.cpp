#include "secagg/complaint_checks.h"

#include <fmt/format.h>

#include <algorithm>

namespace fedcal {

bool ComplaintChecks::open(uint32_t complainer, uint32_t accused) const {
  return std::any_of(disputes_.begin(), disputes_.end(),
                     [&](const Dispute& dispute) { return dispute.complainer == complainer && dispute.accused == accused; });
}

void ComplaintChecks::add(uint32_t complainer, uint32_t accused) { disputes_.push_back({complainer, accused, -1}); }

void ComplaintChecks::ask_next(uint32_t complainer, int64_t now_ms) {
  while (true) {
    const auto next = std::find_if(disputes_.begin(), disputes_.end(),
                                   [&](const Dispute& dispute) { return dispute.complainer == complainer; });
    if (next == disputes_.end() || next->asked_at_ms >= 0) return;  // none, or one is being checked
    const uint32_t accused = next->accused;
    if (actions_.excluded(accused)) {
      disputes_.erase(next);
      continue;
    }
    if (opened_.count(accused)) {
      disputes_.erase(next);
      actions_.exclude(complainer, accused, "a second complaint against it (its one opening is spent)");
      continue;
    }
    opened_.insert(accused);
    next->asked_at_ms = now_ms;
    actions_.ask_opening(accused, complainer);
    return;
  }
}

bool ComplaintChecks::asked(uint32_t accused, uint32_t complainer) const {
  return std::any_of(disputes_.begin(), disputes_.end(), [&](const Dispute& dispute) {
    return dispute.accused == accused && dispute.complainer == complainer && dispute.asked_at_ms >= 0;
  });
}

void ComplaintChecks::settle(uint32_t accused, uint32_t complainer, bool opens, int64_t now_ms) {
  std::erase_if(disputes_,
                [&](const Dispute& dispute) { return dispute.complainer == complainer && dispute.accused == accused; });
  if (!opens) {
    if (!actions_.excluded(accused)) actions_.exclude(complainer, accused, "its share does not open with the key it revealed");
    ask_next(complainer, now_ms);
    return;
  }
  // The share opens: the complaint was false; the complainer's other complaints go unchecked.
  std::erase_if(disputes_, [&](const Dispute& dispute) { return dispute.complainer == complainer; });
  actions_.complaint_false(complainer, accused);
}

void ComplaintChecks::settle_stale(int64_t now_ms, int64_t timeout_ms) {
  std::vector<Dispute> stale;
  for (const Dispute& dispute : disputes_) {
    if (dispute.asked_at_ms >= 0 && now_ms - dispute.asked_at_ms >= timeout_ms) stale.push_back(dispute);
  }
  for (const Dispute& dispute : stale) {
    std::erase_if(disputes_,
                  [&](const Dispute& open) { return open.complainer == dispute.complainer && open.accused == dispute.accused; });
    if (!actions_.excluded(dispute.accused))
      actions_.exclude(dispute.complainer, dispute.accused, fmt::format("it did not open its share within {} ms", timeout_ms));
    ask_next(dispute.complainer, now_ms);
  }
}

}  // namespace fedcal

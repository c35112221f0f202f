#include "relay/group_round.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"
#include "secagg/secagg_wire.h"

namespace fedcal::relay {

using Body = wire::Envelope::Body;

GroupRound::GroupRound(RelayGroupStart start, Send send, Log log, int64_t now_ms)
    : start_(std::move(start)), send_(std::move(send)), log_(std::move(log)) {
  for (const RelayGroupMember& member : start_.members) keys_.push_back(member.keys);
  server_ = std::make_unique<SecAggServer>(start_.config, keys_);
  for (uint32_t u = 0; u < start_.config.participants; ++u) all_.insert(u);
  deadline_ms_ = now_ms + start_.stage_timeout_ms;
  for (uint32_t u = 0; u < start_.config.participants; ++u) send_round_keys(u);
}

void GroupRound::send_round_keys(uint32_t index) {
  OutgoingMessage message;
  write_round_keys(start_.config, index, server_->neighbours(index), keys_, message.body().initRoundKeys());
  send_(index, message);
}

void GroupRound::resend(uint32_t index) {
  if (index >= start_.config.participants || left_.count(index)) return;
  if (stage_ == Stage::kSharing && !server_->shared().count(index)) send_round_keys(index);
  if (stage_ == Stage::kMasking && server_->shared().count(index) && !server_->survivors().count(index)) send_shares(index);
  if (stage_ == Stage::kUnmasking && server_->survivors().count(index) && !server_->revealed().count(index))
    send_unmask_request(index);
}

std::string GroupRound::handle(uint32_t index, Body::Reader body) {
  changed_ = true;
  const uint64_t round = round_message_id(body);
  if (round != round_id()) fail("round {} is not group {}'s round ({})", round, group_id(), round_id());
  // Copies and late arrivals are normal (agents re-send until acknowledged): dropped, acknowledged.
  // A member late to share or to mask is out of the group's sum, and told so.
  auto late_or_copy = [&](Stage stage, bool have_it, const char* kind) {
    if (stage_ == stage && !have_it && !left_.count(index)) return false;
    if (static_cast<int>(stage_) < static_cast<int>(stage)) fail("'{}' before its stage in group {}", kind, group_id());
    if (!have_it && stage != Stage::kUnmasking && !left_.count(index))
      abort_member(index, fmt::format("its '{}' came late", kind));
    return true;
  };
  switch (body.which()) {
    case Body::SHARE_KEYS: {
      const auto share_keys = body.getShareKeys();
      if (late_or_copy(Stage::kSharing, server_->shared().count(index) > 0, "shareKeys")) return "shareKeys";
      std::vector<EncryptedShare> shares = read_encrypted_shares(share_keys.getShares(), "shareKeys");
      std::optional<Key32> commitment;
      if (share_keys.hasSelfMaskCommitment())
        commitment = read_key32(share_keys.getSelfMaskCommitment(), "shareKeys.selfMaskCommitment");
      server_->add_shares(index, std::move(shares), commitment);
      return "shareKeys";
    }
    case Body::MASKED_INPUT: {
      const auto masked = body.getMaskedInput();
      if (late_or_copy(Stage::kMasking, server_->survivors().count(index) > 0, "maskedInput")) return "maskedInput";
      if (masked.getBadShares().size() > 0) {
        if (masked.getBadShares().size() > start_.config.participants)
          fail("maskedInput: {} bad shares", masked.getBadShares().size());
        std::vector<uint32_t> senders;
        for (const uint32_t sender : masked.getBadShares()) senders.push_back(sender);
        complain(index, senders);
        return "maskedInput";
      }
      // Masked with exactly the senders of the latest sharesForYou, else stale (crossed a resend).
      std::vector<uint32_t> senders, masked_with;
      for (const EncryptedShare& share : server_->shares_for(index)) senders.push_back(share.from);
      for (const uint32_t sender : masked.getMaskedWith()) masked_with.push_back(sender);
      std::sort(masked_with.begin(), masked_with.end());
      if (masked_with != senders) return "maskedInput";
      server_->add_masked_input(index, read_lane_vector(masked.getValues(), start_.config.vector_length, start_.config.lane_bits,
                                                        "maskedInput.values"));
      return "maskedInput";
    }
    case Body::SHARE_OPENING: {
      const auto opening = body.getShareOpening();
      const uint32_t complainer = opening.getHolder();
      if (!complaint_checks_.asked(index, complainer) || stage_ != Stage::kMasking) {
        log_(fmt::format("round {} group {}: member {}: a 'shareOpening' no open complaint asks for dropped (late or a copy)",
                         round_id(), group_id(), index));
        return "shareOpening";
      }
      const Key32 secret = read_key32(opening.getEphemeralSecret(), "shareOpening.ephemeralSecret");
      const EncryptedShare* share = server_->share(index, complainer);
      complaint_checks_.settle(index, complainer,
                               share && share_opens(start_.config, *share, keys_[complainer].cipher_public, secret), now_ms_);
      return "shareOpening";
    }
    case Body::UNMASK_SHARES: {
      const auto unmask = body.getUnmaskShares();
      if (late_or_copy(Stage::kUnmasking, server_->revealed().count(index) > 0, "unmaskShares")) return "unmaskShares";
      const auto sealed = unmask.getSealedSelfMaskShares();
      server_->add_revealed(index, read_revealed_shares(unmask.getShares(), "unmaskShares"), Bytes(sealed.begin(), sealed.end()));
      return "unmaskShares";
    }
    default:
      fail("'{}' is not a stage message of a relay group", static_cast<int>(body.which()));
  }
}

void GroupRound::leave(uint32_t index) {
  left_.insert(index);
  changed_ = true;
}

bool GroupRound::waiting_for(const std::set<uint32_t>& pool, const std::set<uint32_t>& answered) const {
  return std::any_of(pool.begin(), pool.end(), [&](uint32_t u) { return !answered.count(u) && !left_.count(u); });
}

bool GroupRound::tick(int64_t now_ms) {
  if (stage_ == Stage::kDone) return true;
  now_ms_ = now_ms;
  const bool expired = now_ms >= deadline_ms_;
  if (!changed_ && !expired && complaint_checks_.empty()) return false;
  changed_ = false;
  try {
    // An accused that does not open its share within a third of the stage timeout is taken to be at fault.
    complaint_checks_.settle_stale(now_ms, std::max<int64_t>(start_.stage_timeout_ms / 3, 1));
    if (stage_ == Stage::kSharing && (expired || !waiting_for(all_, server_->shared()))) {
      begin_masking(now_ms);
    } else if (stage_ == Stage::kMasking && (expired || !waiting_for(server_->shared(), server_->survivors()))) {
      begin_unmasking(now_ms);
    } else if (stage_ == Stage::kUnmasking && (expired || !waiting_for(server_->survivors(), server_->revealed()))) {
      finish();
    }
  } catch (const Error& error) {
    fail_group(error.what());
  }
  return stage_ == Stage::kDone;
}

void GroupRound::begin_masking(int64_t now_ms) {
  if (server_->shared().size() < start_.config.min_survivors) {
    fail_group(fmt::format("only {} members shared their keys; the group needs {}", server_->shared().size(),
                           start_.config.min_survivors));
    return;
  }
  stage_ = Stage::kMasking;
  deadline_ms_ = now_ms + start_.stage_timeout_ms;
  for (const uint32_t u : server_->shared()) send_shares(u);
}

void GroupRound::send_shares(uint32_t index) {
  OutgoingMessage message;
  auto delivery = message.body().initSharesForYou();
  delivery.setRoundId(round_id());
  const std::vector<EncryptedShare> shares = server_->shares_for(index);
  write_encrypted_shares(shares, delivery.initShares(static_cast<unsigned>(shares.size())));
  send_(index, message);
}

void GroupRound::begin_unmasking(int64_t now_ms) {
  const std::set<uint32_t>& survivors = server_->survivors();
  if (survivors.size() < start_.config.min_survivors) {
    fail_group(fmt::format("only {} members sent masked statistics; the group's sum of fewer than {} is never opened",
                           survivors.size(), start_.config.min_survivors));
    return;
  }
  stage_ = Stage::kUnmasking;
  deadline_ms_ = now_ms + start_.stage_timeout_ms;
  for (const uint32_t u : survivors) send_unmask_request(u);
}

void GroupRound::send_unmask_request(uint32_t index) {
  OutgoingMessage message;
  auto request = message.body().initUnmaskRequest();
  write_unmask_request(round_id(), index, server_->survivors(), server_->neighbours(index),
                       start_.members[index].neighbour_survivors, request);
  request.setCoordinatorKey(as_data(start_.coordinator_key));
  request.setCoordinatorKeySignature(as_data(start_.coordinator_key_signature));
  send_(index, message);
}

void GroupRound::finish() {
  std::string why;
  std::optional<std::vector<uint64_t>> sum = server_->self_masked_sum(&why);
  if (!sum) {
    fail_group(why);
    return;
  }
  self_masked_sum_ = std::move(*sum);
  stage_ = Stage::kDone;
  log_(fmt::format("round {} group {}: {} of {} members in the sum, {} revealed", round_id(), group_id(),
                   server_->survivors().size(), start_.config.participants, server_->revealed().size()));
}

void GroupRound::fail_group(const std::string& why) {
  failure_ = why;
  stage_ = Stage::kDone;
  log_(fmt::format("round {} group {} failed: {}", round_id(), group_id(), why));
}

void GroupRound::complain(uint32_t complainer, const std::vector<uint32_t>& senders) {
  std::vector<uint32_t> now;
  for (const uint32_t sender : senders) {
    if (server_->excluded().count(sender) || complaint_checks_.open(complainer, sender)) continue;  // a copy
    if (sender >= start_.config.participants || !server_->share(sender, complainer))
      fail("maskedInput: a complaint about member {}, which sent this member no share", sender);
    if (!start_.config.ephemeral_share_keys) {
      now.push_back(sender);
      continue;
    }
    complaint_checks_.add(complainer, sender);
    log_(fmt::format("round {} group {}: member {} reports that the share of member {} does not decrypt", round_id(), group_id(),
                     complainer, sender));
  }
  if (!now.empty()) exclude_senders(complainer, now, "complaints cannot be checked in this group (an older agent joined)");
  complaint_checks_.ask_next(complainer, now_ms_);
}

void GroupRound::ask_opening(uint32_t accused, uint32_t complainer) {
  log_(fmt::format("round {} group {}: member {} is asked to open its share to member {}", round_id(), group_id(), accused,
                   complainer));
  OutgoingMessage message;
  auto request = message.body().initShareOpenRequest();
  request.setRoundId(round_id());
  request.setHolder(complainer);
  send_(accused, message);
}

void GroupRound::exclude_senders(uint32_t complainer, const std::vector<uint32_t>& senders, const std::string& why) {
  // Excluded as if they had never shared; whoever they sent a share to masks again without them.
  const std::vector<uint32_t> again = server_->exclude(complainer, senders);
  for (const uint32_t sender : senders) {
    log_(
        fmt::format("round {} group {}: member {} reports that the share of member {} does not decrypt: member {} is excluded "
                    "({})",
                    round_id(), group_id(), complainer, sender, sender, why));
    abort_member(sender, fmt::format("member {} says its share does not decrypt ({})", complainer, why));
  }
  for (const uint32_t v : again) send_shares(v);
}

void GroupRound::complaint_false(uint32_t complainer, uint32_t accused) {
  log_(
      fmt::format("round {} group {}: member {} complained that the share of member {} does not decrypt, but it opens: member {} "
                  "is left out (a false complaint)",
                  round_id(), group_id(), complainer, accused, complainer));
  abort_member(complainer, fmt::format("the share of member {} it complained about opens and is well formed", accused));
}

void GroupRound::abort_member(uint32_t index, const std::string& why) {
  left_.insert(index);
  OutgoingMessage message;
  auto abort = message.body().initRoundAbort();
  abort.setRoundId(round_id());
  abort.setReason(fmt::format("round {} went on without this agent (relay group {}): {}", round_id(), group_id(), why));
  send_(index, message);
}

RelayGroupResult GroupRound::result() const {
  RelayGroupResult result;
  result.round_id = round_id();
  result.failure = failure_;
  result.shared.assign(server_->shared().begin(), server_->shared().end());
  GroupAggregate& aggregate = result.aggregate;
  aggregate.config = start_.config;
  if (!failure_.empty()) return result;
  aggregate.survivors.assign(server_->survivors().begin(), server_->survivors().end());
  for (const uint32_t u : aggregate.survivors) aggregate.commitments[u] = server_->self_mask_commitments().at(u);
  aggregate.sealed = server_->sealed_self_mask_shares();
  aggregate.self_masked_sum = self_masked_sum_;
  return result;
}

}  // namespace fedcal::relay

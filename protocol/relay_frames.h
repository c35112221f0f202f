// The frames between a relay (relay/) and the coordinator, on the relay's one CURVE connection:
//   relay -> coordinator   ["fedcal-relay/1"] ["agent"] [agent's route at the relay] [agent's CURVE key]
//                                              [agent's IP address] [its Envelope, unchanged]
//                          ["fedcal-relay/1"] ["presence"] [PresenceEntry list]
//   coordinator -> relay   ["fedcal-relay/1"] ["agent"] [agent's route at the relay] [agent's CURVE key]
//                                              [Envelope to it]
//                          ["fedcal-relay/1"] ["presence"] []                 (acknowledged: the coordinator is alive)
//                          ["fedcal-relay/1"] ["cut"] [PresenceEntry list]    (not enrolled or revoked: stop answering)
//                          ["fedcal-relay/1"] ["group"] [RelayGroupStart]     (run secure aggregation for a group)
//   relay -> coordinator   ["fedcal-relay/1"] ["group-result"] [RelayGroupResult]  (its stages are over)
// (the group frames: secagg/relay_group_frames.h)
// The agent's Envelope travels unchanged, so its sequence number is checked by the coordinator as on
// a direct connection; the relay answers heartbeats of agents the coordinator welcomed and sends, once
// per presence interval, who it heard from instead (one message for thousands of heartbeats).
// A relay is trusted to name the agent behind each message: only keys in the coordinator's `relays`
// may send these frames.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fedcal {

inline constexpr std::string_view kRelayFrameTag = "fedcal-relay/1";
inline constexpr std::string_view kRelayAgentFrame = "agent";
inline constexpr std::string_view kRelayPresenceFrame = "presence";
inline constexpr std::string_view kRelayCutFrame = "cut";
inline constexpr std::string_view kRelayGroupFrame = "group";
inline constexpr std::string_view kRelayGroupResultFrame = "group-result";
// A ROUTER's routing id is at most 255 bytes (libzmq); a CURVE key in Z85 is 40 characters.
inline constexpr size_t kMaxRouteBytes = 255;
inline constexpr size_t kCurveKeyChars = 40;

// One agent connection at a relay.
struct PresenceEntry {
  std::string key;    // the agent's CURVE public key (Z85)
  std::string route;  // its routing id at the relay (1..255 bytes)
  bool operator==(const PresenceEntry&) const = default;
};

// Each entry as [40-byte key][1-byte route length][route].
std::string encode_presence(const std::vector<PresenceEntry>& entries);
// The inverse; throws Error ("presence: ...", with the entry's offset) on a truncated entry, an empty
// route or a key that is not 40 Z85 characters.
std::vector<PresenceEntry> decode_presence(std::string_view bytes);

}  // namespace fedcal

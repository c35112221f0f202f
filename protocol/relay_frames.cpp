#include "protocol/relay_frames.h"

#include "common/error.h"

namespace fedcal {
namespace {

bool is_z85(std::string_view text) {
  static constexpr std::string_view kAlphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  return text.find_first_not_of(kAlphabet) == std::string_view::npos;
}

}  // namespace

std::string encode_presence(const std::vector<PresenceEntry>& entries) {
  std::string out;
  out.reserve(entries.size() * (kCurveKeyChars + 6));
  for (const PresenceEntry& entry : entries) {
    if (entry.key.size() != kCurveKeyChars || entry.route.empty() || entry.route.size() > kMaxRouteBytes)
      fail("presence: entry of key '{}' does not fit (a 40-character key, a route of 1..255 bytes)", entry.key);
    out += entry.key;
    out += static_cast<char>(entry.route.size());
    out += entry.route;
  }
  return out;
}

std::vector<PresenceEntry> decode_presence(std::string_view bytes) {
  std::vector<PresenceEntry> entries;
  size_t at = 0;
  while (at < bytes.size()) {
    if (bytes.size() - at < kCurveKeyChars + 1) fail("presence: entry at byte {} is truncated", at);
    const std::string_view key = bytes.substr(at, kCurveKeyChars);
    if (!is_z85(key)) fail("presence: entry at byte {}: the key is not Z85", at);
    const size_t route_bytes = static_cast<unsigned char>(bytes[at + kCurveKeyChars]);
    const size_t route_at = at + kCurveKeyChars + 1;
    if (route_bytes == 0) fail("presence: entry at byte {}: empty route", at);
    if (bytes.size() - route_at < route_bytes) fail("presence: entry at byte {}: the route is truncated", at);
    entries.push_back({std::string(key), std::string(bytes.substr(route_at, route_bytes))});
    at = route_at + route_bytes;
  }
  return entries;
}

}  // namespace fedcal

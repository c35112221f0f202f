// The frames between relays and the coordinator (protocol/relay_frames.h).
#include <doctest/doctest.h>

#include "protocol/relay_frames.h"
#include "tests/error_of.h"

namespace fedcal::testing {

TEST_CASE("Relay frames: presence entries round-trip, and truncated or malformed ones are refused with their offset") {
  const std::string key_a(40, 'a'), key_b = "0123456789abcdefghijABCDEFGHIJ.-:+=^!/*?";
  const std::vector<PresenceEntry> entries = {{key_a, std::string("\0\x01\x02\x03\x04", 5)}, {key_b, std::string(255, 'r')}};
  const std::string bytes = encode_presence(entries);
  CHECK(bytes.size() == 2 * 41 + 5 + 255);
  CHECK(decode_presence(bytes) == entries);
  CHECK(decode_presence("").empty());
  CHECK(error_of([&] {
          decode_presence(bytes.substr(0, bytes.size() - 1));
        }).find("presence: entry at byte 46: the route is truncated") != std::string::npos);
  CHECK(error_of([&] { decode_presence(bytes.substr(0, 30)); }).find("entry at byte 0 is truncated") != std::string::npos);
  std::string empty_route = key_a + '\0';
  CHECK(error_of([&] { decode_presence(empty_route); }).find("empty route") != std::string::npos);
  std::string bad_key = bytes;
  bad_key[3] = '"';
  CHECK(error_of([&] { decode_presence(bad_key); }).find("not Z85") != std::string::npos);
  CHECK(error_of([&] { encode_presence({{"short", "r"}}); }).find("does not fit") != std::string::npos);
  CHECK(error_of([&] { encode_presence({{key_a, ""}}); }).find("does not fit") != std::string::npos);
}

}  // namespace fedcal::testing

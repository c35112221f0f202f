#include "protocol/wire.h"

#include <doctest/doctest.h>

#include <cstring>

#include "common/error.h"

namespace fedcal {
namespace {

std::vector<std::byte> hello_bytes(uint64_t sequence = 7) {
  OutgoingMessage message;
  message.body().initHello().setName("pi-kitchen");
  return message.encode(sequence);
}

TEST_CASE("Wire: a message round-trips with its version and sequence") {
  const auto bytes = hello_bytes(99);
  DecodedEnvelope decoded = decode_envelope(bytes);
  CHECK(decoded.envelope().getSequence() == 99);
  CHECK(decoded.envelope().getVersion() == wire::PROTOCOL_VERSION);
  CHECK(body_name(decoded.envelope()) == "hello");
  CHECK(std::string(decoded.envelope().getBody().getHello().getName().cStr()) == "pi-kitchen");
}

TEST_CASE("Wire: oversized, truncated, garbage and foreign-version messages are refused with the reason") {
  const auto bytes = hello_bytes();
  CHECK_THROWS_WITH_AS(decode_envelope(bytes, bytes.size() - 8), doctest::Contains("more than the limit"), Error);
  CHECK_THROWS_WITH_AS(decode_envelope(std::span(bytes).first(bytes.size() - 8)), doctest::Contains("malformed"), Error);
  CHECK_THROWS_WITH_AS(decode_envelope(std::span(bytes).first(5)), doctest::Contains("not a Cap'n Proto message"), Error);
  std::vector<std::byte> garbage(64, std::byte{0xff});
  CHECK_THROWS_AS(decode_envelope(garbage), Error);

  capnp::MallocMessageBuilder builder;
  auto envelope = builder.initRoot<wire::Envelope>();
  envelope.setVersion(wire::PROTOCOL_VERSION + 1);
  envelope.getBody().initHeartbeat();
  const auto foreign = encode_message(builder);
  CHECK_THROWS_WITH_AS(decode_envelope(foreign), doctest::Contains("protocol version"), Error);
}

TEST_CASE("Wire: a message type this build does not know is refused") {
  // Find the union discriminant by encoding two bodies and diffing, then write an unknown value there.
  OutgoingMessage a, b;
  a.body().initHeartbeat();
  b.body().initEnroll();
  auto bytes_a = a.encode(1);
  const auto bytes_b = b.encode(1);
  REQUIRE(bytes_a.size() >= 24);
  size_t position = bytes_a.size();
  for (size_t i = 8; i + 1 < std::min(bytes_a.size(), bytes_b.size()); ++i) {
    if (bytes_a[i] != bytes_b[i]) {
      position = i;
      break;
    }
  }
  REQUIRE(position < bytes_a.size());
  bytes_a[position] = std::byte{200};
  CHECK_THROWS_WITH_AS(decode_envelope(bytes_a), doctest::Contains("unknown message type"), Error);
}

TEST_CASE("Wire: field readers check lengths") {
  OutgoingMessage message;
  auto join = message.body().initJoin();
  join.initCipherPublic(31);
  join.initMaskPublic(32);
  const auto bytes = message.encode(1);
  DecodedEnvelope decoded = decode_envelope(bytes);
  CHECK_THROWS_WITH_AS(read_key32(decoded.envelope().getBody().getJoin().getCipherPublic(), "join.cipherPublic"),
                       doctest::Contains("join.cipherPublic: 31 bytes"), Error);
  CHECK_NOTHROW(read_key32(decoded.envelope().getBody().getJoin().getMaskPublic(), "join.maskPublic"));
  CHECK_THROWS_AS(read_u64_vector(decoded.envelope().getBody().getJoin().getMaskPublic(), 5, "v"), Error);
  CHECK(read_u64_vector(decoded.envelope().getBody().getJoin().getMaskPublic(), 4, "v").size() == 4);
}

TEST_CASE("Wire: vectors in 32-bit lanes are 4 little-endian bytes a value, and sizes and widths are checked") {
  OutgoingMessage message;
  auto masked = message.body().initMaskedInput();
  const std::vector<uint64_t> values{0, 1, 0x01020304u, 0xFFFFFFFFu};
  write_lane_vector(values, 32, masked.initValues(16));
  const auto bytes = message.encode(1);
  DecodedEnvelope decoded = decode_envelope(bytes);
  const auto data = decoded.envelope().getBody().getMaskedInput().getValues();
  CHECK(data[8] == 0x04);  // little-endian
  CHECK(data[11] == 0x01);
  CHECK(read_lane_vector(data, 4, 32, "values") == values);
  CHECK(read_lane_vector(data, 2, 64, "values") == std::vector<uint64_t>{uint64_t{1} << 32, 0xFFFFFFFF01020304u});
  CHECK_THROWS_WITH_AS(read_lane_vector(data, 5, 32, "values"), doctest::Contains("values: 16 bytes, expected 5 32-bit values"),
                       Error);
  CHECK_THROWS_AS(read_lane_vector(data, 4, 16, "values"), Error);
  OutgoingMessage other;
  auto too_wide = other.body().initMaskedInput();
  CHECK_THROWS_WITH_AS(write_lane_vector({uint64_t{1} << 32}, 32, too_wide.initValues(4)),
                       doctest::Contains("does not fit 32 bits"), Error);
}

}  // namespace
}  // namespace fedcal

namespace fedcal {
namespace {

TEST_CASE("Wire: a field of the wrong Cap'n Proto type becomes fedcal::Error at the message boundary (fuzzer finding)") {
  // Found by fuzz_message: a join whose key field points to a list of non-bytes.
  const uint8_t raw[] = {0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 1, 0, 8, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0,  0, 0, 0,
                         0, 0, 2, 0, 2,  0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0,  0, 2, 1, 0, 0, 17, 0, 0, 0,
                         0, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0,  0, 0, 0,
                         0, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 0, 0, 0,  0, 0, 0};
  const std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(raw),
                                     reinterpret_cast<const std::byte*>(raw) + sizeof(raw));
  DecodedEnvelope decoded = decode_envelope(bytes);
  auto read_all_data = [&] {
    const auto join = decoded.envelope().getBody().getJoin();
    return read_key32(join.getCipherPublic(), "cipherPublic")[0] + read_key32(join.getMaskPublic(), "maskPublic")[0];
  };
  CHECK_THROWS_WITH_AS(reading_message(read_all_data), doctest::Contains("malformed field"), Error);
}

}  // namespace
}  // namespace fedcal

#include "protocol/wire.h"

#include <cmath>

#include <capnp/serialize.h>
#include <kj/exception.h>

#include <bit>
#include <cstring>

#include "common/error.h"
#include "common/little_endian.h"
#include "common/text.h"

namespace fedcal {

std::vector<std::byte> encode_message(capnp::MessageBuilder& builder) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  const auto bytes = words.asBytes();
  std::vector<std::byte> out(bytes.size());
  std::memcpy(out.data(), bytes.begin(), bytes.size());
  return out;
}

namespace {

// The words of a message of at most `max_bytes` and a reader over them with the protocol's limits.
kj::Array<capnp::word> message_words(std::span<const std::byte> bytes, size_t max_bytes, std::string_view what) {
  if (bytes.size() > max_bytes) fail("{}: {} bytes, more than the limit of {}", what, bytes.size(), max_bytes);
  if (bytes.size() < 8 || bytes.size() % sizeof(capnp::word) != 0)
    fail("{}: {} bytes is not a Cap'n Proto message", what, bytes.size());
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  return words;
}

std::unique_ptr<capnp::FlatArrayMessageReader> limited_reader(const kj::Array<capnp::word>& words) {
  capnp::ReaderOptions options;
  // Reading the message once (the traversal) may touch each word about once; amplification through
  // shared pointers is capped at 4x the size.
  options.traversalLimitInWords = words.size() * 4 + 64;
  options.nestingLimit = 16;
  return std::make_unique<capnp::FlatArrayMessageReader>(words.asPtr(), options);
}

}  // namespace

DecodedMessage decode_message_words(std::span<const std::byte> bytes, size_t max_bytes, std::string_view what) {
  DecodedMessage decoded;
  decoded.words_ = message_words(bytes, max_bytes, what);
  try {
    decoded.reader_ = limited_reader(decoded.words_);
  } catch (const kj::Exception& exception) {
    fail("{}: malformed Cap'n Proto: {}", what, exception.getDescription().cStr());
  }
  return decoded;
}

DecodedEnvelope decode_envelope(std::span<const std::byte> bytes, size_t max_bytes) {
  DecodedEnvelope decoded;
  decoded.words_ = message_words(bytes, max_bytes, "message");
  try {
    decoded.reader_ = limited_reader(decoded.words_);
    decoded.envelope_ = decoded.reader_->getRoot<wire::Envelope>();
    decoded.envelope_.totalSize();  // full traversal: bounds, pointers and nesting checked now
    if (decoded.envelope_.getVersion() != wire::PROTOCOL_VERSION) {
      fail("message: protocol version {}, this build speaks {}", decoded.envelope_.getVersion(), wire::PROTOCOL_VERSION);
    }
    if (decoded.envelope_.getBody().which() > wire::Envelope::Body::SHARE_OPENING)
      fail("message: unknown message type {}", static_cast<int>(decoded.envelope_.getBody().which()));
  } catch (const kj::Exception& exception) {
    fail("message: malformed Cap'n Proto: {}", exception.getDescription().cStr());
  }
  return decoded;
}

void throw_malformed_field(const kj::Exception& exception) {
  fail("message: malformed field: {}", exception.getDescription().cStr());
}

std::string read_text(capnp::Text::Reader text, size_t max_bytes) {
  return sanitize_utf8(std::string_view(text.cStr(), text.size()), max_bytes);
}

double read_figure(double value, double max, std::string_view what) {
  if (!std::isfinite(value) || value < 0 || value > max) fail("{} = {} is out of range [0, {}]", what, value, max);
  return value;
}

wire::ErrorReply::Code reply_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
      return wire::ErrorReply::Code::BAD_MESSAGE;
    case ErrorKind::kNotFound:
      return wire::ErrorReply::Code::NOT_FOUND;
    case ErrorKind::kIo:
    case ErrorKind::kCorruption:
    case ErrorKind::kInternal:
      return wire::ErrorReply::Code::INTERNAL;
  }
  return wire::ErrorReply::Code::INTERNAL;
}

std::string cause_name(wire::RoundLeave::Cause cause) {
  using Cause = wire::RoundLeave::Cause;
  switch (cause) {
    case Cause::NO_PRIVATE_TEXT:
      return "noPrivateText";
    case Cause::DISK_FULL:
      return "diskFull";
    case Cause::MODEL_DOES_NOT_LOAD:
      return "modelDoesNotLoad";
    case Cause::OUT_OF_MEMORY:
      return "outOfMemory";
    case Cause::NOT_IN_ROUND:
      return "notInRound";
    case Cause::SHUTTING_DOWN:
      return "shuttingDown";
    default:
      return "other";
  }
}

uint64_t round_message_id(wire::Envelope::Body::Reader body) {
  using Body = wire::Envelope::Body;
  switch (body.which()) {
    case Body::JOIN:
      return body.getJoin().getRoundId();
    case Body::SHARE_KEYS:
      return body.getShareKeys().getRoundId();
    case Body::MASKED_INPUT:
      return body.getMaskedInput().getRoundId();
    case Body::UNMASK_SHARES:
      return body.getUnmaskShares().getRoundId();
    case Body::LOCAL_REPORT:
      return body.getLocalReport().getRoundId();
    case Body::SHARE_OPENING:
      return body.getShareOpening().getRoundId();
    default:
      fail("message type {} is not a round message", static_cast<int>(body.which()));
  }
}

std::string body_name(wire::Envelope::Reader envelope) {
  using Body = wire::Envelope::Body;
  switch (envelope.getBody().which()) {
    case Body::ERROR:
      return "error";
    case Body::ENROLL:
      return "enroll";
    case Body::ENROLLED:
      return "enrolled";
    case Body::HELLO:
      return "hello";
    case Body::HEARTBEAT:
      return "heartbeat";
    case Body::ROUND_ANNOUNCE:
      return "roundAnnounce";
    case Body::CHUNK_REQUEST:
      return "chunkRequest";
    case Body::CHUNK:
      return "chunk";
    case Body::JOIN:
      return "join";
    case Body::ROUND_KEYS:
      return "roundKeys";
    case Body::SHARE_KEYS:
      return "shareKeys";
    case Body::SHARES_FOR_YOU:
      return "sharesForYou";
    case Body::MASKED_INPUT:
      return "maskedInput";
    case Body::UNMASK_REQUEST:
      return "unmaskRequest";
    case Body::UNMASK_SHARES:
      return "unmaskShares";
    case Body::ROUND_RESULT:
      return "roundResult";
    case Body::LOCAL_REPORT:
      return "localReport";
    case Body::ROUND_ABORT:
      return "roundAbort";
    case Body::ROUND_LEAVE:
      return "roundLeave";
    case Body::ROUND_ACK:
      return "roundAck";
    case Body::SHARE_OPEN_REQUEST:
      return "shareOpenRequest";
    case Body::SHARE_OPENING:
      return "shareOpening";
    case Body::WELCOME:
      return "welcome";
    case Body::MODEL_ACTIVATE:
      return "modelActivate";
    case Body::ACTIVATION_REPORT:
      return "activationReport";
    case Body::MODEL_ROLLBACK:
      return "modelRollback";
  }
  return "unknown(" + std::to_string(static_cast<int>(envelope.getBody().which())) + ")";
}

Key32 read_key32(capnp::Data::Reader data, std::string_view field) {
  if (data.size() != 32) fail("{}: {} bytes, expected 32", field, data.size());
  Key32 key;
  std::memcpy(key.data(), data.begin(), 32);
  return key;
}

std::vector<uint64_t> read_u64_vector(capnp::Data::Reader data, uint64_t expected_length, std::string_view field) {
  if (data.size() != expected_length * 8) fail("{}: {} bytes, expected {} uint64 values", field, data.size(), expected_length);
  std::vector<uint64_t> out(expected_length);
  if (out.empty()) return out;                         // (memcpy from an empty Data's null pointer is UB)
  std::memcpy(out.data(), data.begin(), data.size());  // the wire is little-endian
  return out;
}

void write_u64_vector(const std::vector<uint64_t>& values, capnp::Data::Builder out) {
  if (out.size() != values.size() * 8) fail("write_u64_vector: {} bytes for {} values", out.size(), values.size());
  if (!values.empty()) std::memcpy(out.begin(), values.data(), values.size() * 8);  // little-endian
}

std::vector<uint64_t> read_lane_vector(capnp::Data::Reader data, uint64_t expected_length, uint32_t lane_bits,
                                       std::string_view field) {
  if (lane_bits == 64) return read_u64_vector(data, expected_length, field);
  if (lane_bits != 32) fail("{}: lanes of {} bits", field, lane_bits);
  if (data.size() != expected_length * 4) fail("{}: {} bytes, expected {} 32-bit values", field, data.size(), expected_length);
  std::vector<uint64_t> out(expected_length);
  for (size_t i = 0; i < out.size(); ++i) {
    const uint8_t* p = data.begin() + i * 4;
    out[i] = uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
  }
  return out;
}

void write_lane_vector(const std::vector<uint64_t>& values, uint32_t lane_bits, capnp::Data::Builder out) {
  if (lane_bits == 64) return write_u64_vector(values, out);
  if (lane_bits != 32 || out.size() != values.size() * 4)
    fail("write_lane_vector: {} bytes for {} values of {} bits", out.size(), values.size(), lane_bits);
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] > UINT32_MAX) fail("write_lane_vector: value {} does not fit 32 bits", i);
    uint8_t* p = out.begin() + i * 4;
    for (int b = 0; b < 4; ++b) p[b] = static_cast<uint8_t>(values[i] >> (8 * b));
  }
}

capnp::Data::Reader as_data(std::span<const uint8_t> bytes) { return capnp::Data::Reader(bytes.data(), bytes.size()); }

}  // namespace fedcal

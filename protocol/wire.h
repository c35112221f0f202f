// One framing for every coordinator <-> agent message on ZeroMQ multipart messages:
//   [routing id (ROUTER side only)] ["fedcal/1"] [Envelope, unpacked Cap'n Proto]
// Decoding treats the bytes as untrusted: size cap, Cap'n Proto traversal and nesting limits, a full
// traversal up front (so a bad pointer fails here, not deep in a handler), the protocol version.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/random.h"
#include "protocol/messages.capnp.h"

namespace fedcal {

inline constexpr std::string_view kFrameTag = "fedcal/1";
inline constexpr size_t kDefaultMaxMessageBytes = size_t{64} << 20;

// The serialized bytes of a message built with a MallocMessageBuilder.
std::vector<std::byte> encode_message(capnp::MessageBuilder& builder);

// A message being built: the version is set, the sequence number is stamped when encoded.
class OutgoingMessage {
 public:
  OutgoingMessage() : envelope_(builder_.initRoot<wire::Envelope>()) { envelope_.setVersion(wire::PROTOCOL_VERSION); }
  wire::Envelope::Body::Builder body() { return envelope_.getBody(); }
  std::vector<std::byte> encode(uint64_t sequence) {
    envelope_.setSequence(sequence);
    return encode_message(builder_);
  }

 private:
  capnp::MallocMessageBuilder builder_;
  wire::Envelope::Builder envelope_;
};

// A decoded envelope and the bytes it reads from.
class DecodedEnvelope {
 public:
  wire::Envelope::Reader envelope() const { return envelope_; }

 private:
  friend DecodedEnvelope decode_envelope(std::span<const std::byte>, size_t);
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  wire::Envelope::Reader envelope_;
};

// Decodes one Envelope; throws Error ("message: ...") if it is larger than `max_bytes`, not a
// well-formed Cap'n Proto message, nested too deeply, or from another protocol version.
DecodedEnvelope decode_envelope(std::span<const std::byte> bytes, size_t max_bytes = kDefaultMaxMessageBytes);

// A message of another root type than Envelope (the relay's group frames), read with the same limits.
class DecodedMessage {
 public:
  template <typename Root>
  typename Root::Reader root() const {
    return reader_->getRoot<Root>();
  }

 private:
  friend DecodedMessage decode_message_words(std::span<const std::byte>, size_t, std::string_view);
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};
// The words of one message (size cap, traversal and nesting limits); decode_message checks its root.
DecodedMessage decode_message_words(std::span<const std::byte> bytes, size_t max_bytes, std::string_view what);
// Decodes one message with root `Root`, traversed in full now; throws Error ("`what`: ...") as
// decode_envelope does.
template <typename Root>
DecodedMessage decode_message(std::span<const std::byte> bytes, size_t max_bytes, std::string_view what) {
  DecodedMessage decoded = decode_message_words(bytes, max_bytes, what);
  try {
    decoded.root<Root>().totalSize();
  } catch (const kj::Exception& exception) {
    fail("{}: malformed Cap'n Proto: {}", what, exception.getDescription().cStr());
  }
  return decoded;
}

// Cap'n Proto checks a field's type only when the field is read, and throws kj::Exception if the
// sender put something else there. Every handler of network messages runs inside this, which turns
// that into fedcal::Error ("message: malformed field: ...").
[[noreturn]] void throw_malformed_field(const kj::Exception& exception);
template <typename Body>
auto reading_message(Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const kj::Exception& exception) {
    throw_malformed_field(exception);
  }
}

// A Text field from the network as valid UTF-8 of at most `max_bytes` (sanitize_utf8): Cap'n Proto
// does not check that Text is UTF-8, and JSON, the store and logs need it to be.
std::string read_text(capnp::Text::Reader text, size_t max_bytes);

// What a local check can report, at most: KL and NLL in nats (ln of a 256k vocabulary is 12.5),
// decoding speed, held-out tokens per check (an agent scores eval_max_tokens, 4,096 by default).
// Reports beyond them are refused, so one agent's share of a fleet mean is bounded.
inline constexpr double kMaxReportedNats = 50;
inline constexpr double kMaxReportedTokensPerSecond = 1e6;
// A speed's run-to-run spread, (fastest - slowest) / median: a run 100x the median is not a measurement.
inline constexpr double kMaxReportedSpread = 100;
// The label of the localReport check that runs the fleet's (or the agent's group's) package with
// dynamic per-token activations: the calibration-free baseline, next to the packages' own labels.
inline constexpr const char* kDynamicCheckLabel = "dynamic";
// The same weights with activations quantized per block of 32 channels of each token (the fine-grained
// mode, llama.cpp Q8_0's activations), when the round asks for it (RoundConfig.blockChecks).
inline constexpr const char* kDynamicBlocksCheckLabel = "dynamic-blocks";
inline constexpr uint64_t kMaxReportedTokens = uint64_t{1} << 24;

// A measured figure from the network: finite and within [0, max]; throws Error naming `what`.
double read_figure(double value, double max, std::string_view what);

// The protocol reply for an error of `kind` (one place: the coordinator's message boundary).
wire::ErrorReply::Code reply_code(ErrorKind kind);

// A name for the body kind, for logs ("hello", "maskedInput", ...).
std::string body_name(wire::Envelope::Reader envelope);
// The round an agent's round message (join, shareKeys, maskedInput, unmaskShares, localReport,
// shareOpening) is for; throws Error for any other kind.
uint64_t round_message_id(wire::Envelope::Body::Reader body);
// "noPrivateText", "diskFull", ... (the schema's names); "other" for a value this build does not know.
std::string cause_name(wire::RoundLeave::Cause cause);

// Field helpers that range-check as they read: `field` names the field in errors.
Key32 read_key32(capnp::Data::Reader data, std::string_view field);
std::vector<uint64_t> read_u64_vector(capnp::Data::Reader data, uint64_t expected_length, std::string_view field);
void write_u64_vector(const std::vector<uint64_t>& values, capnp::Data::Builder out);
// Vectors in lanes of 64 or 32 bits (values below 2^32), little-endian; `out` must be sized
// values.size() * lane_bits / 8.
std::vector<uint64_t> read_lane_vector(capnp::Data::Reader data, uint64_t expected_length, uint32_t lane_bits,
                                       std::string_view field);
void write_lane_vector(const std::vector<uint64_t>& values, uint32_t lane_bits, capnp::Data::Builder out);
capnp::Data::Reader as_data(std::span<const uint8_t> bytes);

}  // namespace fedcal

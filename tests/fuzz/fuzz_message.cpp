// Fuzzes the protocol decoder and the field readers every message handler uses: whatever bytes come
// off the network, decoding either fails with fedcal::Error or yields an envelope whose every field
// can be read without leaving the message. The same bytes as a relay's presence report
// (protocol/relay_frames.h): refused with fedcal::Error or read whole, and encoded back to themselves.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "protocol/relay_frames.h"
#include "protocol/wire.h"

namespace {

using namespace fedcal;
using Body = wire::Envelope::Body;

void read_everything(wire::Envelope::Reader envelope) {
  const auto body = envelope.getBody();
  (void)body_name(envelope);
  switch (body.which()) {
    case Body::HELLO: {
      const auto profile = body.getHello().getProfile();
      for (const auto feature : profile.getIsaFeatures()) (void)feature.size();
      for (const auto label : profile.getLabels()) (void)label.size();
      (void)profile.getArch().size();
      break;
    }
    case Body::JOIN: {
      const auto join = body.getJoin();
      (void)read_key32(join.getCipherPublic(), "cipherPublic");
      (void)read_key32(join.getMaskPublic(), "maskPublic");
      break;
    }
    case Body::ROUND_KEYS:
      for (const auto keys : body.getRoundKeys().getKeys()) {
        (void)read_key32(keys.getCipherPublic(), "cipherPublic");
        (void)read_key32(keys.getMaskPublic(), "maskPublic");
      }
      break;
    case Body::SHARE_KEYS:
      for (const auto share : body.getShareKeys().getShares()) (void)share.getCiphertext().size();
      break;
    case Body::SHARES_FOR_YOU:
      for (const auto share : body.getSharesForYou().getShares()) (void)share.getCiphertext().size();
      break;
    case Body::MASKED_INPUT: {
      const auto values = body.getMaskedInput().getValues();
      // The coordinator reads a masked input at the round's length and lane width: a mismatch throws.
      for (const uint32_t lane_bits : {32u, 64u}) {
        try {
          const auto vector = read_lane_vector(values, values.size() / (lane_bits / 8), lane_bits, "values");
          if (vector.size() * (lane_bits / 8) != values.size()) std::abort();
        } catch (const fedcal::Error&) {
        }
      }
      break;
    }
    case Body::UNMASK_REQUEST:
      for (const uint32_t survivor : body.getUnmaskRequest().getSurvivors()) (void)survivor;
      break;
    case Body::UNMASK_SHARES:
      for (const auto share : body.getUnmaskShares().getShares()) (void)share.getValue().size();
      break;
    case Body::CHUNK:
      (void)body.getChunk().getData().size();
      break;
    case Body::ROUND_RESULT:
      for (const auto model : body.getRoundResult().getModels()) (void)model.getSha256().size();
      break;
    case Body::LOCAL_REPORT:
      for (const auto check : body.getLocalReport().getChecks()) (void)check.getLabel().size();
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    DecodedEnvelope decoded = decode_envelope({reinterpret_cast<const std::byte*>(data), size}, 1 << 20);
    reading_message([&] { read_everything(decoded.envelope()); });
  } catch (const Error&) {
  }
  try {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    if (encode_presence(decode_presence(bytes)) != bytes) std::abort();  // what decodes is exactly what was sent
  } catch (const Error&) {
  }
  return 0;
}

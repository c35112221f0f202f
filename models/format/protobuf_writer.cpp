#include "models/format/protobuf_writer.h"

#include <bit>
#include <cstring>

namespace fedcal {
namespace {

constexpr int kVarint = 0, kLengthDelimited = 2, kFixed32 = 5;

}  // namespace

void ProtoWriter::varint(uint64_t value) {
  while (value >= 0x80) {
    out_.push_back(static_cast<std::byte>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out_.push_back(static_cast<std::byte>(value));
}

void ProtoWriter::tag(int field, int wire_type) { varint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type)); }

void ProtoWriter::add_varint(int field, int64_t value) {
  tag(field, kVarint);
  varint(static_cast<uint64_t>(value));
}

void ProtoWriter::add_float(int field, float value) {
  tag(field, kFixed32);
  const auto bits = std::bit_cast<uint32_t>(value);
  for (int shift = 0; shift < 32; shift += 8) out_.push_back(static_cast<std::byte>((bits >> shift) & 0xff));
}

void ProtoWriter::add_bytes(int field, std::span<const std::byte> bytes) {
  tag(field, kLengthDelimited);
  varint(bytes.size());
  const size_t at = out_.size();
  out_.resize(at + bytes.size());
  if (!bytes.empty()) std::memcpy(out_.data() + at, bytes.data(), bytes.size());
}

void ProtoWriter::add_string(int field, std::string_view text) { add_bytes(field, std::as_bytes(std::span(text.data(), text.size()))); }

void ProtoWriter::add_message(int field, const ProtoWriter& message) { add_bytes(field, message.bytes()); }

void ProtoWriter::add_packed_varints(int field, std::span<const int64_t> values) {
  ProtoWriter run;
  for (int64_t value : values) run.varint(static_cast<uint64_t>(value));
  add_bytes(field, run.bytes());
}

}  // namespace fedcal

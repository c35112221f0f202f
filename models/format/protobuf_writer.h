// The protocol buffers wire format, write side only: what the ONNX export needs to emit a ModelProto
// without a protobuf library. Fields are appended in call order; a nested message is written whole
// (length-prefixed) by add_message. https://protobuf.dev/programming-guides/encoding/
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace fedcal {

class ProtoWriter {
 public:
  // int32, int64, uint64, enum and bool fields (wire type 0). Negative values take ten bytes, as
  // protobuf encodes int64 (two's complement).
  void add_varint(int field, int64_t value);
  void add_float(int field, float value);  // wire type 5
  void add_bytes(int field, std::span<const std::byte> bytes);
  void add_string(int field, std::string_view text);
  void add_message(int field, const ProtoWriter& message);
  // A packed repeated int64 field (one length-prefixed run of varints).
  void add_packed_varints(int field, std::span<const int64_t> values);

  const std::vector<std::byte>& bytes() const { return out_; }
  std::vector<std::byte> take() && { return std::move(out_); }
  size_t size() const { return out_.size(); }

 private:
  void tag(int field, int wire_type);
  void varint(uint64_t value);
  std::vector<std::byte> out_;
};

}  // namespace fedcal

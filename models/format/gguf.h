// GGUF, the file format of llama.cpp (version 3; version 2 read too), as a container: typed metadata
// and named tensors. What the keys and tensors of a model mean is in gguf_model.h.
//
//   "GGUF"  uint32 version  uint64 tensor_count  uint64 metadata_count      little-endian
//   metadata_count x (string key, uint32 value type, value)                 string = uint64 length + bytes
//   tensor_count x (string name, uint32 n_dims, n_dims x uint64 ne, uint32 ggml type, uint64 offset)
//   zero padding to general.alignment (default 32), then the data region; every tensor's offset is
//   relative to it and a multiple of the alignment. ne[0] is the fastest-varying dimension: a
//   row-major (out, in) matrix has ne = [in, out].
//
// The reader takes untrusted bytes: every count, length, shape, type and offset is checked against the
// file, and errors name the file and the key or tensor.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "models/format/ggml_types.h"

namespace fedcal {

enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_type_name(GgufType type);

// One metadata value: a scalar, or an array of one element type (arrays of arrays are refused).
// Integers and bools are held in `ints`, floats in `floats`, strings in `strings`.
struct GgufValue {
  GgufType type = GgufType::kUint32;  // the scalar's type, or the array's element type
  bool array = false;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static GgufValue u32(uint32_t value);
  static GgufValue i32(int32_t value);
  static GgufValue f32(float value);
  static GgufValue boolean(bool value);
  static GgufValue string(std::string value);
  static GgufValue string_array(std::vector<std::string> values);
  static GgufValue f32_array(const std::vector<float>& values);
  static GgufValue i32_array(const std::vector<int32_t>& values);
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> shape;  // ne[0] first
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // in the data region
  uint64_t values() const;
};

struct GgufFile {
  uint32_t version = 3;
  uint32_t alignment = 32;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;         // in file order
  std::map<std::string, size_t> tensor_index;  // name -> position in `tensors`
  std::span<const std::byte> data;             // the data region (points into the parsed bytes)
  std::string source;

  const GgufValue* find(const std::string& key) const;
  // Typed getters: throw Error naming the file and key when it is missing or of another type.
  int64_t integer(const std::string& key) const;  // any integer type
  double number(const std::string& key) const;    // any integer or float type
  const std::string& text(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  // The tensor's bytes in the data region.
  std::span<const std::byte> tensor_bytes(const GgufTensorInfo& tensor) const;
};

// Parses `bytes` (which must outlive the result). Throws Error naming `source` on anything malformed.
GgufFile parse_gguf(std::span<const std::byte> bytes, const std::string& source);
bool looks_like_gguf(std::span<const std::byte> bytes);

// Collects metadata and tensors, then writes a version 3 file (alignment 32) atomically.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue value);
  // `shape` with ne[0] first; `data` is ggml_bytes(type, product of shape) bytes. A tensor of the same
  // name is replaced, in its place.
  void add_tensor(const std::string& name, std::vector<uint64_t> shape, GgmlType type, std::vector<std::byte> data);
  std::vector<std::byte> serialize() const;
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  struct Tensor {
    GgufTensorInfo info;
    std::vector<std::byte> data;
  };
  std::vector<Tensor> tensors_;
};

}  // namespace fedcal

// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
// JSON mapping tensor names to {dtype, shape, data_offsets:[begin, end]} (offsets relative to the byte
// after the header), an optional "__metadata__" object, then the tensor data.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace fedcal {

class MappedFile;

enum class TensorDtype { kF32, kF16, kBF16, kOther };

struct SafetensorsEntry {
  std::string dtype_name;  // as written, e.g. "BF16"
  TensorDtype dtype = TensorDtype::kOther;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range inside the data section, validated against the file
  uint64_t end = 0;
  int64_t element_count() const;
};

struct SafetensorsIndex {
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
  size_t data_offset = 0;  // where the data section starts in the file
};

// Validates the header against `bytes` (the whole file): JSON well-formed, every entry's dtype size
// times shape matching its byte range, every range inside the file. Throws Error naming `source`.
SafetensorsIndex parse_safetensors(std::span<const std::byte> bytes, const std::string& source);

// A mapped safetensors file whose tensors convert to FP32 on read.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  const SafetensorsIndex& index() const { return index_; }
  const std::string& path() const;
  bool contains(const std::string& name) const { return index_.tensors.count(name) != 0; }
  // Converts tensor `name` (F32, F16 or BF16) to FP32; checks it has exactly `shape`.
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& shape) const;

 private:
  std::unique_ptr<MappedFile> file_;
  SafetensorsIndex index_;
};

struct SafetensorsTensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const std::vector<float>* data;  // FP32 values, converted to `dtype` on write
};
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorToWrite>& tensors, TensorDtype dtype,
                       const std::map<std::string, std::string>& metadata = {});

const char* dtype_name(TensorDtype dtype);

}  // namespace fedcal

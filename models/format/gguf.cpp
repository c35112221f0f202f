#include "models/format/gguf.h"

#include <cmath>
#include <cstring>

#include "common/byte_reader.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/little_endian.h"

namespace fedcal {
namespace {

constexpr char kGgufMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

// `offset` rounded up to a multiple of `alignment`.
uint64_t align_up(uint64_t offset, uint64_t alignment) { return (offset + alignment - 1) / alignment * alignment; }

bool integer_type(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kBool:
      return true;
    default:
      return false;
  }
}

// Bytes of one scalar of `type`; 0 for strings and arrays.
size_t scalar_bytes(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

class Parser {
 public:
  Parser(std::span<const std::byte> bytes, const std::string& source) : reader_(bytes, source) {}

  std::string string(const char* what) {
    const uint64_t length = reader_.read<uint64_t>(what);
    if (length > reader_.remaining()) {
      fail("{}: {} at offset {} claims {} bytes, only {} left", reader_.source(), what, reader_.offset() - 8, length,
           reader_.remaining());
    }
    const auto bytes = reader_.take(static_cast<size_t>(length), what);
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }

  GgufType type(const std::string& key) {
    const uint32_t number = reader_.read<uint32_t>("value type");
    if (number > static_cast<uint32_t>(GgufType::kFloat64)) fail("{}: metadata '{}': unknown value type {}", reader_.source(), key, number);
    return static_cast<GgufType>(number);
  }

  // Appends one scalar of `type` to `value`.
  void scalar(GgufType type, GgufValue& value, const std::string& key) {
    switch (type) {
      case GgufType::kUint8:
        value.ints.push_back(reader_.read<uint8_t>("uint8"));
        return;
      case GgufType::kInt8:
        value.ints.push_back(reader_.read<int8_t>("int8"));
        return;
      case GgufType::kUint16:
        value.ints.push_back(reader_.read<uint16_t>("uint16"));
        return;
      case GgufType::kInt16:
        value.ints.push_back(reader_.read<int16_t>("int16"));
        return;
      case GgufType::kUint32:
        value.ints.push_back(reader_.read<uint32_t>("uint32"));
        return;
      case GgufType::kInt32:
        value.ints.push_back(reader_.read<int32_t>("int32"));
        return;
      case GgufType::kUint64: {
        const uint64_t number = reader_.read<uint64_t>("uint64");
        if (number > static_cast<uint64_t>(INT64_MAX)) fail("{}: metadata '{}': uint64 {} is out of range", reader_.source(), key, number);
        value.ints.push_back(static_cast<int64_t>(number));
        return;
      }
      case GgufType::kInt64:
        value.ints.push_back(reader_.read<int64_t>("int64"));
        return;
      case GgufType::kBool: {
        const uint8_t flag = reader_.read<uint8_t>("bool");
        if (flag > 1) fail("{}: metadata '{}': bool holds {}", reader_.source(), key, flag);
        value.ints.push_back(flag);
        return;
      }
      case GgufType::kFloat32:
        value.floats.push_back(reader_.read<float>("float32"));
        return;
      case GgufType::kFloat64:
        value.floats.push_back(reader_.read<double>("float64"));
        return;
      case GgufType::kString:
        value.strings.push_back(string("string value"));
        return;
      case GgufType::kArray:
        fail("{}: metadata '{}': arrays of arrays are not supported", reader_.source(), key);
    }
  }

  GgufValue value(const std::string& key) {
    GgufValue out;
    out.type = type(key);
    if (out.type != GgufType::kArray) {
      scalar(out.type, out, key);
      return out;
    }
    out.array = true;
    out.type = type(key);
    const uint64_t count = reader_.read<uint64_t>("array length");
    // Every element takes at least one byte (a string at least eight): a count beyond that is a lie.
    const uint64_t least = out.type == GgufType::kString ? 8 : std::max<size_t>(1, scalar_bytes(out.type));
    if (out.type == GgufType::kArray || count > reader_.remaining() / least) {
      fail("{}: metadata '{}': array of {} {} does not fit in the {} bytes left", reader_.source(), key, count,
           gguf_type_name(out.type), reader_.remaining());
    }
    for (uint64_t i = 0; i < count; ++i) scalar(out.type, out, key);
    return out;
  }

  GgufFile parse() {
    GgufFile file;
    file.source = reader_.source();
    const auto magic = reader_.take(4, "magic");
    if (std::memcmp(magic.data(), kGgufMagic, 4) != 0) fail("{}: not a GGUF file (no 'GGUF' magic)", file.source);
    file.version = reader_.read<uint32_t>("version");
    if (file.version != 2 && file.version != 3) {
      fail("{}: GGUF version {} is not supported (2 and 3 are; version 1 used 32-bit counts)", file.source, file.version);
    }
    const uint64_t tensor_count = reader_.read<uint64_t>("tensor count");
    const uint64_t metadata_count = reader_.read<uint64_t>("metadata count");
    // A metadata entry is at least 8 + 4 + 1 bytes, a tensor entry at least 8 + 4 + 4 + 8.
    if (metadata_count > reader_.remaining() / 13 || tensor_count > reader_.remaining() / 24) {
      fail("{}: {} metadata entries and {} tensors cannot fit in {} bytes", file.source, metadata_count, tensor_count,
           reader_.remaining());
    }
    for (uint64_t i = 0; i < metadata_count; ++i) {
      std::string key = string("metadata key");
      GgufValue parsed = value(key);
      if (!file.metadata.emplace(key, std::move(parsed)).second) fail("{}: metadata '{}' appears twice", file.source, key);
    }
    if (const GgufValue* alignment = file.find("general.alignment")) {
      const int64_t value = alignment->array || alignment->type != GgufType::kUint32 ? 0 : alignment->ints[0];
      if (value <= 0 || (value & (value - 1)) != 0 || value > 65536) {
        fail("{}: general.alignment must be a uint32 power of two up to 65536", file.source);
      }
      file.alignment = static_cast<uint32_t>(value);
    }
    for (uint64_t i = 0; i < tensor_count; ++i) file.tensors.push_back(tensor_info(file));
    const size_t header_end = reader_.offset();
    const size_t data_start = align_up(header_end, file.alignment);
    if (data_start > header_end + reader_.remaining()) fail("{}: truncated before the tensor data", file.source);
    reader_.skip(data_start - header_end, "padding");
    file.data = reader_.take(reader_.remaining(), "tensor data");
    for (size_t i = 0; i < file.tensors.size(); ++i) {
      const GgufTensorInfo& tensor = file.tensors[i];
      if (!file.tensor_index.emplace(tensor.name, i).second) fail("{}: tensor '{}' appears twice", file.source, tensor.name);
      if (tensor.offset % file.alignment != 0) {
        fail("{}: tensor '{}': offset {} is not a multiple of the alignment {}", file.source, tensor.name, tensor.offset, file.alignment);
      }
      const uint64_t size = *ggml_bytes(tensor.type, tensor.values());
      if (tensor.offset > file.data.size() || size > file.data.size() - tensor.offset) {
        fail("{}: tensor '{}': {} bytes at offset {} pass the end of the data ({} bytes)", file.source, tensor.name, size,
             tensor.offset, file.data.size());
      }
    }
    return file;
  }

 private:
  GgufTensorInfo tensor_info(const GgufFile& file) {
    GgufTensorInfo tensor;
    tensor.name = string("tensor name");
    const uint32_t dims = reader_.read<uint32_t>("dimension count");
    if (dims == 0 || dims > kMaxDims) fail("{}: tensor '{}': {} dimensions (1 to {} allowed)", file.source, tensor.name, dims, kMaxDims);
    uint64_t values = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      const uint64_t extent = reader_.read<uint64_t>("dimension");
      if (extent == 0 || extent > (uint64_t{1} << 40) || values > (uint64_t{1} << 48) / extent) {
        fail("{}: tensor '{}': dimension {} of {} is out of range", file.source, tensor.name, d, extent);
      }
      values *= extent;
      tensor.shape.push_back(extent);
    }
    const uint32_t type_number = reader_.read<uint32_t>("tensor type");
    const std::optional<GgmlType> type = ggml_type_from_number(type_number);
    if (!type) {
      fail(
          "{}: tensor '{}' is {}: fedcal reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K tensors "
          "(convert the file "
          "with llama-quantize or from its source)",
          file.source, tensor.name, ggml_type_name(type_number));
    }
    tensor.type = *type;
    if (tensor.shape[0] % static_cast<uint64_t>(ggml_block_values(tensor.type)) != 0) {
      fail("{}: tensor '{}': rows of {} values are not whole {} blocks", file.source, tensor.name, tensor.shape[0],
           ggml_type_name(tensor.type));
    }
    tensor.offset = reader_.read<uint64_t>("tensor offset");
    return tensor;
  }

  ByteReader reader_;
};

void put_bytes(std::vector<std::byte>& out, const void* data, size_t size) {
  const auto* bytes = static_cast<const std::byte*>(data);
  out.insert(out.end(), bytes, bytes + size);
}
template <typename T>
void put(std::vector<std::byte>& out, T value) {
  put_bytes(out, &value, sizeof(T));
}
void put_string(std::vector<std::byte>& out, const std::string& text) {
  put<uint64_t>(out, text.size());
  put_bytes(out, text.data(), text.size());
}

void put_scalar(std::vector<std::byte>& out, GgufType type, const GgufValue& value, size_t i) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kBool:
      put<uint8_t>(out, static_cast<uint8_t>(value.ints[i]));
      return;
    case GgufType::kInt8:
      put<int8_t>(out, static_cast<int8_t>(value.ints[i]));
      return;
    case GgufType::kUint16:
      put<uint16_t>(out, static_cast<uint16_t>(value.ints[i]));
      return;
    case GgufType::kInt16:
      put<int16_t>(out, static_cast<int16_t>(value.ints[i]));
      return;
    case GgufType::kUint32:
      put<uint32_t>(out, static_cast<uint32_t>(value.ints[i]));
      return;
    case GgufType::kInt32:
      put<int32_t>(out, static_cast<int32_t>(value.ints[i]));
      return;
    case GgufType::kUint64:
      put<uint64_t>(out, static_cast<uint64_t>(value.ints[i]));
      return;
    case GgufType::kInt64:
      put<int64_t>(out, value.ints[i]);
      return;
    case GgufType::kFloat32:
      put<float>(out, static_cast<float>(value.floats[i]));
      return;
    case GgufType::kFloat64:
      put<double>(out, value.floats[i]);
      return;
    case GgufType::kString:
      put_string(out, value.strings[i]);
      return;
    case GgufType::kArray:
      break;
  }
  fail("GGUF writer: nested array");
}

size_t value_count(const GgufValue& value) {
  if (value.type == GgufType::kString) return value.strings.size();
  if (value.type == GgufType::kFloat32 || value.type == GgufType::kFloat64) return value.floats.size();
  return value.ints.size();
}

}  // namespace

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "?";
}

GgufValue GgufValue::u32(uint32_t value) { return {GgufType::kUint32, false, {value}, {}, {}}; }
GgufValue GgufValue::i32(int32_t value) { return {GgufType::kInt32, false, {value}, {}, {}}; }
GgufValue GgufValue::f32(float value) { return {GgufType::kFloat32, false, {}, {value}, {}}; }
GgufValue GgufValue::boolean(bool value) { return {GgufType::kBool, false, {value ? 1 : 0}, {}, {}}; }
GgufValue GgufValue::string(std::string value) { return {GgufType::kString, false, {}, {}, {std::move(value)}}; }
GgufValue GgufValue::string_array(std::vector<std::string> values) { return {GgufType::kString, true, {}, {}, std::move(values)}; }
GgufValue GgufValue::f32_array(const std::vector<float>& values) {
  return {GgufType::kFloat32, true, {}, std::vector<double>(values.begin(), values.end()), {}};
}
GgufValue GgufValue::i32_array(const std::vector<int32_t>& values) {
  return {GgufType::kInt32, true, std::vector<int64_t>(values.begin(), values.end()), {}, {}};
}

uint64_t GgufTensorInfo::values() const {
  uint64_t product = 1;
  for (uint64_t extent : shape) product *= extent;
  return product;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto found = metadata.find(key);
  return found == metadata.end() ? nullptr : &found->second;
}

int64_t GgufFile::integer(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) fail("{}: metadata '{}' is missing", source, key);
  if (value->array || !integer_type(value->type)) fail("{}: metadata '{}' is {}, not an integer", source, key, gguf_type_name(value->type));
  return value->ints[0];
}

double GgufFile::number(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) fail("{}: metadata '{}' is missing", source, key);
  if (!value->array && (value->type == GgufType::kFloat32 || value->type == GgufType::kFloat64)) return value->floats[0];
  return static_cast<double>(integer(key));
}

const std::string& GgufFile::text(const std::string& key) const {
  const GgufValue* value = find(key);
  if (!value) fail("{}: metadata '{}' is missing", source, key);
  if (value->array || value->type != GgufType::kString) fail("{}: metadata '{}' is not a string", source, key);
  return value->strings[0];
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index.find(name);
  return it == tensor_index.end() ? nullptr : &tensors[it->second];
}

std::span<const std::byte> GgufFile::tensor_bytes(const GgufTensorInfo& tensor) const {
  return data.subspan(tensor.offset, *ggml_bytes(tensor.type, tensor.values()));
}

bool looks_like_gguf(std::span<const std::byte> bytes) { return bytes.size() >= 4 && std::memcmp(bytes.data(), kGgufMagic, 4) == 0; }

GgufFile parse_gguf(std::span<const std::byte> bytes, const std::string& source) { return Parser(bytes, source).parse(); }

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& entry : metadata_) {
    if (entry.first == key) {
      entry.second = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, std::vector<uint64_t> shape, GgmlType type, std::vector<std::byte> data) {
  GgufTensorInfo info{name, std::move(shape), type, 0};
  const std::optional<uint64_t> size = ggml_bytes(type, info.values());
  if (!size || *size != data.size()) fail("GGUF writer: tensor '{}' has {} bytes, its shape needs {}", name, data.size(), size.value_or(0));
  for (Tensor& tensor : tensors_) {
    if (tensor.info.name == name) {
      tensor = {std::move(info), std::move(data)};
      return;
    }
  }
  tensors_.push_back({std::move(info), std::move(data)});
}

std::vector<std::byte> GgufWriter::serialize() const {
  std::vector<std::byte> out;
  put_bytes(out, kGgufMagic, 4);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    put_string(out, key);
    if (value.array) {
      put<uint32_t>(out, static_cast<uint32_t>(GgufType::kArray));
      put<uint32_t>(out, static_cast<uint32_t>(value.type));
      put<uint64_t>(out, value_count(value));
    } else {
      put<uint32_t>(out, static_cast<uint32_t>(value.type));
    }
    for (size_t i = 0; i < (value.array ? value_count(value) : 1); ++i) put_scalar(out, value.type, value, i);
  }
  uint64_t offset = 0;
  for (const Tensor& tensor : tensors_) {
    put_string(out, tensor.info.name);
    put<uint32_t>(out, static_cast<uint32_t>(tensor.info.shape.size()));
    for (uint64_t extent : tensor.info.shape) put<uint64_t>(out, extent);
    put<uint32_t>(out, static_cast<uint32_t>(tensor.info.type));
    put<uint64_t>(out, offset);
    offset += align_up(tensor.data.size(), kDefaultAlignment);
  }
  for (const Tensor& tensor : tensors_) {
    out.resize(align_up(out.size(), kDefaultAlignment));
    out.insert(out.end(), tensor.data.begin(), tensor.data.end());
  }
  out.resize(align_up(out.size(), kDefaultAlignment));
  return out;
}

void GgufWriter::write(const std::string& path) const { write_file_atomically(path, serialize()); }

}  // namespace fedcal

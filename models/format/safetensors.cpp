#include "models/format/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/little_endian.h"
#include "common/mapped_file.h"
#include "models/format/float16.h"

namespace fedcal {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the limit the reference implementation uses
constexpr int64_t kMaxElements = int64_t{1} << 40;

struct DtypeInfo {
  const char* name;
  TensorDtype dtype;
  int bytes;
};
constexpr DtypeInfo kDtypes[] = {
    {"F32", TensorDtype::kF32, 4},    {"F16", TensorDtype::kF16, 2},       {"BF16", TensorDtype::kBF16, 2},
    {"F64", TensorDtype::kOther, 8},  {"I64", TensorDtype::kOther, 8},     {"I32", TensorDtype::kOther, 4},
    {"I16", TensorDtype::kOther, 2},  {"I8", TensorDtype::kOther, 1},      {"U8", TensorDtype::kOther, 1},
    {"BOOL", TensorDtype::kOther, 1}, {"U16", TensorDtype::kOther, 2},     {"U32", TensorDtype::kOther, 4},
    {"U64", TensorDtype::kOther, 8},  {"F8_E4M3", TensorDtype::kOther, 1}, {"F8_E5M2", TensorDtype::kOther, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const DtypeInfo& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

SafetensorsEntry parse_entry(const nlohmann::json& value, uint64_t data_size) {
  if (!value.is_object()) fail("entry is not an object");
  SafetensorsEntry entry;
  const auto dtype = value.find("dtype");
  if (dtype == value.end() || !dtype->is_string()) fail("missing string field 'dtype'");
  entry.dtype_name = dtype->get<std::string>();
  const DtypeInfo* info = find_dtype(entry.dtype_name);
  if (info == nullptr) fail("unknown dtype '{}'", entry.dtype_name);
  entry.dtype = info->dtype;

  const auto shape = value.find("shape");
  if (shape == value.end() || !shape->is_array()) fail("missing array field 'shape'");
  int64_t elements = 1;
  for (const auto& dim : *shape) {
    if (!dim.is_number_unsigned()) fail("shape has a dimension that is not a non-negative integer");
    uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(kMaxElements) || (d != 0 && elements > kMaxElements / static_cast<int64_t>(d))) {
      fail("shape {} has too many elements", shape->dump());
    }
    elements *= static_cast<int64_t>(d);
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  const auto offsets = value.find("data_offsets");
  if (offsets == value.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    fail("'data_offsets' must be two non-negative integers");
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.begin > entry.end || entry.end > data_size) {
    fail("data_offsets [{}, {}] point outside the data section of {} bytes", entry.begin, entry.end, data_size);
  }
  if (entry.end - entry.begin != static_cast<uint64_t>(elements) * info->bytes) {
    fail("data_offsets cover {} bytes but {} x {} elements need {}", entry.end - entry.begin, entry.dtype_name, elements,
         static_cast<uint64_t>(elements) * info->bytes);
  }
  return entry;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace

int64_t SafetensorsEntry::element_count() const {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

const char* dtype_name(TensorDtype dtype) {
  for (const DtypeInfo& info : kDtypes) {
    if (info.dtype == dtype) return info.name;
  }
  return "?";
}

SafetensorsIndex parse_safetensors(std::span<const std::byte> bytes, const std::string& source) {
  uint64_t header_size = 0;
  if (bytes.size() < sizeof(header_size)) fail("{}: too short for a safetensors header ({} bytes)", source, bytes.size());
  std::memcpy(&header_size, bytes.data(), sizeof(header_size));
  if (header_size > kMaxHeaderBytes)
    fail("{}: safetensors header length {} exceeds the limit of {}", source, header_size, kMaxHeaderBytes);
  if (header_size > bytes.size() - sizeof(header_size)) {
    fail("{}: safetensors header length {} runs past the end of the file ({} bytes)", source, header_size, bytes.size());
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes.data()) + sizeof(header_size);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_size, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail("{}: safetensors header is not valid JSON", source);
  if (!header.is_object()) fail("{}: safetensors header is not a JSON object", source);

  SafetensorsIndex index;
  index.data_offset = sizeof(header_size) + header_size;
  const uint64_t data_size = bytes.size() - index.data_offset;
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const nlohmann::json& value = item.value();
    if (name == "__metadata__") {
      if (!value.is_object()) fail("{}: __metadata__ is not an object", source);
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) fail("{}: __metadata__ value '{}' is not a string", source, key);
        index.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    index.tensors[name] =
        with_context([&] { return fmt::format("{}: tensor '{}'", source, name); }, [&] { return parse_entry(value, data_size); });
  }
  return index;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)), index_(parse_safetensors(file_->bytes(), path)) {}

SafetensorsFile::~SafetensorsFile() = default;

const std::string& SafetensorsFile::path() const { return file_->path(); }

std::vector<float> SafetensorsFile::read_f32(const std::string& name, const std::vector<int64_t>& shape) const {
  auto it = index_.tensors.find(name);
  if (it == index_.tensors.end()) fail("{}: missing tensor '{}'", path(), name);
  const SafetensorsEntry& entry = it->second;
  if (entry.shape != shape) {
    fail("{}: tensor '{}' has shape {}, expected {}", path(), name, shape_string(entry.shape), shape_string(shape));
  }
  const std::byte* data = file_->bytes().data() + index_.data_offset + entry.begin;
  const size_t count = static_cast<size_t>(entry.element_count());
  std::vector<float> out(count);
  switch (entry.dtype) {
    case TensorDtype::kF32:
      std::memcpy(out.data(), data, count * sizeof(float));
      break;
    case TensorDtype::kF16:
    case TensorDtype::kBF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, data + 2 * i, 2);
        out[i] = entry.dtype == TensorDtype::kF16 ? f16_to_f32(bits) : bf16_to_f32(bits);
      }
      break;
    case TensorDtype::kOther:
      fail("{}: tensor '{}' has dtype {}; only F32, F16 and BF16 are supported", path(), name, entry.dtype_name);
  }
  // Copied out: the file's pages of it leave the resident set (a BF16 checkpoint is not held twice).
  file_->release({data, static_cast<size_t>(entry.end - entry.begin)});
  return out;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorToWrite>& tensors, TensorDtype dtype,
                       const std::map<std::string, std::string>& metadata) {
  if (dtype == TensorDtype::kOther) fail("{}: can only write F32, F16 or BF16", path);
  const uint64_t element_bytes = dtype == TensorDtype::kF32 ? 4 : 2;
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    uint64_t size = tensor.data->size() * element_bytes;
    header[tensor.name] = {{"dtype", dtype_name(dtype)}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string header_text = header.dump();
  while ((header_text.size() + 8) % 8 != 0) header_text += ' ';  // keep the data 8-byte aligned
  uint64_t header_size = header_text.size();

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail("{}: cannot create", path);
  out.write(reinterpret_cast<const char*>(&header_size), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  for (const auto& tensor : tensors) {
    if (dtype == TensorDtype::kF32) {
      out.write(reinterpret_cast<const char*>(tensor.data->data()), static_cast<std::streamsize>(tensor.data->size() * 4));
      continue;
    }
    std::vector<uint16_t> converted(tensor.data->size());
    for (size_t i = 0; i < converted.size(); ++i) {
      converted[i] = dtype == TensorDtype::kF16 ? f32_to_f16((*tensor.data)[i]) : f32_to_bf16((*tensor.data)[i]);
    }
    out.write(reinterpret_cast<const char*>(converted.data()), static_cast<std::streamsize>(converted.size() * 2));
  }
  out.flush();
  if (!out) fail("{}: write failed (disk full?)", path);
}

}  // namespace fedcal

#include "tests/models/format/package_edit.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"
#include "common/sha256.h"
#include "models/format/model_package.h"
#include "tests/test_support.h"

namespace fedcal::testing {

void edit_manifest(const std::string& path, const std::function<void(schema::ModelPackage::Builder)>& edit) {
  const std::string bytes = read_text_file(path);
  uint64_t manifest_bytes = 0;
  std::memcpy(&manifest_bytes, bytes.data() + 8, 8);
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(manifest_bytes / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data() + 16, manifest_bytes);
  capnp::FlatArrayMessageReader reader(words);
  capnp::MallocMessageBuilder builder;
  builder.setRoot(reader.getRoot<schema::ModelPackage>());
  edit(builder.getRoot<schema::ModelPackage>());
  const kj::Array<capnp::word> manifest = capnp::messageToFlatArray(builder);
  const auto align = [](size_t n) { return (n + 63) / 64 * 64; };
  const size_t trailer_bytes = 128, old_start = align(16 + manifest_bytes);
  std::string out = bytes.substr(0, 8);
  const uint64_t length = manifest.asBytes().size();
  out.append(reinterpret_cast<const char*>(&length), 8);
  out.append(reinterpret_cast<const char*>(manifest.asBytes().begin()), length);
  out.resize(align(out.size()), '\0');
  out += bytes.substr(old_start, bytes.size() - trailer_bytes - old_start);
  std::string trailer = bytes.substr(bytes.size() - trailer_bytes);
  Sha256 sha;
  sha.update(out.data(), out.size());
  const auto digest = sha.digest();
  std::memcpy(trailer.data() + 8, digest.data(), digest.size());
  trailer[40] = 0;  // unsigned
  write_text(path, out + trailer);
}

std::string read_error(const std::string& path) {
  try {
    read_model_package(path, nullptr);
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

std::string read_error_with_tensor(const std::string& package, const std::string& copy, const std::string& tensor,
                                   const std::function<void(schema::Tensor::Builder)>& change) {
  std::filesystem::copy_file(package, copy, std::filesystem::copy_options::overwrite_existing);
  edit_manifest(copy, [&](schema::ModelPackage::Builder root) {
    for (auto entry : root.getTensors()) {
      if (entry.getName() == tensor.c_str()) change(entry);
    }
  });
  return read_error(copy);
}

}  // namespace fedcal::testing

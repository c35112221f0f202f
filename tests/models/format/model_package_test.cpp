// The model package: round trips, verification, and refusal of altered, unsigned or broken packages.
#include <doctest/doctest.h>

#include <capnp/schema.h>
#include <capnp/serialize.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "common/file_util.h"
#include "models/format/float16.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/format/package_tensor_types.h"
#include "models/format/synth.h"
#include "models/quant/calibration.h"
#include "models/quant/quantize.h"
#include "protocol/model_package.capnp.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

struct Fixture {
  testing::ScratchDir dir;
  Model model = synthesize_model(find_synth_preset("tiny-mha").config, 6);
  QuantizedLinears int8;
  SigningKey key = SigningKey::generate();

  Fixture() {
    CalibrationStats stats = CalibrationStats::empty_for(model.config, model_fingerprint(model));
    StatsRecorder recorder(stats);
    XnnRuntime runtime(1);
    Transformer fp32(model, runtime);
    fp32.set_observer(&recorder);
    std::vector<int> tokens{1, 5, 9, 200, 17, 3, 44, 120, 7, 8, 250, 2};
    fp32.forward(tokens, 0, true);
    QuantizeOptions options;
    options.method = ScaleMethodSpec::parse("minmax");
    options.per_channel = true;
    options.keep_fp32 = {"layers.1.w2"};
    int8 = quantize_model(model, stats, options);
  }

  std::string write(const std::string& name, bool sign) {
    PackageWriteOptions options;
    if (sign) options.signing_key = &key;
    write_model_package(dir.path(name), model, int8, {"llama2c", "tokenizer bytes"}, {"minmax", true, false, 1, 12, "s", {}, "m"},
                        options);
    return dir.path(name);
  }
};

std::string error_of(const std::string& path, const SigningKey* key) {
  try {
    read_model_package(path, key);
  } catch (const Error& error) {
    return error.what();
  }
  return "no error";
}

TEST_CASE("A package round-trips an INT8 model exactly and runs like the in-memory quantized model") {
  Fixture f;
  const std::string path = f.write("model.pkg", true);
  const SigningKey public_key = [&] {
    f.key.write_public_key(f.dir.path("key.pub"));
    return SigningKey::read_public_key(f.dir.path("key.pub"));
  }();
  const ModelPackage package = read_model_package(path, &public_key);
  CHECK(package.signed_package);
  CHECK(package.tokenizer.kind == "llama2c");
  CHECK(package.tokenizer.data == "tokenizer bytes");
  CHECK(package.provenance.method == "minmax");
  REQUIRE(package.int8.size() == f.int8.size());
  for (const auto& entry : f.int8) {
    const std::string& name = entry.first;
    const QuantizedLinear& layer = entry.second;
    CAPTURE(name);
    const QuantizedLinear& read = package.int8.at(name);
    CHECK(read.weights.values == layer.weights.values);
    CHECK(read.weights.scales == layer.weights.scales);
    CHECK(read.weights.group_scales == layer.weights.group_scales);
    if (name != "token_embedding") {
      CHECK(read.input == layer.input);
      CHECK(read.output == layer.output);
    }
  }
  CHECK(package.model.layers[1].w2 == f.model.layers[1].w2);  // kept FP32
  CHECK(package.model.layers[0].wq.empty());                  // INT8 only
  CHECK(package.model.final_norm == f.model.final_norm);

  XnnRuntime runtime(1);
  Transformer in_memory(f.model, runtime, {}, &f.int8), from_file(package.model, runtime, {}, &package.int8);
  const std::vector<int> tokens{1, 2, 3, 4, 5, 6};
  const auto a = in_memory.forward(tokens, 0, true);
  const std::vector<float> expected(a.begin(), a.end());
  const auto b = from_file.forward(tokens, 0, true);
  CHECK(std::vector<float>(b.begin(), b.end()) == expected);
  // INT8 weights are about a quarter of FP32.
  CHECK(std::filesystem::file_size(path) < 0.35 * (f.model.config.parameter_count() * 4));
}

TEST_CASE("Altered, unsigned, wrongly signed and truncated packages are refused with the reason") {
  Fixture f;
  const std::string signed_path = f.write("signed.pkg", true);
  const std::string unsigned_path = f.write("unsigned.pkg", false);
  const SigningKey other = SigningKey::generate();
  CHECK(error_of(signed_path, &f.key) == "no error");
  CHECK(error_of(unsigned_path, nullptr) == "no error");
  CHECK(error_of(unsigned_path, &f.key).find("not signed") != std::string::npos);
  CHECK(error_of(signed_path, &other).find("bad signature") != std::string::npos);

  std::string bytes = read_text_file(signed_path);
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 1;
  testing::write_text(f.dir.path("flipped.pkg"), flipped);
  CHECK(error_of(f.dir.path("flipped.pkg"), nullptr).find("SHA-256 mismatch") != std::string::npos);
  testing::write_text(f.dir.path("truncated.pkg"), bytes.substr(0, bytes.size() - 1000));
  CHECK(error_of(f.dir.path("truncated.pkg"), nullptr).find("trailer missing") != std::string::npos);
  testing::write_text(f.dir.path("tiny.pkg"), bytes.substr(0, 20));
  CHECK(error_of(f.dir.path("tiny.pkg"), nullptr).find("truncated") != std::string::npos);
  CHECK(error_of(f.dir.path("missing.pkg"), nullptr).find("cannot open") != std::string::npos);
}

TEST_CASE("A package whose scale is zero, NaN or infinite is refused, naming the tensor") {
  for (float bad : {0.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), -1.0f}) {
    CAPTURE(bad);
    Fixture f;
    f.int8.at("layers.0.wk").input.scale = bad;
    // The writer stores what it is given; the reader must catch it.
    const std::string path = f.write("bad.pkg", false);
    const std::string message = error_of(path, nullptr);
    CHECK(message.find("tensor 'layers.0.wk'") != std::string::npos);
    CHECK(message.find("input scale") != std::string::npos);
  }
}

TEST_CASE("qgint8 group scales are stored as binary16, two bytes each, and read back exactly") {
  Fixture f;
  QuantizeOptions grouped;
  grouped.per_group = true;
  f.int8 = quantize_model_weights(f.model, grouped);
  const std::string path = f.write("grouped.pkg", false);
  // The manifest as written: FCPKG001, its uint64 length, the Cap'n Proto message.
  std::ifstream file(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  uint64_t manifest_bytes = 0;
  std::memcpy(&manifest_bytes, bytes.data() + 8, 8);
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(manifest_bytes / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data() + 16, manifest_bytes);
  capnp::FlatArrayMessageReader reader(words);
  size_t grouped_tensors = 0;
  for (const auto tensor : reader.getRoot<schema::ModelPackage>().getTensors()) {
    if (tensor.getType() != schema::TensorType::QGINT8) continue;
    ++grouped_tensors;
    const QuantizedMatrix& weights = f.int8.at(tensor.getName().cStr()).weights;
    CHECK(tensor.getWeightScales().size() == 0);
    REQUIRE(tensor.getGroupScales().size() == weights.group_scales.size());
    for (unsigned s = 0; s < weights.group_scales.size(); ++s) CHECK(tensor.getGroupScales()[s] == weights.group_scales[s]);
  }
  const auto grouped_layers = std::count_if(f.int8.begin(), f.int8.end(), [](const auto& entry) { return entry.second.weights.per_group(); });
  CHECK(grouped_layers > 0);
  CHECK(grouped_tensors == static_cast<size_t>(grouped_layers));  // (an untied token table stays qcint8)
  const ModelPackage package = read_model_package(path, nullptr);
  for (const auto& [name, layer] : f.int8) {
    CHECK(package.int8.at(name).weights.scales == layer.weights.scales);
    CHECK(package.int8.at(name).weights.group_scales == layer.weights.group_scales);
  }
}

TEST_CASE("Package tensor types: one table row for each type of the schema, and each quantized layout finds its own") {
  const auto enumerants = capnp::Schema::from<schema::TensorType>().getEnumerants();
  CHECK(package_tensor_types().size() == enumerants.size());
  for (const auto enumerant : enumerants) {
    const auto type = static_cast<schema::TensorType>(enumerant.getOrdinal());
    const PackageTensorType* entry = find_package_tensor_type(type);
    REQUIRE(entry != nullptr);
    CHECK(std::string(entry->name) == std::string(enumerant.getProto().getName().cStr()));  // the schema's own name
    if (entry->f32()) continue;
    QuantizedMatrix weights;
    weights.bits = entry->bits;
    weights.granularity = entry->granularity;
    weights.grid = entry->grid;
    CHECK(package_tensor_type_of(weights).type == type);
  }
  CHECK(find_package_tensor_type(static_cast<schema::TensorType>(99)) == nullptr);
  CHECK(f32_package_tensor_type().bytes(10) == 40);
}

TEST_CASE("load_model opens packages, and a statistics file from another model is refused") {
  Fixture f;
  const std::string path = f.write("model.pkg", false);
  const LoadedModel loaded = load_model(path);
  CHECK(loaded.format == ModelFormat::kPackage);
  CHECK(loaded.int8.size() == f.int8.size());
  Model other = synthesize_model(f.model.config, 7);
  CHECK(model_fingerprint(other) != model_fingerprint(f.model));
}

}  // namespace
}  // namespace fedcal

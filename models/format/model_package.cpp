#include "models/format/model_package.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/exception.h>

#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <set>

#include "common/error.h"
#include "common/file_util.h"
#include "common/hex.h"
#include "common/little_endian.h"
#include "common/mapped_file.h"
#include "common/sha256.h"
#include "models/format/float16.h"
#include "models/format/package_tensor_types.h"
#include "models/quant/int4_format.h"
#include "models/quant/int5_format.h"
#include "protocol/model_package.capnp.h"

namespace fedcal {
namespace {

constexpr char kPackageMagic[8] = {'F', 'C', 'P', 'K', 'G', '0', '0', '1'};
constexpr char kTrailerMagic[8] = {'F', 'C', 'S', 'I', 'G', '0', '0', '1'};
constexpr size_t kTrailerBytes = 128;
constexpr size_t kAlignment = 64;
constexpr uint64_t kMaxManifestBytes = 64u << 20;

size_t align_up(size_t value) { return (value + kAlignment - 1) / kAlignment * kAlignment; }

struct Trailer {
  char magic[8];
  Sha256Digest digest;
  uint8_t signed_flag;
  uint8_t reserved[23];
  Signature signature;
};
static_assert(sizeof(Trailer) == kTrailerBytes);

// Names, shapes of every tensor of `config` (no allocation of the weights).
std::vector<ConstTensorRef> shapes_of(const ModelConfig& config) {
  static const std::vector<float> kNoData;
  Model shape_only;
  shape_only.config = config;
  shape_only.layers.resize(config.n_layers);
  std::vector<ConstTensorRef> shapes = list_tensors(static_cast<const Model&>(shape_only));
  for (auto& shape : shapes) shape.data = &kNoData;
  return shapes;
}

void check_params(const QuantParams& params, const std::string& what) {
  if (!(params.scale > 0.0f) || !std::isfinite(params.scale))
    fail("{} scale {} must be a positive finite number", what, params.scale);
  if (params.zero_point < -128 || params.zero_point > 127)
    fail("{} zero point {} is outside [-128, 127]", what, params.zero_point);
}

}  // namespace

void write_model_package(const std::string& path, const Model& model, const QuantizedLinears& int8,
                         const PackageTokenizer& tokenizer, const PackageProvenance& provenance,
                         const PackageWriteOptions& options) {
  const ModelConfig& c = model.config;
  struct Blob {
    std::string name;
    schema::TensorType type;
    uint32_t rows, cols;
    const void* data;
    size_t size;
    const QuantizedLinear* quantized;  // nullptr for f32
  };
  std::vector<Blob> blobs;
  std::deque<std::vector<uint8_t>> five_bit_codes;  // 5-bit layers' codes, packed here (blobs point into them)
  auto add_quantized = [&](const std::string& name, const QuantizedLinear& q) {
    const PackageTensorType& type = package_tensor_type_of(q.weights);
    if (type.four_bit() || type.five_bit()) {
      // 4-bit codes are held as stored; 5-bit levels are packed here.
      const std::vector<uint8_t>* codes = &q.weights.codes;
      with_context([&] { return path + ": tensor '" + name + "'"; },
                   [&] {
                     q.weights.check(fmt::format("{}-bit weights", type.bits));
                     if (type.five_bit())
                       codes = &five_bit_codes.emplace_back(
                           pack_int5_codes(q.weights.values, q.weights.rows, q.weights.cols, q.weights.grid));
                   });
      blobs.push_back({name, type.type, static_cast<uint32_t>(q.weights.rows), static_cast<uint32_t>(q.weights.cols),
                       codes->data(), codes->size(), &q});
      return;
    }
    blobs.push_back({name, type.type, static_cast<uint32_t>(q.weights.rows), static_cast<uint32_t>(q.weights.cols),
                     q.weights.values.data(), q.weights.values.size(), &q});
  };
  const bool tied_int8_head = c.shared_classifier && int8.count("classifier");
  for (const ConstTensorRef& tensor : list_tensors(model)) {
    if (auto it = int8.find(tensor.name); it != int8.end()) {
      add_quantized(tensor.name, it->second);
    } else if (tensor.name == "token_embedding" && tied_int8_head) {
      continue;  // the INT8 classifier is the table
    } else {
      if (tensor.data->size() != static_cast<size_t>(tensor.rows) * tensor.cols)
        fail("{}: tensor '{}' has no FP32 values", path, tensor.name);
      blobs.push_back({tensor.name, f32_package_tensor_type().type, static_cast<uint32_t>(tensor.rows),
                       static_cast<uint32_t>(tensor.cols), tensor.data->data(), tensor.data->size() * sizeof(float), nullptr});
    }
  }
  if (tied_int8_head) add_quantized("classifier", int8.at("classifier"));

  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<schema::ModelPackage>();
  root.setFormatVersion(schema::PACKAGE_FORMAT_VERSION);
  auto arch = root.initArchitecture();
  arch.setDim(c.dim);
  arch.setHiddenDim(c.hidden_dim);
  arch.setNLayers(c.n_layers);
  arch.setNHeads(c.n_heads);
  arch.setNKvHeads(c.n_kv_heads);
  arch.setVocabSize(c.vocab_size);
  arch.setMaxSeqLen(c.max_seq_len);
  arch.setNormEps(c.norm_eps);
  arch.setRopeTheta(c.rope_theta);
  arch.setSharedClassifier(c.shared_classifier);
  arch.setHeadDim(c.head_dim);
  arch.setQkNorm(c.qk_norm);
  arch.setQkvBias(c.qkv_bias);
  arch.setPostNorms(c.post_norms);
  arch.setNormPlusOne(c.norm_plus_one);
  arch.setEmbeddingScale(c.embedding_scale);
  arch.setGeluTanh(c.gelu_tanh);
  arch.setQueryScaleDim(c.query_scale_dim);
  arch.setSlidingWindow(c.sliding_window);
  arch.setRopeLocalTheta(c.rope_local_theta);
  arch.setRopeLinearFactor(c.rope_linear_factor);
  if (!c.local_layers.empty()) {
    auto local = arch.initLocalLayers(static_cast<unsigned>(c.local_layers.size()));
    for (unsigned l = 0; l < local.size(); ++l) local.set(l, c.local_layers[l] != 0);
  }
  if (c.rope_scaling.enabled()) {
    arch.setRopeScalingFactor(c.rope_scaling.factor);
    arch.setRopeLowFreqFactor(c.rope_scaling.low_freq_factor);
    arch.setRopeHighFreqFactor(c.rope_scaling.high_freq_factor);
    arch.setRopeOriginalMaxSeqLen(c.rope_scaling.original_max_seq_len);
  }
  auto tensors = root.initTensors(static_cast<unsigned>(blobs.size()));
  size_t offset = 0;
  std::vector<size_t> offsets;
  for (size_t i = 0; i < blobs.size(); ++i) {
    const Blob& blob = blobs[i];
    auto t = tensors[static_cast<unsigned>(i)];
    t.setName(blob.name);
    t.setType(blob.type);
    t.setRows(blob.rows);
    t.setCols(blob.cols);
    t.setOffset(offset);
    t.setSize(blob.size);
    offsets.push_back(offset);
    offset = align_up(offset + blob.size);
    if (blob.quantized != nullptr) {
      const QuantizedLinear& q = *blob.quantized;
      if (q.weights.per_group()) {  // binary16 values, stored as held
        auto scales = t.initGroupScales(static_cast<unsigned>(q.weights.group_scales.size()));
        for (size_t s = 0; s < q.weights.group_scales.size(); ++s)
          scales.set(static_cast<unsigned>(s), q.weights.group_scales[s]);
      } else {
        auto scales = t.initWeightScales(static_cast<unsigned>(q.weights.scales.size()));
        for (size_t s = 0; s < q.weights.scales.size(); ++s) scales.set(static_cast<unsigned>(s), q.weights.scales[s]);
      }
      t.setInputScale(q.input.scale);
      t.setInputZeroPoint(q.input.zero_point);
      t.setOutputScale(q.output.scale);
      t.setOutputZeroPoint(q.output.zero_point);
    }
  }
  auto calibration = root.initCalibration();
  calibration.setMethod(provenance.method);
  calibration.setPerChannel(provenance.per_channel);
  calibration.setAsymmetric(provenance.asymmetric);
  calibration.setSequences(provenance.sequences);
  calibration.setTokens(provenance.tokens);
  calibration.setStatsSha256(provenance.stats_sha256);
  auto keep = calibration.initKeepFp32(static_cast<unsigned>(provenance.keep_fp32.size()));
  for (size_t i = 0; i < provenance.keep_fp32.size(); ++i) keep.set(static_cast<unsigned>(i), provenance.keep_fp32[i]);
  auto package_tokenizer = root.initTokenizer();
  package_tokenizer.setKind(tokenizer.kind);
  package_tokenizer.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(tokenizer.data.data()), tokenizer.data.size()));
  root.setSourceModelSha256(provenance.source_model_sha256);

  const kj::Array<capnp::word> manifest = capnp::messageToFlatArray(message);
  const uint64_t manifest_bytes = manifest.asBytes().size();
  const size_t data_start = align_up(16 + manifest_bytes);

  AtomicFileWriter out(path);
  Sha256 sha;
  size_t written = 0;
  auto write = [&](const void* data, size_t size) {
    out.write(data, size);
    sha.update(data, size);
    written += size;
  };
  auto pad_to = [&](size_t position) {
    static const char zeros[kAlignment] = {};
    while (written < position) write(zeros, std::min(kAlignment, position - written));
  };
  write(kPackageMagic, sizeof(kPackageMagic));
  write(&manifest_bytes, 8);
  write(manifest.asBytes().begin(), manifest_bytes);
  pad_to(data_start);
  for (size_t i = 0; i < blobs.size(); ++i) {
    pad_to(data_start + offsets[i]);
    write(blobs[i].data, blobs[i].size);
  }
  pad_to(data_start + offset);

  Trailer trailer{};
  std::memcpy(trailer.magic, kTrailerMagic, sizeof(kTrailerMagic));
  trailer.digest = sha.digest();
  if (options.signing_key != nullptr) {
    trailer.signed_flag = 1;
    trailer.signature = options.signing_key->sign(trailer.digest);
  }
  out.write(&trailer, sizeof(trailer));
  out.commit();
}

bool looks_like_model_package(std::span<const std::byte> bytes) {
  return bytes.size() >= sizeof(kPackageMagic) && std::memcmp(bytes.data(), kPackageMagic, sizeof(kPackageMagic)) == 0;
}

ModelPackage parse_model_package(std::span<const std::byte> bytes, const std::string& source, const SigningKey* public_key,
                                 const MappedFile* mapping) {
  auto release = [&](std::span<const std::byte> range) {
    if (mapping != nullptr) mapping->release(range);
  };
  if (!looks_like_model_package(bytes)) fail("{}: not a fedcal model package (bad magic)", source);
  if (bytes.size() < 16 + kTrailerBytes) fail("{}: truncated package ({} bytes)", source, bytes.size());
  const size_t content_size = bytes.size() - kTrailerBytes;
  Trailer trailer;
  std::memcpy(&trailer, bytes.data() + content_size, sizeof(trailer));
  if (std::memcmp(trailer.magic, kTrailerMagic, sizeof(kTrailerMagic)) != 0) {
    fail("{}: package trailer missing: the file is truncated or not a package", source);
  }
  Sha256 sha;
  for (size_t done = 0; done < content_size;) {  // in pieces, each released once hashed
    const size_t piece = std::min<size_t>(content_size - done, size_t{64} << 20);
    sha.update(bytes.data() + done, piece);
    release(bytes.subspan(done, piece));
    done += piece;
  }
  if (sha.digest() != trailer.digest) fail("{}: SHA-256 mismatch: the package is corrupted or was altered", source);
  if (public_key != nullptr) {
    if (trailer.signed_flag != 1) fail("{}: the package is not signed, and a public key is configured", source);
    if (!public_key->verify(trailer.digest, trailer.signature))
      fail("{}: bad signature: not signed by the configured key", source);
  }

  uint64_t manifest_bytes = 0;
  std::memcpy(&manifest_bytes, bytes.data() + 8, 8);
  if (manifest_bytes > kMaxManifestBytes || manifest_bytes % sizeof(capnp::word) != 0 || manifest_bytes > content_size - 16) {
    fail("{}: manifest length {} is invalid", source, manifest_bytes);
  }
  const size_t data_start = align_up(16 + manifest_bytes);
  if (data_start > content_size) fail("{}: the data region starts past the end of the file", source);
  const size_t data_size = content_size - data_start;
  // The manifest is read where it lies when that is word-aligned (a mapped file), else from a copy. A
  // 4-bit package's manifest holds ~1/8 of its weight bytes in group scales: where it lies, each
  // tensor's scales are released once copied, and the rest of it at the end.
  const std::span<const std::byte> manifest_range = bytes.subspan(16, manifest_bytes);
  kj::Array<capnp::word> copy;
  kj::ArrayPtr<const capnp::word> words;
  if (reinterpret_cast<uintptr_t>(manifest_range.data()) % alignof(capnp::word) == 0) {
    words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(manifest_range.data()), manifest_bytes / sizeof(capnp::word));
  } else {
    copy = kj::heapArray<capnp::word>(manifest_bytes / sizeof(capnp::word));
    std::memcpy(copy.begin(), manifest_range.data(), manifest_bytes);
    release(manifest_range);
    words = copy;
  }

  ModelPackage package;
  package.content_sha256 = to_hex(trailer.digest);
  package.signed_package = trailer.signed_flag == 1;
  try {
    capnp::ReaderOptions reader_options;
    reader_options.traversalLimitInWords = words.size() + 1024;
    reader_options.nestingLimit = 16;
    capnp::FlatArrayMessageReader reader(words, reader_options);
    const auto root = reader.getRoot<schema::ModelPackage>();
    with_context(
        [&] { return source + ": manifest"; },
        [&] {
          if (root.getFormatVersion() != schema::PACKAGE_FORMAT_VERSION) {
            fail("package format version {} is not supported (this build reads {})", root.getFormatVersion(),
                 schema::PACKAGE_FORMAT_VERSION);
          }
          const auto arch = root.getArchitecture();
          ModelConfig& c = package.model.config;
          c.dim = arch.getDim();
          c.hidden_dim = arch.getHiddenDim();
          c.n_layers = arch.getNLayers();
          c.n_heads = arch.getNHeads();
          c.n_kv_heads = arch.getNKvHeads();
          c.vocab_size = arch.getVocabSize();
          c.max_seq_len = arch.getMaxSeqLen();
          c.norm_eps = arch.getNormEps();
          c.rope_theta = arch.getRopeTheta();
          c.shared_classifier = arch.getSharedClassifier();
          c.head_dim = arch.getHeadDim();
          c.qk_norm = arch.getQkNorm();
          c.qkv_bias = arch.getQkvBias();
          c.post_norms = arch.getPostNorms();
          c.norm_plus_one = arch.getNormPlusOne();
          c.embedding_scale = arch.getEmbeddingScale();
          c.gelu_tanh = arch.getGeluTanh();
          c.query_scale_dim = arch.getQueryScaleDim();
          c.sliding_window = arch.getSlidingWindow();
          c.rope_local_theta = arch.getRopeLocalTheta();
          c.rope_linear_factor = arch.getRopeLinearFactor();
          if (arch.getLocalLayers().size() != 0 && arch.getLocalLayers().size() != static_cast<unsigned>(std::max(c.n_layers, 0)))
            fail("architecture: {} local-layer flags for {} layers", arch.getLocalLayers().size(), c.n_layers);
          for (bool local : arch.getLocalLayers()) c.local_layers.push_back(local ? 1 : 0);
          if (arch.getRopeScalingFactor() != 0.0f) {
            c.rope_scaling = {arch.getRopeScalingFactor(), arch.getRopeLowFreqFactor(), arch.getRopeHighFreqFactor(),
                              arch.getRopeOriginalMaxSeqLen()};
          }
          c.validate();
          package.model.layers.resize(c.n_layers);

          std::map<std::string, ConstTensorRef> expected;
          for (const ConstTensorRef& shape : shapes_of(c)) expected.emplace(shape.name, shape);
          if (c.shared_classifier) expected.emplace("classifier", ConstTensorRef{"classifier", nullptr, c.vocab_size, c.dim});
          std::map<std::string, TensorRef> destinations;
          for (TensorRef& ref : list_tensors(package.model)) destinations.emplace(ref.name, ref);

          std::set<std::string> seen;
          for (const auto tensor : root.getTensors()) {
            const std::string name = tensor.getName();
            with_context([&] { return "tensor '" + name + "'"; },
                         [&] {
                           auto shape = expected.find(name);
                           if (shape == expected.end()) fail("unknown tensor name");
                           if (!seen.insert(name).second) fail("appears twice");
                           if (tensor.getRows() != static_cast<uint32_t>(shape->second.rows) ||
                               tensor.getCols() != static_cast<uint32_t>(shape->second.cols)) {
                             fail("shape ({}, {}) does not match the architecture's ({}, {})", tensor.getRows(), tensor.getCols(),
                                  shape->second.rows, shape->second.cols);
                           }
                           const uint64_t count = uint64_t{tensor.getRows()} * tensor.getCols();
                           const PackageTensorType* type = find_package_tensor_type(tensor.getType());
                           if (type == nullptr) fail("unknown tensor type {}", static_cast<int>(tensor.getType()));
                           const bool is_f32 = type->f32();
                           const bool four_bit = type->four_bit(), five_bit = type->five_bit();
                           if ((four_bit || five_bit) && (tensor.getCols() % kWeightGroup != 0 || tensor.getCols() == 0))
                             fail("{}-bit blocks of {} input channels do not fit its {} columns", type->bits, kWeightGroup,
                                  tensor.getCols());
                           const uint64_t expected_size = type->bytes(count);
                           if (tensor.getSize() != expected_size)
                             fail("size {} does not match {} elements{}", tensor.getSize(), count,
                                  four_bit || five_bit ? fmt::format(" of {} bits", type->bits) : "");
                           if (tensor.getOffset() % kAlignment != 0 || tensor.getOffset() > data_size ||
                               tensor.getSize() > data_size - tensor.getOffset()) {
                             fail("byte range [{}, +{}) is outside the data region of {} bytes or unaligned", tensor.getOffset(),
                                  tensor.getSize(), data_size);
                           }
                           const std::byte* data = bytes.data() + data_start + tensor.getOffset();
                           if (is_f32) {
                             auto destination = destinations.find(name);
                             if (destination == destinations.end()) fail("cannot be FP32 here");
                             destination->second.data->resize(count);
                             std::memcpy(destination->second.data->data(), data, tensor.getSize());
                             release(bytes.subspan(data_start + tensor.getOffset(), tensor.getSize()));
                             return;
                           }
                           if (four_bit || five_bit) {
                             QuantizedLinear layer;
                             layer.weights = low_bit_matrix(type->bits, static_cast<int>(tensor.getRows()),
                                                            static_cast<int>(tensor.getCols()), type->grid);
                             const auto* codes = reinterpret_cast<const uint8_t*>(data);
                             if (four_bit) {
                               layer.weights.codes.assign(codes, codes + tensor.getSize());  // kept as stored
                             } else {
                               layer.weights.values = unpack_int5_codes(std::span(codes, tensor.getSize()), layer.weights.rows,
                                                                        layer.weights.cols, type->grid);  // a byte per weight
                             }
                             release(bytes.subspan(data_start + tensor.getOffset(), tensor.getSize()));
                             if (tensor.getWeightScales().size() > 0)
                               fail("{}-bit weights keep binary16 group scales (groupScales), not Float32 ones", type->bits);
                             const auto group_scales = tensor.getGroupScales();
                             layer.weights.group_scales.reserve(group_scales.size());
                             for (const uint16_t half : group_scales) layer.weights.group_scales.push_back(half);
                             const kj::ArrayPtr<const kj::byte> stored = capnp::AnyList::Reader(group_scales).getRawBytes();
                             release(std::as_bytes(std::span(stored.begin(), stored.size())));  // ignored for a copy
                             layer.weights.check(fmt::format("{}-bit weights", type->bits));
                             package.int8.emplace(name, std::move(layer));
                             return;
                           }
                           const bool per_channel = type->granularity == WeightGranularity::kPerChannel;
                           const bool per_group = type->granularity == WeightGranularity::kPerGroup;
                           QuantizedLinear layer;
                           layer.weights.rows = static_cast<int>(tensor.getRows());
                           layer.weights.cols = static_cast<int>(tensor.getCols());
                           layer.weights.granularity = type->granularity;
                           layer.weights.values.resize(count);
                           std::memcpy(layer.weights.values.data(), data, count);
                           release(bytes.subspan(data_start + tensor.getOffset(), count));
                           for (int8_t v : layer.weights.values) {
                             if (v == -128) fail("weight value -128 is outside the symmetric range [-127, 127]");
                           }
                           const auto scales = tensor.getWeightScales();
                           const auto half_scales = tensor.getGroupScales();
                           const uint64_t expected_scales = per_group     ? uint64_t{tensor.getRows()} * layer.weights.groups()
                                                            : per_channel ? tensor.getRows()
                                                                          : 1u;
                           if (half_scales.size() > 0 && (!per_group || scales.size() > 0))
                             fail("has binary16 group scales {}", per_group ? "beside Float32 ones" : "but is not qgint8");
                           const uint64_t stored = half_scales.size() > 0 ? half_scales.size() : scales.size();
                           if (stored != expected_scales) fail("has {} weight scales, not {}", stored, expected_scales);
                           for (const uint16_t half : half_scales) {
                             check_params({f16_to_f32(half), 0}, "weight");
                             layer.weights.group_scales.push_back(half);
                           }
                           for (const float scale : scales) {
                             check_params({scale, 0}, "weight");
                             if (!per_group) {
                               layer.weights.scales.push_back(scale);
                               continue;
                             }
                             // An earlier writer's Float32 group scales: binary16 values, or refused.
                             const uint16_t half = f32_to_f16(scale);
                             if (f16_to_f32(half) != scale)
                               fail("group scale {} is not a binary16 value (grouped weights keep binary16 scales)", scale);
                             layer.weights.group_scales.push_back(half);
                           }
                           if (name != "token_embedding") {
                             layer.input = {tensor.getInputScale(), tensor.getInputZeroPoint()};
                             layer.output = {tensor.getOutputScale(), tensor.getOutputZeroPoint()};
                             check_params(layer.input, "input");
                             check_params(layer.output, "output");
                           }
                           package.int8.emplace(name, std::move(layer));
                         });
          }
          // Every tensor the forward pass needs is present in one form or the other.
          for (const auto& [name, shape] : expected) {
            if (seen.count(name)) continue;
            const bool embedding_from_head = name == "token_embedding" && c.shared_classifier && package.int8.count("classifier");
            const bool head_is_embedding = name == "classifier" && c.shared_classifier;
            if (!embedding_from_head && !head_is_embedding) fail("tensor '{}' is missing", name);
          }
          if (c.shared_classifier && !package.int8.count("classifier") && package.model.token_embedding.empty()) {
            fail("tensor 'token_embedding' is missing");
          }

          const auto calibration = root.getCalibration();
          package.provenance.method = calibration.getMethod();
          package.provenance.per_channel = calibration.getPerChannel();
          package.provenance.asymmetric = calibration.getAsymmetric();
          package.provenance.sequences = calibration.getSequences();
          package.provenance.tokens = calibration.getTokens();
          package.provenance.stats_sha256 = calibration.getStatsSha256();
          for (auto layer : calibration.getKeepFp32()) package.provenance.keep_fp32.push_back(layer);
          package.provenance.source_model_sha256 = root.getSourceModelSha256();
          const auto tokenizer = root.getTokenizer();
          package.tokenizer.kind = tokenizer.getKind();
          const auto data = tokenizer.getData();
          package.tokenizer.data.assign(reinterpret_cast<const char*>(data.begin()), data.size());
        });
  } catch (const kj::Exception& exception) {
    fail("{}: malformed manifest: {}", source, exception.getDescription().cStr());
  }
  release(manifest_range);
  return package;
}

ModelPackage read_model_package(const std::string& path, const SigningKey* public_key) {
  MappedFile file(path);
  return parse_model_package(file.bytes(), path, public_key, &file);
}

}  // namespace fedcal

// fedcal's model package: one file for FP32 and INT8 models.
//
//   "FCPKG001"                      8 bytes magic
//   uint64 manifest_bytes           little-endian
//   manifest                        Cap'n Proto ModelPackage (protocol/model_package.capnp), unpacked
//   zero padding to 64 bytes
//   data region                     every tensor at a 64-byte aligned offset, so a mapped file can be
//                                   read in place
//   trailer (128 bytes)             "FCSIG001", SHA-256 of every byte before the trailer, a signed
//                                   flag byte, 23 zero bytes, an Ed25519 signature of that digest
//
// Readers check the digest always and the signature whenever a public key is configured (then an
// unsigned package is refused too). Every manifest field is range-checked against the file.
#pragma once

#include <optional>
#include <span>

#include "common/mapped_file.h"
#include <string>

#include "common/signing.h"
#include "models/format/model.h"
#include "models/quant/linear_int8.h"

namespace fedcal {

struct PackageTokenizer {
  std::string kind;  // "llama2c", "sentencepiece", "hf-json"
  std::string data;  // the tokenizer file's bytes
};

struct PackageProvenance {
  std::string method;  // empty: FP32 package
  bool per_channel = false;
  bool asymmetric = false;
  uint64_t sequences = 0;
  uint64_t tokens = 0;
  std::string stats_sha256;
  std::vector<std::string> keep_fp32;
  std::string source_model_sha256;
};

struct ModelPackage {
  Model model;            // FP32 tensors; matrices that are INT8 are left empty
  QuantizedLinears int8;  // INT8 layers (and "token_embedding" weights when the table is INT8)
  PackageTokenizer tokenizer;
  PackageProvenance provenance;
  std::string content_sha256;  // of everything before the trailer
  bool signed_package = false;
};

struct PackageWriteOptions {
  const SigningKey* signing_key = nullptr;  // sign when set
};

// Writes `model` with its INT8 layers (none: an FP32 package). FP32 matrices of INT8 layers are not stored.
void write_model_package(const std::string& path, const Model& model, const QuantizedLinears& int8,
                         const PackageTokenizer& tokenizer, const PackageProvenance& provenance,
                         const PackageWriteOptions& options = {});

bool looks_like_model_package(std::span<const std::byte> bytes);
// Parses and verifies a package; `public_key` set: the signature must be present and valid.
// With `mapping` (the file `bytes` maps), pages are released as soon as they are copied out, so parsing
// adds about one copy of the package to the resident set, not two.
ModelPackage parse_model_package(std::span<const std::byte> bytes, const std::string& source, const SigningKey* public_key,
                                 const MappedFile* mapping = nullptr);
ModelPackage read_model_package(const std::string& path, const SigningKey* public_key);

}  // namespace fedcal

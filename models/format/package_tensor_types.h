// The tensor types of a fedcal package (protocol/model_package.capnp, TensorType), each defined once:
// its name, its storage and the quantized layout it holds. The package writer picks a layer's type
// here, the reader checks and decodes by it, and `inspect` names it.
#pragma once

#include <cstdint>
#include <vector>

#include "models/quant/scales.h"
#include "protocol/model_package.capnp.h"

namespace fedcal {

struct PackageTensorType {
  schema::TensorType type;
  const char* name;               // "qcint8": as the schema, docs and `inspect` name it
  int bits;                       // 32 (FP32 values), 8, 5 (20 bytes per 32) or 4 (two codes per byte)
  WeightGranularity granularity;  // of a quantized type's weight scales
  Int4Grid grid;                  // of a 4- or 5-bit type's levels

  bool f32() const { return bits == 32; }
  bool four_bit() const { return bits == 4; }
  bool five_bit() const { return bits == 5; }
  // Stored bytes of `values` values (for 4 and 5 bits, a multiple of 32 of them).
  uint64_t bytes(uint64_t values) const { return bits == 32 ? values * 4 : values * static_cast<uint64_t>(bits) / 8; }
};

const std::vector<PackageTensorType>& package_tensor_types();
// The entry of a stored type, or nullptr for one this build does not know.
const PackageTensorType* find_package_tensor_type(schema::TensorType type);
// The type a quantized layer is stored as.
const PackageTensorType& package_tensor_type_of(const QuantizedMatrix& weights);
// FP32 values.
const PackageTensorType& f32_package_tensor_type();

}  // namespace fedcal

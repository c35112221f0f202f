#include "models/format/package_tensor_types.h"

#include "common/error.h"

namespace fedcal {
namespace {

using T = schema::TensorType;
using G = WeightGranularity;

const std::vector<PackageTensorType> kTypes = {
    // clang-format off
    // type       name      bits granularity     grid (4- and 5-bit)
    {T::F32,    "f32",    32, G::kPerTensor,  Int4Grid::kUniform},
    {T::QINT8,  "qint8",   8, G::kPerTensor,  Int4Grid::kUniform},
    {T::QCINT8, "qcint8",  8, G::kPerChannel, Int4Grid::kUniform},
    {T::QGINT8, "qgint8",  8, G::kPerGroup,   Int4Grid::kUniform},
    {T::QGINT4, "qgint4",  4, G::kPerGroup,   Int4Grid::kUniform},
    {T::QGNL4,  "qgnl4",   4, G::kPerGroup,   Int4Grid::kNonUniform},
    {T::QGINT5, "qgint5",  5, G::kPerGroup,   Int4Grid::kUniform},
    {T::QGNL5,  "qgnl5",   5, G::kPerGroup,   Int4Grid::kNonUniform},
    // clang-format on
};

}  // namespace

const std::vector<PackageTensorType>& package_tensor_types() { return kTypes; }

const PackageTensorType* find_package_tensor_type(schema::TensorType type) {
  for (const PackageTensorType& entry : kTypes) {
    if (entry.type == type) return &entry;
  }
  return nullptr;
}

const PackageTensorType& package_tensor_type_of(const QuantizedMatrix& weights) {
  for (const PackageTensorType& entry : kTypes) {
    if (entry.f32() || entry.bits != weights.bits || entry.granularity != weights.granularity) continue;
    if (entry.bits < 8 && entry.grid != weights.grid) continue;
    return entry;
  }
  fail("no package tensor type holds {}-bit weights of this granularity", weights.bits);
}

const PackageTensorType& f32_package_tensor_type() { return kTypes.front(); }

}  // namespace fedcal

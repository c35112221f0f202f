// The files fedcal writes for other runtimes, by format name: what `fedcal-model export`, a round's
// `--export` and `fedcal-coordinator models export` share (docs/EXPORTS.md).
//   gguf            the FP32 model in llama.cpp's layout, with its tokenizer (gguf_model.h)
//   imatrix         llama.cpp's importance matrix from statistics with importance sums (importance.h)
//   imatrix-gguf    the same in llama.cpp's newer GGUF imatrix format
//   onnx            the FP32 model as an ONNX graph (onnx_model.h)
//   onnx-qdq        static INT8 layers as an ONNX QDQ graph
//   tensorrt-cache  their activation scales as TensorRT's calibration cache (tensorrt_cache.h)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/format/ggml_types.h"
#include "models/format/model.h"
#include "models/format/model_package.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/linear_int8.h"

namespace fedcal {

extern const std::vector<std::string> kRuntimeExportFormats;

// The file name ending of `format` (".gguf", ".imatrix.dat", ".qdq.onnx", ...).
std::string runtime_export_extension(const std::string& format);

// What a format reads beyond the model, from its one definition: a check of settings or options asks
// this, never the formats' names.
struct RuntimeExportNeeds {
  bool static_int8 = false;  // static INT8 layers with activation scales (no fine-grained or 4-bit layers)
  bool symmetric = false;    // those scales symmetric (no zero points)
  bool importance = false;   // statistics recorded with importance sums
  bool tokenizer = false;    // the model's tokenizer
};
RuntimeExportNeeds runtime_export_needs(const std::string& format);  // throws Error on an unknown format
// Whether any of `formats` has `need` (e.g. &RuntimeExportNeeds::importance).
bool any_export_needs(const std::vector<std::string>& formats, bool RuntimeExportNeeds::*need);

// What a format reads; each format names what it misses.
struct RuntimeExportInput {
  const Model* model = nullptr;                 // FP32 tensors (an INT8 layer's may be empty)
  const QuantizedLinears* int8 = nullptr;       // static INT8 layers: onnx-qdq, tensorrt-cache
  const PackageTokenizer* tokenizer = nullptr;  // gguf
  const CalibrationStats* stats = nullptr;      // imatrix, imatrix-gguf
  GgmlType gguf_type = GgmlType::kQ8_0;
  std::string name;  // GGUF general.name, the imatrix's dataset name
  int tensorrt_version = 8602;
};

struct RuntimeExportSummary {
  uint64_t bytes = 0;
  std::string text;  // one line: what was written
};

// Writes `format` to `path` (atomically). Throws Error naming the format and what is missing or
// cannot be held (an unknown format, an INT8 package for an FP32 format, asymmetric scales for
// TensorRT, a tokenizer GGUF cannot carry, statistics without importance sums, ...).
RuntimeExportSummary write_runtime_export(const std::string& format, const std::string& path, const RuntimeExportInput& input);

}  // namespace fedcal

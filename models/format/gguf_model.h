// A Llama-family model as llama.cpp stores it in GGUF: architecture "llama" (Meta's interleaved
// rotary layout, which is fedcal's own), "qwen2" (NEOX half-split layout, permuted on the way in and
// out, q/k/v biases) or "qwen3" (NEOX layout, per-head q/k norms).
//
// Tensor names (GGUF name <- fedcal name), shapes ne[0] first:
//   token_embd.weight        [dim, vocab]        token_embedding
//   blk.N.attn_norm.weight   [dim]               layers.N.attn_norm
//   blk.N.attn_q.weight      [dim, q_dim]        layers.N.wq        (attn_k, attn_v: wk, wv)
//   blk.N.attn_q_norm.weight [head_size]         layers.N.q_norm    (qwen3; attn_k_norm: k_norm)
//   blk.N.attn_q.bias        [q_dim]             layers.N.bq        (qwen2; attn_k.bias, attn_v.bias: bk, bv)
//   blk.N.attn_output.weight [q_dim, dim]        layers.N.wo
//   blk.N.ffn_norm.weight    [dim]               layers.N.ffn_norm
//   blk.N.ffn_gate.weight    [dim, hidden]       layers.N.w1        (ffn_up: w3)
//   blk.N.ffn_down.weight    [hidden, dim]       layers.N.w2
//   output_norm.weight       [dim]               final_norm
//   output.weight            [dim, vocab]        classifier (absent when tied to token_embd)
//   rope_freqs.weight        [head_size / 2]     Llama 3 RoPE scaling, written as llama.cpp's
//                                                per-frequency divisors (export only)
// The tokenizer travels in tokenizer.ggml.*: "llama" (sentencepiece pieces with scores and types).
// Reading refuses any `<arch>.` key and any tensor it does not use, naming it: nothing that changes the
// computation is ignored.
#pragma once

#include <string>

#include "models/format/ggml_types.h"
#include "models/format/gguf.h"
#include "models/format/model.h"
#include "models/format/model_package.h"

namespace fedcal {

// The GGUF name of a fedcal tensor ("layers.3.wq" -> "blk.3.attn_q.weight").
std::string gguf_tensor_name(const std::string& name);

struct GgufExportOptions {
  GgmlType weights = GgmlType::kF32;  // of the matrices; vectors (norms) are always F32
  std::string name;                   // general.name
  // A package's quantized layers, written as their own blocks where GGUF has the same layout: 4-bit
  // on the uniform grid as Q4_0, INT8 in groups of 32 (fine-grained) as Q8_0, bit for bit; the other
  // matrices in `weights`. Any other quantized layer (non-uniform 4-bit, static INT8) is refused by
  // name: GGUF has no type for it.
  const QuantizedLinears* quantized = nullptr;
};

// How many matrices were written in each type (a Q8_0 export keeps a matrix whose rows are not whole
// blocks in F16, as llama.cpp does).
struct GgufExportSummary {
  int matrices_in_requested_type = 0;
  int matrices_in_f16 = 0;
  int package_q4_0 = 0, package_q8_0 = 0;  // a package's own blocks
  uint64_t bytes = 0;
};

// The GGUF of `model` with `tokenizer` (sentencepiece or llama2.c; others are refused with the reason).
GgufWriter gguf_from_model(const Model& model, const PackageTokenizer& tokenizer, const GgufExportOptions& options,
                           GgufExportSummary* summary = nullptr);
GgufExportSummary write_gguf_model(const std::string& path, const Model& model, const PackageTokenizer& tokenizer,
                                   const GgufExportOptions& options);

struct GgufModel {
  Model model;                 // FP32 (F16, BF16, Q8_0 and the 4- to 6-bit tensors dequantized)
  PackageTokenizer tokenizer;  // a llama2.c tokenizer.bin built from tokenizer.ggml.*
  std::string architecture;
};
GgufModel model_from_gguf(const GgufFile& file);
GgufModel read_gguf_model(const std::string& path);

}  // namespace fedcal

// llama2.c checkpoints (github.com/karpathy/llama2.c, export.py):
//  - legacy (version 0): a header of 7 int32 {dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//    vocab_size, seq_len}, a negative vocab_size meaning a separate classifier; then FP32 tensors
//    grouped by kind over all layers, the RoPE tables, and the classifier if separate.
//  - version 1: uint32 magic 0x616b3432 ("ak42"), int32 version 1, the same 7 int32, a uint8
//    shared-classifier flag, zero padding to 256 bytes; then norms first, then the matrices.
// Both use RMSNorm eps 1e-5 and RoPE theta 10000.
#pragma once

#include <span>
#include <string>

#include "models/format/model.h"

namespace fedcal {

enum class Llama2cVersion { kLegacy = 0, kVersion1 = 1 };

// Parses a checkpoint from bytes; `source` names it in errors. Throws Error on any inconsistency.
Model parse_llama2c_checkpoint(std::span<const std::byte> bytes, const std::string& source);
Model read_llama2c_checkpoint(const std::string& path);
bool looks_like_llama2c_version1(std::span<const std::byte> bytes);

void write_llama2c_checkpoint(const Model& model, const std::string& path, Llama2cVersion version);

}  // namespace fedcal

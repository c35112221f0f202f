// Hugging Face Llama checkpoints: a folder with config.json (LlamaForCausalLM) and one or more
// *.safetensors files holding F32, F16 or BF16 tensors named model.layers.N.self_attn.q_proj.weight etc.
#pragma once

#include <optional>
#include <string>

#include "models/format/hf_config.h"
#include "models/format/model.h"
#include "models/format/safetensors.h"

namespace fedcal {

Model read_hf_checkpoint(const std::string& folder);
bool is_hf_checkpoint_folder(const std::string& path);

// Writes config.json and model.safetensors (in `dtype`) into `folder` (created if missing).
void write_hf_checkpoint(const Model& model, const std::string& folder, TensorDtype dtype = TensorDtype::kF32);

// Hugging Face stores q/k rows per head as [first halves of all pairs, second halves]; Meta and llama2.c
// interleave the pairs. These convert one (n_heads * head_size, cols) matrix between the two layouts.
std::vector<float> hf_to_interleaved_rotary(const std::vector<float>& weights, int n_heads, int head_size, int cols);
std::vector<float> interleaved_to_hf_rotary(const std::vector<float>& weights, int n_heads, int head_size, int cols);

}  // namespace fedcal

// Llama (Meta's Llama 2 and 3, and the Llama-shaped SmolLM2 and TinyLlama): the base every other
// family here is described against. Pre-norm RMSNorm blocks, grouped-query attention with RoPE,
// a SwiGLU feed-forward; no biases.
#include "models/family/family.h"

namespace fedcal {

const ModelFamily& llama_family() {
  static const ModelFamily kFamily{
      "llama",
      "Llama: RMSNorm, grouped-query attention with RoPE, SwiGLU (also SmolLM2, TinyLlama)",
      ModelConfig::Features{},
      "llama",
      "LlamaForCausalLM",
      {
          {"attn_norm", "input_layernorm.weight"},
          {"wq", "self_attn.q_proj.weight"},
          {"wk", "self_attn.k_proj.weight"},
          {"wv", "self_attn.v_proj.weight"},
          {"wo", "self_attn.o_proj.weight"},
          {"ffn_norm", "post_attention_layernorm.weight"},
          {"w1", "mlp.gate_proj.weight"},
          {"w2", "mlp.down_proj.weight"},
          {"w3", "mlp.up_proj.weight"},
      },
      {},
      nullptr,
      nullptr,
      "llama",
      false,
      {},
      nullptr,
      nullptr,
  };
  return kFamily;
}

}  // namespace fedcal

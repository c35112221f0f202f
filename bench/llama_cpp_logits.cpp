// Logits of a token sequence as llama.cpp computes them, to measure fedcal's GGUF exports against an
// independent runtime. Not built by fedcal's CMake: build it against a llama.cpp checkout's libllama,
// e.g. ikawrakow/ik_llama.cpp (2026-08, which has gemma3) configured with -DGGML_NATIVE=ON
// -DGGML_IQK_FLASH_ATTENTION=OFF -DGGML_IQK_FA_ALL_QUANTS=OFF and `cmake --build build --target llama`:
//   g++ -O2 -std=c++17 bench/llama_cpp_logits.cpp -I$LLAMA/include -I$LLAMA/ggml/include \
//       -L$LLAMA/build/src -L$LLAMA/build/ggml/src -lllama -lggml \
//       -Wl,-rpath,$LLAMA/build/src:$LLAMA/build/ggml/src -o llama_cpp_logits
//   ./llama_cpp_logits MODEL.gguf TOKEN... > logits.json    # {"logits": [[vocab floats] per token]}
// One batch of up to 128 tokens from position 0, one thread, keys in F32 (values stay F16: that build
// refuses F32 values without flash attention).
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  llama_backend_init();
  llama_model_params model_params = llama_model_default_params();
  llama_model* model = llama_model_load_from_file(argv[1], model_params);
  if (!model) return 3;
  std::vector<llama_token> tokens;
  for (int i = 2; i < argc; ++i) tokens.push_back(std::atoi(argv[i]));
  llama_context_params params = llama_context_default_params();
  params.n_ctx = 128;
  params.n_batch = 128;
  params.n_ubatch = 128;
  params.n_threads = 1;
  params.n_threads_batch = 1;
  params.logits_all = true;
  params.flash_attn = false;
  params.type_k = GGML_TYPE_F32;  // keys in F32 (F16 by default); values stay F16: this build refuses F32 ones without flash attention
  llama_context* ctx = llama_init_from_model(model, params);
  if (!ctx) return 4;
  llama_batch batch = llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size()), 0, 0);
  if (llama_decode(ctx, batch) != 0) return 5;
  const int vocab = llama_n_vocab(model);
  std::printf("{\"logits\": [\n");
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* row = llama_get_logits_ith(ctx, static_cast<int32_t>(t));
    std::printf("[");
    for (int v = 0; v < vocab; ++v) std::printf("%s%.9g", v ? "," : "", row[v]);
    std::printf("]%s\n", t + 1 < tokens.size() ? "," : "");
  }
  std::printf("]}\n");
  return 0;
}

// This measurement build leaves IQK's flash-attention kernels out (GGML_IQK_FLASH_ATTENTION=OFF), yet
// libggml still names two of them; flash attention is off here, so neither is ever called.
extern "C" void iqk_fa_work_buffer_size() { std::abort(); }
extern "C" void iqk_flash_attn_noalibi() { std::abort(); }

// The family descriptions and the layer-tensor table: each family names every tensor its features
// bring (and no other), families are found by their names in each format, and the table's extents
// are what allocation, listing and the parameter count use.
#include "models/family/family.h"

#include <doctest/doctest.h>

#include <set>

#include "common/error.h"
#include "models/format/model.h"

namespace fedcal {
namespace {

ModelConfig config_of(const ModelFamily& family, bool tied) {
  ModelConfig c;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 32;  // q 128 wide on a 64-wide residual: q and o extents differ from dim
  c.vocab_size = 50;
  c.max_seq_len = 16;
  c.shared_classifier = tied;
  c.set_features(family.features);
  return c;
}

TEST_CASE("every family names each tensor its features bring, and no other, once") {
  REQUIRE(model_families().size() >= 3);
  for (const ModelFamily* family : model_families()) {
    CAPTURE(family->name);
    const ModelConfig c = config_of(*family, true);
    std::set<std::string> brought, named, hf_names;
    for (const LayerTensor* tensor : layer_tensors(c)) {
      brought.insert(tensor->name);
      CHECK(family->hf_tensor_name(*tensor, 3).starts_with("model.layers.3."));
    }
    for (const auto& [ours, theirs] : family->hf_layer_tensors) {
      CHECK(named.insert(std::string(ours)).second);
      CHECK(hf_names.insert(std::string(theirs)).second);
    }
    CHECK(named == brought);
    CHECK(&family_of(c) == family);
    CHECK(find_family_by_hf_model_type(family->hf_model_type) == family);
    if (family->gguf_architecture != nullptr) CHECK(find_family_by_gguf_architecture(family->gguf_architecture) == family);
  }
  CHECK(find_family_by_hf_model_type("gpt2") == nullptr);
  CHECK(find_family_by_gguf_architecture("") == nullptr);
  // Qwen2's biases with Qwen3's norms: no family has both, and the error lists the families.
  ModelConfig both = config_of(llama_family(), true);
  both.qk_norm = both.qkv_bias = true;
  CHECK_THROWS_WITH_AS(family_of(both), doctest::Contains("q/k norms, q/k/v biases"), Error);
  CHECK_THROWS_WITH_AS(family_of(both), doctest::Contains(model_family_names().c_str()), Error);
}

TEST_CASE("the layer-tensor table: allocation, listing and the parameter count agree with its extents") {
  for (const ModelFamily* family : model_families()) {
    for (const bool tied : {true, false}) {
      CAPTURE(family->name);
      CAPTURE(tied);
      const ModelConfig c = config_of(*family, tied);
      const Model model = allocate_model(c);
      int64_t values = 0;
      for (const ConstTensorRef& tensor : list_tensors(model)) {
        CAPTURE(tensor.name);
        CHECK(tensor.data->size() == static_cast<size_t>(tensor.rows) * static_cast<size_t>(tensor.cols));
        values += static_cast<int64_t>(tensor.data->size());
      }
      CHECK(values == c.parameter_count());
      // Tensors a family lacks stay empty.
      for (const LayerTensor& tensor : layer_tensors()) {
        if (!tensor.present(c)) CHECK((model.layers[1].*tensor.member).empty());
      }
    }
  }
  // The widths that differ from dim land where they belong: q rows, o columns, one head's norm.
  const ModelConfig qwen3 = config_of(qwen3_family(), true);
  const Model model = allocate_model(qwen3);
  CHECK(model.layers[0].wq.size() == size_t{128} * 64);
  CHECK(model.layers[0].wo.size() == size_t{64} * 128);
  CHECK(model.layers[0].q_norm.size() == 32);
  CHECK(model.layers[0].wk.size() == size_t{64} * 64);
}

TEST_CASE("the layer-tensor table's roles agree with its shapes: matrices are the linears, norms and biases are vectors") {
  for (const LayerTensor& tensor : layer_tensors()) {
    CAPTURE(tensor.name);
    CHECK((tensor.role == TensorRole::kMatrix) == (tensor.rows != Extent::kOne));
    CHECK((tensor.role == TensorRole::kMatrix) == tensor.linear());
    CHECK(tensor.input.has_value() == tensor.output.has_value());
    CHECK(std::string(tensor.gguf).ends_with(tensor.role == TensorRole::kBias ? ".bias" : ".weight"));
  }
}

TEST_CASE("layer tensor names parse to their table entry and layer, anything else to none") {
  const auto wq = find_layer_tensor("layers.12.wq");
  REQUIRE(wq);
  CHECK(std::string(wq->tensor->name) == "wq");
  CHECK(wq->layer == 12);
  CHECK(wq->tensor->linear());
  CHECK(*wq->tensor->input == LayerPoint::kAttnIn);
  const auto norm = find_layer_tensor("layers.0.k_norm");
  REQUIRE(norm);
  CHECK_FALSE(norm->tensor->linear());
  for (const char* name : {"token_embedding", "classifier", "final_norm", "layers.3", "layers..wq", "layers.x.wq", "layers.-1.wq",
                           "layers.3.wz", "layers.3.wq.extra", "layers.99999999999.wq"}) {
    CAPTURE(name);
    CHECK_FALSE(find_layer_tensor(name));
  }
}

}  // namespace
}  // namespace fedcal

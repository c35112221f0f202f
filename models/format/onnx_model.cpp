#include "models/format/onnx_model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <variant>

#include "common/error.h"
#include "common/file_util.h"
#include "models/format/protobuf_writer.h"
#include "models/quant/quantization_points.h"
#include "models/quant/quantize.h"

namespace fedcal {
namespace {

// Field numbers and enums of onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto).
namespace proto {
enum ModelField { kIrVersion = 1, kProducerName = 2, kProducerVersion = 3, kModelVersion = 5, kGraph = 7, kOpsetImport = 8 };
enum OpsetField { kOpsetDomain = 1, kOpsetVersion = 2 };
enum GraphField { kNode = 1, kGraphName = 2, kInitializer = 5, kInput = 11, kOutput = 12 };
enum NodeField { kNodeInput = 1, kNodeOutput = 2, kNodeName = 3, kOpType = 4, kAttribute = 5 };
enum AttributeField { kAttrName = 1, kAttrFloat = 2, kAttrInt = 3, kAttrTensor = 5, kAttrInts = 8, kAttrType = 20 };
enum AttributeType { kTypeFloat = 1, kTypeInt = 2, kTypeTensor = 4, kTypeInts = 7 };
enum TensorField { kDims = 1, kDataType = 2, kTensorName = 8, kRawData = 9 };
enum DataType { kFloat = 1, kInt8 = 3, kInt64 = 7 };
enum ValueInfoField { kValueName = 1, kValueType = 2 };
enum TypeField { kTensorType = 1 };
enum TensorTypeField { kElemType = 1, kShape = 2 };
enum ShapeField { kDim = 1 };
enum DimensionField { kDimValue = 1, kDimParam = 2 };
}  // namespace proto

constexpr int kOpset = 17;
constexpr int kIrVersion = 8;  // the IR version of opset 17 (ONNX 1.12)
constexpr uint64_t kProtobufLimit = (uint64_t{1} << 31) - 1;

ProtoWriter tensor_proto(const std::string& name, const std::vector<int64_t>& dims, proto::DataType type,
                         std::span<const std::byte> raw) {
  ProtoWriter tensor;
  tensor.add_packed_varints(proto::kDims, dims);
  tensor.add_varint(proto::kDataType, type);
  if (!name.empty()) tensor.add_string(proto::kTensorName, name);
  tensor.add_bytes(proto::kRawData, raw);  // little-endian, as ONNX defines raw_data
  return tensor;
}

// A graph input or output: a tensor with fixed (>= 0) or named (symbolic) dimensions.
using Dimension = std::variant<int64_t, std::string>;
ProtoWriter value_info(const std::string& name, proto::DataType type, const std::vector<Dimension>& dims) {
  ProtoWriter shape;
  for (const Dimension& d : dims) {
    ProtoWriter dim;
    if (const auto* value = std::get_if<int64_t>(&d)) {
      dim.add_varint(proto::kDimValue, *value);
    } else {
      dim.add_string(proto::kDimParam, std::get<std::string>(d));
    }
    shape.add_message(proto::kDim, dim);
  }
  ProtoWriter tensor_type;
  tensor_type.add_varint(proto::kElemType, type);
  tensor_type.add_message(proto::kShape, shape);
  ProtoWriter type_proto;
  type_proto.add_message(proto::kTensorType, tensor_type);
  ProtoWriter info;
  info.add_string(proto::kValueName, name);
  info.add_message(proto::kValueType, type_proto);
  return info;
}

struct Attribute {
  std::string name;
  std::variant<int64_t, float, std::vector<int64_t>, ProtoWriter> value;  // ProtoWriter: a TensorProto
};

// Builds the graph node by node, in topological order, with the initializers it refers to.
class GraphBuilder {
 public:
  // Adds a node; returns its first output's name (`output`, or a fresh one when empty).
  std::string node(const std::string& op, const std::vector<std::string>& inputs, std::string output = {},
                   const std::vector<Attribute>& attributes = {}) {
    if (output.empty()) output = op + "_" + std::to_string(nodes_) + "_out";
    node_outputs(op, inputs, {output}, attributes);
    return output;
  }
  // A node with several outputs (Split), named `outputs`.
  void node_outputs(const std::string& op, const std::vector<std::string>& inputs, const std::vector<std::string>& outputs,
                    const std::vector<Attribute>& attributes) {
    ProtoWriter node;
    for (const std::string& input : inputs) node.add_string(proto::kNodeInput, input);
    for (const std::string& output : outputs) node.add_string(proto::kNodeOutput, output);
    node.add_string(proto::kNodeName, op + "_" + std::to_string(nodes_));
    node.add_string(proto::kOpType, op);
    for (const Attribute& attribute : attributes) node.add_message(proto::kAttribute, attribute_proto(attribute));
    graph_.add_message(proto::kNode, node);
    ++nodes_;
  }

  const std::string& floats(const std::string& name, const std::vector<int64_t>& dims, std::span<const float> values) {
    return initializer(name, dims, proto::kFloat, std::as_bytes(values));
  }
  const std::string& int8s(const std::string& name, const std::vector<int64_t>& dims, std::span<const int8_t> values) {
    return initializer(name, dims, proto::kInt8, std::as_bytes(values));
  }
  const std::string& int64s(const std::string& name, const std::vector<int64_t>& dims, std::span<const int64_t> values) {
    return initializer(name, dims, proto::kInt64, std::as_bytes(values));
  }
  // Small constants, one initializer per distinct name.
  std::string scalar(const std::string& name, float value) { return floats(name, {}, std::span(&value, 1)); }
  std::string int64_vector(const std::string& name, const std::vector<int64_t>& values) {
    return int64s(name, {static_cast<int64_t>(values.size())}, values);
  }

  int nodes() const { return nodes_; }
  int initializer_count() const { return static_cast<int>(names_.size()); }

  // GraphProto: nodes and initializers as they were added (protobuf merges a repeated field's
  // entries wherever they stand), then name, inputs, outputs.
  ProtoWriter finish(const std::string& name, const std::vector<ProtoWriter>& inputs, const std::vector<ProtoWriter>& outputs) {
    ProtoWriter graph = std::move(graph_);
    graph.add_string(proto::kGraphName, name);
    for (const ProtoWriter& input : inputs) graph.add_message(proto::kInput, input);
    for (const ProtoWriter& output : outputs) graph.add_message(proto::kOutput, output);
    return graph;
  }

 private:
  const std::string& initializer(const std::string& name, const std::vector<int64_t>& dims, proto::DataType type,
                                 std::span<const std::byte> raw) {
    const auto [it, added] = names_.insert(name);
    if (!added) return *it;
    bytes_ += raw.size();
    if (bytes_ > kProtobufLimit) fail("the ONNX graph's tensors exceed protobuf's 2 GiB limit at {} (external data is not written)", name);
    graph_.add_message(proto::kInitializer, tensor_proto(name, dims, type, raw));
    return *it;
  }

  static ProtoWriter attribute_proto(const Attribute& attribute) {
    ProtoWriter out;
    out.add_string(proto::kAttrName, attribute.name);
    if (const auto* i = std::get_if<int64_t>(&attribute.value)) {
      out.add_varint(proto::kAttrInt, *i);
      out.add_varint(proto::kAttrType, proto::kTypeInt);
    } else if (const auto* f = std::get_if<float>(&attribute.value)) {
      out.add_float(proto::kAttrFloat, *f);
      out.add_varint(proto::kAttrType, proto::kTypeFloat);
    } else if (const auto* ints = std::get_if<std::vector<int64_t>>(&attribute.value)) {
      for (int64_t v : *ints) out.add_varint(proto::kAttrInts, v);
      out.add_varint(proto::kAttrType, proto::kTypeInts);
    } else {
      out.add_message(proto::kAttrTensor, std::get<ProtoWriter>(attribute.value));
      out.add_varint(proto::kAttrType, proto::kTypeTensor);
    }
    return out;
  }

  ProtoWriter graph_;  // nodes and initializers
  std::set<std::string> names_;  // of the initializers
  uint64_t bytes_ = 0;             // of their data
  int nodes_ = 0;
};

// (cols, rows) from a row-major (rows, cols) matrix: MatMul's (in, out) from nn.Linear's (out, in).
template <typename T>
std::vector<T> transposed(const std::vector<T>& matrix, int rows, int cols) {
  std::vector<T> out(matrix.size());
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) out[size_t(c) * rows + r] = matrix[size_t(r) * cols + c];
  }
  return out;
}

// The forward pass of transformer.cpp, written as ONNX nodes.
class ModelGraph {
 public:
  ModelGraph(const Model& model, const QuantizedLinears& int8) : model_(model), c_(model.config), int8_(int8) {
    c_.validate();
    point_names_ = quantization_point_names(c_);
    for (LinearSite& site : linear_sites(c_)) sites_.emplace(site.name, std::move(site));
  }

  ProtoWriter build(OnnxExportSummary& summary) {
    const int dim = c_.dim, head_size = c_.head_size();
    const int64_t heads = c_.n_heads, kv_heads = c_.n_kv_heads, group = heads / kv_heads;

    // x (batch, seq, dim) = embedding rows of input_ids (Gemma: times sqrt(dim))
    std::string x = g_.node("Gather", {token_table(), "input_ids"}, "embedding", {{"axis", int64_t{0}}});
    if (c_.embedding_scale) x = g_.node("Mul", {x, g_.scalar("embedding_scale", std::sqrt(static_cast<float>(dim)))});

    // seq (1) = the sequence length; cos, sin (seq, 1, half, 1) of positions 0 .. seq-1;
    // mask (seq, seq) = -1e30 above the diagonal (future positions), 0 elsewhere
    const std::string shape = g_.node("Shape", {"input_ids"});
    const std::string seq = g_.node("Slice", {shape, g_.int64_vector("one", {1}), g_.int64_vector("two", {2})}, "sequence_length");
    const std::string zero = g_.int64_vector("zero", {0});
    const std::string cos_sin_axes = g_.int64_vector("axes_1_3", {1, 3});
    // (local layers: their own base, "local_rope_cos" / "local_rope_sin")
    const auto rope_tables = [&](const std::string& prefix, const ModelConfig::RopeTables& tables) {
      const std::string cos_table = g_.floats(prefix + "rope_cos_table", {c_.max_seq_len, c_.head_size() / 2}, tables.cos);
      const std::string sin_table = g_.floats(prefix + "rope_sin_table", {c_.max_seq_len, c_.head_size() / 2}, tables.sin);
      return std::pair{g_.node("Unsqueeze", {g_.node("Slice", {cos_table, zero, seq, zero}), cos_sin_axes}, prefix + "rope_cos"),
                       g_.node("Unsqueeze", {g_.node("Slice", {sin_table, zero, seq, zero}), cos_sin_axes}, prefix + "rope_sin")};
    };
    const auto [cos, sin] = rope_tables("", c_.rope_tables());
    std::string local_cos, local_sin;
    if (!c_.local_layers.empty()) std::tie(local_cos, local_sin) = rope_tables("local_", c_.local_rope_tables());
    const float masked = -1e30f;
    const std::string square = g_.node("Concat", {seq, seq}, {}, {{"axis", int64_t{0}}});
    const std::string filled = g_.node("ConstantOfShape", {square}, {},
                                       {{"value", tensor_proto("", {1}, proto::kFloat, std::as_bytes(std::span(&masked, 1)))}});
    const std::string k_one = g_.int64s("diagonal_offset", {}, std::vector<int64_t>{1});
    const std::string mask = g_.node("Trilu", {filled, k_one}, "causal_mask", {{"upper", int64_t{1}}});
    // Local layers also mask the positions `sliding_window` or more before the query (on and below
    // the -window-th diagonal).
    std::string local_mask;
    if (!c_.local_layers.empty()) {
      const std::string band =
          g_.node("Trilu", {filled, g_.int64s("window_offset", {}, std::vector<int64_t>{-int64_t{c_.sliding_window}})}, {},
                  {{"upper", int64_t{0}}});
      local_mask = g_.node("Add", {mask, band}, "sliding_window_mask");
    }
    const std::string attention_scale = g_.scalar("attention_scale", c_.attention_scale());

    for (int l = 0; l < c_.n_layers; ++l) {
      const LayerWeights& w = model_.layers[l];
      const std::string p = "layers." + std::to_string(l) + ".";
      // Attention block. xb (batch, seq, dim) = rmsnorm(x)
      const std::string xb = rmsnorm(x, norm_weights(p + "attn_norm", w.attn_norm), point(l, LayerPoint::kAttnIn));
      // Qwen2: q, k, v with their biases
      std::string q = linear(xb, p + "wq", c_.qkv_bias ? &w.bq : nullptr);  // (batch, seq, q_dim)
      std::string k = linear(xb, p + "wk", c_.qkv_bias ? &w.bk : nullptr);  // (batch, seq, kv_dim)
      const std::string v = linear(xb, p + "wv", c_.qkv_bias ? &w.bv : nullptr);

      // q (batch, seq, heads, head_size), k (batch, seq, kv_heads, head_size); Qwen3: each head RMS-normalized
      q = g_.node("Reshape", {q, g_.int64_vector("shape_heads", {0, 0, heads, head_size})});
      k = g_.node("Reshape", {k, g_.int64_vector("shape_kv_heads", {0, 0, kv_heads, head_size})});
      if (c_.qk_norm) {
        q = rmsnorm(q, norm_weights(p + "q_norm", w.q_norm), {});
        k = rmsnorm(k, norm_weights(p + "k_norm", w.k_norm), {});
      }
      // RoPE: each interleaved pair (2i, 2i+1) rotated by its position's angle (a local layer's base)
      const bool local = c_.local_layer(l);
      q = rope(q, heads, local ? local_cos : cos, local ? local_sin : sin);
      k = rope(k, kv_heads, local ? local_cos : cos, local ? local_sin : sin);

      // Grouped-query attention: query head h reads key/value head h / group.
      // q (batch, kv_heads, group, seq, head_size), k^T (batch, kv_heads, 1, head_size, seq), v (batch, kv_heads, 1, seq, head_size)
      q = g_.node("Transpose", {g_.node("Reshape", {q, g_.int64_vector("shape_groups", {0, 0, kv_heads, group, head_size})})}, {},
                  {{"perm", std::vector<int64_t>{0, 2, 3, 1, 4}}});
      const std::string kv_shape = g_.int64_vector("shape_kv_groups", {0, 0, kv_heads, 1, head_size});
      const std::string k_t = g_.node("Transpose", {g_.node("Reshape", {k, kv_shape})}, {}, {{"perm", std::vector<int64_t>{0, 2, 3, 4, 1}}});
      const std::string v_t = g_.node("Transpose", {g_.node("Reshape", {v, kv_shape})}, {}, {{"perm", std::vector<int64_t>{0, 2, 3, 1, 4}}});
      // scores (batch, kv_heads, group, seq, seq) = softmax(q k^T * attention_scale + mask)
      std::string scores = g_.node("Mul", {g_.node("MatMul", {q, k_t}), attention_scale});
      scores = g_.node("Softmax", {g_.node("Add", {scores, local ? local_mask : mask})}, {}, {{"axis", int64_t{-1}}});
      // attn_out (batch, seq, q_dim) = scores v, heads side by side
      const std::string context = g_.node("Transpose", {g_.node("MatMul", {scores, v_t})}, {}, {{"perm", std::vector<int64_t>{0, 3, 1, 2, 4}}});
      const std::string attn_out =
          g_.node("Reshape", {context, g_.int64_vector("shape_q_dim", {0, 0, c_.q_dim()})}, point(l, LayerPoint::kAttnOut));
      std::string attention = linear(attn_out, p + "wo");
      if (c_.post_norms) attention = rmsnorm(attention, norm_weights(p + "post_attn_norm", w.post_attn_norm), {});  // Gemma
      x = g_.node("Add", {x, attention}, p + "attention_residual");

      // Feed-forward block: x += w2(act(w1(xb)) * w3(xb)), xb = rmsnorm(x); act SiLU, or Gemma's tanh GELU
      // x sigmoid(2 sqrt(2 / pi) (x + 0.044715 x^3))
      const std::string xf = rmsnorm(x, norm_weights(p + "ffn_norm", w.ffn_norm), point(l, LayerPoint::kFfnIn));
      const std::string gate = linear(xf, p + "w1");  // (batch, seq, hidden)
      const std::string up = linear(xf, p + "w3");
      std::string activated;
      if (c_.gelu_tanh) {
        const std::string cube = g_.node("Mul", {g_.node("Mul", {gate, gate}), gate});
        const std::string inner = g_.node("Add", {gate, g_.node("Mul", {cube, g_.scalar("gelu_cubic", 0.044715f)})});
        activated = g_.node(
            "Mul", {gate, g_.node("Sigmoid", {g_.node("Mul", {inner, g_.scalar("gelu_scale", 2.0f * 0.7978845608028654f)})})});
      } else {
        activated = g_.node("Mul", {gate, g_.node("Sigmoid", {gate})});
      }
      const std::string hidden = g_.node("Mul", {activated, up}, point(l, LayerPoint::kFfnHidden));
      std::string ffn = linear(hidden, p + "w2");
      if (c_.post_norms) ffn = rmsnorm(ffn, norm_weights(p + "post_ffn_norm", w.post_ffn_norm), {});  // Gemma
      x = g_.node("Add", {x, ffn}, p + "ffn_residual");
    }

    // logits (batch, seq, vocab) = classifier(rmsnorm(x))
    const std::string final_in = rmsnorm(x, norm_weights("final_norm", model_.final_norm), point_names_[final_in_point(c_)]);
    linear(final_in, "classifier");

    summary.int8_linears = int8_count_;
    summary.fp32_linears = fp32_count_;
    summary.nodes = g_.nodes();
    summary.initializers = g_.initializer_count();
    const std::vector<ProtoWriter> inputs = {value_info("input_ids", proto::kInt64, {std::string("batch"), std::string("sequence")})};
    const std::vector<ProtoWriter> outputs = {
        value_info("logits", proto::kFloat, {std::string("batch"), std::string("sequence"), int64_t{c_.vocab_size}})};
    return g_.finish("fedcal", inputs, outputs);
  }

 private:
  std::string point(int layer, LayerPoint p) const { return point_names_[static_cast<size_t>(layer_point(layer, p))]; }

  // The (vocab, dim) table the Gather reads: INT8 dequantized per row or tensor when the engine's is.
  std::string token_table() {
    const QuantizedLinear* table = int8_token_table(int8_, c_.shared_classifier);
    const int64_t vocab = c_.vocab_size, dim = c_.dim;
    if (table == nullptr) {
      if (model_.token_embedding.size() != size_t(vocab * dim)) fail("token_embedding: no FP32 values and no INT8 table");
      return g_.floats("token_embedding", {vocab, dim}, model_.token_embedding);
    }
    const QuantizedMatrix& q = table->weights;
    if (q.rows != vocab || q.cols != dim) fail("token_embedding: the INT8 table is ({}, {}), the model needs ({}, {})", q.rows, q.cols, vocab, dim);
    if (q.per_group()) fail("token_embedding: a table in weight groups has no ONNX form here");
    const std::string values = g_.int8s("token_embedding_int8", {vocab, dim}, q.values);
    const std::vector<int8_t> zero_points(q.scales.size(), 0);
    const std::vector<int64_t> scale_dims = q.per_channel() ? std::vector<int64_t>{vocab} : std::vector<int64_t>{};
    return g_.node("DequantizeLinear",
                   {values, g_.floats("token_embedding_scale", scale_dims, q.scales),
                    g_.int8s("token_embedding_zero_point", scale_dims, zero_points)},
                   "token_embedding", {{"axis", int64_t{0}}});
  }

  // A norm's weights as the graph multiplies by them: w, or Gemma's (1 + w).
  std::string norm_weights(const std::string& name, const std::vector<float>& weights) {
    const std::vector<float> scale = c_.norm_multipliers(weights);
    return g_.floats(name, {static_cast<int64_t>(scale.size())}, scale);
  }

  // x * (1 / sqrt(mean(x^2) + eps)) * weight over the last axis
  std::string rmsnorm(const std::string& x, const std::string& weight, const std::string& output) {
    const std::string mean_square = g_.node("ReduceMean", {g_.node("Mul", {x, x})}, {}, {{"axes", std::vector<int64_t>{-1}}, {"keepdims", int64_t{1}}});
    const std::string rms = g_.node("Sqrt", {g_.node("Add", {mean_square, g_.scalar("norm_eps", c_.norm_eps)})});
    return g_.node("Mul", {g_.node("Div", {x, rms}), weight}, output);
  }

  // x (batch, seq, heads, head_size) with each pair (a, b) = (x[2i], x[2i+1]) turned into
  // (a cos - b sin, a sin + b cos); cos, sin (seq, 1, half, 1)
  std::string rope(const std::string& x, int64_t heads, const std::string& cos, const std::string& sin) {
    const int64_t half = c_.head_size() / 2;
    const std::string id = std::to_string(g_.nodes());
    // pairs (batch, seq, heads, half, 2) -> a, b (batch, seq, heads, half, 1)
    const std::string pairs = g_.node("Reshape", {x, g_.int64_vector("shape_pairs_" + std::to_string(heads), {0, 0, heads, half, 2})});
    const std::string a = "rope_a_" + id, b = "rope_b_" + id;
    g_.node_outputs("Split", {pairs}, {a, b}, {{"axis", int64_t{-1}}});
    const std::string rotated_a = g_.node("Sub", {g_.node("Mul", {a, cos}), g_.node("Mul", {b, sin})});
    const std::string rotated_b = g_.node("Add", {g_.node("Mul", {a, sin}), g_.node("Mul", {b, cos})});
    const std::string rotated = g_.node("Concat", {rotated_a, rotated_b}, {}, {{"axis", int64_t{-1}}});
    return g_.node("Reshape", {rotated, g_.int64_vector("shape_rotated_" + std::to_string(heads), {0, 0, heads, c_.head_size()})});
  }

  // One linear layer, y (batch, seq, out) = x W^T, named as its output quantization point: an FP32
  // MatMul by W^T (in, out), or its QDQ form when `int8_` has the layer (the activation quantized at
  // its input and output scales as the engine's LinearInt8 does; the weights' DequantizeLinear on
  // axis 1, the output channels). A bias (out) is added before the output is quantized, as the engine
  // folds it into the accumulator.
  std::string linear(const std::string& x, const std::string& name, const std::vector<float>* bias = nullptr) {
    const LinearSite& site = sites_.at(name);
    const int rows = point_width(c_, site.output_point), cols = point_width(c_, site.input_point);
    const std::string& output = point_names_[static_cast<size_t>(site.output_point)];
    const auto it = int8_.find(name);
    if (it == int8_.end()) {
      const std::vector<float>& weights = linear_weights(model_, name);
      if (weights.size() != size_t(rows) * cols) fail("{}: no FP32 weights of ({}, {}) and no INT8 layer", name, rows, cols);
      ++fp32_count_;
      const std::string product = g_.node("MatMul", {x, g_.floats(name + ".weight_t", {cols, rows}, transposed(weights, rows, cols))},
                                          bias ? std::string() : output);
      return bias ? g_.node("Add", {product, g_.floats(name + ".bias", {rows}, *bias)}, output) : product;
    }
    const QuantizedLinear& layer = it->second;
    const QuantizedMatrix& q = layer.weights;
    if (q.per_group()) fail("{}: weights in groups have no ONNX QDQ form here (DequantizeLinear blocks need opset 21)", name);
    if (q.rows != rows || q.cols != cols) fail("{}: INT8 weights are ({}, {}), the model needs ({}, {})", name, q.rows, q.cols, rows, cols);
    q.check(name);
    ++int8_count_;
    auto quantize_dequantize = [&](const std::string& value, const QuantParams& params, const std::string& what, const std::string& out) {
      const int8_t zero_point = static_cast<int8_t>(params.zero_point);
      const std::string scale = g_.scalar(name + "." + what + "_scale", params.scale);
      const std::string zero = g_.int8s(name + "." + what + "_zero_point", {}, std::span(&zero_point, 1));
      return g_.node("DequantizeLinear", {g_.node("QuantizeLinear", {value, scale, zero}), scale, zero}, out);
    };
    const std::string x_dq = quantize_dequantize(x, layer.input, "input", {});
    const std::vector<int64_t> scale_dims = q.per_channel() ? std::vector<int64_t>{q.rows} : std::vector<int64_t>{};
    const std::vector<int8_t> zero_points(q.scales.size(), 0);
    const std::string w_dq = g_.node("DequantizeLinear",
                                     {g_.int8s(name + ".weight_t_int8", {q.cols, q.rows}, transposed(q.values, q.rows, q.cols)),
                                      g_.floats(name + ".weight_scale", scale_dims, q.scales),
                                      g_.int8s(name + ".weight_zero_point", scale_dims, zero_points)},
                                     {}, {{"axis", int64_t{1}}});
    std::string y = g_.node("MatMul", {x_dq, w_dq}, output + (bias ? "_product" : "_fp32"));
    if (bias) y = g_.node("Add", {y, g_.floats(name + ".bias", {rows}, *bias)}, output + "_fp32");
    return quantize_dequantize(y, layer.output, "output", output);
  }

  const Model& model_;
  ModelConfig c_;
  const QuantizedLinears& int8_;
  std::vector<std::string> point_names_;
  std::map<std::string, LinearSite> sites_;  // by linear name
  GraphBuilder g_;
  int int8_count_ = 0, fp32_count_ = 0;
};

}  // namespace

std::vector<std::byte> onnx_from_model(const Model& model, const QuantizedLinears& int8, OnnxExportSummary* summary) {
  OnnxExportSummary counts;
  ModelGraph graph(model, int8);
  const ProtoWriter graph_proto = graph.build(counts);

  ProtoWriter opset;
  opset.add_string(proto::kOpsetDomain, "");
  opset.add_varint(proto::kOpsetVersion, kOpset);
  ProtoWriter model_proto;
  model_proto.add_varint(proto::kIrVersion, kIrVersion);
  model_proto.add_string(proto::kProducerName, "fedcal");
  model_proto.add_string(proto::kProducerVersion, "1");
  model_proto.add_varint(proto::kModelVersion, 1);
  model_proto.add_message(proto::kGraph, graph_proto);
  model_proto.add_message(proto::kOpsetImport, opset);
  if (model_proto.size() > kProtobufLimit) fail("the ONNX model is over protobuf's 2 GiB limit (external data is not written)");
  counts.bytes = model_proto.size();
  if (summary != nullptr) *summary = counts;
  return std::move(model_proto).take();
}

OnnxExportSummary write_onnx_model(const std::string& path, const Model& model, const QuantizedLinears& int8) {
  OnnxExportSummary summary;
  const std::vector<std::byte> bytes = with_context([&] { return path; }, [&] { return onnx_from_model(model, int8, &summary); });
  write_file_atomically(path, bytes);
  return summary;
}

}  // namespace fedcal

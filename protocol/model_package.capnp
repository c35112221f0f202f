# The manifest of a fedcal model package (models/model_package.h describes the file around it).
@0xf471c0148ebab2dd;

$import "/capnp/c++.capnp".namespace("fedcal::schema");

const packageFormatVersion :UInt32 = 1;

struct ModelPackage {
  formatVersion @0 :UInt32;
  # packageFormatVersion of the writer; readers refuse versions they do not know.

  architecture @1 :Architecture;
  # The transformer's shape.

  tensors @2 :List(Tensor);
  # Every tensor stored in the data region, in data order.

  calibration @3 :Calibration;
  # How the INT8 scales were computed; absent (default) for an FP32 package.

  tokenizer @4 :Tokenizer;
  # The tokenizer the model was trained with, stored whole.

  sourceModelSha256 @5 :Text;
  # Fingerprint (models/calibration.h model_fingerprint) of the FP32 weights the package came from.
}

struct Architecture {
  dim @0 :Int32;
  # Residual stream width.
  hiddenDim @1 :Int32;
  # SwiGLU feed-forward width.
  nLayers @2 :Int32;
  # Transformer blocks.
  nHeads @3 :Int32;
  # Query heads.
  nKvHeads @4 :Int32;
  # Key/value heads.
  vocabSize @5 :Int32;
  # Embedding rows.
  maxSeqLen @6 :Int32;
  # Context length.
  normEps @7 :Float32;
  # RMSNorm epsilon.
  ropeTheta @8 :Float32;
  # Rotary embedding base.
  sharedClassifier @9 :Bool;
  # Output head tied to the token embedding.
  ropeScalingFactor @10 :Float32;
  # Llama 3 RoPE frequency scaling (0: none; model_config.h RopeScaling).
  ropeLowFreqFactor @11 :Float32;
  ropeHighFreqFactor @12 :Float32;
  ropeOriginalMaxSeqLen @13 :Int32;
  headDim @14 :Int32;
  # Width of each attention head, when not dim / nHeads (0: dim / nHeads).
  qkNorm @15 :Bool;
  # Each head of q and k RMS-normalized before RoPE (tensors layers.N.q_norm, layers.N.k_norm).
  qkvBias @16 :Bool;
  # Biases added to q, k and v (FP32 tensors layers.N.bq, layers.N.bk, layers.N.bv; Qwen2).
  postNorms @17 :Bool;
  # Each block's output RMS-normalized before its residual add (layers.N.post_attn_norm,
  # layers.N.post_ffn_norm; Gemma 3).
  normPlusOne @18 :Bool;
  # Every RMSNorm scales by (1 + weight) (Gemma).
  embeddingScale @19 :Bool;
  # Token embeddings multiplied by sqrt(dim) (Gemma).
  geluTanh @20 :Bool;
  # GeGLU with tanh-approximated GELU in place of SwiGLU (Gemma).
  queryScaleDim @21 :Float32;
  # Attention scores are q.k / sqrt(queryScaleDim) (0: the head size; Gemma's query_pre_attn_scalar).
  slidingWindow @22 :Int32;
  # Positions a local layer attends to, itself included (0 without local layers).
  localLayers @23 :List(Bool);
  # One per layer, true where the layer is local (sliding-window attention, ropeLocalTheta); empty:
  # every layer global.
  ropeLocalTheta @24 :Float32;
  # Local layers' rotary embedding base (unscaled).
  ropeLinearFactor @25 :Float32;
  # Linear RoPE scaling (Gemma 3 4B and up): every rotation rate of the global layers divided by it
  # (0: none).
}

enum TensorType {
  f32 @0;
  # FP32 values.
  qint8 @1;
  # INT8 weights with one scale for the tensor (symmetric, zero point 0).
  qcint8 @2;
  # INT8 weights with one scale per row (output channel).
  qgint8 @3;
  # INT8 weights with one scale per 32 input channels of each row (row-major (rows, ceil(cols / 32))
  # scales in binary16, Tensor.groupScales; llama.cpp Q8_0's blocks). Such a layer runs with
  # activations quantized at run time per block of 32 channels (the fine-grained mode): its input
  # and output scales are not used.
  qgint4 @4;
  # 4-bit weights (models/quant/int4_format.h): per row and group of 32 input channels, 16 bytes of
  # codes (byte m: channel m in the low nibble, m + 16 in the high one; code c is the level c - 8) and
  # one binary16 scale of either sign in groupScales, (rows, cols / 32) row-major; cols is a multiple
  # of 32. Runs as qgint8 does (activations per block of 32 at run time).
  qgnl4 @5;
  # As qgint4, with code c standing for the non-uniform level c of models/quant/int4_format.h
  # (kInt4NonUniformLevels: -127 ... 112).
  qgint5 @6;
  # 5-bit weights (models/quant/int5_format.h): per row and group of 32 input channels, 20 bytes of
  # codes (4 bytes whose bit m of the little-endian word is channel m's fifth bit, then 16 bytes as
  # qgint4's with the low 4 bits; code c is the level c - 16: llama.cpp Q5_0's block without its
  # scale) and one binary16 scale of either sign in groupScales; cols is a multiple of 32. Runs as
  # qgint8 does.
  qgnl5 @7;
  # As qgint5, with code c standing for the non-uniform level c of models/quant/int5_format.h
  # (kInt5NonUniformLevels: -127 ... 120).
}

struct Tensor {
  name @0 :Text;
  # fedcal's tensor name: "token_embedding", "layers.3.wq", "final_norm", "classifier", ...
  type @1 :TensorType;
  # Storage type of the values.
  rows @2 :UInt32;
  # Rows (1 for vectors).
  cols @3 :UInt32;
  # Columns.
  offset @4 :UInt64;
  # Byte offset of the values from the start of the data region (64-byte aligned).
  size @5 :UInt64;
  # Byte length of the values.
  weightScales @6 :List(Float32);
  # qint8: one scale; qcint8: one per row.
  inputScale @7 :Float32;
  # INT8 linear layers: scale of the activation entering the layer.
  inputZeroPoint @8 :Int32;
  # INT8 linear layers: zero point of the input activation.
  outputScale @9 :Float32;
  # INT8 linear layers: scale of the INT8 output.
  outputZeroPoint @10 :Int32;
  # INT8 linear layers: zero point of the INT8 output.
  groupScales @11 :List(UInt16);
  # qgint8: the scales as IEEE binary16 bit patterns (weightScales is then empty; packages written
  # before 2026-12-01 hold them as Float32 in weightScales, which is still read).
}

struct Calibration {
  method @0 :Text;
  # Scale method, e.g. "percentile:99.99"; empty for FP32 packages.
  perChannel @1 :Bool;
  # Weights quantized per output channel.
  asymmetric @2 :Bool;
  # Activations with zero points.
  sequences @3 :UInt64;
  # Calibration sequences behind the statistics.
  tokens @4 :UInt64;
  # Calibration tokens behind the statistics.
  statsSha256 @5 :Text;
  # SHA-256 of the statistics file the scales came from.
  keepFp32 @6 :List(Text);
  # Linear layers left in FP32.
}

struct Tokenizer {
  kind @0 :Text;
  # "llama2c" (tokenizer.bin), "sentencepiece" (tokenizer.model), "hf-json" (tokenizer.json); empty if none.
  data @1 :Data;
  # The tokenizer file's bytes.
}

#include "models/quant/linear_dynamic_int8.h"

#include <pthreadpool.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "models/engine/vector_math.h"
#include "models/quant/int4_format.h"

namespace fedcal {
namespace {

// Output rows per task (two packed groups): small enough to spread a 576-row projection over a few
// threads, large enough that a task's bookkeeping is noise next to its products.
constexpr int kGroupsPerTask = 2;
constexpr size_t kRowsPerTask = size_t{kGroupsPerTask} * kPackedRows;

// The symmetric per-token scale of a row whose largest magnitude is `max_abs`; an all-zero row
// quantizes to zeros under any scale.
float token_scale(float max_abs) { return max_abs > 0.0f && std::isfinite(max_abs) ? max_abs / 127.0f : 1.0f; }

static_assert(kWeightGroup == kActivationBlock, "weight groups and activation blocks line up");

struct Task {
  const PackedInt8* weights;
  const float* row_scales;  // per tensor / per channel weights, else null
  const int8_t* input_q;    // (batch, padded cols)
  const int32_t* block_sums;  // (batch, blocks)
  const float* input_scales;  // (batch) or (batch, blocks)
  bool block_kernel;
  size_t batch;
  float* output;
};

void run_rows(void* context, size_t task_index) {
  const Task& task = *static_cast<const Task*>(context);
  const PackedInt8& w = *task.weights;
  const size_t rows = static_cast<size_t>(w.rows), cols = static_cast<size_t>(w.padded_cols()), blocks = static_cast<size_t>(w.blocks());
  const size_t first = task_index * kRowsPerTask, count = std::min(kRowsPerTask, rows - first);
  const int first_group = static_cast<int>(task_index) * kGroupsPerTask;
  const int groups = static_cast<int>((count + kPackedRows - 1) / kPackedRows);
  for (size_t t = 0; t < task.batch; ++t) {
    float* out = task.output + t * rows + first;
    const int8_t* x = task.input_q + t * cols;
    const int32_t* sums = task.block_sums + t * blocks;
    if (task.block_kernel) {
      float results[kRowsPerTask];
      dot_int8_packed_blocks(w, x, sums, task.input_scales + t * blocks, first_group, groups, results);
      for (size_t r = 0; r < count; ++r) out[r] = task.row_scales != nullptr ? results[r] * task.row_scales[first + r] : results[r];
    } else {
      int32_t results[kRowsPerTask];
      dot_int8_packed(w, x, sums, first_group, groups, results);
      for (size_t r = 0; r < count; ++r) out[r] = static_cast<float>(results[r]) * (task.input_scales[t] * task.row_scales[first + r]);
    }
  }
}

}  // namespace

LinearDynamicInt8::LinearDynamicInt8(const QuantizedMatrix& weights, std::string name, std::vector<float> bias,
                                     ActivationScales scales, std::optional<Int8Kernel> kernel,
                                     std::shared_ptr<DynamicInt8Scratch> scratch)
    : name_(std::move(name)),
      bias_(std::move(bias)),
      scales_(scales),
      scratch_(scratch != nullptr ? std::move(scratch) : std::make_shared<DynamicInt8Scratch>()) {
  weights.check(name_);
  if (!bias_.empty() && bias_.size() != static_cast<size_t>(weights.rows))
    fail("{}: bias has {} values for {} outputs", name_, bias_.size(), weights.rows);
  if (!weights.per_group()) {
    for (int r = 0; r < weights.rows; ++r) row_scales_.push_back(weights.row_scale(r));
  }
  try {
    const auto row_values = [&weights](int row, int8_t* out) { weight_row_values(weights, row, out); };
    std::vector<float> group_scales(weights.group_scales.size());
    for (size_t i = 0; i < group_scales.size(); ++i) group_scales[i] = f16_to_f32(weights.group_scales[i]);
    weights_ =
        pack_int8(row_values, weights.rows, weights.cols, weights.per_group() ? group_scales.data() : nullptr,
                  kernel.value_or(int8_kernels_supported().front()), weights.bits == 4 ? &int4_levels(weights.grid) : nullptr);
  } catch (const Error& e) {
    fail("{}: {}", name_, e.what());
  }
}

void LinearDynamicInt8::dequantize_row(int row, int8_t* values, float* out) const {
  packed_row_values(weights_, row, values);
  const int cols = weights_.cols;
  if (row_scales_.empty()) {  // one scale per group of the row
    for (int begin = 0, block = 0; begin < cols; begin += kActivationBlock, ++block)
      dequantize_int8(values + begin, out + begin, std::min(kActivationBlock, cols - begin),
                      packed_group_scale(weights_, row, block), 0);
  } else {
    dequantize_int8(values, out, static_cast<size_t>(cols), row_scales_[static_cast<size_t>(row)], 0);
  }
}

void LinearDynamicInt8::run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) {
  const size_t cols = static_cast<size_t>(weights_.cols), rows = static_cast<size_t>(weights_.rows);
  const size_t padded = static_cast<size_t>(weights_.padded_cols()), blocks = static_cast<size_t>(weights_.blocks());
  const bool per_block = scales_ == ActivationScales::kPerBlock;
  // Grouped weights run on the block kernel whatever the activations: a per-token scale is then
  // repeated for each of the token's blocks.
  const bool block_kernel = per_block || !weights_.group_scales.empty();
  std::vector<int8_t>& input_q = scratch_->input_q;
  std::vector<float>& input_scales = scratch_->input_scales;
  std::vector<int32_t>& block_sums = scratch_->block_sums;
  if (input_q.size() < batch * padded) input_q.resize(batch * padded);
  if (input_scales.size() < batch * blocks) input_scales.resize(batch * blocks);
  if (block_sums.size() < batch * blocks) block_sums.resize(batch * blocks);
  // Per token: its scale(s), its INT8 values padded with zeros to whole blocks, and each block's sum
  // (on the calling thread: one pass over the row).
  for (size_t t = 0; t < batch; ++t) {
    const float* x = input + t * cols;
    int8_t* q = input_q.data() + t * padded;
    if (per_block) {
      for (size_t b = 0; b < blocks; ++b) {
        const size_t begin = b * kActivationBlock, length = std::min<size_t>(kActivationBlock, cols - begin);
        const float scale = token_scale(max_abs(x + begin, length));
        input_scales[t * blocks + b] = scale;
        quantize_int8(x + begin, q + begin, length, scale, 0);
      }
    } else {
      const float scale = token_scale(max_abs(x, cols));
      quantize_int8(x, q, cols, scale, 0);
      if (block_kernel) {
        std::fill_n(input_scales.begin() + static_cast<std::ptrdiff_t>(t * blocks), blocks, scale);
      } else {
        input_scales[t] = scale;
      }
    }
    std::fill(q + cols, q + padded, int8_t{0});
    int8_block_sums(q, static_cast<int>(blocks), block_sums.data() + t * blocks);
  }
  Task task{&weights_,
            row_scales_.empty() ? nullptr : row_scales_.data(),
            input_q.data(),
            block_sums.data(),
            input_scales.data(),
            block_kernel,
            batch,
            output};
  pthreadpool_parallelize_1d(runtime.threadpool(), run_rows, &task, (rows + kRowsPerTask - 1) / kRowsPerTask, /*flags=*/0);
  if (!bias_.empty()) {
    for (size_t t = 0; t < batch; ++t) add_into(output + t * rows, bias_.data(), rows);
  }
}

std::vector<float> reference_linear_dynamic_int8(const QuantizedMatrix& w, const std::vector<float>& input, size_t batch,
                                                 ActivationScales scales) {
  const size_t cols = static_cast<size_t>(w.cols), rows = static_cast<size_t>(w.rows);
  const size_t piece = scales == ActivationScales::kPerBlock ? static_cast<size_t>(kActivationBlock) : cols;
  std::vector<float> out(batch * rows);
  std::vector<int8_t> row(cols);  // one weight row's INT8 values (or 4-bit levels)
  for (size_t t = 0; t < batch; ++t) {
    // Each activation piece's scale and INT8 values: x times the reciprocal of the scale, rounded half
    // to even (the arithmetic of quantize_int8).
    std::vector<int64_t> q(cols);
    std::vector<double> x_scale(cols);
    for (size_t begin = 0; begin < cols; begin += piece) {
      const size_t end = std::min(cols, begin + piece);
      float max = 0.0f;
      for (size_t c = begin; c < end; ++c) max = std::max(max, std::fabs(input[t * cols + c]));
      const float scale = token_scale(max);
      const float inverse = 1.0f / scale;
      for (size_t c = begin; c < end; ++c) {
        q[c] = static_cast<int64_t>(std::clamp(std::nearbyint(input[t * cols + c] * inverse), -128.0f, 127.0f));
        x_scale[c] = scale;
      }
    }
    // Exact integer sums over each block of 32 channels (within which both scales are constant).
    for (size_t r = 0; r < rows; ++r) {
      weight_row_values(w, static_cast<int>(r), row.data());
      double sum = 0;
      for (size_t begin = 0; begin < cols; begin += kActivationBlock) {
        const size_t end = std::min<size_t>(cols, begin + kActivationBlock);
        int64_t block = 0;
        for (size_t c = begin; c < end; ++c) block += q[c] * row[c];
        sum += static_cast<double>(block) * x_scale[begin] * w.scale_at(static_cast<int>(r), static_cast<int>(begin));
      }
      out[t * rows + r] = static_cast<float>(sum);
    }
  }
  return out;
}

}  // namespace fedcal

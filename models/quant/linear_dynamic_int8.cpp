#include "models/quant/linear_dynamic_int8.h"

#include <pthreadpool.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "models/engine/vector_math.h"

namespace fedcal {
namespace {

// Output rows per task: small enough to spread a 576-row projection over a few threads, large
// enough that a task's bookkeeping is noise next to its products.
constexpr size_t kRowsPerTask = 32;
constexpr size_t kMaxCols = size_t{1} << 17;  // dot_int8_rows' bound for exact INT32 sums

// The symmetric per-token scale of a row whose largest magnitude is `max_abs`; an all-zero row
// quantizes to zeros under any scale.
float token_scale(float max_abs) { return max_abs > 0.0f && std::isfinite(max_abs) ? max_abs / 127.0f : 1.0f; }

struct Task {
  const QuantizedMatrix* weights;
  const float* row_scales;
  const int8_t* input_q;
  const float* input_scales;
  size_t batch;
  float* output;
};

void run_rows(void* context, size_t task_index) {
  const Task& task = *static_cast<const Task*>(context);
  const QuantizedMatrix& w = *task.weights;
  const size_t rows = static_cast<size_t>(w.rows), cols = static_cast<size_t>(w.cols);
  const size_t first = task_index * kRowsPerTask, count = std::min(kRowsPerTask, rows - first);
  int32_t sums[kRowsPerTask];
  for (size_t t = 0; t < task.batch; ++t) {
    dot_int8_rows(task.input_q + t * cols, w.values.data() + first * cols, static_cast<int>(count), static_cast<int>(cols), sums);
    float* out = task.output + t * rows + first;
    for (size_t r = 0; r < count; ++r) out[r] = static_cast<float>(sums[r]) * (task.input_scales[t] * task.row_scales[first + r]);
  }
}

}  // namespace

LinearDynamicInt8::LinearDynamicInt8(QuantizedMatrix weights, std::string name, std::vector<float> bias)
    : name_(std::move(name)), weights_(std::move(weights)), bias_(std::move(bias)) {
  weights_.check(name_);
  if (!bias_.empty() && bias_.size() != static_cast<size_t>(weights_.rows))
    fail("{}: bias has {} values for {} outputs", name_, bias_.size(), weights_.rows);
  if (static_cast<size_t>(weights_.cols) > kMaxCols) fail("{}: {} input channels (dynamic INT8 takes at most {})", name_, weights_.cols, kMaxCols);
  for (int r = 0; r < weights_.rows; ++r) row_scales_.push_back(weights_.row_scale(r));
}

void LinearDynamicInt8::run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) {
  const size_t cols = static_cast<size_t>(weights_.cols), rows = static_cast<size_t>(weights_.rows);
  if (input_q_.size() < batch * cols) input_q_.resize(batch * cols);
  if (input_scales_.size() < batch) input_scales_.resize(batch);
  // Per token: its scale, and its INT8 row (on the calling thread: a row is one pass over dim floats).
  for (size_t t = 0; t < batch; ++t) {
    input_scales_[t] = token_scale(max_abs(input + t * cols, cols));
    quantize_int8(input + t * cols, input_q_.data() + t * cols, cols, input_scales_[t], 0);
  }
  Task task{&weights_, row_scales_.data(), input_q_.data(), input_scales_.data(), batch, output};
  pthreadpool_parallelize_1d(runtime.threadpool(), run_rows, &task, (rows + kRowsPerTask - 1) / kRowsPerTask, /*flags=*/0);
  if (!bias_.empty()) {
    for (size_t t = 0; t < batch; ++t) add_into(output + t * rows, bias_.data(), rows);
  }
}

std::vector<float> reference_linear_dynamic_int8(const QuantizedMatrix& w, const std::vector<float>& input, size_t batch) {
  const size_t cols = static_cast<size_t>(w.cols), rows = static_cast<size_t>(w.rows);
  std::vector<float> out(batch * rows);
  for (size_t t = 0; t < batch; ++t) {
    float max = 0.0f;
    for (size_t c = 0; c < cols; ++c) max = std::max(max, std::fabs(input[t * cols + c]));
    const float scale = token_scale(max);
    // x times the reciprocal of the scale, rounded half to even: the arithmetic of quantize_int8.
    const float inverse = 1.0f / scale;
    std::vector<int64_t> q(cols);
    for (size_t c = 0; c < cols; ++c) q[c] = static_cast<int64_t>(std::clamp(std::nearbyint(input[t * cols + c] * inverse), -128.0f, 127.0f));
    for (size_t r = 0; r < rows; ++r) {
      int64_t sum = 0;
      for (size_t c = 0; c < cols; ++c) sum += q[c] * w.values[r * cols + c];
      out[t * rows + r] = static_cast<float>(static_cast<double>(sum) * scale * w.row_scale(static_cast<int>(r)));
    }
  }
  return out;
}

}  // namespace fedcal

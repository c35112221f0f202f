// RAII owners for XNNPACK: the library initialisation with its thread pool, and one FP32 fully
// connected operator per weight matrix (create once, setup per batch size, run).
#pragma once

#include <xnnpack.h>

#include <cstddef>
#include <memory>
#include <string>

struct pthreadpool;

namespace fedcal {

// Throws Error "<what>: XNNPACK <operation> failed: <status name>" unless status is success.
void check_xnn(xnn_status status, const std::string& operation, const std::string& what);

// Inference threads when the user leaves the choice to us (threads = 0): one per kParametersPerThread
// parameters of the model, at most the physical cores. A small model runs on one thread: handing each
// operator of a token to a pool costs more than it saves, and a pool whose threads spin while a peer
// is descheduled makes a busy machine hundreds of times slower (3.9 vs ~2,250 tokens/s for the
// project's 1.8M-parameter model on a loaded 2-core box).
inline constexpr int64_t kParametersPerThread = 16'000'000;
int default_threads(int64_t parameters);
// `requested` if above 0, else default_threads(parameters).
int resolve_threads(int requested, int64_t parameters);

class XnnRuntime {
 public:
  // threads == 1 runs everything on the calling thread.
  explicit XnnRuntime(int threads);
  ~XnnRuntime();
  XnnRuntime(const XnnRuntime&) = delete;
  XnnRuntime& operator=(const XnnRuntime&) = delete;

  pthreadpool* threadpool() const { return threadpool_; }
  int threads() const { return threads_; }

 private:
  int threads_;
  pthreadpool* threadpool_ = nullptr;
};

// A linear layer of the forward pass: y (batch, out) = x (batch, in) * W^T, FP32 in and out whatever
// the format inside. Input buffers must have XNN_EXTRA_BYTES readable past their end.
class Linear {
 public:
  virtual ~Linear() = default;
  virtual void run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) = 0;
  // Bytes of weights one run reads (whatever the batch).
  virtual size_t weight_bytes() const = 0;
};

// An owned XNNPACK operator (deleted with the owner).
class XnnOperator {
 public:
  XnnOperator() = default;
  ~XnnOperator();
  XnnOperator(const XnnOperator&) = delete;
  XnnOperator& operator=(const XnnOperator&) = delete;
  xnn_operator_t* out() { return &op_; }
  xnn_operator_t get() const { return op_; }

 private:
  xnn_operator_t op_ = nullptr;
};

// FP32 weights W row-major (out, in), and a bias (out) when not null; XNNPACK packs both at creation.
class LinearF32 : public Linear {
 public:
  LinearF32(const float* weights, size_t in_features, size_t out_features, std::string name, const float* bias = nullptr);
  void run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) override;
  size_t weight_bytes() const override { return weight_bytes_; }

 private:
  std::string name_;
  size_t weight_bytes_;
  XnnOperator op_;
};

}  // namespace fedcal

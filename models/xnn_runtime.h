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

// y (batch, out) = x (batch, in) * W^T, W row-major (out, in); XNNPACK packs W at creation.
// Input buffers must have XNN_EXTRA_BYTES readable past their end.
class LinearF32 {
 public:
  LinearF32(const float* weights, size_t in_features, size_t out_features, std::string name);
  ~LinearF32();
  LinearF32(const LinearF32&) = delete;
  LinearF32& operator=(const LinearF32&) = delete;

  void run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) const;
  size_t in_features() const { return in_features_; }
  size_t out_features() const { return out_features_; }
  const std::string& name() const { return name_; }

 private:
  size_t in_features_;
  size_t out_features_;
  std::string name_;
  xnn_operator_t op_ = nullptr;
};

}  // namespace fedcal

#include "models/engine/xnn_runtime.h"

#include <cpuinfo.h>
#include <pthreadpool.h>

#include <algorithm>
#include <thread>

#include <limits>

#include "common/error.h"

namespace fedcal {
namespace {

const char* status_name(xnn_status status) {
  switch (status) {
    case xnn_status_success:
      return "success";
    case xnn_status_uninitialized:
      return "uninitialized";
    case xnn_status_invalid_parameter:
      return "invalid parameter";
    case xnn_status_invalid_state:
      return "invalid state";
    case xnn_status_unsupported_parameter:
      return "unsupported parameter";
    case xnn_status_unsupported_hardware:
      return "unsupported hardware";
    case xnn_status_out_of_memory:
      return "out of memory";
  }
  return "unknown status";
}

}  // namespace

void check_xnn(xnn_status status, const std::string& operation, const std::string& what) {
  if (status != xnn_status_success) fail("{}: XNNPACK {} failed: {}", what, operation, status_name(status));
}

int default_threads(int64_t parameters) {
  // Physical cores: hyper-threads share a core's multiply units, so they only add contention.
  const bool known = cpuinfo_initialize();
  const int cores = known && cpuinfo_get_cores_count() > 0 ? static_cast<int>(cpuinfo_get_cores_count())
                                                           : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t wanted = std::max<int64_t>(1, parameters / kParametersPerThread);
  return static_cast<int>(std::min<int64_t>(wanted, cores));
}

int resolve_threads(int requested, int64_t parameters) { return requested > 0 ? requested : default_threads(parameters); }

XnnRuntime::XnnRuntime(int threads) : threads_(threads) {
  if (threads < 1 || threads > 1024) fail("thread count {} is out of range [1, 1024]", threads);
  check_xnn(xnn_initialize(nullptr), "initialize", "runtime");
  if (threads > 1) {
    threadpool_ = pthreadpool_create(static_cast<size_t>(threads));
    if (threadpool_ == nullptr) {
      xnn_deinitialize();
      fail("cannot create a pool of {} threads", threads);
    }
  }
}

XnnRuntime::~XnnRuntime() {
  if (threadpool_ != nullptr) pthreadpool_destroy(threadpool_);
  xnn_deinitialize();
}

XnnOperator::~XnnOperator() {
  if (op_ != nullptr) xnn_delete_operator(op_);
}

LinearF32::LinearF32(const float* weights, size_t in_features, size_t out_features, std::string name, const float* bias)
    : name_(std::move(name)), weight_bytes_(in_features * out_features * sizeof(float)) {
  const float inf = std::numeric_limits<float>::infinity();
  check_xnn(xnn_create_fully_connected_nc_f32(in_features, out_features, in_features, out_features, weights,
                                              bias, -inf, inf, /*flags=*/0, op_.out()),
            "create_fully_connected_nc_f32", name_);
}

void LinearF32::run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) {
  check_xnn(xnn_setup_fully_connected_nc_f32(op_.get(), batch, input, output, runtime.threadpool()),
            "setup_fully_connected_nc_f32", name_);
  check_xnn(xnn_run_operator(op_.get(), runtime.threadpool()), "run_operator (fully_connected_nc_f32)", name_);
}

}  // namespace fedcal

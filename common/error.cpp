#include "common/error.h"

namespace fedcal {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
      return "invalid input";
    case ErrorKind::kNotFound:
      return "not found";
    case ErrorKind::kIo:
      return "I/O error";
    case ErrorKind::kCorruption:
      return "corrupted state";
    case ErrorKind::kInternal:
      return "internal error";
  }
  return "error";
}

ErrorKind kind_of(const std::exception& error) {
  const auto* ours = dynamic_cast<const Error*>(&error);
  return ours != nullptr ? ours->kind() : ErrorKind::kInternal;
}

int process_exit_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
    case ErrorKind::kNotFound:
      return 1;
    case ErrorKind::kIo:
      return 74;  // EX_IOERR
    case ErrorKind::kCorruption:
      return 65;  // EX_DATAERR
    case ErrorKind::kInternal:
      return 70;  // EX_SOFTWARE
  }
  return 1;
}

}  // namespace fedcal

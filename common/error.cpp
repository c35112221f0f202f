#include "common/error.h"

#include <filesystem>

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
  if (const auto* ours = dynamic_cast<const Error*>(&error)) return ours->kind();
  // The file system refused (read-only, full, permissions, a path that is not a folder): the disk or
  // the system failed, not fedcal.
  if (dynamic_cast<const std::filesystem::filesystem_error*>(&error) != nullptr) return ErrorKind::kIo;
  return ErrorKind::kInternal;
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

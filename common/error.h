// Errors that carry their context (file, tensor, layer, peer) up to the process or message boundary.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace fedcal {

// Whose fault an error is and what can be done about it; boundaries map kinds to exit codes
// (process_exit_code below), protocol replies (wire.h: reply_code) and audit entries (the
// coordinator blames a peer only for kInvalidInput).
enum class ErrorKind {
  kInvalidInput,  // a file, message, request or option that is malformed or out of range: the sender's fault
  kNotFound,      // something asked for does not exist
  kIo,            // the disk or the system failed (full, unreadable, cannot create)
  kCorruption,    // our own stored state is damaged (database, artifact, key file)
  kInternal,      // a bug, or a library failing in a way we did not expect
};
const char* error_kind_name(ErrorKind kind);

// The one exception type of fedcal's libraries. Context is prepended as the error travels up,
// so the message a user finally sees reads outermost-first:
//   "loading model m.bin: tensor 'wq' (layer 3): needs 4096 bytes, file has 100"
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, ErrorKind kind = ErrorKind::kInvalidInput)
      : std::runtime_error(message), message_(std::move(message)), kind_(kind) {}

  const char* what() const noexcept override { return message_.c_str(); }
  ErrorKind kind() const { return kind_; }

  // Adds "context: " in front of the message.
  void prepend(const std::string& context) { message_ = context + ": " + message_; }

 private:
  std::string message_;
  ErrorKind kind_;
};

// Throws Error (kInvalidInput: most failures are input that does not hold up to checking).
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void fail_as(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...), kind);
}

// The kind of any exception: Error's own, kInternal for everything else (std::bad_alloc included).
ErrorKind kind_of(const std::exception& error);

// Exit codes of fedcal's command-line tools, by kind (sysexits.h values): invalid input 1, not found
// 1, I/O 74, corruption 65, internal 70. Usage errors (CLI11) exit 2.
int process_exit_code(ErrorKind kind);
inline constexpr int kExitUsage = 2;

// Runs `body`; an Error escaping it gets `context` prepended. The context is built lazily.
template <typename Body, typename Context>
auto with_context(Context&& context, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (Error& error) {
    error.prepend(context());
    throw;
  }
}

}  // namespace fedcal

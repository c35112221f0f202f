// Errors that carry their context (file, tensor, layer, peer) up to the process or message boundary.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace fedcal {

// The one exception type of fedcal's libraries. Context is prepended as the error travels up,
// so the message a user finally sees reads outermost-first:
//   "loading model m.bin: tensor 'wq' (layer 3): needs 4096 bytes, file has 100"
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message) : std::runtime_error(message), message_(std::move(message)) {}

  const char* what() const noexcept override { return message_.c_str(); }

  // Adds "context: " in front of the message.
  void prepend(const std::string& context) { message_ = context + ": " + message_; }

 private:
  std::string message_;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

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

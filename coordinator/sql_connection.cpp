#include "coordinator/sql_connection.h"

#include <fmt/format.h>

#include <charconv>

#include "common/error.h"

namespace fedcal::coordinator {

bool SqlRow::is_null(size_t column) const { return std::holds_alternative<std::monostate>(values_.at(column)); }

int64_t SqlRow::int64(size_t column) const {
  const SqlValue& value = values_.at(column);
  if (const auto* number = std::get_if<int64_t>(&value)) return *number;
  if (const auto* text = std::get_if<std::string>(&value)) {
    int64_t number = 0;
    const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), number);
    if (error == std::errc() && end == text->data() + text->size()) return number;
    fail_as(ErrorKind::kInternal, "column {}: '{}' is not an integer", column, *text);
  }
  fail_as(ErrorKind::kInternal, "column {}: NULL where an integer was expected", column);
}

std::optional<int64_t> SqlRow::optional_int64(size_t column) const {
  if (is_null(column)) return std::nullopt;
  return int64(column);
}

std::string SqlRow::text(size_t column) const {
  const SqlValue& value = values_.at(column);
  if (const auto* text = std::get_if<std::string>(&value)) return *text;
  if (const auto* number = std::get_if<int64_t>(&value)) return std::to_string(*number);
  return {};
}

bool is_postgres_url(const std::string& url) { return url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0; }

std::string redacted_url(const std::string& url) {
  // scheme://user:password@host/...: the password becomes ***; a password=... parameter too.
  std::string out = url;
  const size_t scheme = out.find("://");
  const size_t at = out.find('@', scheme == std::string::npos ? 0 : scheme + 3);
  if (scheme != std::string::npos && at != std::string::npos) {
    const size_t colon = out.find(':', scheme + 3);
    if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
  }
  const size_t password = out.find("password=");
  if (password != std::string::npos) {
    const size_t end = out.find('&', password);
    out.replace(password + 9, (end == std::string::npos ? out.size() : end) - password - 9, "***");
  }
  return out;
}

}  // namespace fedcal::coordinator

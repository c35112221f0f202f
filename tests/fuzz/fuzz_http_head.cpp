// Fuzzes the agent's parser of HTTP response heads (what a package cache or origin answers).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "edge_agent/http_fetch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    fedcal::edge_agent::parse_http_response_head(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const fedcal::Error&) {
  }
  return 0;
}

#include <doctest/doctest.h>

#include "common/error.h"

namespace fedcal {
namespace {

TEST_CASE("Errors gather context outermost-first as they travel up") {
  try {
    with_context(
        [] { return std::string("loading m.bin"); },
        [] { with_context([] { return std::string("tensor 'wq'"); }, [] { fail("needs {} bytes, file has {}", 4096, 100); }); });
    FAIL("no error thrown");
  } catch (const Error& error) {
    CHECK(std::string(error.what()) == "loading m.bin: tensor 'wq': needs 4096 bytes, file has 100");
  }
}

}  // namespace
}  // namespace fedcal

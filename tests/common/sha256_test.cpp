#include <doctest/doctest.h>

#include <string>

#include "common/sha256.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

TEST_CASE("SHA-256 matches the FIPS 180-2 test vectors, in memory and streamed from a file") {
  const std::string abc = "abc";
  CHECK(sha256_hex(std::as_bytes(std::span(abc))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex({}) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  testing::ScratchDir dir;
  std::string million(1000000, 'a');
  testing::write_text(dir.path("a.txt"), million);
  CHECK(sha256_file_hex(dir.path("a.txt")) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("The shared TinyStories sample is the one its README describes") {
  CHECK(sha256_file_hex(testing::tinystories_path()) == "5fc1fb0113df62b567fb271806cd645ce8d75f59c58ca0b764c03d3b6ff34ca6");
  CHECK(testing::tinystories_train().size() == 628937);
  CHECK(testing::tinystories_heldout().size() == 165438);
}

}  // namespace
}  // namespace fedcal

#include "edge_agent/download.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "common/error.h"
#include "common/sha256.h"
#include "tests/test_support.h"

namespace fedcal::edge_agent {
namespace {

std::span<const uint8_t> bytes_of(const std::string& text, size_t offset, size_t length) {
  return {reinterpret_cast<const uint8_t*>(text.data()) + offset, length};
}

TEST_CASE("Download: resumes from the partial file, ignores duplicates, verifies the hash") {
  testing::ScratchDir dir;
  const std::string content(10000, 'x');
  const std::string sha = sha256_hex(std::as_bytes(std::span(content.data(), content.size())));
  {
    Download download(sha, content.size(), dir.path("dl"), dir.path("models"));
    download.accept(0, bytes_of(content, 0, 4000), content.size());
    download.accept(0, bytes_of(content, 0, 4000), content.size());  // a duplicate: ignored
    CHECK(download.have() == 4000);
  }
  // A new process (the old one died) resumes where the file ends.
  Download resumed(sha, content.size(), dir.path("dl"), dir.path("models"));
  CHECK(resumed.have() == 4000);
  resumed.accept(4000, bytes_of(content, 4000, 6000), content.size());
  CHECK(resumed.complete());
  CHECK(sha256_file_hex(resumed.path()) == sha);
  CHECK(Download(sha, content.size(), dir.path("dl"), dir.path("models")).complete());
}

TEST_CASE("Download: bytes that do not hash to the name are discarded, with the reason") {
  testing::ScratchDir dir;
  const std::string content(100, 'y');
  const std::string wrong(64, 'a');
  Download download(wrong, content.size(), dir.path("dl"), dir.path("models"));
  CHECK_THROWS_WITH_AS(download.accept(0, bytes_of(content, 0, 100), 100), doctest::Contains("discarded"), Error);
  CHECK(download.have() == 0);
  CHECK_FALSE(std::filesystem::exists(dir.path("dl/" + wrong + ".part")));
  CHECK_THROWS_AS(download.accept(0, bytes_of(content, 0, 100), 99), Error);  // size disagrees with the round
  CHECK_THROWS_AS(Download("../../etc/passwd", 1, dir.path("dl"), dir.path("models")), Error);
}

}  // namespace
}  // namespace fedcal::edge_agent

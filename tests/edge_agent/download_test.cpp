#include "edge_agent/download.h"

#include <doctest/doctest.h>

#include <chrono>
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

TEST_CASE("Download: room within a disk budget comes from the least recently used packages nobody needs, or is refused") {
  testing::ScratchDir dir;
  const std::string models = dir.path("models"), downloads = dir.path("downloads");
  std::filesystem::create_directories(models);
  std::filesystem::create_directories(downloads);
  const auto package = [&](char name, size_t bytes, int age_s) {
    const std::string path = models + "/" + std::string(64, name) + ".fcpkg";
    testing::write_text(path, std::string(bytes, 'x'));
    std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now() - std::chrono::seconds(age_s));
    return path;
  };
  const std::string oldest = package('a', 4000, 300), kept = package('b', 4000, 200), newer = package('c', 4000, 100);
  testing::write_text(downloads + "/" + std::string(64, 'd') + ".part", std::string(1000, 'x'));
  // 13000 bytes in use; 5000 more within a budget of 14000: 4000 must go - the oldest not kept.
  const std::vector<std::string> removed = make_room(downloads, models, 5000, 14000, {std::string(64, 'b')});
  CHECK(removed == std::vector<std::string>{oldest});
  CHECK(std::filesystem::exists(kept));
  CHECK(std::filesystem::exists(newer));
  // More than the budget can ever hold with what must be kept: refused, naming the budget.
  CHECK_THROWS_WITH(make_room(downloads, models, 20000, 14000, {std::string(64, 'b'), std::string(64, 'c')}),
                    doctest::Contains("disk full: 20000 bytes more would exceed the agent's disk budget of 14000 bytes"));
  // No budget: only the disk's free space counts.
  CHECK(make_room(downloads, models, 5000, 0, {}).empty());
  CHECK_THROWS_WITH(make_room(downloads, models, uint64_t{1} << 60, 0, {}), doctest::Contains("the disk has"));
}

}  // namespace
}  // namespace fedcal::edge_agent

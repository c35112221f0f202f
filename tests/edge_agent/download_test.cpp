#include "edge_agent/download.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "common/dp_noise.h"
#include "common/error.h"
#include "common/sha256.h"
#include "edge_agent/agent_config.h"
#include "edge_agent/private_text.h"
#include "tests/test_support.h"

namespace fedcal::agent {
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

TEST_CASE("Private text: the last lines are held out, calibration keeps the order") {
  testing::ScratchDir dir;
  std::filesystem::create_directories(dir.path("text"));
  testing::write_text(dir.path("text/b.txt"), "three\n\nfour\n");
  testing::write_text(dir.path("text/a.txt"), "one\r\ntwo\n");
  testing::write_text(dir.path("text/notes.md"), "ignored\n");
  const PrivateText text = read_private_text(dir.path("text"), 0.25);
  CHECK(text.calibration == "one\ntwo\nthree\n");
  CHECK(text.heldout == "four\n");
  CHECK_THROWS_WITH_AS(read_private_text(dir.path("missing"), 0.1), doctest::Contains("does not exist"), Error);
}

TEST_CASE("Agent config: errors name the file and key") {
  testing::ScratchDir dir;
  testing::write_text(dir.path("a.toml"), "coordinator_key = \"short\"\n");
  CHECK_THROWS_WITH_AS(AgentConfig::load(dir.path("a.toml")), doctest::Contains("coordinator_key"), Error);
  testing::write_text(dir.path("b.toml"), "coordinator_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\nthreads = -2\n");
  CHECK_THROWS_WITH_AS(AgentConfig::load(dir.path("b.toml")), doctest::Contains("'threads'"), Error);
  testing::write_text(dir.path("c.toml"), "coordinator_key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\ncolour = 1\n");
  CHECK_THROWS_WITH_AS(AgentConfig::load(dir.path("c.toml")), doctest::Contains("unknown key 'colour'"), Error);
}

TEST_CASE("Skellam noise: integer, zero-mean, the requested variance, and it sums modulo 2^64") {
  std::vector<uint64_t> values(200000, 1000);
  add_skellam_noise(values, 20.0);
  double sum = 0, squares = 0;
  for (uint64_t value : values) {
    const double noise = static_cast<double>(static_cast<int64_t>(value - 1000));
    sum += noise;
    squares += noise * noise;
  }
  const double n = static_cast<double>(values.size());
  CHECK(std::abs(sum / n) < 0.3);                      // mean 0 (standard error 20 / sqrt(2e5) = 0.045)
  CHECK(std::abs(std::sqrt(squares / n) - 20) < 0.3);  // stddev 20
}

}  // namespace
}  // namespace fedcal::agent

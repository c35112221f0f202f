#include "edge_agent/private_text.h"

#include <doctest/doctest.h>

#include <filesystem>

#include "common/error.h"
#include "tests/test_support.h"

namespace fedcal::edge_agent {
namespace {

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

}  // namespace
}  // namespace fedcal::edge_agent

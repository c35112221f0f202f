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

TEST_CASE("Private text: a file that is not UTF-8 text is refused by name and offset, no text is said cheaply") {
  testing::ScratchDir dir;
  std::filesystem::create_directories(dir.path("text"));
  CHECK(private_text_problem(dir.path("text")).find("no text") != std::string::npos);
  CHECK(private_text_problem(dir.path("missing")).find("does not exist") != std::string::npos);
  testing::write_text(dir.path("text/blank.txt"), " \n\t\n");
  CHECK(private_text_problem(dir.path("text")).find("no text") != std::string::npos);
  testing::write_text(dir.path("text/story.txt"), "Once upon a time \xE2\x80\x94 a story.\n");
  CHECK(private_text_problem(dir.path("text")).empty());
  CHECK_NOTHROW(read_private_text(dir.path("text"), 0.0));
  testing::write_text(dir.path("text/weights.txt"), std::string("ok\n\0\x01\x02", 6));
  CHECK_THROWS_WITH(read_private_text(dir.path("text"), 0.0),
                    doctest::Contains("weights.txt: not UTF-8 text (byte 0x00 at offset 3)"));
  testing::write_text(dir.path("text/weights.txt"), "caf\xE9\n");  // Latin-1
  CHECK_THROWS_WITH(read_private_text(dir.path("text"), 0.0),
                    doctest::Contains("weights.txt: not UTF-8 text (byte 0xe9 at offset 3)"));
}

}  // namespace
}  // namespace fedcal::edge_agent

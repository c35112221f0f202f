#include <doctest/doctest.h>

#include "common/error.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "coordinator/artifact_store.h"
#include "tests/test_support.h"

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

TEST_CASE("A file system that refuses is an I/O error, not an internal one: the artifact store names its folder") {
  CHECK(kind_of(std::filesystem::filesystem_error("rename", std::make_error_code(std::errc::read_only_file_system))) ==
        ErrorKind::kIo);
  CHECK(kind_of(std::logic_error("a bug")) == ErrorKind::kInternal);
  CHECK(process_exit_code(ErrorKind::kIo) == 74);
  // A store whose folder cannot hold files (here a path under a regular file: refused even to root,
  // as a read-only mount would refuse).
  testing::ScratchDir dir;
  std::ofstream(dir.path("file")) << "x";
  const coordinator::ArtifactStore store(dir.path("file/artifacts"));
  try {
    store.add_file(".bin", [](const std::string& temporary) {
      std::filesystem::copy_file("/proc/self/status", temporary);  // the file system refuses: ENOTDIR
    });
    FAIL("no error thrown");
  } catch (const Error& error) {
    CHECK(error.kind() == ErrorKind::kIo);
    CHECK(std::string(error.what()).find("artifact store " + dir.path("file/artifacts")) != std::string::npos);
  }
}

}  // namespace
}  // namespace fedcal

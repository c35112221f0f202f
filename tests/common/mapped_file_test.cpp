// MappedFile: a read-only mapping whose pages a reader can drop once it has copied them out.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "common/mapped_file.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

// Resident bytes of the mapping that holds `address`, from the kernel's /proc/self/smaps.
size_t resident_bytes_of_mapping(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto target = reinterpret_cast<uintptr_t>(address);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream header(line);
    if (header >> std::hex >> begin >> dash >> end && dash == '-') {
      inside = begin <= target && target < end;
      continue;
    }
    if (inside && line.rfind("Rss:", 0) == 0) return std::stoul(line.substr(4)) * 1024;
  }
  FAIL("no mapping holds the address");
  return 0;
}

TEST_CASE("MappedFile::release drops whole pages from the resident set and the data reads back unchanged") {
  testing::ScratchDir dir;
  std::string text(1 << 20, '\0');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>(i * 131 % 251);
  testing::write_text(dir.path("data.bin"), text);
  const MappedFile file(dir.path("data.bin"));
  REQUIRE(file.size() == text.size());
  CHECK(std::memcmp(file.bytes().data(), text.data(), text.size()) == 0);  // every page touched
  CHECK(resident_bytes_of_mapping(file.bytes().data()) == text.size());
  file.release(file.bytes().subspan(100, 300000));  // the pages wholly inside [100, 300100)
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t whole_pages = 300100 / page - 1;  // from the second page (the first holds byte 99) on
  CHECK(resident_bytes_of_mapping(file.bytes().data()) == text.size() - whole_pages * page);
  CHECK(std::memcmp(file.bytes().data(), text.data(), text.size()) == 0);  // faulted back in from the file
  file.release(file.bytes());
  CHECK(resident_bytes_of_mapping(file.bytes().data()) == 0);
  // A range outside the mapping is left alone.
  const std::byte elsewhere[8] = {};
  file.release(std::span(elsewhere));
  CHECK(std::memcmp(file.bytes().data(), text.data(), text.size()) == 0);
}

}  // namespace
}  // namespace fedcal

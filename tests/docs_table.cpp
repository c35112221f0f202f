#include "tests/docs_table.h"

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>

#include "common/file_util.h"

namespace fedcal {

std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  auto line = [](const std::vector<std::string>& cells) {
    std::string out = "|";
    for (const std::string& cell : cells) out += " " + cell + " |";
    return out + "\n";
  };
  std::string out = line(header);
  out += line(std::vector<std::string>(header.size(), "---"));
  for (const auto& row : rows) out += line(row);
  return out;
}

void check_docs_table(const std::string& doc, const std::string& name, const std::string& table) {
  const std::string path = std::string(FEDCAL_SOURCE_DIR) + "/" + doc;
  std::string text = read_text_file(path);
  const std::string open = "<!-- " + name + " -->\n", close = "<!-- /" + name + " -->";
  const size_t begin = text.find(open), end = text.find(close);
  REQUIRE_MESSAGE(begin != std::string::npos, path << " has no " << open);
  REQUIRE(end != std::string::npos);
  const std::string documented = text.substr(begin + open.size(), end - begin - open.size());
  if (documented != table && std::getenv("FEDCAL_UPDATE_DOCS")) {
    text.replace(begin + open.size(), end - begin - open.size(), table);
    std::ofstream(path) << text;
    return;
  }
  CHECK_MESSAGE(documented == table, path << " is out of date (run this test with FEDCAL_UPDATE_DOCS=1):\n" << table);
}

}  // namespace fedcal

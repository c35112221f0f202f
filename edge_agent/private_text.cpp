#include "edge_agent/private_text.h"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/error.h"
#include "common/file_util.h"

namespace fedcal::edge_agent {

PrivateText read_private_text(const std::string& data_dir, double heldout_fraction) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(data_dir)) fail("{}: the private text folder does not exist", data_dir);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(data_dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".txt") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> lines;
  for (const auto& file : files) {
    std::istringstream in(read_utf8_text_file(file.string()));
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) lines.push_back(line);
    }
  }
  if (lines.empty()) fail("{}: no text (*.txt files with at least one non-empty line)", data_dir);
  PrivateText text;
  text.heldout_lines = static_cast<size_t>(std::floor(static_cast<double>(lines.size()) * heldout_fraction));
  if (text.heldout_lines == lines.size()) text.heldout_lines = lines.size() - 1;
  text.calibration_lines = lines.size() - text.heldout_lines;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string& out = i < text.calibration_lines ? text.calibration : text.heldout;
    out += lines[i];
    out += '\n';
  }
  return text;
}

std::string private_text_problem(const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(data_dir, error)) return fmt::format("{}: the private text folder does not exist", data_dir);
  for (const auto& entry : fs::directory_iterator(data_dir, error)) {
    if (!entry.is_regular_file(error) || entry.path().extension() != ".txt") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    char c;
    while (in.get(c)) {
      if (!std::isspace(static_cast<unsigned char>(c))) return "";
    }
  }
  if (error) return fmt::format("{}: {}", data_dir, error.message());
  return fmt::format("{}: no text (*.txt files with at least one non-empty line)", data_dir);
}

}  // namespace fedcal::edge_agent

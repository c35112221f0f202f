#include "edge_agent/download.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"
#include "common/sha256.h"

namespace fedcal::edge_agent {
namespace fs = std::filesystem;

Download::Download(std::string sha256, uint64_t total_bytes, const std::string& downloads_dir, const std::string& models_dir)
    : sha256_(std::move(sha256)), total_(total_bytes) {
  if (sha256_.size() != 64 || sha256_.find_first_not_of("0123456789abcdef") != std::string::npos) {
    fail("artifact name '{}' is not a SHA-256", sha256_.substr(0, 80));
  }
  fs::create_directories(downloads_dir);
  fs::create_directories(models_dir);
  part_path_ = downloads_dir + "/" + sha256_ + ".part";
  final_path_ = models_dir + "/" + sha256_ + ".fcpkg";
  // A package already here is verified again, by its hash: a file of the right size is not enough
  // (one flipped bit made an agent decline every later round).
  if (fs::exists(final_path_) && fs::file_size(final_path_) == total_) {
    const std::string actual = sha256_file_hex(final_path_);
    if (actual == sha256_) {
      have_ = total_;
      verified_ = true;
      return;
    }
    damaged_ = fmt::format("the package {} on this device hashes to {}: damaged, removed, downloading it again",
                           sha256_.substr(0, 16), actual.substr(0, 16));
    fs::remove(final_path_);
  }
  if (fs::exists(part_path_)) {
    have_ = fs::file_size(part_path_);
    if (have_ > total_) {
      fs::remove(part_path_);
      have_ = 0;
    }
  }
}

void Download::accept(uint64_t offset, std::span<const uint8_t> data, uint64_t total_bytes) {
  if (complete() || offset != have_) return;
  if (total_bytes != total_)
    fail("artifact {}: the coordinator says {} bytes, the round said {}", sha256_.substr(0, 16), total_bytes, total_);
  if (data.size() > total_ - have_) fail("artifact {}: chunk at {} overruns the {} bytes", sha256_.substr(0, 16), offset, total_);
  const int fd = ::open(part_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) fail("{}: cannot open: {}", part_path_, std::strerror(errno));
  try {
    write_all(fd, std::as_bytes(data), part_path_);
  } catch (const Error&) {
    ::close(fd);
    // Whatever did land stays: the next request resumes from the file's real size.
    have_ = fs::file_size(part_path_);
    throw;
  }
  ::fsync(fd);
  ::close(fd);
  have_ += data.size();
  if (have_ < total_) return;
  const std::string actual = sha256_file_hex(part_path_);
  if (actual != sha256_) {
    fs::remove(part_path_);
    have_ = 0;
    fail("artifact {}: the downloaded bytes hash to {}; discarded, downloading again", sha256_.substr(0, 16),
         actual.substr(0, 16));
  }
  fs::rename(part_path_, final_path_);
  verified_ = true;
}

void Download::discard() {
  if (verified_) return;  // complete: the package is kept
  std::error_code error;
  fs::remove(part_path_, error);
  have_ = 0;
}

namespace {

uint64_t folder_bytes(const std::string& folder) {
  std::error_code error;
  uint64_t total = 0;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    if (entry.is_regular_file(error)) total += entry.file_size(error);
  }
  return total;
}

}  // namespace

std::vector<std::string> make_room(const std::string& downloads_dir, const std::string& models_dir, uint64_t bytes,
                                   uint64_t budget_bytes, const std::set<std::string>& keep) {
  std::vector<std::string> removed;
  std::error_code error;
  if (budget_bytes > 0) {
    uint64_t used = folder_bytes(downloads_dir) + folder_bytes(models_dir);
    if (used + bytes > budget_bytes) {
      std::vector<std::pair<fs::file_time_type, fs::path>> candidates;
      for (const auto& entry : fs::directory_iterator(models_dir, error)) {
        if (entry.path().extension() != ".fcpkg" || keep.count(entry.path().stem().string())) continue;
        candidates.emplace_back(entry.last_write_time(error), entry.path());
      }
      std::sort(candidates.begin(), candidates.end());  // least recently written first
      for (const auto& [written, path] : candidates) {
        if (used + bytes <= budget_bytes) break;
        const uint64_t size = fs::file_size(path, error);
        if (fs::remove(path, error)) {
          used -= std::min(used, size);
          removed.push_back(path.string());
        }
      }
    }
    if (used + bytes > budget_bytes) {
      fail_as(ErrorKind::kIo, "disk full: {} bytes more would exceed the agent's disk budget of {} bytes ({} in use by packages "
              "it must keep)", bytes, budget_bytes, used);
    }
  }
  const fs::space_info space = fs::space(models_dir, error);
  if (!error && space.available < bytes + (uint64_t{1} << 20)) {
    fail_as(ErrorKind::kIo, "disk full: {} needs {} bytes more, the disk has {} free", models_dir, bytes, space.available);
  }
  return removed;
}

int remove_stale_partial_downloads(const std::string& downloads_dir, int max_age_hours) {
  std::error_code error;
  int removed = 0;
  const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(max_age_hours);
  for (const auto& entry : fs::directory_iterator(downloads_dir, error)) {
    if (entry.path().extension() != ".part" || !entry.is_regular_file(error)) continue;
    if (entry.last_write_time(error) < cutoff && fs::remove(entry.path(), error)) ++removed;
  }
  return removed;
}

}  // namespace fedcal::edge_agent

// A resumable, hash-verified artifact download: bytes go to downloads/<sha256>.part, so a download
// cut by a crash or a lost connection resumes where the file ends; the finished file must hash to
// its name before it is moved (atomically) to models/<sha256>.fcpkg.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace fedcal::edge_agent {

// Removes *.part files in `downloads_dir` not modified for `max_age_hours` (downloads abandoned by a
// round or rollout that ended while the agent was away); returns how many. Errors are not fatal.
int remove_stale_partial_downloads(const std::string& downloads_dir, int max_age_hours);

// Room for `bytes` more in the agent's store (models_dir and downloads_dir): within `budget_bytes`
// for both together (0: no budget), by removing the least recently used packages in models_dir whose
// SHA-256 is not in `keep`, and within what the disk has free (plus 1 MiB). Throws Error ("disk
// full: ...") naming what is needed and what there is; returns the files removed.
std::vector<std::string> make_room(const std::string& downloads_dir, const std::string& models_dir, uint64_t bytes,
                                   uint64_t budget_bytes, const std::set<std::string>& keep);

class Download {
 public:
  Download(std::string sha256, uint64_t total_bytes, const std::string& downloads_dir, const std::string& models_dir);

  bool complete() const { return have_ == total_ && verified_; }
  // A file was already at its place but did not hash to its name (a flipped bit, a torn write): it
  // was removed and the download starts over. The caller tells the coordinator.
  const std::string& damaged() const { return damaged_; }
  const std::string& path() const { return final_path_; }
  const std::string& sha256() const { return sha256_; }
  uint64_t have() const { return have_; }
  uint64_t total() const { return total_; }

  // Appends a chunk if it starts where the file ends (else ignores it: a duplicate). Throws Error if it
  // overruns the size or the finished file does not hash to its name (the partial file is removed).
  void accept(uint64_t offset, std::span<const uint8_t> data, uint64_t total_bytes);
  // Removes the partial file (an abandoned download: its space is given back); a later accept starts over.
  void discard();

 private:
  std::string sha256_;
  uint64_t total_;
  std::string part_path_;
  std::string final_path_;
  uint64_t have_ = 0;
  bool verified_ = false;
  std::string damaged_;  // what was wrong with the file found in place ("" : nothing)
};

}  // namespace fedcal::edge_agent

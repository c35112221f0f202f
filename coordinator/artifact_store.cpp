#include "coordinator/artifact_store.h"

#include <filesystem>
#include <system_error>

#include "common/error.h"
#include "common/hex.h"
#include "common/random.h"
#include "common/sha256.h"

namespace fedcal::coordinator {
namespace fs = std::filesystem;

StoredArtifact ArtifactStore::add_file(const std::string& extension,
                                       const std::function<void(const std::string& temporary_path)>& write) const {
  Key32 nonce = random_key();
  const std::string temporary = dir_ + "/.incoming-" + to_hex(std::as_bytes(std::span(nonce).first(8))) + extension;
  try {
    write(temporary);
    StoredArtifact artifact;
    artifact.sha256 = sha256_file_hex(temporary);
    artifact.path = dir_ + "/" + artifact.sha256 + extension;
    std::error_code ignored;
    artifact.created = !fs::exists(artifact.path, ignored);
    fs::rename(temporary, artifact.path);
    artifact.bytes = static_cast<int64_t>(fs::file_size(artifact.path));
    return artifact;
  } catch (const fs::filesystem_error& error) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    fail_as(ErrorKind::kIo, "artifact store {}: {}", dir_, error.what());  // e.g. a read-only folder
  } catch (...) {
    std::error_code ignored;
    fs::remove(temporary, ignored);
    throw;
  }
}

std::vector<std::string> ArtifactStore::remove_incoming() const {
  std::vector<std::string> removed;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir_, error)) {
    const std::string name = entry.path().filename().string();
    std::error_code ignored;
    if (name.rfind(".incoming-", 0) == 0 && entry.is_regular_file(ignored) && fs::remove(entry.path(), ignored))
      removed.push_back(entry.path().string());
  }
  return removed;
}

std::vector<std::string> ArtifactStore::set_aside_unnamed(const std::set<std::string>& named) const {
  // By file name: content-addressed names are unique, and a state folder that moved (rows naming
  // another folder) must not lose its artifacts.
  std::set<std::string> names;
  for (const std::string& path : named) names.insert(fs::path(path).filename().string());
  std::vector<std::string> removed;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir_, error)) {
    const std::string name = entry.path().filename().string();
    const bool content_addressed = name.size() > 65 && name[64] == '.' && name.find_first_not_of("0123456789abcdef") == 64;
    std::error_code ignored;
    if (!content_addressed || !entry.is_regular_file(ignored)) continue;
    if (names.count(name)) continue;
    const std::string aside = dir_ + "/orphaned/" + name;
    fs::create_directories(dir_ + "/orphaned", ignored);
    fs::rename(entry.path(), aside, ignored);
    if (!ignored) removed.push_back(aside);
  }
  return removed;
}

std::string ArtifactStore::add_round_stats(const CalibrationStats& stats, int64_t round_id) const {
  const std::string path = fmt::format("{}/round-{}.stats", dir_, round_id);
  write_stats(stats, path);
  return path;
}

namespace {
std::string group_stats_path(const std::string& dir, int64_t round_id, size_t group) {
  return fmt::format("{}/round-{}.group-{}.stats", dir, round_id, group);
}
}  // namespace

void ArtifactStore::add_group_stats(std::span<const CalibrationStats> groups, int64_t round_id) const {
  for (size_t g = 0; g < groups.size(); ++g) write_stats(groups[g], group_stats_path(dir_, round_id, g + 1));
  for (size_t g = groups.size() + 1; std::filesystem::remove(group_stats_path(dir_, round_id, g)); ++g) {
  }
}

std::vector<CalibrationStats> ArtifactStore::group_stats(int64_t round_id) const {
  std::vector<CalibrationStats> out;
  for (size_t group = 1;; ++group) {
    const std::string path = group_stats_path(dir_, round_id, group);
    if (!std::filesystem::exists(path)) return out;
    out.push_back(read_stats(path));
  }
}

}  // namespace fedcal::coordinator

// The coordinator's content-addressed artifact store: every package lives at DIR/<sha256>.fcpkg (an
// export for another runtime at DIR/<sha256>.<its extension>) and
// a round's aggregate statistics at DIR/round-<id>.stats. A package is written under a temporary
// name (AtomicFileWriter: synced, renamed), hashed, and renamed to its content address, so a reader
// never sees a half-written or misnamed artifact. Used by model import and the quantization job.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "models/quant/calibration_stats.h"

namespace fedcal::coordinator {

struct StoredArtifact {
  std::string sha256;  // of the file, = its name
  std::string path;
  int64_t bytes = 0;
  bool created = false;  // no file had this content before: the writer's to remove if its work is dropped
};

class ArtifactStore {
 public:
  explicit ArtifactStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }

  // Calls `write` with a temporary path in the store (unique to this call, so concurrent writers do
  // not collide), then moves what it wrote to its content address.
  StoredArtifact add_package(const std::function<void(const std::string& temporary_path)>& write) const {
    return add_file(".fcpkg", write);
  }
  // The same for any file: stored at DIR/<sha256><extension> (".gguf", ".onnx", ...).
  StoredArtifact add_file(const std::string& extension, const std::function<void(const std::string& temporary_path)>& write) const;
  // Removes what writes that never finished left (a kill during add_file): the files named
  // .incoming-*. Call at start, before any write; returns their paths.
  std::vector<std::string> remove_incoming() const;
  // Moves the content-addressed files (<64 hex digits>.<extension>) whose name no path in `named`
  // ends in into DIR/orphaned/: what a daemon stopped between writing an artifact and recording it
  // left (an import cut short by SIGTERM), or what a database restored from an older backup no longer
  // names. Compared by file name (a moved state folder keeps its artifacts); nothing is deleted, other
  // files stay. Call at start, before any write; returns the new paths.
  std::vector<std::string> set_aside_unnamed(const std::set<std::string>& named) const;
  // Writes a round's aggregate statistics; returns the path.
  std::string add_round_stats(const CalibrationStats& stats, int64_t round_id) const;
  // The relay groups' opened sums of the round (group_scales "median"): round-<id>.group-<g>.stats,
  // g from 1 (a file beyond them, left by a round of the same id in a restored database, is removed).
  void add_group_stats(std::span<const CalibrationStats> groups, int64_t round_id) const;
  // Those of `round_id`, in group order (none: empty).
  std::vector<CalibrationStats> group_stats(int64_t round_id) const;

 private:
  std::string dir_;
};

}  // namespace fedcal::coordinator

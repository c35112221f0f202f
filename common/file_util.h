// Whole-file reads and writes with errors that name the file.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace fedcal {

std::string read_text_file(const std::string& path);
// Writes to `path + ".tmp"` and renames over `path`, so readers never see a half-written file.
// Writes all of `data` to an open file descriptor, retrying short writes; throws Error naming `path`
// (e.g. "disk full") on failure.
void write_all(int fd, std::span<const std::byte> data, const std::string& path);

// The file is created with `mode` and synced before the rename.
void write_file_atomically(const std::string& path, std::span<const std::byte> data, unsigned mode = 0644);
void write_file_atomically(const std::string& path, const std::string& text, unsigned mode = 0644);

}  // namespace fedcal

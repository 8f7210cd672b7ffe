// Small file system helpers of the builder (the owning fd, full writes and directory fsync are
// common/fd.h and common/files.h).
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "common/fd.h"
#include "common/files.h"
#include "common/result.h"

namespace qufop::builder {

// pwrite(2) at `offset` until everything is written.
Result<void> pwrite_all(int fd, std::string_view data, off_t offset, std::string_view what);
// Reads a whole (small) file; refuses more than max_bytes.
Result<std::string> read_small_file(int fd, size_t max_bytes, std::string_view what);

// A directory of the system's temp dir, removed (with its contents) on destruction.
class TempDir {
 public:
  // Creates "<TMPDIR or /tmp>/<prefix>XXXXXX".
  static Result<TempDir> make(std::string_view prefix);
  TempDir(TempDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace qufop::builder

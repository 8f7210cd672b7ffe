// Small file system helpers of the builder: an owning fd, full writes, directory fsync.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "common/result.h"

namespace qufop::builder {

// Owns a file descriptor; closes it once.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// write(2) until everything is written; the error names `what`.
Result<void> write_all(int fd, std::string_view data, std::string_view what);
// pwrite(2) at `offset` until everything is written.
Result<void> pwrite_all(int fd, std::string_view data, off_t offset, std::string_view what);
// Reads a whole (small) file; refuses more than max_bytes.
Result<std::string> read_small_file(int fd, size_t max_bytes, std::string_view what);
// fsync(2) of a directory so a rename in it is durable.
Result<void> fsync_dir(const std::string& dir);

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

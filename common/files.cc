#include "common/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace qufop {

Result<std::string> read_text_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::sys("open(" + path + ")", errno);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return Error::sys("read(" + path + ")", err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

Result<void> write_all(int fd, std::string_view data, std::string_view what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("write(" + std::string(what) + ")", errno);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok();
}

Result<void> write_file_atomic(const std::string& path, std::string_view content, unsigned mode) {
  // Unique per writer, threads of one process included: two writers never share a temp file.
  static std::atomic<uint64_t> serial{0};
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(++serial);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Error::sys("open(" + tmp + ")", errno);
  Result<void> r = write_all(fd, content, tmp);
  // The umask may have narrowed the mode: make it exactly what was asked.
  if (r.ok() && ::fchmod(fd, mode) != 0) r = Error::sys("fchmod(" + tmp + ")", errno);
  if (r.ok() && ::fsync(fd) != 0) r = Error::sys("fsync(" + tmp + ")", errno);
  ::close(fd);
  if (r.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    r = Error::sys("rename(" + tmp + ", " + path + ")", errno);
  }
  if (!r.ok()) {
    ::unlink(tmp.c_str());
    return r;
  }
  return fsync_parent_dir(path);
}

Result<void> fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Error::sys("open(" + dir + ")", errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Error::sys("fsync(" + dir + ")", err);
  return ok();
}

Result<void> fsync_parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  return fsync_dir(slash == std::string::npos ? "." : path.substr(0, std::max<size_t>(slash, 1)));
}

}  // namespace qufop

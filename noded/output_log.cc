#include "noded/output_log.h"

#include <fcntl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace qufop::noded {

Result<int> open_output_log(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Error::sys("mkdir(" + dir + ")", errno);
  }
  std::string path = dir + "/output.log";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return Error::sys("open(" + path + ")", errno);
  return fd;
}

namespace {

// Copies src into a fresh dst (replacing it atomically).
Result<void> copy_file(const std::string& src, const std::string& dst) {
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return Error::sys("open(" + src + ")", errno);
  std::string tmp = dst + ".tmp";
  int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (out < 0) {
    int err = errno;
    ::close(in);
    return Error::sys("open(" + tmp + ")", err);
  }
  Result<void> r = ok();
  for (;;) {
    ssize_t n = ::sendfile(out, in, nullptr, 1 << 20);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) r = Error::sys("copying " + src + " to " + tmp, errno);
    if (n <= 0) break;
  }
  ::close(in);
  ::close(out);
  if (r.ok() && ::rename(tmp.c_str(), dst.c_str()) != 0)
    r = Error::sys("rename(" + tmp + ")", errno);
  if (!r.ok()) ::unlink(tmp.c_str());
  return r;
}

}  // namespace

Result<bool> rotate_if_larger(const std::string& path, uint64_t max_bytes, int keep) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return Error::sys("stat(" + path + ")", errno);
  }
  if (static_cast<uint64_t>(st.st_size) <= max_bytes) return false;
  if (keep <= 1) {
    if (::truncate(path.c_str(), 0) != 0) return Error::sys("truncate(" + path + ")", errno);
    return true;
  }
  // output.log.(keep-2) -> .(keep-1), …, .1 -> .2: the oldest is overwritten (dropped).
  for (int i = keep - 2; i >= 1; --i) {
    std::string from = path + "." + std::to_string(i);
    std::string to = path + "." + std::to_string(i + 1);
    if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      return Error::sys("rename(" + from + ")", errno);
    }
  }
  QF_TRY(copy_file(path, path + ".1"));
  if (::truncate(path.c_str(), 0) != 0) return Error::sys("truncate(" + path + ")", errno);
  return true;
}

}  // namespace qufop::noded

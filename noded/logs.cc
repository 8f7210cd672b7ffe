#include "noded/logs.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>

namespace qufop::noded {

namespace {

Result<void> write_all(int fd, const char* data, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Error::sys("write(" + what + ")", errno);
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return ok();
}

}  // namespace

Result<std::unique_ptr<RotatingLog>> RotatingLog::open(const std::string& dir, uint64_t max_bytes,
                                                       int keep, const std::string& name) {
  if (max_bytes == 0) return Error::invalid("log max size must be > 0");
  if (keep < 1) return Error::invalid("log files kept must be >= 1");
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return Error::sys("mkdir(" + dir + ")", errno);
  }
  std::unique_ptr<RotatingLog> log(new RotatingLog(dir + "/" + name, max_bytes, keep));
  QF_TRY(log->reopen());
  return log;
}

RotatingLog::~RotatingLog() {
  if (fd_ >= 0) ::close(fd_);
}

Result<void> RotatingLog::reopen() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
  if (fd_ < 0) return Error::sys("open(" + path_ + ")", errno);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return Error::sys("stat(" + path_ + ")", errno);
  size_ = static_cast<uint64_t>(st.st_size);
  return ok();
}

Result<void> RotatingLog::rotate() {
  // output.log.<keep-1> is dropped; each older one moves up; the current becomes .1.
  for (int i = keep_ - 1; i >= 1; --i) {
    std::string from = i == 1 ? path_ : path_ + "." + std::to_string(i - 1);
    std::string to = path_ + "." + std::to_string(i);
    if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      return Error::sys("rename(" + from + ", " + to + ")", errno);
    }
  }
  if (keep_ == 1 && ::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    return Error::sys("unlink(" + path_ + ")", errno);
  }
  return reopen();
}

Result<void> RotatingLog::write(std::string_view data) {
  while (!data.empty()) {
    if (size_ >= max_bytes_) QF_TRY(rotate());
    size_t n = static_cast<size_t>(std::min<uint64_t>(data.size(), max_bytes_ - size_));
    QF_TRY(write_all(fd_, data.data(), n, path_));
    size_ += n;
    data.remove_prefix(n);
  }
  return ok();
}

OutputPump::OutputPump(std::unique_ptr<RotatingLog> log, std::vector<Source> sources)
    : log_(std::move(log)), sources_(std::move(sources)) {}

OutputPump::~OutputPump() {
  if (!started_) {  // never started nor drained: the sources are still ours to close
    for (const auto& s : sources_) {
      if (s.fd >= 0) ::close(s.fd);
    }
    sources_.clear();
  }
  (void)join();
}

void OutputPump::start() {
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] { run(); });
}

Result<void> OutputPump::join() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

std::vector<pollfd> OutputPump::pollfds() const {
  std::vector<pollfd> fds;
  for (const auto& src : sources_) {
    if (src.fd >= 0) fds.push_back({src.fd, POLLIN, 0});
  }
  return fds;
}

void OutputPump::read_ready(const std::vector<pollfd>& ready) {
  char buf[16384];
  for (const pollfd& p : ready) {
    if (p.revents == 0) continue;
    auto src = std::find_if(sources_.begin(), sources_.end(),
                            [&](const Source& s) { return s.fd >= 0 && s.fd == p.fd; });
    if (src == sources_.end()) continue;
    ssize_t n = ::read(src->fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {  // EOF: every writer is gone
      ::close(src->fd);
      src->fd = -1;
      continue;
    }
    std::string_view chunk(buf, static_cast<size_t>(n));
    if (log_ && result_.ok()) {
      // A failing log (disk full) must not block the sandbox: keep draining, report once.
      if (auto r = log_->write(chunk); !r.ok()) result_ = r.error();
    }
    if (src->tee_fd >= 0) (void)write_all(src->tee_fd, chunk.data(), chunk.size(), "tee");
  }
}

Result<void> OutputPump::drain() {
  if (started_) return join();
  started_ = true;
  run();
  return result_;
}

void OutputPump::run() {
  for (;;) {
    std::vector<pollfd> fds = pollfds();
    if (fds.empty()) break;
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      if (result_.ok()) result_ = Error::sys("poll(sandbox output)", errno);
      break;
    }
    read_ready(fds);
  }
  for (auto& src : sources_) {
    if (src.fd >= 0) ::close(src.fd);
    src.fd = -1;
  }
}

}  // namespace qufop::noded

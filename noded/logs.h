// A sandbox's output: stdout and stderr go to <log_dir>/output.log, rotated when it would grow
// past max_bytes (output.log -> output.log.1 -> … ; `keep` files in all, the oldest dropped), so
// a chatty instance never fills the node's disk.
#pragma once

#include <poll.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"

namespace qufop::noded {

class RotatingLog {
 public:
  // Creates `dir` (one level) when missing and opens <dir>/<name> for appending.
  static Result<std::unique_ptr<RotatingLog>> open(const std::string& dir, uint64_t max_bytes,
                                                   int keep,
                                                   const std::string& name = "output.log");
  ~RotatingLog();
  RotatingLog(const RotatingLog&) = delete;
  RotatingLog& operator=(const RotatingLog&) = delete;

  // Appends; a chunk that does not fit is split at the limit and continues in a fresh file.
  Result<void> write(std::string_view data);
  const std::string& path() const { return path_; }

 private:
  RotatingLog(std::string path, uint64_t max_bytes, int keep)
      : path_(std::move(path)), max_bytes_(max_bytes), keep_(keep) {}
  Result<void> rotate();
  Result<void> reopen();

  std::string path_;
  uint64_t max_bytes_;
  int keep_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Copies the sandbox's output pipes into the log (and each to a tee fd, when given: the one-shot
// runner shows the output on its own stdout/stderr) on a thread of its own, until every pipe is
// at EOF — which is when every process of the sandbox is gone.
class OutputPump {
 public:
  struct Source {
    int fd;           // read end; owned (closed) by the pump
    int tee_fd = -1;  // not owned
  };
  OutputPump(std::unique_ptr<RotatingLog> log, std::vector<Source> sources);
  ~OutputPump();  // joins
  OutputPump(const OutputPump&) = delete;
  OutputPump& operator=(const OutputPump&) = delete;

  // Starts the thread (once). A pump never started closes its sources when destroyed.
  void start();
  // Blocks until every source is at EOF; returns the first write error to the log, if any.
  Result<void> join();

  // Without a thread, inside a caller's own poll loop (the one-shot runner's): the sources still
  // open, to poll for POLLIN, and the results of that poll, each ready source read once.
  std::vector<pollfd> pollfds() const;
  void read_ready(const std::vector<pollfd>& ready);
  // In the calling thread (unless the thread runs: then join()): copies until every source is at
  // EOF; returns the first write error to the log, if any.
  Result<void> drain();

 private:
  void run();
  std::unique_ptr<RotatingLog> log_;
  std::vector<Source> sources_;
  std::thread thread_;
  bool started_ = false;
  Result<void> result_;
};

}  // namespace qufop::noded

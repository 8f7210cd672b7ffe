// Starting real binaries from tests: argv in, exit status and stderr out.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace qufop::test {

class Process {
 public:
  explicit Process(const std::vector<std::string>& argv);
  ~Process();  // SIGKILLs and reaps the process if it still runs
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig) const;
  // The wait status once the process exits within `timeout`; nullopt if it is still running.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // Everything written to stdout / stderr so far (drains the pipes).
  std::string out();
  std::string err();

 private:
  void drain();
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string out_, err_;
  bool reaped_ = false;
};

// A loopback TCP port that was free a moment ago.
uint16_t free_port();
// A fresh directory under /tmp, removed by the caller.
std::string make_temp_dir(const std::string& prefix);

}  // namespace qufop::test

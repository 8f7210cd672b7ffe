// A sandbox: a SandboxSpec made into running processes by ordered steps, each undone in reverse
// when a later one fails (Sandbox::start in sandbox.cc lists them), and released — processes,
// mounts, cgroup, run dir — without leaving anything behind.
#pragma once

#include <sys/types.h>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "noded/cgroup.h"
#include "noded/mounts.h"
#include "noded/seccomp.h"
#include "noded/spec.h"

namespace qufop::noded {

// Undoes the completed steps of a multi-step host change in reverse unless committed. An error
// while undoing is logged; it never replaces the error that caused the rollback.
class Rollback {
 public:
  explicit Rollback(std::string what) : what_(std::move(what)) {}
  ~Rollback();
  Rollback(const Rollback&) = delete;
  Rollback& operator=(const Rollback&) = delete;

  void add(std::string step, std::function<Result<void>()> undo);
  void commit() { undo_.clear(); }

 private:
  std::string what_;
  std::vector<std::pair<std::string, std::function<Result<void>()>>> undo_;
};

struct ExitStatus {
  bool signaled = false;
  int code = 0;             // the exit code, or the signal number when signaled
  bool oom_killed = false;  // the kernel's OOM killer killed a process of the sandbox
  // The shell's convention: the exit code, or 128 + the signal.
  int shell_code() const { return signaled ? 128 + code : code; }
  std::string describe() const;  // "exited with 3", "killed by SIGKILL (OOM)"
};

struct StartOptions {
  CgroupManager* cgroups = nullptr;         // required
  const SeccompProgram* seccomp = nullptr;  // required when spec.use_seccomp
  std::string init_path;                    // the qufop-init binary (static)
  // The sandbox's stdout and stderr (dup'd into it; the caller keeps its fds). -1: /dev/null.
  int stdout_fd = -1;
  int stderr_fd = -1;
  // pid 1 gets SIGKILL if the thread that started it dies (the one-shot runner; never noded,
  // whose instances outlive a restart).
  bool kill_with_parent = false;
  // The starting thread moves to another CPU while pid 1 builds its rootfs (CpuStep in
  // sandbox.cc): for a starter whose cgroup set-up takes about as long as pid 1's (the one-shot
  // runner, which also detects the host and starts libcgroup then). noded's takes a fraction.
  bool step_off_cpu = false;
};

// Rejects a spec that must not reach the kernel, with a message naming the field: bad id, no
// command, missing layers, a symlinked /proc, nonsense limits, a relative run dir.
Result<void> validate(const SandboxSpec& spec);

// The qufop-init next to the running binary (/proc/self/exe's directory), or $QUFOP_INIT.
std::string default_init_path();

// One sandbox. Thread-compatible (one thread at a time per Sandbox); starting many from many
// threads at once is safe. pid 1 is a child of the starting process: nothing else in it may reap
// children it did not start (no waitpid(-1), no SIGCHLD set to SIG_IGN).
class Sandbox {
 public:
  // Validates, then runs the steps; on failure everything done so far is undone and the error
  // says which step failed ("exec /bin/nope in rootfs: No such file or directory").
  static Result<std::unique_ptr<Sandbox>> start(const SandboxSpec& spec,
                                                const StartOptions& options);
  // Re-opens a sandbox an earlier noded started and that still runs (live restore after a
  // restart; sandbox_adopt.cc): pid 1 by a pidfd, its cgroup, its run dir. The caller checks
  // that init_pid is still the same process. noded is not pid 1's parent any more, so its exit
  // status is unknown: wait() reports code -1.
  static Result<std::unique_ptr<Sandbox>> adopt(const SandboxSpec& spec, pid_t init_pid,
                                                const StartOptions& options);
  ~Sandbox();  // release(), errors logged
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const SandboxSpec& spec() const { return spec_; }
  pid_t init_pid() const { return init_pid_; }
  // Readable when pid 1 has exited (poll it); -1 once reaped.
  int pidfd() const { return pidfd_; }
  Cgroup* cgroup() { return cgroup_.get(); }

  // To pid 1, which forwards SIGTERM/SIGINT/SIGHUP/… to the main process. A pid 1 already
  // gone is not an error.
  Result<void> signal(int sig);
  // Waits for pid 1 to exit (nullopt: forever) and records how the main process ended, OOM
  // kills included. Returns nullopt on timeout. After exit, returns the recorded status.
  Result<std::optional<ExitStatus>> wait(std::optional<std::chrono::milliseconds> timeout);
  const std::optional<ExitStatus>& exit_status() const { return status_; }
  // SIGKILL to every process in the cgroup (grandchildren included), then reaps pid 1.
  Result<void> kill_all();
  // Kills what is left, then removes mounts under the run dir, the cgroup and the run dir.
  // Idempotent: a second call finds nothing to do.
  Result<void> release();

 private:
  Sandbox(const SandboxSpec& spec, const StartOptions& options);
  // The steps of start() and their undos (release() runs the undos too).
  Result<void> create_run_dir();
  Result<void> remove_run_dir();
  Result<void> create_cgroup();
  Result<void> remove_cgroup();
  Result<void> spawn();
  Result<void> kill_process();
  Result<void> join_cgroup();
  Result<void> await_exec();
  Result<void> reap(int options, bool* exited);
  Result<void> reap_adopted(int options, bool* exited);  // sandbox_adopt.cc

  SandboxSpec spec_;
  StartOptions options_;
  RootfsPaths paths_;
  std::unique_ptr<Cgroup> cgroup_;
  pid_t init_pid_ = -1;
  int pidfd_ = -1;
  int sync_fd_ = -1;    // parent's end of the sync socket
  int status_fd_ = -1;  // read end of qufop-init's status pipe
  std::optional<ExitStatus> status_;
  bool released_ = false;
  bool adopted_ = false;  // not our child: no waitpid, no status pipe
};

}  // namespace qufop::noded

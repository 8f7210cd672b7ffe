// Sandbox::adopt: a sandbox started by an earlier noded, re-opened after a restart. pid 1 was
// re-parented (to the host's init or a subreaper) when that noded died, so this process can
// neither waitpid() it nor read qufop-init's status pipe (its read end died with the old noded;
// init's final write then fails harmlessly, EPIPE or SIGPIPE as it exits anyway). The pidfd
// says when pid 1 is gone; the exit status stays unknown.
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "noded/sandbox.h"

namespace qufop::noded {

Result<std::unique_ptr<Sandbox>> Sandbox::adopt(const SandboxSpec& spec, pid_t init_pid,
                                                const StartOptions& options) {
  if (!options.cgroups) return Error::invalid("no cgroup manager given");
  if (init_pid <= 1) return Error::invalid("adopting sandbox " + spec.id + ": bad pid");
  std::unique_ptr<Sandbox> sb(new Sandbox(spec, options));
  sb->adopted_ = true;
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, init_pid, 0));
  if (fd < 0) return Error::sys("pidfd_open(" + std::to_string(init_pid) + ")", errno);
  sb->pidfd_ = fd;
  sb->init_pid_ = init_pid;
  auto cg = options.cgroups->open(spec.cgroup_parent, spec.id);
  if (!cg) {
    // Without its cgroup the sandbox cannot be limited or killed as a whole: refuse, leave it.
    sb->init_pid_ = -1;
    sb->released_ = true;
    return cg.error().wrap("adopting sandbox " + spec.id);
  }
  sb->cgroup_ = std::move(*cg);
  return sb;
}

Result<void> Sandbox::reap_adopted(int options, bool* exited) {
  *exited = false;
  for (;;) {
    pollfd pfd{pidfd_, POLLIN, 0};
    int rc = ::poll(&pfd, 1, (options & WNOHANG) ? 0 : -1);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Error::sys("poll(pidfd)", errno);
    if (rc == 0) return ok();
    break;
  }
  *exited = true;
  init_pid_ = -1;
  ::close(pidfd_);
  pidfd_ = -1;
  ExitStatus st;
  st.code = -1;  // unknown: not our child
  if (cgroup_) {
    if (auto oom = cgroup_->oom_killed(); oom.ok()) st.oom_killed = *oom;
  }
  status_ = st;
  return ok();
}

}  // namespace qufop::noded

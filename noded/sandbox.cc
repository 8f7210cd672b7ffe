// The sandbox as its steps. Parent side (Sandbox::start): run dir -> pid 1 in new namespaces ->
// cgroup, made while pid 1 builds its rootfs -> pid 1 into the cgroup (sync 1) -> wait for both
// execs (sync 2). Child side (pid1_steps): namespaces -> private mounts -> overlay rootfs, /proc,
// /dev, /sys, /tmp, masks -> pivot_root -> hostname, loopback -> read-only root -> (sync 1) join
// the cgroup -> cgroup namespace -> seccomp -> fork the command (command_steps: workdir,
// privileges, (sync 3), exec) -> pid 1 drops privileges and becomes qufop-init.
//
// Why the cgroup is made after the fork: making it (libcgroup, a directory and a few values per
// hierarchy) takes about as long as pid 1's mounts, and the two need nothing from each other
// until pid 1 is about to fork the command. pid 1 joins the cgroup at sync 1, before that fork,
// so the command and all it forks are born inside it and nothing of the user's ever runs
// outside its limits; what pid 1 itself did before (our own code: mounts, no user input runs)
// is charged to the starting process' cgroup. For the two to run at once, the one-shot runner's
// thread steps onto another CPU until sync 1 (CpuStep below).
//
// Why fork() and not a raw clone(): noded is multi-threaded. glibc's fork() runs the atfork
// handlers, which take and release malloc's locks around the fork, so the child may allocate
// (an Error carries strings). A raw clone() skips them: a lock another thread held at that
// instant would stay held forever in the child. The new pid namespace comes from
// unshare(CLONE_NEWPID) on the calling thread only (namespaces.cc), every other namespace from
// the single-threaded child itself. Belt and braces: every string and array the child needs is
// made in the parent (ChildPlan, RootfsPaths), so its success path allocates nothing and stays
// safe under an allocator without fork handlers (ASan's); only a failing step builds its Error.
// The child never touches spdlog or another lock-holding object; it reports over the socket.
//
// Why pid 1 forks the command and then execs qufop-init (rather than init forking the command):
// every step of the command's setup (privileges, seccomp, exec, and the error report if one
// fails) stays in this file, in C++ with the spec at hand; qufop-init stays a 100-line static
// binary that only reaps and forwards signals. A process keeps its children across exec, so the
// command is init's child; its exit before init runs is a zombie init reaps first thing.
#include "noded/sandbox.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "common/fd.h"
#include "noded/namespaces.h"
#include "noded/privileges.h"

namespace qufop::noded {

namespace {

constexpr std::chrono::seconds kStartTimeout{30};
constexpr std::chrono::seconds kKillTimeout{10};
constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
// Blocked in pid 1 from its start, through the exec of qufop-init (see init/init.c).
constexpr int kInitSignals[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// The kernel queues a forked child on its parent's CPU and, on a small VM, leaves it there
// while the parent keeps running: pid 1 then waited for the whole cgroup set-up before running
// at all. So right after the fork the starting thread moves itself to another CPU it may use,
// and returns to its own set of CPUs at sync 1. The child's affinity is never touched. Best
// effort: with one CPU, or if the kernel refuses, nothing moves. Only where the starter's part
// is long (StartOptions::step_off_cpu): a short one is better left where it is (the move itself
// cost noded's in-process start about 0.1 ms).
class CpuStep {
 public:
  explicit CpuStep(bool enabled) {
    if (!enabled) return;
    if (::sched_getaffinity(0, sizeof saved_, &saved_) != 0 || CPU_COUNT(&saved_) < 2) return;
    int here = ::sched_getcpu();
    cpu_set_t there;
    CPU_ZERO(&there);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (cpu != here && CPU_ISSET(cpu, &saved_)) {
        CPU_SET(cpu, &there);
        break;
      }
    }
    moved_ = ::sched_setaffinity(0, sizeof there, &there) == 0;
  }
  ~CpuStep() { back(); }
  CpuStep(const CpuStep&) = delete;
  CpuStep& operator=(const CpuStep&) = delete;

  void back() {
    if (moved_) (void)::sched_setaffinity(0, sizeof saved_, &saved_);
    moved_ = false;
  }

 private:
  cpu_set_t saved_;
  bool moved_ = false;
};

// ---- the sync protocol: SOCK_SEQPACKET, one record per message ----
// sync 1 (parent -> child): kSyncCgroupJoined — the cgroup is ready. cgroup v1: the message
//   carries (SCM_RIGHTS) the group's `tasks` file in each hierarchy, and pid 1 joins by itself;
//   v2: the parent has moved pid 1 already. Either way pid 1 may then fork the command.
// sync 2 (child -> parent): EOF — both ends in the child are close-on-exec: pid 1 became
//   qufop-init and the command exec'd. Before that, a failing step sends kSyncError instead.
// sync 3 (pid 1 -> command, a pipe inside the sandbox): EOF when pid 1 has dropped its
//   privileges and exec'd qufop-init; the command waits for it just before its own exec.
enum SyncPoint : uint32_t { kSyncCgroupJoined = 1, kSyncError = 2 };
struct SyncMessage {
  uint32_t point = 0;
  int32_t err = 0;
  char code[24] = {};
  char text[472] = {};
};

// Everything the child needs, computed in the parent before the fork.
struct ChildPlan {
  const SandboxSpec* spec;
  const RootfsPaths* paths;
  const SeccompProgram* seccomp;  // null: no filter
  std::vector<int> keep_caps;
  std::string hostname;
  std::vector<std::string> argv_storage, env_storage, path_dirs;
  std::vector<std::string> path_candidates;  // <PATH dir>/<argv[0]>, in PATH order
  std::vector<char*> argv, envp;
  bool kill_with_parent = false;
  int sync_fd = -1, status_fd = -1, init_fd = -1, netns_fd = -1;
  int init_ready_fd = -1;  // the command's read end of a pipe pid 1 holds open until its exec
  int stdout_fd = -1, stderr_fd = -1;
};

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

void copy_cstr(char* dst, size_t cap, const std::string& src) {
  size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

// Child side: the failed step's message to the parent, then exit. Never returns.
[[noreturn]] void report_and_exit(int sync_fd, const Error& error, int exit_code) {
  SyncMessage msg;
  msg.point = kSyncError;
  msg.err = error.sys_errno;
  copy_cstr(msg.code, sizeof msg.code, error.code);
  copy_cstr(msg.text, sizeof msg.text, error.message);
  (void)::send(sync_fd, &msg, sizeof msg, MSG_NOSIGNAL);
  ::_exit(exit_code);
}

// Child side: fds at 0-2 would be clobbered by the stdio dup2s; move them up first.
void lift(int& fd) {
  if (fd >= 0 && fd <= 2) fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

Result<void> setup_stdio(ChildPlan& p) {
  for (int* fd : {&p.sync_fd, &p.status_fd, &p.init_fd, &p.netns_fd, &p.stdout_fd, &p.stderr_fd}) {
    lift(*fd);
  }
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) return Error::sys("open(/dev/null)", errno);
  int out = p.stdout_fd >= 0 ? p.stdout_fd : null;
  int err = p.stderr_fd >= 0 ? p.stderr_fd : null;
  if (::dup2(null, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) {
    return Error::sys("dup2(stdio)", errno);
  }
  if (null > 2) ::close(null);
  return ok();
}

// Child side: the parent's handlers and ignored signals must not leak into the sandbox (an
// ignored SIGPIPE survives exec); `blocked` becomes the mask.
void reset_signals(const sigset_t& blocked) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }
  ::sigprocmask(SIG_SETMASK, &blocked, nullptr);
}

// At most this many v1 hierarchies hold a sandbox's cgroup (cgroup_v1.cc uses six).
constexpr size_t kMaxTaskFds = 16;

// cgroup v1: pid 1 moves itself, writing "0" to `tasks` in each hierarchy. A single thread
// moving itself skips the kernel's global threadgroup lock, whose writer side waits for an RCU
// grace period (~10 ms on a busy host) — the cost of the parent writing the pid to cgroup.procs.
// pid 1 is single-threaded, so its thread is its whole process. Closes the fds.
Result<void> join_cgroup_v1(const int* task_fds, size_t n) {
  Result<void> r = ok();
  for (size_t i = 0; i < n; ++i) {
    if (r.ok() && ::write(task_fds[i], "0", 1) != 1) {
      r = Error::sys("joining the cgroup (write tasks)", errno);
    }
    ::close(task_fds[i]);
  }
  return r;
}

// sync 1, child side: block until the parent says the cgroup is ready, then join it (v1: the
// `tasks` fds that came with the message). From here on pid 1 and all it forks are inside.
Result<void> wait_for_cgroup(int sync_fd) {
  SyncMessage msg;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxTaskFds)];
  for (;;) {
    iovec iov{&msg, sizeof msg};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(sync_fd, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("sync 1: recv", errno);
    if (n == 0) return Error{"unavailable", "sync 1: the parent is gone", 0};
    int fds[kMaxTaskFds];
    size_t count = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k && count < kMaxTaskFds; ++i) {
        std::memcpy(&fds[count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      }
    }
    if (msg.point != kSyncCgroupJoined || (mh.msg_flags & MSG_CTRUNC)) {
      for (size_t i = 0; i < count; ++i) ::close(fds[i]);
      return Error{"internal", "sync 1: unexpected message", 0};
    }
    return join_cgroup_v1(fds, count);
  }
}

// sync 3, command side: EOF once pid 1 has exec'd qufop-init (its write end is close-on-exec),
// so the command never runs beside a pid 1 that is still root.
Result<void> wait_for_init(int fd) {
  char byte;
  ssize_t n;
  do {
    n = ::read(fd, &byte, 1);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Error::sys("sync 3: read", errno);
  return ok();
}

// The command's path in the (pivoted) rootfs: as given when it has a '/', else the first
// executable regular file among the PATH candidates (made in the parent), as execvp would.
Result<const std::string*> resolve_command(const ChildPlan& p) {
  const std::string& name = p.argv_storage[0];
  if (name.find('/') != std::string::npos) return &name;
  for (const auto& candidate : p.path_candidates) {
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return &candidate;
    }
  }
  std::string path;
  for (const auto& d : p.path_dirs) path += (path.empty() ? "" : ":") + d;
  return Error{"not_found", "exec " + name + " in rootfs: not found in PATH " + path, ENOENT};
}

// The command: forked by pid 1 once the sandbox is built. Returns only on error.
Result<void> command_steps(const ChildPlan& p) {
  // A fresh process's signals: pid 1's blocked set must not leak into the command.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // The workdir while still root: resolving it needs no permission the user may lack.
  if (::chdir(p.spec->workdir.c_str()) != 0) {
    return Error::sys("workdir " + p.spec->workdir + " in rootfs", errno);
  }
  auto path = resolve_command(p);
  if (!path) return path.error();
  // No fd of the host (noded's sockets, the sync socket) survives the exec.
  if (::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    return Error::sys("close_range", errno);
  }
  // Privileges after everything that needs root (the seccomp filter came with the fork).
  QF_TRY(drop_privileges(p.spec->uid, p.spec->gid, p.keep_caps, p.spec->limits));
  // sync 3: pid 1 is qufop-init, unprivileged, before anything of the user's runs.
  QF_TRY(wait_for_init(p.init_ready_fd));
  ::execve((*path)->c_str(), p.argv.data(), p.envp.data());
  return Error::sys("exec " + **path + " in rootfs", errno);
}

// pid 1 becomes qufop-init, opened on the host before pivot_root: the image need not have it.
Result<void> exec_init(const ChildPlan& p, pid_t main_pid) {
  char main_arg[16], fd_arg[16];
  std::snprintf(main_arg, sizeof main_arg, "%d", main_pid);
  std::snprintf(fd_arg, sizeof fd_arg, "%d", p.status_fd);
  char name[] = "qufop-init";
  char* argv[] = {name, main_arg, fd_arg, nullptr};
  char* envp[] = {nullptr};
  ::syscall(SYS_execveat, p.init_fd, "", argv, envp, AT_EMPTY_PATH);
  return Error::sys("exec qufop-init", errno);
}

// pid 1 of the new pid namespace. Returns only on error.
Result<void> pid1_steps(ChildPlan& p) {
  sigset_t init_set;
  sigemptyset(&init_set);
  for (int sig : kInitSignals) sigaddset(&init_set, sig);
  // First: signals blocked for qufop-init, so none sent from now on is lost (init/init.c).
  reset_signals(init_set);
  // Before the parent can die unnoticed: sync 1 below also fails if it is gone.
  if (p.kill_with_parent) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // A session of its own: no controlling terminal, and a Ctrl-C at the runner's terminal reaches
  // the runner (which stops the sandbox the StopWait way), not the sandbox's processes directly.
  if (::setsid() < 0) return Error::sys("setsid", errno);
  QF_TRY(setup_stdio(p));
  // Own namespaces first: nothing below touches the host's mounts, hostname or network.
  QF_TRY(enter_namespaces(p.spec->net, p.netns_fd));
  // Before any mount: private propagation, so no mount of ours reaches the host.
  QF_TRY(make_mounts_private());
  QF_TRY(mount_overlay(*p.paths));
  // On the merged tree, the one the sandbox will see: a symlinked /proc is refused here too
  // (validate() checked the layers; this closes the gap to the mount).
  QF_TRY(prepare_mount_points(*p.paths));
  // /proc after the pid namespace exists: it shows that namespace (we are its pid 1).
  QF_TRY(mount_proc(*p.paths));
  // /dev before pivot_root: its nodes are bound from the host's /dev.
  QF_TRY(mount_dev(*p.paths));
  QF_TRY(mount_sys(*p.paths));
  QF_TRY(mount_tmp(*p.paths));
  // Masks after /proc, /sys and /dev: /dev/null is bound over masked files.
  QF_TRY(mask_paths(*p.paths));
  // pivot_root after every mount that needs a host path; the host's tree is then detached.
  QF_TRY(pivot_into(p.paths->rootfs));
  QF_TRY(set_hostname(p.hostname));
  if (p.spec->net == NetMode::kNone) QF_TRY(bring_up_loopback());
  // Read-only last among the mounts: the ones above create their mount points in the root.
  if (p.spec->readonly_root) QF_TRY(remount_root_readonly());
  // sync 1: the cgroup the parent made meanwhile; pid 1 is inside once this returns. The command
  // is forked below, so it and all it forks are born inside; nothing of the user's has run yet.
  QF_TRY(wait_for_cgroup(p.sync_fd));
  // The cgroup namespace after joining: its root is the sandbox's own cgroup.
  QF_TRY(enter_cgroup_namespace());
  // Seccomp before the command is forked, which inherits the filter: the kernel checks and
  // compiles a filter at each install, so one install serves both processes. Everything both
  // still do before their execs (privilege drop, chdir, close_range, execve/execveat) is in the
  // profile.
  if (p.seccomp) QF_TRY(install(*p.seccomp));
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return Error::sys("pipe2", errno);
  pid_t main_pid = ::fork();
  if (main_pid < 0) return Error::sys("fork(command)", errno);
  if (main_pid == 0) {
    ::close(ready[1]);
    p.init_ready_fd = ready[0];
    auto r = command_steps(p);
    report_and_exit(p.sync_fd, r.error(), r.error().sys_errno == ENOENT ? 127 : 126);
  }
  // pid 1 from here on is qufop-init: it keeps no privilege the command lacks (no capability,
  // the same uid, the same seccomp filter), so it is no way out of the sandbox. Its end of the
  // ready pipe closes at its exec: sync 3 for the command.
  ::close(ready[0]);
  if (::syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    return Error::sys("close_range", errno);
  }
  if (::fcntl(p.status_fd, F_SETFD, 0) != 0) return Error::sys("fcntl(status fd)", errno);
  QF_TRY(drop_privileges(p.spec->uid, p.spec->gid, {}, p.spec->limits));
  if (p.kill_with_parent) {
    // Changing uid cleared the parent-death signal: set it again, then make sure the parent did
    // not die in between (its end of the sync socket would be closed: EOF, not EAGAIN).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    char byte;
    if (::recv(p.sync_fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK) == 0) {
      return Error{"unavailable", "the parent is gone", 0};
    }
  }
  return exec_init(p, main_pid);
}

[[noreturn]] void run_pid1(ChildPlan& plan) {
  auto r = pid1_steps(plan);
  report_and_exit(plan.sync_fd, r.error(), 1);
}

// cgroup v1: `<hierarchy>/<path>/tasks` in every v1 hierarchy the sandbox's cgroup exists in
// (the manager created it in those it uses): the group's own list, or else every cgroup mount.
Result<std::vector<Fd>> open_v1_task_files(const Cgroup& cgroup) {
  const std::string& path = cgroup.path();
  std::vector<std::string> candidates = cgroup.v1_task_files();
  if (candidates.empty()) {
    auto mounts = read_mountinfo();
    if (!mounts) return mounts.error();
    for (const auto& m : *mounts) {
      if (m.fstype == "cgroup") candidates.push_back(m.target + "/" + path + "/tasks");
    }
  }
  std::vector<Fd> files;
  for (const auto& tasks : candidates) {
    Fd fd(::open(tasks.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() >= 0) {
      files.push_back(std::move(fd));
    } else if (errno != ENOENT) {
      return Error::sys("open(" + tasks + ")", errno);
    }
  }
  if (files.empty()) return Error{"internal", "cgroup " + path + ": in no v1 hierarchy", 0};
  if (files.size() > kMaxTaskFds) {
    return Error{"internal", "cgroup " + path + ": in more v1 hierarchies than supported", 0};
  }
  return files;
}

bool valid_name(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  }
  return true;
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace

// ---- Rollback ----

Rollback::~Rollback() {
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
    if (auto r = it->second(); !r.ok()) {
      spdlog::error("{}: undoing '{}' failed: {}", what_, it->first, r.error().message);
    }
  }
}

void Rollback::add(std::string step, std::function<Result<void>()> undo) {
  undo_.emplace_back(std::move(step), std::move(undo));
}

// ---- ExitStatus ----

std::string ExitStatus::describe() const {
  std::string s =
      signaled ? "killed by " + signal_name(code) : "exited with " + std::to_string(code);
  if (oom_killed) s += " (the OOM killer killed a process)";
  return s;
}

// ---- validation ----

Result<void> validate(const SandboxSpec& spec) {
  if (!valid_name(spec.id, 64)) {
    return Error::invalid("sandbox id '" + spec.id + "': expected 1-64 characters of [a-z0-9_-]");
  }
  if (spec.argv.empty() || spec.argv[0].empty()) return Error::invalid("no command given");
  if (spec.run_dir.size() < 2 || spec.run_dir[0] != '/' || spec.run_dir.back() == '/') {
    return Error::invalid("run dir '" + spec.run_dir + "' is not an absolute path");
  }
  if (spec.workdir.empty() || spec.workdir[0] != '/') {
    return Error::invalid("workdir '" + spec.workdir + "' is not an absolute path");
  }
  for (const auto& e : spec.env) {
    if (e.find('=') == std::string::npos || e[0] == '=') {
      return Error::invalid("environment entry '" + e + "' is not K=V");
    }
  }
  if (!spec.hostname.empty()) {
    if (spec.hostname.size() > 63) return Error::invalid("hostname longer than 63 characters");
    for (char c : spec.hostname) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') {
        return Error::invalid("hostname '" + spec.hostname + "': expected [A-Za-z0-9.-]");
      }
    }
  }
  const Limits& l = spec.limits;
  if (!std::isfinite(l.cpus) || l.cpus < 0) {
    return Error::invalid("cpu limit " + std::to_string(l.cpus) + ": expected a positive number");
  }
  if (l.cpus > 0 && l.cpus < 0.01) {
    return Error::invalid("cpu limit " + std::to_string(l.cpus) + " is below the minimum 0.01");
  }
  if (l.memory_bytes > 0 && l.memory_bytes < (4u << 20)) {
    return Error::invalid("memory limit " + std::to_string(l.memory_bytes) +
                          " bytes is below the minimum 4 MiB");
  }
  if (l.pids < 0 || l.pids == 1) {
    return Error::invalid("pids limit " + std::to_string(l.pids) +
                          ": expected 0 (unlimited) or at least 2 (qufop-init and the command)");
  }
  if (l.nofile == 0) return Error::invalid("open files limit must be > 0");
  if (spec.net == NetMode::kNamespace && spec.net_namespace_path.empty()) {
    return Error::invalid("network mode 'namespace' needs a namespace path");
  }
  if (spec.cgroup_parent.find("..") != std::string::npos ||
      (!spec.cgroup_parent.empty() && spec.cgroup_parent[0] == '/')) {
    return Error::invalid("cgroup parent '" + spec.cgroup_parent + "' is not a relative path");
  }
  if (spec.stop_wait.count() < 0) return Error::invalid("stop wait must be >= 0");
  if (auto caps = parse_capabilities(spec.keep_capabilities); !caps) return caps.error();
  return check_layers(spec.layers);
}

std::string default_init_path() {
  if (const char* env = std::getenv("QUFOP_INIT"); env && *env) return env;
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "qufop-init";
  std::string exe(buf, static_cast<size_t>(n));
  return exe.substr(0, exe.rfind('/') + 1) + "qufop-init";
}

// ---- Sandbox: the steps ----

Result<std::unique_ptr<Sandbox>> Sandbox::start(const SandboxSpec& spec,
                                                const StartOptions& options) {
  // Nothing touches the host before the spec is known good.
  QF_TRY(validate(spec));
  if (!options.cgroups) return Error::invalid("no cgroup manager given");
  if (spec.use_seccomp && !options.seccomp) return Error::invalid("no seccomp program given");
  std::unique_ptr<Sandbox> sb(new Sandbox(spec, options));
  Sandbox* s = sb.get();
  // Each step is all or nothing; once it has succeeded, its undo joins the rollback.
  Rollback rollback("starting sandbox " + spec.id);
  // The run dir first: the child mounts the rootfs in it.
  QF_TRY(s->create_run_dir());
  rollback.add("run dir", [s] { return s->remove_run_dir(); });
  // pid 1 in new namespaces; it builds the rootfs, then waits at sync 1.
  QF_TRY(s->spawn());
  CpuStep step(options.step_off_cpu);  // pid 1 gets this CPU while we make its cgroup
  // The cgroup's undo is registered before the process' so that it runs after it: a group is
  // removed once pid 1 (possibly inside already) is dead. Without a cgroup it does nothing.
  rollback.add("cgroup", [s] { return s->remove_cgroup(); });
  rollback.add("process", [s] { return s->kill_process(); });
  // The cgroup with its limits, while pid 1 mounts (see the top of this file).
  QF_TRY(s->create_cgroup());
  // Into the cgroup at sync 1: only then does pid 1 fork the command.
  QF_TRY(s->join_cgroup());
  step.back();
  // sync 2: both execs done, or the error of the step that failed.
  QF_TRY(s->await_exec());
  rollback.commit();
  return sb;
}

Sandbox::Sandbox(const SandboxSpec& spec, const StartOptions& options)
    : spec_(spec), options_(options), paths_(rootfs_paths(spec)) {}

Sandbox::~Sandbox() {
  if (auto r = release(); !r.ok()) {
    spdlog::error("releasing sandbox {}: {}", spec_.id, r.error().message);
  }
  for (int fd : {pidfd_, sync_fd_, status_fd_}) {
    if (fd >= 0) ::close(fd);
  }
}

Result<void> Sandbox::create_run_dir() { return noded::create_run_dir(paths_); }

Result<void> Sandbox::remove_run_dir() {
  // The sandbox mounted everything in its own mount namespace (private from the start), so ours
  // normally holds no mount under the run dir: remove straight away. remove_tree() stops at any
  // mount it meets, never emptying it; only then are the mounts under the run dir detached
  // (lazily) and the removal finished.
  auto removed = remove_tree(paths_.run_dir);
  if (removed.ok() || removed.error().sys_errno != EBUSY) return removed;
  QF_TRY(unmount_under(paths_.run_dir));
  return remove_tree(paths_.run_dir);
}

Result<void> Sandbox::create_cgroup() {
  auto cg = options_.cgroups->create(spec_.cgroup_parent, spec_.id, spec_.limits);
  if (!cg) return cg.error();
  cgroup_ = std::move(*cg);
  return ok();
}

Result<void> Sandbox::remove_cgroup() {
  if (!cgroup_) return ok();
  auto procs = cgroup_->processes();
  if (!procs || !procs->empty()) QF_TRY(cgroup_->kill_all(kKillTimeout));
  // The kernel may take a moment to let go of the last exited task.
  Result<void> r = ok();
  for (int attempt = 0; attempt < 100; ++attempt) {
    r = cgroup_->remove();
    if (r.ok() || r.error().sys_errno != EBUSY) break;
    ::usleep(10'000);
  }
  QF_TRY(r);
  cgroup_.reset();
  options_.cgroups->prune(spec_.cgroup_parent);  // the last sandbox takes the parent with it
  return ok();
}

Result<void> Sandbox::spawn() {
  ChildPlan p;
  p.spec = &spec_;
  p.paths = &paths_;
  p.seccomp = spec_.use_seccomp ? options_.seccomp : nullptr;
  auto caps = parse_capabilities(spec_.keep_capabilities);
  if (!caps) return caps.error();
  p.keep_caps = *caps;
  p.hostname = spec_.hostname.empty() ? spec_.id : spec_.hostname;
  p.argv_storage = spec_.argv;
  p.env_storage = spec_.env;
  std::string path_value = kDefaultPath;
  bool has_path = false;
  for (const auto& e : spec_.env) {
    if (e.rfind("PATH=", 0) == 0) {
      has_path = true;
      path_value = e.substr(5);
    }
  }
  if (!has_path) p.env_storage.push_back(std::string("PATH=") + kDefaultPath);
  for (size_t start = 0;;) {
    size_t colon = path_value.find(':', start);
    p.path_dirs.push_back(path_value.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  for (const auto& dir : p.path_dirs) {
    p.path_candidates.push_back((dir.empty() ? "." : dir) + "/" + spec_.argv[0]);
  }
  p.argv = c_strings(p.argv_storage);
  p.envp = c_strings(p.env_storage);
  p.kill_with_parent = options_.kill_with_parent;
  p.stdout_fd = options_.stdout_fd;
  p.stderr_fd = options_.stderr_fd;

  Fd init(::open(options_.init_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (init.get() < 0) return Error::sys("qufop-init at " + options_.init_path, errno);
  Fd netns;
  if (spec_.net == NetMode::kNamespace) {
    netns = Fd(::open(spec_.net_namespace_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (netns.get() < 0) return Error::sys("network namespace " + spec_.net_namespace_path, errno);
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Error::sys("socketpair", errno);
  }
  Fd parent_end(sv[0]), child_end(sv[1]);
  int st[2];
  if (::pipe2(st, O_CLOEXEC) != 0) return Error::sys("pipe2", errno);
  Fd status_read(st[0]), status_write(st[1]);
  p.sync_fd = child_end.get();
  p.status_fd = status_write.get();
  p.init_fd = init.get();
  p.netns_fd = netns.get();

  auto pid = fork_into_new_pid_namespace();
  if (!pid) return pid.error();
  if (*pid == 0) run_pid1(p);  // the child; never returns
  init_pid_ = *pid;
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, init_pid_, 0));
  if (pidfd_ < 0) {
    Error e = Error::sys("pidfd_open", errno);
    (void)kill_process();  // all or nothing: the step's own child goes with its failure
    return e;
  }
  sync_fd_ = parent_end.release();
  status_fd_ = status_read.release();
  return ok();  // the child's ends close here: only the child holds them now
}

Result<void> Sandbox::kill_process() {
  if (init_pid_ < 0) return ok();
  // pid 1 dying takes the whole pid namespace with it; the kernel waits for all of it before
  // pid 1 can be reaped.
  if (::kill(init_pid_, SIGKILL) != 0 && errno != ESRCH) return Error::sys("kill(pid 1)", errno);
  bool exited = false;
  return reap(0, &exited);
}

Result<void> Sandbox::join_cgroup() {
  // v1: pid 1 joins by itself at sync 1, through the `tasks` fds sent with it (join_cgroup_v1);
  // v2: moved from here (cgroup.procs is cheap there).
  std::vector<Fd> task_files;
  if (options_.cgroups->is_v2()) {
    QF_TRY(cgroup_->add_process(init_pid_));
  } else {
    auto files = open_v1_task_files(*cgroup_);
    if (!files) return files.error();
    task_files = std::move(*files);
  }
  // sync 1: the cgroup is ready; pid 1 joins (v1) and may fork the command. A pid 1 that died
  // already left its error on the socket: await_exec() reads it.
  SyncMessage msg;
  msg.point = kSyncCgroupJoined;
  iovec iov{&msg, sizeof msg};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxTaskFds)] = {};
  if (!task_files.empty()) {
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * task_files.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * task_files.size());
    for (size_t i = 0; i < task_files.size(); ++i) {
      int fd = task_files[i].get();
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
    }
  }
  if (::sendmsg(sync_fd_, &mh, MSG_NOSIGNAL) < 0 && errno != EPIPE) {
    return Error::sys("sync 1: send", errno);
  }
  return ok();  // our copies of the task fds close here; pid 1 holds its own
}

Result<void> Sandbox::await_exec() {
  // sync 2: EOF once pid 1 and the command have both exec'd (their ends are close-on-exec).
  auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Error{
          "timeout",
          "sandbox setup did not finish within " + std::to_string(kStartTimeout.count()) + " s",
          ETIMEDOUT};
    }
    pollfd pfd{sync_fd_, POLLIN, 0};
    int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return Error::sys("sync 2: poll", errno);
    if (rc == 0) continue;
    SyncMessage msg;
    ssize_t n = ::recv(sync_fd_, &msg, sizeof msg, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("sync 2: recv", errno);
    if (n == 0) break;  // started
    if (msg.point != kSyncError) return Error{"internal", "sync 2: unexpected message", 0};
    msg.code[sizeof msg.code - 1] = '\0';
    msg.text[sizeof msg.text - 1] = '\0';
    return Error{msg.code[0] ? msg.code : "internal", msg.text, msg.err};
  }
  ::close(sync_fd_);
  sync_fd_ = -1;
  return ok();
}

// ---- Sandbox: running and stopping ----

Result<void> Sandbox::reap(int options, bool* exited) {
  *exited = false;
  if (init_pid_ < 0) {
    *exited = true;
    return ok();
  }
  if (adopted_) return reap_adopted(options, exited);
  int wstatus = 0;
  pid_t r;
  do {
    r = ::waitpid(init_pid_, &wstatus, options);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Error::sys("waitpid(pid 1)", errno);
  if (r == 0) return ok();
  *exited = true;
  init_pid_ = -1;
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
  ExitStatus st;
  // qufop-init's report of the main process; without one (init itself was killed), init's own.
  int32_t report[2];
  ssize_t n = status_fd_ >= 0 ? ::read(status_fd_, report, sizeof report) : -1;
  if (n == static_cast<ssize_t>(sizeof report)) {
    st.signaled = report[0] == 1;
    st.code = report[1];
  } else if (WIFSIGNALED(wstatus)) {
    st.signaled = true;
    st.code = WTERMSIG(wstatus);
  } else {
    st.code = WEXITSTATUS(wstatus);
  }
  if (cgroup_) {
    if (auto oom = cgroup_->oom_killed(); oom.ok()) {
      st.oom_killed = *oom;
    } else {
      spdlog::warn("sandbox {}: reading OOM kills: {}", spec_.id, oom.error().message);
    }
  }
  status_ = st;
  return ok();
}

Result<void> Sandbox::signal(int sig) {
  if (init_pid_ < 0) return ok();
  if (::kill(init_pid_, sig) != 0 && errno != ESRCH) return Error::sys("kill(pid 1)", errno);
  return ok();
}

Result<std::optional<ExitStatus>> Sandbox::wait(std::optional<std::chrono::milliseconds> timeout) {
  if (init_pid_ < 0) return status_;
  if (timeout) {
    auto deadline = std::chrono::steady_clock::now() + *timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd pfd{pidfd_, POLLIN, 0};
      int rc = ::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) return Error::sys("poll(pidfd)", errno);
      if (rc == 0) return std::optional<ExitStatus>();
      break;
    }
  }
  bool exited = false;
  QF_TRY(reap(0, &exited));
  return status_;
}

Result<void> Sandbox::kill_all() {
  if (init_pid_ < 0) return ok();
  // Every process of the cgroup at once (v1: frozen first, so none forks meanwhile): pid 1's
  // death alone would leave a process that joined the cgroup from outside.
  if (cgroup_) {
    if (auto r = cgroup_->kill_all(kKillTimeout); !r.ok()) {
      spdlog::warn("sandbox {}: {}; killing pid 1", spec_.id, r.error().message);
    }
  }
  return kill_process();
}

Result<void> Sandbox::release() {
  if (released_) return ok();
  Result<void> first = ok();
  auto note = [&first](Result<void> r) {
    if (!r.ok() && first.ok()) first = r;
  };
  // The processes first: a mount namespace and a cgroup live as long as a process in them.
  note(kill_all());
  // The cgroup once it is empty.
  note(remove_cgroup());
  // The run dir last: nothing of it is mounted once the namespace is gone.
  note(remove_run_dir());
  if (first.ok()) released_ = true;
  return first;
}

}  // namespace qufop::noded

#include "noded/namespaces.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace qufop::noded {

namespace {

// The process's own pid namespace, opened once: the thread that forked a sandbox's pid 1 comes
// back to it. Opened on first use; kept for the life of the process (one fd).
int own_pid_namespace_fd() {
  static const int fd = ::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
  return fd;
}

}  // namespace

Result<pid_t> fork_into_new_pid_namespace() {
  int own = own_pid_namespace_fd();
  if (own < 0) return Error::sys("open(/proc/self/ns/pid)", errno);
  // Only this thread's pid_for_children changes; other threads fork as before.
  if (::unshare(CLONE_NEWPID) != 0) return Error::sys("unshare(CLONE_NEWPID)", errno);
  pid_t pid = ::fork();
  if (pid == 0) return pid;  // the child: pid 1 of the new namespace
  int fork_errno = errno;
  // Back to our own namespace for this thread's next fork, whatever fork() did. Failing would
  // leave the thread unable to fork ever again: a broken invariant.
  if (::setns(own, CLONE_NEWPID) != 0) std::abort();
  if (pid < 0) return Error::sys("fork", fork_errno);
  return pid;
}

Result<void> enter_namespaces(NetMode net, int netns_fd) {
  int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC;
  if (net == NetMode::kNone) flags |= CLONE_NEWNET;
  if (::unshare(flags) != 0) return Error::sys("unshare(mount, uts, ipc, net namespaces)", errno);
  if (net == NetMode::kNamespace && ::setns(netns_fd, CLONE_NEWNET) != 0) {
    return Error::sys("setns(network namespace)", errno);
  }
  return ok();
}

Result<void> enter_cgroup_namespace() {
  if (::unshare(CLONE_NEWCGROUP) != 0) return Error::sys("unshare(CLONE_NEWCGROUP)", errno);
  return ok();
}

Result<void> set_hostname(const std::string& hostname) {
  if (::sethostname(hostname.data(), hostname.size()) != 0) {
    return Error::sys("sethostname(" + hostname + ")", errno);
  }
  return ok();
}

Result<void> bring_up_loopback() {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return Error::sys("socket(AF_INET) for loopback", errno);
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  int rc = ::ioctl(s, SIOCGIFFLAGS, &ifr);
  if (rc == 0) {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
    rc = ::ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  int err = errno;
  ::close(s);
  if (rc != 0) return Error::sys("ioctl(lo, SIOCSIFFLAGS up)", err);
  return ok();
}

}  // namespace qufop::noded

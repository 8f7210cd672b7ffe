// Namespaces of a sandbox: the pid namespace is made by the parent for its child (only a fork can
// enter a new one), every other one by the child itself, which is single-threaded and can
// unshare what a multi-threaded daemon cannot (a mount namespace needs an unshared fs_struct).
#pragma once

#include <sys/types.h>
#include <string>

#include "common/result.h"
#include "noded/spec.h"

namespace qufop::noded {

// fork() into a new pid namespace: the child is its pid 1. Only the calling thread's
// "pid namespace for children" is switched (unshare(CLONE_NEWPID)) and switched back right after,
// so it is safe in a multi-threaded process. glibc's fork() runs the atfork handlers (malloc's
// locks included), so the child may allocate. Returns 0 in the child, the child's pid in the
// parent.
Result<pid_t> fork_into_new_pid_namespace();

// The namespaces the child unshares for itself: mount, uts, ipc, and net unless the spec shares
// the host's network or joins a prepared one (then `netns_fd`, opened by the parent, is entered).
Result<void> enter_namespaces(NetMode net, int netns_fd);

// Child side, after joining the sandbox's cgroup: a cgroup namespace rooted at that cgroup.
Result<void> enter_cgroup_namespace();

// Child side, in its own uts namespace.
Result<void> set_hostname(const std::string& hostname);

// Child side, in a fresh network namespace: loopback up (it starts down).
Result<void> bring_up_loopback();

}  // namespace qufop::noded

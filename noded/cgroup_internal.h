// Internals of the cgroup managers (cgroup.cc, cgroup_v1.cc, cgroup_v2.cc), exposed for the unit
// tests: the pure parts (mountinfo parsing, layout choice, validation, the values each version
// writes) and the two factories.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "noded/cgroup.h"
#include "noded/spec.h"

namespace qufop::noded::cgroup_internal {

// One cgroup filesystem from /proc/self/mountinfo.
struct CgroupMount {
  std::string mount_point;               // "/sys/fs/cgroup/memory"
  std::string root;                      // the hierarchy's dir seen at the mount point ("/")
  bool v2 = false;                       // cgroup2
  std::vector<std::string> controllers;  // v1 only: from the super options ("cpu", "cpuacct")
};

// Every cgroup/cgroup2 line of a mountinfo text. Lines that are not cgroups or do not parse are
// skipped (the file is the kernel's; a line we cannot read is not one we need).
std::vector<CgroupMount> parse_mountinfo(std::string_view text);

struct CgroupLayout {
  bool v2 = false;
  std::string v2_mount;                          // v2: the unified mount point
  std::map<std::string, std::string> v1_mounts;  // v1: controller -> mount point
};

// The controllers a sandbox cgroup needs; cpuset is used when the host has it.
inline constexpr const char* kRequiredControllers[] = {"cpu", "memory", "pids"};

// v1 when cpu, memory and pids are mounted as v1 hierarchies (a hybrid host binds them there,
// its cgroup2 mount is empty); else v2 when a cgroup2 mount (the one at /sys/fs/cgroup first)
// offers them in its cgroup.controllers, read through `read_controllers(mount_point)`.
Result<CgroupLayout> choose_layout(
    const std::vector<CgroupMount>& mounts,
    const std::function<std::string(const std::string&)>& read_controllers);

// Error::invalid naming the field for limits the kernel would refuse or that make no sense.
Result<void> validate_limits(const Limits& limits);
// "qufop", "qufop/test-1": relative, components of [A-Za-z0-9._-], no "." or "..". Empty: the
// group goes right under the hierarchy's root (the one-shot runner's, as crun places its own).
Result<void> validate_parent(const std::string& parent);
// "<parent>/<id>", or "<id>" under the root.
inline std::string group_path(const std::string& parent, const std::string& id) {
  return parent.empty() ? id : parent + "/" + id;
}
// 1-64 chars of [a-z0-9_-] (spec.h).
Result<void> validate_id(const std::string& id);

using FileValues = std::vector<std::pair<std::string, std::string>>;  // file -> value, in order

inline constexpr uint64_t kCfsPeriodUsec = 100'000;
// cpus as a CFS quota in microseconds per kCfsPeriodUsec; 0 for unlimited.
uint64_t cfs_quota_usec(double cpus);

// What a v1 hierarchy needs to know from the host to compute the values.
struct V1Host {
  bool has_memsw = false;   // memory.memsw.* exists (swap accounting on)
  std::string parent_cpus;  // the parent's cpuset.cpus / cpuset.mems, inherited
  std::string parent_mems;
};

// controller -> files in write order, for a v1 leaf cgroup.
std::map<std::string, FileValues> v1_values(const Limits& limits, const V1Host& host);
// The files of a v2 leaf cgroup, in write order.
FileValues v2_values(const Limits& limits);

// The whole of a (small) kernel text file; Error::sys("open(<path>)", ENOENT) when missing.
Result<std::string> read_text(const std::string& path);
// `value` written to `path` in one write(2), as control files want; the error names the path and
// the value. `open_flags` are added to O_WRONLY | O_CLOEXEC.
Result<void> write_text(const std::string& path, const std::string& value, int open_flags = 0);
// Whether `path` exists (any type).
bool exists(const std::string& path);
// "a b\nc" -> {"a", "b", "c"}.
std::vector<std::string> split_words(std::string_view text);
// "key value" lines (memory.events, memory.oom_control, cpu.stat): the value of `key`, or 0.
uint64_t keyed_value(std::string_view text, std::string_view key);
// cgroup.procs text -> pids.
std::vector<pid_t> parse_pids(std::string_view text);

using Clock = std::chrono::steady_clock;
// Polls `done` with a growing pause (200 us up to 10 ms) until it holds or `until` passes;
// returns whether it held.
bool poll_until(const std::function<bool()>& done, Clock::time_point until);
// SIGKILLs every pid `list` returns until it returns none; Error timeout (naming `what`) when
// `deadline` passes first. Killing again on each round covers children forked meanwhile.
Result<void> kill_until_empty(const std::function<Result<std::vector<pid_t>>()>& list,
                              Clock::time_point deadline, const std::string& what);

// Serialises making and pruning parent groups across processes (noded, runners): without it a
// prune() could remove a parent between another creator's check and its mkdir, and libcgroup
// would then make the parent implicitly, without the cpuset a v1 group needs. An exclusive
// record lock (fcntl) on /run/qufop/cgroup.lock, plus a mutex between threads; without /run it
// locks nothing (best effort).
class ParentLock {
 public:
  ParentLock();
  ~ParentLock();
  ParentLock(const ParentLock&) = delete;
  ParentLock& operator=(const ParentLock&) = delete;

 private:
  int fd_ = -1;
};

Result<std::unique_ptr<CgroupManager>> make_v1_manager(const CgroupLayout& layout);
// `root` is the unified mount (or a plain directory standing in for it in tests).
Result<std::unique_ptr<CgroupManager>> make_v2_manager(const std::string& root);

}  // namespace qufop::noded::cgroup_internal

// The sandbox's cgroup: created with its limits before the sandbox starts, killed and removed
// at the end. cgroup v1 (one directory per controller, this machine) and v2 (one unified tree)
// sit behind one interface; which one is detected from /proc/self/mountinfo.
#pragma once

#include <sys/types.h>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "noded/spec.h"

namespace qufop::noded {

struct CgroupStats {
  bool oom_killed = false;   // memory.oom_control oom_kill (v1) / memory.events oom_kill (v2)
  uint64_t memory_peak = 0;  // bytes, where the kernel says
  uint64_t cpu_usage_usec = 0;
  int64_t pids_current = 0;
};

class Cgroup {
 public:
  virtual ~Cgroup() = default;
  virtual const std::string& path() const = 0;  // "qufop/qf-abc" (relative to each hierarchy)
  // Moves a process (and its future children) in.
  virtual Result<void> add_process(pid_t pid) = 0;
  virtual Result<std::vector<pid_t>> processes() const = 0;
  virtual Result<CgroupStats> stats() const = 0;
  // stats().oom_killed alone: one file, for the exit status of every sandbox.
  virtual Result<bool> oom_killed() const = 0;
  // SIGKILLs every process in it and waits until it is empty (v2 cgroup.kill; v1 freeze,
  // kill, thaw), bounded by `timeout`.
  virtual Result<void> kill_all(std::chrono::milliseconds timeout) = 0;
  // Removes the cgroup (must be empty).
  virtual Result<void> remove() = 0;
  // cgroup v1: the group's `tasks` file in each hierarchy it exists in, for a process that joins
  // by itself (sandbox.cc). Empty: unknown here (v2, fakes); the caller looks for them.
  virtual std::vector<std::string> v1_task_files() const { return {}; }
};

// Creates cgroups; the real one drives libcgroup, a fake one in tests works on a temp tree.
class CgroupManager {
 public:
  virtual ~CgroupManager() = default;
  virtual bool is_v2() const = 0;
  // Creates "<parent>/<id>" with the limits applied; on failure nothing is left.
  virtual Result<std::unique_ptr<Cgroup>> create(const std::string& parent, const std::string& id,
                                                 const Limits& limits) = 0;
  // Opens an existing one (re-adoption after a noded restart).
  virtual Result<std::unique_ptr<Cgroup>> open(const std::string& parent,
                                               const std::string& id) = 0;
  // Removes `parent` (its deepest component first) where no group is left below it, so a host
  // with no sandbox keeps no qufop cgroup. Best effort: a parent still in use stays. create()
  // makes it again when needed, and retries when a concurrent prune took it meanwhile.
  virtual void prune(const std::string& parent) = 0;
};

// The host's manager: v2 when /sys/fs/cgroup is cgroup2 with the needed controllers enabled,
// else v1. `root` overrides the mount root (tests point it at a fake tree).
Result<std::unique_ptr<CgroupManager>> make_cgroup_manager(const std::string& root = "");

// The host's manager, detected on first use: the one-shot runner detects it while pid 1 builds
// its rootfs. A detection error comes back from create() and open(); is_v2() is false then.
std::unique_ptr<CgroupManager> make_deferred_cgroup_manager();

}  // namespace qufop::noded

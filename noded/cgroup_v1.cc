// cgroup v1 through libcgroup: one directory per controller hierarchy, the same relative path in
// each ("qufop/qf-abc" under /sys/fs/cgroup/{cpu,cpuacct,cpuset,freezer,memory,pids}).
//
// libcgroup finds the hierarchies (cgroup_init), makes and deletes the groups; control files are
// read and written directly (see control_file below). Its quirks this file works around
// (libcgroup 2.0.2):
// - cgroup_create_cgroup() on an existing group succeeds and rewrites its values, so existence
//   is checked first (an id must never silently share another sandbox's cgroup), and an existing
//   parent is never "created" again (that would reset an operator's cpuset on it).
// - cgroup_create_cgroup() leaves the directories it made when a value write fails, and does
//   not say which file failed; so groups are created without values (but a new cpuset parent's
//   inherited cpus and mems) and each value is written on its own, the failure naming the file.
// - cgroup_delete_cgroup_ext(): without flags it migrates remaining tasks to the parent (out of
//   the limits); with CGFLAG_DELETE_EMPTY_ONLY it returns 0 for a group with tasks and keeps it.
//   So remove() refuses a populated group itself and checks the directories are gone after.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/types.h>

#include <libcgroup.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <optional>

#include "noded/cgroup.h"
#include "noded/cgroup_internal.h"

namespace qufop::noded::cgroup_internal {
namespace {

// The hierarchies a sandbox cgroup lives in. cpuacct and cpuset are used where mounted.
constexpr const char* kRequiredV1[] = {"cpu", "memory", "pids", "freezer"};
constexpr const char* kOptionalV1[] = {"cpuacct", "cpuset"};

struct CgroupFree {
  void operator()(cgroup* cg) const { cgroup_free(&cg); }
};
using CgroupPtr = std::unique_ptr<cgroup, CgroupFree>;

Error cg_error(const std::string& what, int rc) {
  if (rc == ECGOTHER) return Error::sys(what, cgroup_get_last_errno());
  std::string code = rc == ECGROUPNOTEXIST ? "not_found" : "io";
  return Error{code, what + ": " + cgroup_strerror(rc), 0};
}

// cgroup_init() fills libcgroup's global mount table; once per process, on first use (create or
// open), not when the manager is made: it parses /proc/mounts, a few hundred microseconds that
// the one-shot runner spends while pid 1 builds its rootfs (sandbox.cc makes the cgroup then).
Result<void> init_libcgroup() {
  static std::once_flag once;
  static int rc = 0;
  std::call_once(once, [] { rc = cgroup_init(); });
  if (rc != 0) return cg_error("cgroup_init", rc);
  return ok();
}

Result<CgroupPtr> new_group(const std::string& path) {
  CgroupPtr cg(cgroup_new_cgroup(path.c_str()));
  if (!cg) return Error{"internal", "cgroup_new_cgroup(" + path + ") failed", 0};
  return cg;
}

using Mounts = std::map<std::string, std::string>;  // controller -> mount point

// A control file of `path` ("/" or "" for a hierarchy's root group) in the controller's hierarchy.
// Read and written directly: libcgroup's cgroup_modify_cgroup() re-reads /proc/mounts for every
// value it writes (about twenty times per sandbox), and its value reader adds nothing to read(2).
std::string control_file(const Mounts& mounts, const std::string& controller,
                         const std::string& path, const std::string& file) {
  auto it = mounts.find(controller);
  std::string mount = it == mounts.end() ? "/sys/fs/cgroup/" + controller : it->second;
  return path.empty() || path == "/" ? mount + "/" + file : mount + "/" + path + "/" + file;
}

Result<std::string> read_value(const Mounts& mounts, const std::string& controller,
                               const std::string& path, const std::string& file) {
  auto text = read_text(control_file(mounts, controller, path, file));
  if (!text.ok()) return text.error().wrap("cgroup v1");
  return text;
}

std::string trimmed(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

Result<void> write_value(const Mounts& mounts, const std::string& controller,
                         const std::string& path, const std::string& file,
                         const std::string& value) {
  auto written = write_text(control_file(mounts, controller, path, file), value);
  if (!written.ok()) return written.error().wrap("cgroup v1");
  return ok();
}

uint64_t number_or_zero(const Result<std::string>& text) {
  return text.ok() ? std::strtoull(text->c_str(), nullptr, 10) : 0;
}

class V1Cgroup : public Cgroup {
 public:
  // `mounts`: controller -> mount point, for the hierarchies the group exists in.
  V1Cgroup(std::string path, std::map<std::string, std::string> mounts)
      : path_(std::move(path)), mounts_(std::move(mounts)) {}

  const std::string& path() const override { return path_; }

  std::vector<std::string> v1_task_files() const override {
    std::vector<std::string> files;
    for (const auto& [controller, mount] : mounts_) {
      std::string tasks = mount + "/" + path_ + "/tasks";
      // Co-mounted controllers (cpu,cpuacct) share one hierarchy: one file for both.
      if (std::find(files.begin(), files.end(), tasks) == files.end()) files.push_back(tasks);
    }
    return files;
  }

  Result<void> add_process(pid_t pid) override {
    // cgroup.procs, not tasks: the whole thread group moves, and its future children with it.
    for (const auto& [controller, mount] : mounts_) {
      QF_TRY(write_value(mounts_, controller, path_, "cgroup.procs", std::to_string(pid)));
    }
    return ok();
  }

  Result<std::vector<pid_t>> processes() const override {
    // Every hierarchy holds the same processes (add_process writes all); freezer is the one
    // kill_all works through.
    auto text = read_value(mounts_, primary(), path_, "cgroup.procs");
    if (!text.ok()) return text.error();
    return parse_pids(*text);
  }

  Result<CgroupStats> stats() const override {
    CgroupStats s;
    if (mounts_.count("memory")) {
      auto oom = oom_killed();
      if (!oom.ok()) return oom.error();
      s.oom_killed = *oom;
      s.memory_peak =
          number_or_zero(read_value(mounts_, "memory", path_, "memory.max_usage_in_bytes"));
    }
    if (mounts_.count("cpuacct")) {
      s.cpu_usage_usec =
          number_or_zero(read_value(mounts_, "cpuacct", path_, "cpuacct.usage")) / 1000;
    }
    if (mounts_.count("pids")) {
      s.pids_current =
          static_cast<int64_t>(number_or_zero(read_value(mounts_, "pids", path_, "pids.current")));
    }
    return s;
  }

  Result<bool> oom_killed() const override {
    if (!mounts_.count("memory")) return false;
    auto oom = read_value(mounts_, "memory", path_, "memory.oom_control");
    if (!oom.ok()) return oom.error();
    // oom_kill counts the tasks the OOM killer killed in this group (kernel >= 4.13).
    return keyed_value(*oom, "oom_kill") > 0;
  }

  Result<void> kill_all(std::chrono::milliseconds timeout) override {
    Clock::time_point deadline = Clock::now() + timeout;
    if (!exists(mounts_.at(primary()) + "/" + path_)) return ok();  // gone: nothing to kill
    bool frozen = freeze(Clock::now() + timeout / 2);
    // Frozen tasks cannot fork or exit; SIGKILL stays pending on them and lands at the thaw.
    if (auto pids = processes(); pids.ok()) {
      for (pid_t pid : *pids) ::kill(pid, SIGKILL);
    }
    if (frozen) thaw();
    return kill_until_empty([this] { return processes(); }, deadline, "cgroup v1 " + path_);
  }

  Result<void> remove() override {
    std::map<std::string, std::string> present;
    for (const auto& [controller, mount] : mounts_) {
      if (exists(mount + "/" + path_)) present.emplace(controller, mount);
    }
    if (present.empty()) return ok();  // already gone: removal is idempotent
    auto pids = processes();
    if (pids.ok() && !pids->empty()) {
      return Error{"conflict",
                   "cgroup v1 " + path_ + ": " + std::to_string(pids->size()) +
                       " processes still inside (kill_all first)",
                   EBUSY};
    }
    auto cg = new_group(path_);
    if (!cg.ok()) return cg.error();
    for (const auto& [controller, mount] : present) {
      cgroup_add_controller(cg->get(), controller.c_str());
    }
    int rc = cgroup_delete_cgroup_ext(cg->get(), CGFLAG_DELETE_EMPTY_ONLY);
    for (const auto& [controller, mount] : present) {
      if (exists(mount + "/" + path_)) {
        if (rc != 0) return cg_error("cgroup v1: deleting " + path_, rc);
        return Error{"conflict", "cgroup v1: " + mount + "/" + path_ + " is still there (busy)",
                     EBUSY};
      }
    }
    return ok();
  }

 private:
  // The hierarchy processes are listed from: freezer, which kill_all works through, when the
  // group is in it (always, for groups create() made).
  const std::string& primary() const {
    auto it = mounts_.find("freezer");
    return it != mounts_.end() ? it->first : mounts_.begin()->first;
  }

  // Best effort: a task in uninterruptible sleep can keep the group FREEZING; the kill loop
  // then works without the freezer's guarantee that nobody forks in between. True when the
  // group needs a thaw.
  bool freeze(Clock::time_point until) {
    if (!mounts_.count("freezer")) return false;
    if (auto r = write_value(mounts_, "freezer", path_, "freezer.state", "FROZEN"); !r.ok()) {
      spdlog::warn("{}: freezing failed, killing without it: {}", path_, r.error().message);
      return false;
    }
    poll_until(
        [&] {
          auto state = read_value(mounts_, "freezer", path_, "freezer.state");
          return state.ok() && trimmed(*state) == "FROZEN";
        },
        until);
    return true;
  }

  void thaw() {
    if (auto r = write_value(mounts_, "freezer", path_, "freezer.state", "THAWED"); !r.ok()) {
      spdlog::error("{}: thawing failed: {}", path_, r.error().message);
    }
  }

  std::string path_;
  std::map<std::string, std::string> mounts_;
};

// Deletes, in reverse, the groups made by one create() unless it commits.
class Rollback {
 public:
  explicit Rollback(const std::map<std::string, std::string>& mounts) : mounts_(mounts) {}
  Rollback(const Rollback&) = delete;
  Rollback& operator=(const Rollback&) = delete;
  ~Rollback() {
    if (committed_) return;
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) undo(*it);
  }
  void made(std::string path, std::vector<std::string> controllers) {
    made_.push_back({std::move(path), std::move(controllers)});
  }
  void commit() { committed_ = true; }

 private:
  struct Made {
    std::string path;
    std::vector<std::string> controllers;
  };
  void undo(const Made& m) {
    CgroupPtr cg(cgroup_new_cgroup(m.path.c_str()));
    if (!cg) return;
    // Only where it exists: a failed cgroup_create_cgroup may have stopped half way.
    bool any = false;
    for (const std::string& c : m.controllers) {
      if (!exists(mounts_.at(c) + "/" + m.path)) continue;
      cgroup_add_controller(cg.get(), c.c_str());
      any = true;
    }
    if (!any) return;
    if (int rc = cgroup_delete_cgroup_ext(cg.get(), CGFLAG_DELETE_EMPTY_ONLY); rc != 0) {
      spdlog::error("rollback: deleting cgroup {}: {}", m.path, cg_error("delete", rc).message);
    }
  }
  const std::map<std::string, std::string>& mounts_;
  std::vector<Made> made_;
  bool committed_ = false;
};

class V1Manager : public CgroupManager {
 public:
  V1Manager(std::map<std::string, std::string> mounts, bool has_memsw)
      : mounts_(std::move(mounts)), has_memsw_(has_memsw) {}

  bool is_v2() const override { return false; }

  Result<std::unique_ptr<Cgroup>> create(const std::string& parent, const std::string& id,
                                         const Limits& limits) override {
    QF_TRY(validate_limits(limits));
    QF_TRY(validate_parent(parent));
    QF_TRY(validate_id(id));
    QF_TRY(init_libcgroup());
    if (!limits.cpuset.empty() && !mounts_.count("cpuset")) {
      return Error{"unavailable", "limits.cpuset: the cpuset controller is not mounted", 0};
    }
    std::string path = group_path(parent, id);
    for (const auto& [controller, mount] : mounts_) {
      if (exists(mount + "/" + path)) {
        return Error{"already_exists", "cgroup v1: " + mount + "/" + path + " exists", EEXIST};
      }
    }
    // Parents are made and pruned under the lock; the root is neither.
    std::optional<ParentLock> lock;
    if (!parent.empty()) lock.emplace();
    for (int attempt = 0;; ++attempt) {
      auto made = try_create(parent, path, limits);
      // A concurrent prune() may remove the parent between its creation and the group's.
      if (made.ok() || attempt == 2 || parent_complete(parent)) return made;
    }
  }

  void prune(const std::string& parent) override {
    if (parent.empty() || !validate_parent(parent).ok()) return;  // the root stays
    ParentLock lock;
    for (std::string prefix = parent; !prefix.empty();) {
      for (const auto& [controller, mount] : mounts_) {
        (void)::rmdir((mount + "/" + prefix).c_str());  // EBUSY while a group is below it
      }
      auto slash = prefix.rfind('/');
      prefix = slash == std::string::npos ? std::string() : prefix.substr(0, slash);
    }
  }

  Result<std::unique_ptr<Cgroup>> open(const std::string& parent, const std::string& id) override {
    QF_TRY(validate_parent(parent));
    QF_TRY(validate_id(id));
    QF_TRY(init_libcgroup());
    std::string path = group_path(parent, id);
    std::map<std::string, std::string> present;
    for (const auto& [controller, mount] : mounts_) {
      if (exists(mount + "/" + path)) present.emplace(controller, mount);
    }
    if (present.empty()) {
      return Error{"not_found", "cgroup v1 " + path + ": in no hierarchy", ENOENT};
    }
    return std::unique_ptr<Cgroup>(new V1Cgroup(path, std::move(present)));
  }

 private:
  Result<std::unique_ptr<Cgroup>> try_create(const std::string& parent, const std::string& path,
                                             const Limits& limits) {
    Rollback rollback(mounts_);
    QF_TRY(ensure_parents(parent, rollback));
    QF_TRY(make_group(path, controllers(), {}, rollback));
    QF_TRY(apply(path, parent, limits));
    rollback.commit();
    return std::unique_ptr<Cgroup>(new V1Cgroup(path, mounts_));
  }

  bool parent_complete(const std::string& parent) const {
    for (const auto& [controller, mount] : mounts_) {
      if (!exists(mount + "/" + parent)) return false;
    }
    return true;
  }

  std::vector<std::string> controllers() const {
    std::vector<std::string> out;
    for (const auto& [controller, mount] : mounts_) out.push_back(controller);
    return out;
  }

  // Each missing ancestor, in each hierarchy that lacks it; a new cpuset ancestor inherits
  // its parent's cpus and mems, or no task could ever join below it.
  Result<void> ensure_parents(const std::string& parent, Rollback& rollback) {
    std::string above = "/";  // libcgroup's name for a hierarchy's root group
    for (size_t pos = 0; pos <= parent.size();) {
      size_t end = std::min(parent.find('/', pos), parent.size());
      std::string prefix = parent.substr(0, end);
      std::vector<std::string> missing;
      for (const auto& [controller, mount] : mounts_) {
        if (!exists(mount + "/" + prefix)) missing.push_back(controller);
      }
      if (!missing.empty()) {
        FileValues cpuset;
        if (std::find(missing.begin(), missing.end(), "cpuset") != missing.end()) {
          auto inherited = cpuset_of(above);
          if (!inherited.ok()) return inherited.error();
          cpuset = *inherited;
        }
        QF_TRY(make_group(prefix, missing, cpuset, rollback));
      }
      above = prefix;
      pos = end + 1;
    }
    return ok();
  }

  // {cpuset.cpus, cpuset.mems} of a group, to hand down.
  Result<FileValues> cpuset_of(const std::string& path) {
    FileValues v;
    for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
      auto value = read_value(mounts_, "cpuset", path, file);
      if (!value.ok()) return value.error();
      v.emplace_back(file, trimmed(*value));
    }
    return v;
  }

  Result<void> make_group(const std::string& path, const std::vector<std::string>& controllers,
                          const FileValues& cpuset, Rollback& rollback) {
    auto cg = new_group(path);
    if (!cg.ok()) return cg.error();
    for (const std::string& c : controllers) {
      cgroup_controller* ctrl = cgroup_add_controller(cg->get(), c.c_str());
      if (!ctrl) return Error{"internal", "cgroup_add_controller(" + c + ") failed", 0};
      if (c != "cpuset") continue;
      for (const auto& [file, value] : cpuset) {
        if (int rc = cgroup_add_value_string(ctrl, file.c_str(), value.c_str()); rc != 0) {
          return cg_error("cgroup v1: " + path + " " + file, rc);
        }
      }
    }
    int rc = cgroup_create_cgroup(cg->get(), /*ignore_ownership=*/1);
    rollback.made(path, controllers);  // even on failure: it may have made some directories
    if (rc != 0) return cg_error("cgroup v1: creating " + path, rc);
    return ok();
  }

  Result<void> apply(const std::string& path, const std::string& parent, const Limits& limits) {
    V1Host host;
    host.has_memsw = has_memsw_;
    if (mounts_.count("cpuset")) {
      auto inherited = cpuset_of(parent);
      if (!inherited.ok()) return inherited.error();
      host.parent_cpus = (*inherited)[0].second;
      host.parent_mems = (*inherited)[1].second;
    }
    for (const auto& [controller, values] : v1_values(limits, host)) {
      if (!mounts_.count(controller)) continue;
      for (const auto& [file, value] : values) {
        QF_TRY(write_value(mounts_, controller, path, file, value));
      }
    }
    return ok();
  }

  std::map<std::string, std::string> mounts_;
  bool has_memsw_;
};

}  // namespace

Result<std::unique_ptr<CgroupManager>> make_v1_manager(const CgroupLayout& layout) {
  std::map<std::string, std::string> mounts;
  for (const char* c : kRequiredV1) {
    auto it = layout.v1_mounts.find(c);
    if (it == layout.v1_mounts.end()) {
      return Error{"unavailable", std::string("cgroup v1: the ") + c + " controller is not mounted",
                   0};
    }
    mounts.emplace(c, it->second);
  }
  for (const char* c : kOptionalV1) {
    if (auto it = layout.v1_mounts.find(c); it != layout.v1_mounts.end()) {
      mounts.emplace(c, it->second);
    }
  }
  bool has_memsw = exists(mounts["memory"] + "/memory.memsw.limit_in_bytes");
  return std::unique_ptr<CgroupManager>(new V1Manager(std::move(mounts), has_memsw));
}

}  // namespace qufop::noded::cgroup_internal

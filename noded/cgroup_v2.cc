// cgroup v2 as plain file operations on the unified tree ("<root>/qufop/qf-abc").
//
// Why not libcgroup here: v2 is a handful of files in one tree, and libcgroup only finds
// hierarchies through /proc/mounts, so it cannot be pointed at the directory the unit tests lay
// out like /sys/fs/cgroup. Plain writes give one code path for the real tree and the test tree,
// both behind the CgroupManager interface (v1, with a directory per controller and cpuset
// inheritance, goes through libcgroup in cgroup_v1.cc and is tested on the real kernel).
//
// A plain directory (not cgroup2, as statfs says) stands in for the kernel: files are created
// on write, files the kernel would provide read as empty until a test writes them, and removing
// a group deletes the files in it, which rmdir does by itself on cgroupfs.
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "noded/cgroup.h"
#include "noded/cgroup_internal.h"

namespace qufop::noded::cgroup_internal {
namespace {

enum class Tree { kKernel, kPlainDir };

// File access relative to the unified root; the one place that knows kernel from plain tree.
class V2Files {
 public:
  V2Files(std::string root, Tree tree) : root_(std::move(root)), tree_(tree) {}

  std::string abs(const std::string& rel) const { return rel.empty() ? root_ : root_ + "/" + rel; }
  bool has(const std::string& rel) const { return exists(abs(rel)); }

  Result<void> write(const std::string& rel, const std::string& value) const {
    std::string path = abs(rel);
    // cgroupfs files exist or the controller is off; O_CREAT there would turn a missing file
    // into a misleading EACCES.
    return write_text(path, value, tree_ == Tree::kPlainDir ? O_CREAT | O_TRUNC : 0);
  }

  Result<std::string> read(const std::string& rel) const {
    auto text = read_text(abs(rel));
    if (!text.ok() && tree_ == Tree::kPlainDir && text.error().sys_errno == ENOENT) {
      return std::string();
    }
    return text;
  }

  // True when it made the directory, false when it was there.
  Result<bool> mkdir(const std::string& rel) const {
    if (::mkdir(abs(rel).c_str(), 0755) == 0) return true;
    if (errno == EEXIST) return false;
    return Error::sys("mkdir(" + abs(rel) + ")", errno);
  }

  Result<void> rmdir(const std::string& rel) const {
    std::string path = abs(rel);
    if (tree_ == Tree::kPlainDir) {
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
        if (entry.is_regular_file(ec)) std::filesystem::remove(entry.path(), ec);
      }
    }
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) {
      return Error::sys("rmdir(" + path + ")", errno);
    }
    return ok();
  }

 private:
  std::string root_;
  Tree tree_;
};

std::string join(const std::string& dir, const std::string& file) {
  return dir.empty() ? file : dir + "/" + file;
}

class V2Cgroup : public Cgroup {
 public:
  V2Cgroup(V2Files files, std::string path) : files_(std::move(files)), path_(std::move(path)) {}

  const std::string& path() const override { return path_; }

  Result<void> add_process(pid_t pid) override {
    return files_.write(join(path_, "cgroup.procs"), std::to_string(pid));
  }

  Result<std::vector<pid_t>> processes() const override {
    auto text = files_.read(join(path_, "cgroup.procs"));
    if (!text.ok()) return text.error();
    return parse_pids(*text);
  }

  Result<CgroupStats> stats() const override {
    CgroupStats s;
    // Missing files (older kernels: memory.peak is 5.19+) leave their field at 0.
    auto read = [&](const char* file) {
      auto text = files_.read(join(path_, file));
      return text.ok() ? *text : std::string();
    };
    s.oom_killed = keyed_value(read("memory.events"), "oom_kill") > 0;
    s.memory_peak = std::strtoull(read("memory.peak").c_str(), nullptr, 10);
    s.cpu_usage_usec = keyed_value(read("cpu.stat"), "usage_usec");
    s.pids_current = std::strtoll(read("pids.current").c_str(), nullptr, 10);
    return s;
  }

  Result<bool> oom_killed() const override {
    auto events = files_.read(join(path_, "memory.events"));
    if (!events.ok()) return events.error();
    return keyed_value(*events, "oom_kill") > 0;
  }

  Result<void> kill_all(std::chrono::milliseconds timeout) override {
    Clock::time_point deadline = Clock::now() + timeout;
    if (!files_.has(path_)) return ok();  // gone: nothing to kill
    // cgroup.kill (5.14+) kills the whole subtree atomically, forks in flight included.
    if (files_.has(join(path_, "cgroup.kill"))) {
      QF_TRY(files_.write(join(path_, "cgroup.kill"), "1"));
    } else {
      freeze_and_kill(Clock::now() + timeout / 2);
    }
    return kill_until_empty([this] { return processes(); }, deadline, "cgroup v2 " + path_);
  }

  Result<void> remove() override {
    if (!files_.has(path_)) return ok();  // already gone: removal is idempotent
    auto pids = processes();
    if (pids.ok() && !pids->empty()) {
      return Error{"conflict",
                   "cgroup v2 " + path_ + ": " + std::to_string(pids->size()) +
                       " processes still inside (kill_all first)",
                   EBUSY};
    }
    return files_.rmdir(path_);
  }

 private:
  // Before cgroup.kill: freeze so nobody forks between listing and killing, kill, thaw.
  void freeze_and_kill(Clock::time_point until) {
    bool frozen = files_.write(join(path_, "cgroup.freeze"), "1").ok();
    if (frozen) {
      poll_until(
          [&] {
            auto events = files_.read(join(path_, "cgroup.events"));
            return events.ok() && keyed_value(*events, "frozen") == 1;
          },
          until);
    }
    if (auto pids = processes(); pids.ok()) {
      for (pid_t pid : *pids) ::kill(pid, SIGKILL);
    }
    if (frozen) {
      if (auto r = files_.write(join(path_, "cgroup.freeze"), "0"); !r.ok()) {
        spdlog::error("{}: thawing failed: {}", path_, r.error().message);
      }
    }
  }

  V2Files files_;
  std::string path_;
};

// Removes, in reverse, the directories one create() made unless it commits.
class Rollback {
 public:
  explicit Rollback(const V2Files& files) : files_(files) {}
  Rollback(const Rollback&) = delete;
  Rollback& operator=(const Rollback&) = delete;
  ~Rollback() {
    if (committed_) return;
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
      if (auto r = files_.rmdir(*it); !r.ok()) {
        spdlog::error("rollback: removing cgroup {}: {}", *it, r.error().message);
      }
    }
  }
  void made(std::string path) { made_.push_back(std::move(path)); }
  void commit() { committed_ = true; }

 private:
  const V2Files& files_;
  std::vector<std::string> made_;
  bool committed_ = false;
};

class V2Manager : public CgroupManager {
 public:
  explicit V2Manager(V2Files files) : files_(std::move(files)) {}

  bool is_v2() const override { return true; }

  Result<std::unique_ptr<Cgroup>> create(const std::string& parent, const std::string& id,
                                         const Limits& limits) override {
    QF_TRY(validate_limits(limits));
    QF_TRY(validate_parent(parent));
    QF_TRY(validate_id(id));
    std::vector<std::string> needed(std::begin(kRequiredControllers),
                                    std::end(kRequiredControllers));
    if (!limits.cpuset.empty()) needed.insert(needed.begin(), "cpuset");
    QF_TRY(check_available(needed));
    std::string path = group_path(parent, id);
    if (files_.has(path)) {
      return Error{"already_exists", "cgroup v2: " + files_.abs(path) + " exists", EEXIST};
    }
    // Parents are made and pruned under the lock; the root is neither.
    std::optional<ParentLock> lock;
    if (!parent.empty()) lock.emplace();
    for (int attempt = 0;; ++attempt) {
      auto made = try_create(parent, path, needed, limits);
      // A concurrent prune() may remove the parent between its creation and the group's.
      if (made.ok() || attempt == 2 || files_.has(parent)) return made;
    }
  }

  void prune(const std::string& parent) override {
    if (parent.empty() || !validate_parent(parent).ok()) return;  // the root stays
    ParentLock lock;
    for (std::string prefix = parent; !prefix.empty();) {
      if (!has_subgroup(prefix)) (void)files_.rmdir(prefix);
      auto slash = prefix.rfind('/');
      prefix = slash == std::string::npos ? std::string() : prefix.substr(0, slash);
    }
  }

  Result<std::unique_ptr<Cgroup>> try_create(const std::string& parent, const std::string& path,
                                             const std::vector<std::string>& needed,
                                             const Limits& limits) {
    Rollback rollback(files_);
    QF_TRY(make_parents(parent, needed, rollback));
    auto made = files_.mkdir(path);
    if (!made.ok()) return made.error();
    if (!*made) {  // made by someone else since the check above
      return Error{"already_exists", "cgroup v2: " + files_.abs(path) + " exists", EEXIST};
    }
    rollback.made(path);
    QF_TRY(apply(path, limits));
    rollback.commit();
    return std::unique_ptr<Cgroup>(new V2Cgroup(files_, path));
  }

  // A plain test tree's rmdir deletes the files first, so never ask it to remove a parent
  // that still has groups below it.
  bool has_subgroup(const std::string& rel) const {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(files_.abs(rel), ec)) {
      if (entry.is_directory(ec)) return true;
    }
    return false;
  }

  Result<std::unique_ptr<Cgroup>> open(const std::string& parent, const std::string& id) override {
    QF_TRY(validate_parent(parent));
    QF_TRY(validate_id(id));
    std::string path = group_path(parent, id);
    if (!files_.has(path)) {
      return Error{"not_found", "cgroup v2: " + files_.abs(path) + " does not exist", ENOENT};
    }
    return std::unique_ptr<Cgroup>(new V2Cgroup(files_, path));
  }

 private:
  Result<void> check_available(const std::vector<std::string>& needed) const {
    auto text = files_.read("cgroup.controllers");
    if (!text.ok()) return text.error();
    std::vector<std::string> have = split_words(*text);
    for (const std::string& c : needed) {
      if (std::find(have.begin(), have.end(), c) == have.end()) {
        return Error{
            "unavailable",
            "cgroup v2: the " + c + " controller is not in " + files_.abs("cgroup.controllers"), 0};
      }
    }
    return ok();
  }

  // Each ancestor exists and hands the needed controllers down: a controller reaches a group
  // only when every ancestor lists it in cgroup.subtree_control, the root included.
  Result<void> make_parents(const std::string& parent, const std::vector<std::string>& needed,
                            Rollback& rollback) {
    QF_TRY(enable_controllers("", needed));
    for (size_t pos = 0; !parent.empty() && pos <= parent.size();) {
      size_t end = std::min(parent.find('/', pos), parent.size());
      std::string prefix = parent.substr(0, end);
      auto made = files_.mkdir(prefix);
      if (!made.ok()) return made.error();
      if (*made) rollback.made(prefix);
      QF_TRY(enable_controllers(prefix, needed));
      pos = end + 1;
    }
    return ok();
  }

  Result<void> enable_controllers(const std::string& dir, const std::vector<std::string>& needed) {
    std::string file = join(dir, "cgroup.subtree_control");
    auto text = files_.read(file);
    if (!text.ok()) return text.error();
    std::vector<std::string> enabled = split_words(*text);
    std::string change;
    for (const std::string& c : needed) {
      if (std::find(enabled.begin(), enabled.end(), c) != enabled.end()) continue;
      change += (change.empty() ? "+" : " +") + c;
    }
    if (change.empty()) return ok();
    return files_.write(file, change);
  }

  Result<void> apply(const std::string& path, const Limits& limits) {
    for (const auto& [file, value] : v2_values(limits)) {
      auto r = files_.write(join(path, file), value);
      // No memory.swap.max without swap accounting (CONFIG_MEMCG_SWAP, swapaccount=0): there
      // is no swap to turn off per cgroup then, or none the kernel can account.
      if (!r.ok() && file == "memory.swap.max" && r.error().sys_errno == ENOENT) {
        spdlog::warn("{}: no memory.swap.max (swap accounting off); swap is not limited", path);
        continue;
      }
      if (!r.ok()) return r.error().wrap("cgroup v2 " + path);
    }
    return ok();
  }

  V2Files files_;
};

}  // namespace

Result<std::unique_ptr<CgroupManager>> make_v2_manager(const std::string& root) {
  struct statfs fs;
  if (::statfs(root.c_str(), &fs) != 0) return Error::sys("statfs(" + root + ")", errno);
  Tree tree = fs.f_type == CGROUP2_SUPER_MAGIC ? Tree::kKernel : Tree::kPlainDir;
  std::string clean =
      root.size() > 1 && root.back() == '/' ? root.substr(0, root.size() - 1) : root;
  return std::unique_ptr<CgroupManager>(new V2Manager(V2Files(clean, tree)));
}

}  // namespace qufop::noded::cgroup_internal

// What v1 and v2 share: reading the host's cgroup layout from mountinfo, choosing the version,
// validating limits and names, and computing the values each version writes. The managers
// themselves live in cgroup_v1.cc (libcgroup) and cgroup_v2.cc (plain files).
#include "noded/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/files.h"
#include "noded/cgroup_internal.h"

namespace qufop::noded {
namespace cgroup_internal {
namespace {

constexpr uint64_t kMinMemoryBytes = 1u << 20;
// The kernel refuses a CFS quota under 1 ms.
constexpr uint64_t kMinQuotaUsec = 1000;
constexpr double kMaxCpus = 1 << 20;

// The v1 super options that name a controller (the others are flags like rw, name=, xattr).
constexpr std::string_view kV1Controllers[] = {
    "blkio",  "cpu",  "cpuacct", "cpuset",   "devices",    "freezer", "hugetlb",
    "memory", "misc", "net_cls", "net_prio", "perf_event", "pids",    "rdma"};

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool is_octal(char c) { return c >= '0' && c <= '7'; }

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_octal(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && is_octal(s[i + 1]) && is_octal(s[i + 2]) &&
        is_octal(s[i + 3])) {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// "36 35 98:0 /root /mnt rw,noatime master:1 - cgroup cgroup rw,cpu,cpuacct"
std::optional<CgroupMount> parse_mountinfo_line(std::string_view line) {
  std::vector<std::string_view> fields;
  for (std::string_view f : split(line, ' ')) {
    if (!f.empty()) fields.push_back(f);
  }
  auto dash = std::find(fields.begin(), fields.end(), "-");
  // At least the 6 fixed fields before the optional ones, and 3 after the separator.
  if (dash == fields.end() || dash - fields.begin() < 6 || fields.end() - dash < 4) return {};
  std::string_view fstype = *(dash + 1);
  if (fstype != "cgroup" && fstype != "cgroup2") return {};
  CgroupMount m;
  m.root = unescape_octal(fields[3]);
  m.mount_point = unescape_octal(fields[4]);
  m.v2 = fstype == "cgroup2";
  if (!m.v2) {
    for (std::string_view opt : split(*(dash + 3), ',')) {
      if (std::find(std::begin(kV1Controllers), std::end(kV1Controllers), opt) !=
          std::end(kV1Controllers)) {
        m.controllers.emplace_back(opt);
      }
    }
  }
  return m;
}

bool has_all_required(const std::vector<std::string>& controllers) {
  return std::all_of(
      std::begin(kRequiredControllers), std::end(kRequiredControllers), [&](const char* c) {
        return std::find(controllers.begin(), controllers.end(), c) != controllers.end();
      });
}

// "0-3,8,10-11": the cpu list syntax of cpuset.cpus.
bool valid_cpu_list(std::string_view s) {
  if (s.empty()) return false;
  for (std::string_view part : split(s, ',')) {
    std::vector<std::string_view> range = split(part, '-');
    if (range.size() > 2) return false;
    long bounds[2] = {0, 0};
    for (size_t i = 0; i < range.size(); ++i) {
      std::string_view n = range[i];
      if (n.empty() || n.size() > 6 ||
          !std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return false;
      }
      bounds[i] = std::stol(std::string(n));
    }
    if (range.size() == 2 && bounds[0] > bounds[1]) return false;
  }
  return true;
}

}  // namespace

std::vector<CgroupMount> parse_mountinfo(std::string_view text) {
  std::vector<CgroupMount> mounts;
  for (std::string_view line : split(text, '\n')) {
    if (auto m = parse_mountinfo_line(line)) mounts.push_back(std::move(*m));
  }
  return mounts;
}

Result<CgroupLayout> choose_layout(
    const std::vector<CgroupMount>& mounts,
    const std::function<std::string(const std::string&)>& read_controllers) {
  CgroupLayout v1;
  std::vector<std::string> v1_names;
  for (const CgroupMount& m : mounts) {
    for (const std::string& c : m.controllers) {
      // The first mount of a hierarchy wins; later ones are bind mounts of the same tree.
      if (v1.v1_mounts.emplace(c, m.mount_point).second) v1_names.push_back(c);
    }
  }
  if (has_all_required(v1_names)) return v1;

  // A pure v2 host: the unified mount at /sys/fs/cgroup first, then any other.
  std::vector<const CgroupMount*> unified;
  for (const CgroupMount& m : mounts) {
    if (m.v2) unified.push_back(&m);
  }
  std::stable_partition(unified.begin(), unified.end(),
                        [](const CgroupMount* m) { return m->mount_point == "/sys/fs/cgroup"; });
  for (const CgroupMount* m : unified) {
    if (has_all_required(split_words(read_controllers(m->mount_point)))) {
      CgroupLayout v2;
      v2.v2 = true;
      v2.v2_mount = m->mount_point;
      return v2;
    }
  }
  return Error{"unavailable",
               "no usable cgroup hierarchy: need the cpu, memory and pids controllers, mounted as "
               "cgroup v1 hierarchies or enabled in a cgroup2 mount's cgroup.controllers",
               0};
}

Result<void> validate_limits(const Limits& limits) {
  if (!std::isfinite(limits.cpus) || limits.cpus < 0 || limits.cpus > kMaxCpus) {
    return Error::invalid("limits.cpus: " + std::to_string(limits.cpus) +
                          " is not a cpu count (0 = unlimited, else > 0)");
  }
  if (limits.cpus > 0 && cfs_quota_usec(limits.cpus) < kMinQuotaUsec) {
    return Error::invalid("limits.cpus: " + std::to_string(limits.cpus) +
                          " is below the kernel's minimum CFS quota (0.01 cpus)");
  }
  if (limits.memory_bytes != 0 && limits.memory_bytes < kMinMemoryBytes) {
    return Error::invalid("limits.memory_bytes: " + std::to_string(limits.memory_bytes) +
                          " is below 1 MiB");
  }
  if (limits.memory_bytes > static_cast<uint64_t>(INT64_MAX)) {
    return Error::invalid("limits.memory_bytes: " + std::to_string(limits.memory_bytes) +
                          " is too large");
  }
  if (limits.pids < 0) {
    return Error::invalid("limits.pids: " + std::to_string(limits.pids) +
                          " is negative (0 = unlimited)");
  }
  if (!limits.cpuset.empty() && !valid_cpu_list(limits.cpuset)) {
    return Error::invalid("limits.cpuset: '" + limits.cpuset + "' is not a cpu list like 0-1,3");
  }
  return ok();
}

Result<void> validate_parent(const std::string& parent) {
  auto bad = [&](const char* why) {
    return Error::invalid("cgroup parent '" + parent + "': " + why);
  };
  if (parent.empty()) return ok();  // right under the hierarchy's root
  if (parent.size() > 256) return bad("longer than 256 characters");
  for (std::string_view part : split(parent, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return bad("must be a relative path without empty, '.' or '..' components");
    }
    bool ok_chars = std::all_of(part.begin(), part.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    });
    if (!ok_chars) return bad("only letters, digits, '.', '_', '-' and '/' are allowed");
  }
  return ok();
}

Result<void> validate_id(const std::string& id) {
  bool ok_chars = std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  if (id.empty() || id.size() > 64 || !ok_chars) {
    return Error::invalid("sandbox id '" + id + "': must be 1-64 characters of [a-z0-9_-]");
  }
  return ok();
}

uint64_t cfs_quota_usec(double cpus) {
  if (cpus <= 0) return 0;
  return static_cast<uint64_t>(std::llround(cpus * static_cast<double>(kCfsPeriodUsec)));
}

std::map<std::string, FileValues> v1_values(const Limits& limits, const V1Host& host) {
  std::map<std::string, FileValues> v;
  uint64_t quota = cfs_quota_usec(limits.cpus);
  v["cpu"] = {{"cpu.cfs_period_us", std::to_string(kCfsPeriodUsec)},
              {"cpu.cfs_quota_us", quota ? std::to_string(quota) : "-1"}};
  v["cpuacct"] = {};
  // Both cpus and mems must be set before a task may join a v1 cpuset.
  v["cpuset"] = {{"cpuset.cpus", limits.cpuset.empty() ? host.parent_cpus : limits.cpuset},
                 {"cpuset.mems", host.parent_mems}};
  v["freezer"] = {};
  FileValues& mem = v["memory"];
  if (limits.memory_bytes) {
    // limit_in_bytes first: the kernel refuses memsw.limit below limit_in_bytes. memsw equal
    // to the memory limit leaves no room for swap.
    mem.emplace_back("memory.limit_in_bytes", std::to_string(limits.memory_bytes));
    if (host.has_memsw) {
      mem.emplace_back("memory.memsw.limit_in_bytes", std::to_string(limits.memory_bytes));
    }
  }
  mem.emplace_back("memory.swappiness", "0");
  v["pids"] = {{"pids.max", limits.pids ? std::to_string(limits.pids) : "max"}};
  return v;
}

FileValues v2_values(const Limits& limits) {
  FileValues v;
  uint64_t quota = cfs_quota_usec(limits.cpus);
  v.emplace_back("cpu.max", (quota ? std::to_string(quota) : std::string("max")) + " " +
                                std::to_string(kCfsPeriodUsec));
  if (limits.memory_bytes) {
    v.emplace_back("memory.max", std::to_string(limits.memory_bytes));
    v.emplace_back("memory.swap.max", "0");
  } else {
    v.emplace_back("memory.max", "max");
  }
  v.emplace_back("pids.max", limits.pids ? std::to_string(limits.pids) : "max");
  if (!limits.cpuset.empty()) v.emplace_back("cpuset.cpus", limits.cpuset);
  return v;
}

Result<std::string> read_text(const std::string& path) { return read_text_file(path); }

Result<void> write_text(const std::string& path, const std::string& value, int open_flags) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | open_flags, 0644);
  if (fd < 0) return Error::sys("open(" + path + ")", errno);
  ssize_t n = ::write(fd, value.data(), value.size());
  int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    return Error::sys("write(" + path + ", '" + value + "')", n < 0 ? err : EIO);
  }
  return ok();
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t start = i;
    while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

uint64_t keyed_value(std::string_view text, std::string_view key) {
  std::vector<std::string> words = split_words(text);
  for (size_t i = 0; i + 1 < words.size(); i += 2) {
    if (words[i] == key) return std::strtoull(words[i + 1].c_str(), nullptr, 10);
  }
  return 0;
}

std::vector<pid_t> parse_pids(std::string_view text) {
  std::vector<pid_t> pids;
  for (const std::string& w : split_words(text)) {
    pid_t pid = static_cast<pid_t>(std::strtol(w.c_str(), nullptr, 10));
    if (pid > 0) pids.push_back(pid);
  }
  return pids;
}

bool poll_until(const std::function<bool()>& done, Clock::time_point until) {
  constexpr std::chrono::microseconds kMaxPause{10'000};
  for (std::chrono::microseconds pause{200};; pause = std::min(pause * 2, kMaxPause)) {
    if (done()) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(pause);
  }
}

Result<void> kill_until_empty(const std::function<Result<std::vector<pid_t>>()>& list,
                              Clock::time_point deadline, const std::string& what) {
  Result<void> failure = ok();
  size_t left = 0;
  bool empty = poll_until(
      [&] {
        auto pids = list();
        if (!pids.ok()) {
          failure = pids.error();
          return true;
        }
        left = pids->size();
        for (pid_t pid : *pids) ::kill(pid, SIGKILL);  // ESRCH: it exited meanwhile
        return pids->empty();
      },
      deadline);
  if (!failure.ok()) return failure;
  if (empty) return ok();
  return Error{"timeout",
               what + ": " + std::to_string(left) + " processes still alive after SIGKILL",
               ETIMEDOUT};
}

}  // namespace cgroup_internal

using namespace cgroup_internal;

namespace {

std::string read_or_empty(const std::string& path) {
  auto text = read_text(path);
  return text.ok() ? *text : std::string();
}

// A root override names either a cgroup2 tree (real or a test's plain directory) or the
// directory holding the host's v1 hierarchies.
Result<std::unique_ptr<CgroupManager>> make_for_root(const std::string& root,
                                                     const std::vector<CgroupMount>& mounts) {
  std::string controllers = root + "/cgroup.controllers";
  if (exists(controllers)) {
    if (!has_all_required(split_words(read_or_empty(controllers)))) {
      return Error{"unavailable", controllers + ": needs the cpu, memory and pids controllers", 0};
    }
    return make_v2_manager(root);
  }
  auto layout = choose_layout(mounts, read_or_empty);
  if (layout.ok() && !layout->v2) {
    std::string prefix = root.back() == '/' ? root : root + "/";
    bool under_root = std::all_of(layout->v1_mounts.begin(), layout->v1_mounts.end(),
                                  [&](const auto& kv) { return kv.second.starts_with(prefix); });
    if (under_root) return make_v1_manager(*layout);
  }
  return Error::invalid("cgroup root " + root +
                        ": neither a cgroup2 tree (no cgroup.controllers) nor the directory of "
                        "this host's cgroup v1 hierarchies");
}

}  // namespace

Result<std::unique_ptr<CgroupManager>> make_cgroup_manager(const std::string& root) {
  auto text = read_text("/proc/self/mountinfo");
  if (!text.ok()) return text.error().wrap("detecting the cgroup version");
  std::vector<CgroupMount> mounts = parse_mountinfo(*text);
  if (!root.empty()) return make_for_root(root, mounts);
  auto layout = choose_layout(mounts, [](const std::string& mount_point) {
    return read_or_empty(mount_point + "/cgroup.controllers");
  });
  if (!layout.ok()) return layout.error();
  if (layout->v2) return make_v2_manager(layout->v2_mount);
  return make_v1_manager(*layout);
}

namespace {

class DeferredManager : public CgroupManager {
 public:
  bool is_v2() const override {
    auto* m = manager();
    return m && m->is_v2();
  }
  Result<std::unique_ptr<Cgroup>> create(const std::string& parent, const std::string& id,
                                         const Limits& limits) override {
    QF_TRY(detect());
    return manager_->create(parent, id, limits);
  }
  Result<std::unique_ptr<Cgroup>> open(const std::string& parent, const std::string& id) override {
    QF_TRY(detect());
    return manager_->open(parent, id);
  }
  void prune(const std::string& parent) override {
    if (detect().ok()) manager_->prune(parent);
  }

 private:
  Result<void> detect() const {
    if (!detected_) {
      detected_ = true;
      auto made = make_cgroup_manager();
      if (made.ok()) {
        manager_ = std::move(*made);
      } else {
        error_ = made.error();
      }
    }
    if (!manager_) return *error_;
    return ok();
  }
  CgroupManager* manager() const { return detect().ok() ? manager_.get() : nullptr; }

  mutable bool detected_ = false;
  mutable std::unique_ptr<CgroupManager> manager_;
  mutable std::optional<Error> error_;
};

}  // namespace

std::unique_ptr<CgroupManager> make_deferred_cgroup_manager() {
  return std::make_unique<DeferredManager>();
}

namespace {
// Between the threads of this process: a POSIX record lock excludes other processes only.
std::mutex& parent_lock_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

// A POSIX record lock (F_SETLKW), not flock(): a flock belongs to the open file, so a process
// forked meanwhile by another thread (a sandbox's pid 1, which waits for its parent to make its
// cgroup) would hold it on until its exec, and that parent would wait for the lock forever.
// Record locks belong to the process and are not inherited across fork.
ParentLock::ParentLock() {
  parent_lock_mutex().lock();
  (void)::mkdir("/run/qufop", 0755);
  fd_ = ::open("/run/qufop/cgroup.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ >= 0) {
    struct flock lk {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    while (::fcntl(fd_, F_SETLKW, &lk) != 0 && errno == EINTR) {
    }
  }
}

ParentLock::~ParentLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  parent_lock_mutex().unlock();
}

}  // namespace qufop::noded

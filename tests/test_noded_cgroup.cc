// The sandbox cgroup. Unit (QUFOP_SANDBOX_UNIT): mountinfo parsing and version choice on canned
// kernel text, the values each version writes, bad limits, and the v2 manager over a plain
// directory laid out like /sys/fs/cgroup. Root (QUFOP_SANDBOX_ROOT): real v1 cgroups on this
// host, processes in them, kill_all, OOM, rollback; every test leaves no cgroup behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "noded/cgroup.h"
#include "noded/cgroup_internal.h"

namespace qufop::noded {
namespace {

namespace fs = std::filesystem;
using namespace cgroup_internal;
using std::chrono::milliseconds;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

[[maybe_unused]] std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void put(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::trunc);
  out << text;
}

// A fresh temp dir, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "qufop-cg-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

#ifdef QUFOP_SANDBOX_UNIT

// This machine: v1 controllers each on its own mount, an empty cgroup2 at .../unified.
constexpr const char* kV1Host =
    "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
    "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

// A current systemd distro: one cgroup2 mount, optional fields before the separator.
constexpr const char* kV2Host =
    "24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "26 24 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw\n"
    "29 26 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
    "rw,nsdelegate,memory_recursiveprot\n";

// An older systemd "hybrid": co-mounted v1 controllers and the unified mount for systemd only.
constexpr const char* kHybridHost =
    "25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n"
    "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 "
    "cgroup2 rw,nsdelegate\n"
    "27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup "
    "cgroup rw,xattr,name=systemd\n"
    "30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup "
    "cgroup rw,cpu,cpuacct\n"
    "31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup "
    "cgroup rw,memory\n"
    "32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup "
    "rw,pids\n"
    "33 25 0:30 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:17 - "
    "cgroup cgroup rw,net_cls,net_prio\n"
    "34 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:18 - cgroup "
    "cgroup rw,freezer\n"
    "35 25 0:32 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:19 - cgroup "
    "cgroup rw,cpuset,clone_children\n";

std::string no_controllers(const std::string&) { return ""; }

TEST(CgroupMountinfo, ParsesAV1Host) {
  std::vector<CgroupMount> mounts = parse_mountinfo(kV1Host);
  ASSERT_EQ(mounts.size(), 10u);  // the ext4 root and the tmpfs are not cgroups
  EXPECT_EQ(mounts[0].mount_point, "/sys/fs/cgroup/cpu");
  EXPECT_EQ(mounts[0].root, "/");
  EXPECT_FALSE(mounts[0].v2);
  EXPECT_EQ(mounts[0].controllers, std::vector<std::string>{"cpu"});
  EXPECT_TRUE(mounts[8].controllers.empty()) << "name=systemd is not a controller";
  EXPECT_TRUE(mounts[9].v2);
  EXPECT_EQ(mounts[9].mount_point, "/sys/fs/cgroup/unified");
}

TEST(CgroupMountinfo, ParsesCoMountedControllersAndEscapes) {
  std::vector<CgroupMount> mounts =
      parse_mountinfo(std::string(kHybridHost) +
                      "40 25 0:40 /sub /mnt/my\\040cgroups rw - cgroup cgroup rw,devices\n"
                      "garbage line without separator\n"
                      "41 25 0:41 / /short - cgroup\n");
  ASSERT_EQ(mounts.size(), 9u) << "8 hybrid cgroup mounts and the escaped one";
  EXPECT_EQ(mounts[2].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(mounts[5].controllers, (std::vector<std::string>{"net_cls", "net_prio"}));
  EXPECT_EQ(mounts[7].controllers, std::vector<std::string>{"cpuset"})
      << "clone_children is a flag";
  EXPECT_EQ(mounts[8].mount_point, "/mnt/my cgroups");
  EXPECT_EQ(mounts[8].root, "/sub");
}

TEST(CgroupLayout, V1HostUsesV1) {
  auto layout = choose_layout(parse_mountinfo(kV1Host), no_controllers);
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_FALSE(layout->v2);
  EXPECT_EQ(layout->v1_mounts.at("memory"), "/sys/fs/cgroup/memory");
  EXPECT_EQ(layout->v1_mounts.at("freezer"), "/sys/fs/cgroup/freezer");
  EXPECT_EQ(layout->v1_mounts.count("systemd"), 0u);
}

TEST(CgroupLayout, PureV2HostUsesV2) {
  std::vector<std::string> asked;
  auto layout = choose_layout(parse_mountinfo(kV2Host), [&](const std::string& mp) {
    asked.push_back(mp);
    return std::string("cpuset cpu io memory hugetlb pids rdma misc\n");
  });
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_TRUE(layout->v2);
  EXPECT_EQ(layout->v2_mount, "/sys/fs/cgroup");
  EXPECT_EQ(asked, std::vector<std::string>{"/sys/fs/cgroup"});
}

TEST(CgroupLayout, HybridHostUsesV1) {
  auto layout = choose_layout(parse_mountinfo(kHybridHost), [](const std::string&) {
    return std::string("");  // the unified mount of a hybrid host has no controllers
  });
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_FALSE(layout->v2);
  EXPECT_EQ(layout->v1_mounts.at("cpu"), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(layout->v1_mounts.at("cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
}

TEST(CgroupLayout, V2WithoutControllersIsUnavailable) {
  auto layout = choose_layout(parse_mountinfo(kV2Host),
                              [](const std::string&) { return std::string("cpu io\n"); });
  ASSERT_FALSE(layout.ok());
  EXPECT_EQ(layout.error().code, "unavailable");
  EXPECT_FALSE(choose_layout({}, no_controllers).ok());
}

TEST(CgroupValues, V1ComputesQuotaMemoryAndInheritedCpuset) {
  Limits limits;
  limits.cpus = 0.5;
  limits.memory_bytes = 64u << 20;
  limits.pids = 100;
  auto v = v1_values(limits, V1Host{true, "0-3", "0"});
  EXPECT_EQ(v["cpu"], (FileValues{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "50000"}}));
  EXPECT_EQ(v["memory"], (FileValues{{"memory.limit_in_bytes", "67108864"},
                                     {"memory.memsw.limit_in_bytes", "67108864"},
                                     {"memory.swappiness", "0"}}));
  EXPECT_EQ(v["pids"], (FileValues{{"pids.max", "100"}}));
  EXPECT_EQ(v["cpuset"], (FileValues{{"cpuset.cpus", "0-3"}, {"cpuset.mems", "0"}}));
  EXPECT_TRUE(v.count("freezer") && v["freezer"].empty());
  EXPECT_TRUE(v.count("cpuacct") && v["cpuacct"].empty());
}

TEST(CgroupValues, V1UnlimitedAndNoSwapAccounting) {
  Limits limits;
  limits.cpus = 2.25;
  limits.cpuset = "1";
  auto v = v1_values(limits, V1Host{false, "0-3", "0"});
  EXPECT_EQ(v["cpu"][1].second, "225000");
  EXPECT_EQ(v["memory"], (FileValues{{"memory.swappiness", "0"}}));
  EXPECT_EQ(v["pids"], (FileValues{{"pids.max", "max"}}));
  EXPECT_EQ(v["cpuset"][0], (std::pair<std::string, std::string>{"cpuset.cpus", "1"}));

  limits.memory_bytes = 32u << 20;
  v = v1_values(limits, V1Host{false, "0", "0"});
  EXPECT_EQ(v["memory"],
            (FileValues{{"memory.limit_in_bytes", "33554432"}, {"memory.swappiness", "0"}}));
  EXPECT_EQ(v1_values(Limits{}, V1Host{})["cpu"][1].second, "-1");
}

TEST(CgroupValues, V2) {
  Limits limits;
  limits.cpus = 0.5;
  limits.memory_bytes = 64u << 20;
  limits.pids = 7;
  EXPECT_EQ(v2_values(limits), (FileValues{{"cpu.max", "50000 100000"},
                                           {"memory.max", "67108864"},
                                           {"memory.swap.max", "0"},
                                           {"pids.max", "7"}}));
  EXPECT_EQ(v2_values(Limits{}),
            (FileValues{{"cpu.max", "max 100000"}, {"memory.max", "max"}, {"pids.max", "max"}}));
}

TEST(CgroupValidate, RefusesNonsenseLimitsNamingTheField) {
  auto expect_invalid = [](Limits l, const std::string& field) {
    auto r = validate_limits(l);
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_EQ(r.error().code, "invalid_argument");
    EXPECT_NE(r.error().message.find(field), std::string::npos) << r.error().message;
  };
  Limits l;
  l.cpus = -1;
  expect_invalid(l, "limits.cpus");
  l.cpus = std::nan("");
  expect_invalid(l, "limits.cpus");
  l.cpus = 0.001;  // under the kernel's 1 ms quota
  expect_invalid(l, "limits.cpus");
  l = Limits{};
  l.memory_bytes = 1000;
  expect_invalid(l, "limits.memory_bytes");
  l = Limits{};
  l.pids = -5;
  expect_invalid(l, "limits.pids");
  for (const char* bad : {"a", "1-", "3-1", "1,,2", "-1", "0-1-2"}) {
    l = Limits{};
    l.cpuset = bad;
    expect_invalid(l, "limits.cpuset");
  }
  l = Limits{};
  l.cpus = 0.01;
  l.memory_bytes = 1u << 20;
  l.cpuset = "0-1,3";
  EXPECT_TRUE(validate_limits(l).ok());
  EXPECT_TRUE(validate_limits(Limits{}).ok());
}

TEST(CgroupValidate, NamesAndParents) {
  EXPECT_TRUE(validate_id("qf-abc_1").ok());
  EXPECT_FALSE(validate_id("").ok());
  EXPECT_FALSE(validate_id("Upper").ok());
  EXPECT_FALSE(validate_id("a/b").ok());
  EXPECT_FALSE(validate_id(std::string(65, 'a')).ok());
  EXPECT_TRUE(validate_parent("qufop").ok());
  EXPECT_TRUE(validate_parent("qufop-test-1/sub.x").ok());
  EXPECT_TRUE(validate_parent("").ok());  // right under the root
  for (const char* bad : {"/qufop", "qufop/", "a//b", "..", "a/../b", "a b"}) {
    EXPECT_FALSE(validate_parent(bad).ok()) << bad;
  }
}

// A plain directory laid out like the root of a cgroup2 mount.
class FakeV2Tree : public ::testing::Test {
 protected:
  void SetUp() override {
    put(root() / "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    put(root() / "cgroup.subtree_control", "");
    put(root() / "cgroup.procs", "1\n");
    auto m = make_cgroup_manager(root().string());
    ASSERT_TRUE(m.ok()) << m.error().message;
    manager = std::move(*m);
  }

  const fs::path& root() const { return dir_.path(); }

  std::set<std::string> files_in(const fs::path& dir) const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
  }

  TempDir dir_;
  std::unique_ptr<CgroupManager> manager;
};

TEST_F(FakeV2Tree, CreateWritesExactlyTheExpectedFiles) {
  ASSERT_TRUE(manager->is_v2());
  Limits limits;
  limits.cpus = 0.5;
  limits.memory_bytes = 64u << 20;
  limits.pids = 100;
  auto cg = manager->create("qufop", "qf-a", limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  EXPECT_EQ((*cg)->path(), "qufop/qf-a");

  EXPECT_EQ(slurp(root() / "cgroup.subtree_control"), "+cpu +memory +pids");
  EXPECT_EQ(slurp(root() / "qufop/cgroup.subtree_control"), "+cpu +memory +pids");
  EXPECT_EQ(files_in(root() / "qufop"), (std::set<std::string>{"cgroup.subtree_control", "qf-a"}));
  fs::path leaf = root() / "qufop/qf-a";
  EXPECT_EQ(files_in(leaf),
            (std::set<std::string>{"cpu.max", "memory.max", "memory.swap.max", "pids.max"}));
  EXPECT_EQ(slurp(leaf / "cpu.max"), "50000 100000");
  EXPECT_EQ(slurp(leaf / "memory.max"), "67108864");
  EXPECT_EQ(slurp(leaf / "memory.swap.max"), "0");
  EXPECT_EQ(slurp(leaf / "pids.max"), "100");
}

TEST_F(FakeV2Tree, CpusetIsEnabledOnlyWhenAsked) {
  put(root() / "cgroup.subtree_control", "cpu memory pids\n");  // what the kernel reads back
  Limits limits;
  limits.cpuset = "0-1";
  auto cg = manager->create("qufop/deep", "qf-b", limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  EXPECT_EQ(slurp(root() / "cgroup.subtree_control"), "+cpuset") << "only what is missing";
  EXPECT_EQ(slurp(root() / "qufop/cgroup.subtree_control"), "+cpuset +cpu +memory +pids");
  EXPECT_EQ(slurp(root() / "qufop/deep/cgroup.subtree_control"), "+cpuset +cpu +memory +pids");
  EXPECT_EQ(slurp(root() / "qufop/deep/qf-b/cpuset.cpus"), "0-1");
  EXPECT_EQ(slurp(root() / "qufop/deep/qf-b/cpu.max"), "max 100000");
  EXPECT_EQ(slurp(root() / "qufop/deep/qf-b/memory.max"), "max");
  EXPECT_FALSE(fs::exists(root() / "qufop/deep/qf-b/memory.swap.max"));
}

TEST_F(FakeV2Tree, RefusesBadLimitsAndDuplicatesLeavingNothing) {
  Limits bad;
  bad.memory_bytes = 4096;
  auto r = manager->create("qufop", "qf-a", bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "invalid_argument");
  EXPECT_NE(r.error().message.find("limits.memory_bytes"), std::string::npos);
  bad = Limits{};
  bad.pids = -1;
  EXPECT_FALSE(manager->create("qufop", "qf-a", bad).ok());
  EXPECT_FALSE(fs::exists(root() / "qufop"));
  EXPECT_EQ(slurp(root() / "cgroup.subtree_control"), "") << "nothing touched";

  ASSERT_TRUE(manager->create("qufop", "qf-a", Limits{}).ok());
  auto again = manager->create("qufop", "qf-a", Limits{});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "already_exists");
}

TEST_F(FakeV2Tree, MissingControllerIsUnavailable) {
  put(root() / "cgroup.controllers", "cpu io memory pids\n");
  Limits limits;
  limits.cpuset = "0";
  auto r = manager->create("qufop", "qf-a", limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "unavailable");
  EXPECT_FALSE(fs::exists(root() / "qufop"));
}

TEST_F(FakeV2Tree, ProcessesStatsAndRemove) {
  auto cg = manager->create("qufop", "qf-a", Limits{});
  ASSERT_TRUE(cg.ok());
  fs::path leaf = root() / "qufop/qf-a";
  ASSERT_TRUE((*cg)->add_process(4242).ok());
  EXPECT_EQ(slurp(leaf / "cgroup.procs"), "4242");
  put(leaf / "cgroup.procs", "4242\n4243\n");  // as the kernel would list them
  auto pids = (*cg)->processes();
  ASSERT_TRUE(pids.ok());
  EXPECT_EQ(*pids, (std::vector<pid_t>{4242, 4243}));
  auto busy = (*cg)->remove();
  ASSERT_FALSE(busy.ok()) << "a populated cgroup is not removed";
  EXPECT_EQ(busy.error().code, "conflict");

  auto quiet = (*cg)->stats();
  ASSERT_TRUE(quiet.ok());
  EXPECT_FALSE(quiet->oom_killed);
  EXPECT_EQ(quiet->cpu_usage_usec, 0u);
  put(leaf / "memory.events", "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n");
  put(leaf / "memory.peak", "33554432\n");
  put(leaf / "cpu.stat", "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n");
  put(leaf / "pids.current", "2\n");
  auto s = (*cg)->stats();
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->oom_killed);
  EXPECT_EQ(s->memory_peak, 33554432u);
  EXPECT_EQ(s->cpu_usage_usec, 1234u);
  EXPECT_EQ(s->pids_current, 2);

  put(leaf / "cgroup.procs", "");
  auto reopened = manager->open("qufop", "qf-a");
  ASSERT_TRUE(reopened.ok());
  ASSERT_TRUE((*reopened)->remove().ok());
  EXPECT_FALSE(fs::exists(leaf));
  EXPECT_TRUE((*cg)->remove().ok()) << "removing twice is fine";
  auto gone = manager->open("qufop", "qf-a");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code, "not_found");
}

TEST_F(FakeV2Tree, KillAllUsesCgroupKill) {
  auto cg = manager->create("qufop", "qf-a", Limits{});
  ASSERT_TRUE(cg.ok());
  fs::path leaf = root() / "qufop/qf-a";
  put(leaf / "cgroup.kill", "");  // kernel >= 5.14
  put(leaf / "cgroup.procs", "");
  ASSERT_TRUE((*cg)->kill_all(milliseconds(1000)).ok());
  EXPECT_EQ(slurp(leaf / "cgroup.kill"), "1");
  EXPECT_FALSE(fs::exists(leaf / "cgroup.freeze"));
}

TEST_F(FakeV2Tree, KillAllFallsBackToFreezing) {
  auto cg = manager->create("qufop", "qf-a", Limits{});
  ASSERT_TRUE(cg.ok());
  fs::path leaf = root() / "qufop/qf-a";
  put(leaf / "cgroup.events", "populated 0\nfrozen 1\n");
  put(leaf / "cgroup.procs", "");
  ASSERT_TRUE((*cg)->kill_all(milliseconds(1000)).ok());
  EXPECT_EQ(slurp(leaf / "cgroup.freeze"), "0") << "frozen, then thawed";
  EXPECT_FALSE(fs::exists(leaf / "cgroup.kill"));
}

TEST(CgroupManager, RootOverrideNeedsACgroupTree) {
  TempDir empty;
  auto m = make_cgroup_manager(empty.path().string());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, "invalid_argument");
  put(empty.path() / "cgroup.controllers", "cpu memory\n");
  m = make_cgroup_manager(empty.path().string());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code, "unavailable");
}

#endif  // QUFOP_SANDBOX_UNIT

#ifdef QUFOP_SANDBOX_ROOT

const char* const kV1Hierarchies[] = {"cpu", "cpuacct", "cpuset", "freezer", "memory", "pids"};

std::string test_parent() { return "qufop-test-" + std::to_string(::getpid()); }

// Kills and removes whatever a test left under its parent, deepest first, in every hierarchy.
void scrub_cgroups(const std::string& parent) {
  for (const auto& h : fs::directory_iterator("/sys/fs/cgroup")) {
    fs::path top = h.path() / parent;
    std::error_code ec;
    if (!fs::is_directory(top, ec)) continue;
    std::vector<fs::path> dirs{top};
    for (const auto& e : fs::recursive_directory_iterator(top, ec)) {
      if (e.is_directory(ec)) dirs.push_back(e.path());
    }
    std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
      return a.string().size() > b.string().size();
    });
    for (const fs::path& d : dirs) {
      std::istringstream procs(slurp(d / "cgroup.procs"));
      for (pid_t pid; procs >> pid;) ::kill(pid, SIGKILL);
      if (fs::exists(d / "freezer.state")) put(d / "freezer.state", "THAWED");
      for (int i = 0; i < 100 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++i) {
        std::this_thread::sleep_for(milliseconds(10));
      }
    }
  }
}

// After the whole binary: nothing named after this run is left in any hierarchy.
class NoCgroupLeftBehind : public ::testing::Environment {
 public:
  void TearDown() override {
    if (::geteuid() != 0) return;
    for (const auto& h : fs::directory_iterator("/sys/fs/cgroup")) {
      EXPECT_FALSE(fs::exists(h.path() / test_parent())) << (h.path() / test_parent());
    }
  }
};
const auto* const kNoCgroupLeftBehind = ::testing::AddGlobalTestEnvironment(new NoCgroupLeftBehind);

class CgroupV1Root : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (creates cgroups)";
    auto m = make_cgroup_manager();
    ASSERT_TRUE(m.ok()) << m.error().message;
    manager = std::move(*m);
    if (manager->is_v2()) GTEST_SKIP() << "this host runs cgroup v2; these tests read v1 files";
    parent = test_parent();
  }
  void TearDown() override {
    if (!parent.empty()) scrub_cgroups(parent);
  }

  static fs::path dir(const char* hierarchy, const std::string& rel) {
    return fs::path("/sys/fs/cgroup") / hierarchy / rel;
  }
  void expect_gone(const std::string& rel) {
    for (const char* h : kV1Hierarchies) EXPECT_FALSE(fs::exists(dir(h, rel))) << dir(h, rel);
  }

  std::unique_ptr<CgroupManager> manager;
  std::string parent;
};

// fork() with a pipe: the child blocks until go(), then runs `body` and _exits with its code.
class Child {
 public:
  explicit Child(const std::function<int()>& body) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[1]);
      char c;
      if (::read(fds[0], &c, 1) != 1) ::_exit(100);
      ::_exit(body());
    }
    ::close(fds[0]);
    go_fd_ = fds[1];
  }
  ~Child() {
    if (go_fd_ >= 0) ::close(go_fd_);
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  void go() {
    (void)!::write(go_fd_, "g", 1);
    ::close(go_fd_);
    go_fd_ = -1;
  }
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int go_fd_ = -1;
  bool reaped_ = false;
};

TEST_F(CgroupV1Root, CreatesWithLimitsAndRemoves) {
  Limits limits;
  limits.cpus = 0.5;
  limits.memory_bytes = 64u << 20;
  limits.pids = 50;
  limits.cpuset = "0";
  auto cg = manager->create(parent, "a", limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  std::string rel = parent + "/a";
  EXPECT_EQ((*cg)->path(), rel);
  EXPECT_EQ(trim(slurp(dir("cpu", rel) / "cpu.cfs_period_us")), "100000");
  EXPECT_EQ(trim(slurp(dir("cpu", rel) / "cpu.cfs_quota_us")), "50000");
  EXPECT_EQ(trim(slurp(dir("memory", rel) / "memory.limit_in_bytes")), "67108864");
  if (fs::exists(dir("memory", rel) / "memory.memsw.limit_in_bytes")) {
    EXPECT_EQ(trim(slurp(dir("memory", rel) / "memory.memsw.limit_in_bytes")), "67108864");
  }
  EXPECT_EQ(trim(slurp(dir("memory", rel) / "memory.swappiness")), "0");
  EXPECT_EQ(trim(slurp(dir("pids", rel) / "pids.max")), "50");
  EXPECT_EQ(trim(slurp(dir("cpuset", rel) / "cpuset.cpus")), "0");
  std::string root_mems = trim(slurp("/sys/fs/cgroup/cpuset/cpuset.mems"));
  EXPECT_EQ(trim(slurp(dir("cpuset", rel) / "cpuset.mems")), root_mems);
  // The parent made on demand inherits the root's cpuset, or no task could join below it.
  EXPECT_EQ(trim(slurp(dir("cpuset", parent) / "cpuset.cpus")),
            trim(slurp("/sys/fs/cgroup/cpuset/cpuset.cpus")));
  EXPECT_EQ(trim(slurp(dir("cpuset", parent) / "cpuset.mems")), root_mems);
  for (const char* h : kV1Hierarchies) EXPECT_TRUE(fs::is_directory(dir(h, rel))) << h;

  auto again = manager->create(parent, "a", limits);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, "already_exists");

  ASSERT_TRUE((*cg)->remove().ok());
  expect_gone(rel);
  EXPECT_TRUE((*cg)->remove().ok());
}

TEST_F(CgroupV1Root, UnlimitedInheritsCpuset) {
  auto cg = manager->create(parent, "b", Limits{});
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  std::string rel = parent + "/b";
  EXPECT_EQ(trim(slurp(dir("cpu", rel) / "cpu.cfs_quota_us")), "-1");
  EXPECT_EQ(trim(slurp(dir("pids", rel) / "pids.max")), "max");
  EXPECT_EQ(trim(slurp(dir("cpuset", rel) / "cpuset.cpus")),
            trim(slurp("/sys/fs/cgroup/cpuset/cpuset.cpus")));
  Child child([] { return 0; });
  ASSERT_TRUE((*cg)->add_process(child.pid()).ok()) << "a task can join: cpus and mems are set";
  child.go();
  child.wait();
  ASSERT_TRUE((*cg)->remove().ok());
  expect_gone(rel);
}

TEST_F(CgroupV1Root, BadLimitsAndKernelRefusalsLeaveNothing) {
  Limits bad;
  bad.cpus = -2;
  auto r = manager->create(parent, "c", bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("limits.cpus"), std::string::npos);
  expect_gone(parent);

  // Valid syntax, but no such cpu here: the kernel refuses cpuset.cpus after the directories
  // (the nested parent too) were made, and all of them must go.
  Limits refused;
  refused.cpuset = "1000";
  r = manager->create(parent + "/nested", "c", refused);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("cpuset.cpus"), std::string::npos) << r.error().message;
  expect_gone(parent + "/nested/c");
  expect_gone(parent + "/nested");
  expect_gone(parent);
}

TEST_F(CgroupV1Root, OpenFindsAnExistingOne) {
  ASSERT_TRUE(manager->create(parent, "d", Limits{}).ok());
  auto cg = manager->open(parent, "d");
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  EXPECT_EQ((*cg)->path(), parent + "/d");
  auto pids = (*cg)->processes();
  ASSERT_TRUE(pids.ok());
  EXPECT_TRUE(pids->empty());
  auto missing = manager->open(parent, "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, "not_found");
  ASSERT_TRUE((*cg)->remove().ok());
}

// A child that ignores SIGTERM and has forked two grandchildren that ignore it too.
int stubborn_family() {
  ::signal(SIGTERM, SIG_IGN);
  for (int i = 0; i < 2; ++i) {
    if (::fork() == 0) {
      for (;;) ::pause();
    }
  }
  for (;;) ::pause();
}

TEST_F(CgroupV1Root, KillAllKillsTheWholeFamily) {
  Limits limits;
  limits.pids = 20;
  auto cg = manager->create(parent, "e", limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  // Subreaper, so the orphaned grandchildren come back to this process to be reaped and checked.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  Child child(stubborn_family);
  ASSERT_TRUE((*cg)->add_process(child.pid()).ok());
  child.go();
  std::vector<pid_t> pids;
  for (int i = 0; i < 500 && pids.size() < 3; ++i) {
    pids = *(*cg)->processes();
    std::this_thread::sleep_for(milliseconds(2));
  }
  ASSERT_EQ(pids.size(), 3u) << "the child and both grandchildren are in the cgroup";
  EXPECT_NE(std::find(pids.begin(), pids.end(), child.pid()), pids.end());
  auto stats = (*cg)->stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pids_current, 3);

  ::kill(child.pid(), SIGTERM);  // ignored
  auto start = std::chrono::steady_clock::now();
  auto killed = (*cg)->kill_all(milliseconds(5000));
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(killed.ok()) << killed.error().message;
  std::printf("kill_all of 3 processes: %.2f ms\n",
              std::chrono::duration<double, std::milli>(took).count());
  EXPECT_TRUE((*cg)->processes()->empty());
  EXPECT_EQ(trim(slurp(dir("freezer", parent + "/e") / "freezer.state")), "THAWED");

  int status = child.wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  for (pid_t p : pids) {
    if (p == child.pid()) continue;
    int st = 0;
    ASSERT_EQ(::waitpid(p, &st, 0), p) << "grandchild " << p;
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  ASSERT_TRUE((*cg)->remove().ok());
  expect_gone(parent + "/e");
}

TEST_F(CgroupV1Root, RemoveRefusesAPopulatedCgroup) {
  auto cg = manager->create(parent, "f", Limits{});
  ASSERT_TRUE(cg.ok());
  Child child([]() -> int {
    for (;;) ::pause();
  });
  ASSERT_TRUE((*cg)->add_process(child.pid()).ok());
  auto r = (*cg)->remove();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, "conflict");
  EXPECT_TRUE(fs::exists(dir("memory", parent + "/f") / "cgroup.procs"));
  ASSERT_TRUE((*cg)->kill_all(milliseconds(5000)).ok());
  child.wait();
  ASSERT_TRUE((*cg)->remove().ok());
  expect_gone(parent + "/f");
}

TEST_F(CgroupV1Root, MemoryHogIsOomKilled) {
  Limits limits;
  limits.memory_bytes = 32u << 20;
  auto cg = manager->create(parent, "g", limits);
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  Child hog([] {
    // mmap, not malloc: the sanitizer's allocator stays out of it.
    constexpr size_t kSize = 256u << 20;
    auto* p = static_cast<volatile char*>(
        ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) return 2;
    for (size_t i = 0; i < kSize; i += 4096) p[i] = 1;
    return 0;  // should not get here
  });
  ASSERT_TRUE((*cg)->add_process(hog.pid()).ok());
  auto before = (*cg)->stats();
  ASSERT_TRUE(before.ok());
  EXPECT_FALSE(before->oom_killed);
  hog.go();
  int status = hog.wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  auto after = (*cg)->stats();
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_TRUE(after->oom_killed);
  EXPECT_GT(after->memory_peak, 16u << 20);
  EXPECT_LE(after->memory_peak, 32u << 20);
  ASSERT_TRUE((*cg)->remove().ok());
  expect_gone(parent + "/g");
}

// The v2 manager's rollback, for real: a tmpfs with too few inodes makes a write fail after the
// directories were made.
TEST(CgroupV2Root, FailedCreateRemovesWhatItMade) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts a tmpfs)";
  TempDir dir;
  struct Unmount {
    const fs::path& at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  };
  // root dir, cgroup.controllers, cgroup.subtree_control, qufop/, its subtree_control, the leaf,
  // cpu.max: memory.max is the 8th inode and fails.
  ASSERT_EQ(::mount("qufop-test", dir.path().c_str(), "tmpfs", 0, "nr_inodes=7,size=1m"), 0)
      << std::strerror(errno);
  Unmount unmount{dir.path()};
  put(dir.path() / "cgroup.controllers", "cpu memory pids\n");
  put(dir.path() / "cgroup.subtree_control", "");
  auto m = make_cgroup_manager(dir.path().string());
  ASSERT_TRUE(m.ok()) << m.error().message;
  Limits limits;
  limits.memory_bytes = 64u << 20;
  auto r = (*m)->create("qufop", "qf-x", limits);
  EXPECT_FALSE(r.ok());
  if (!r.ok()) {
    EXPECT_NE(r.error().message.find("memory.max"), std::string::npos) << r.error().message;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "qufop"));
}

#endif  // QUFOP_SANDBOX_ROOT

}  // namespace
}  // namespace qufop::noded

// The sandbox end to end, as root (skipped with a reason otherwise): real namespaces, cgroups,
// overlay, seccomp, on a busybox rootfs made by scripts/make-busybox-rootfs in a temp dir. Every
// test checks afterwards that nothing is left: no mount under the temp dir, no cgroup of its own,
// no child process.
//
// Built a second time, with QUFOP_SYSCALL_PROBE, as the static qufop_syscall_probe that the
// seccomp test copies into a rootfs layer: it calls each syscall number it is given with zeroed
// arguments and prints "<nr> <errno>".
#ifdef QUFOP_SYSCALL_PROBE

#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    long nr = std::strtol(argv[i], nullptr, 10);
    long rc;
    errno = 0;
    if (nr == SYS_clone) {
      // clone with a namespace flag: the profile denies those flags, not clone itself.
      rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
      if (rc == 0) _exit(0);
    } else {
      rc = syscall(nr, 0, 0, 0, 0, 0, 0);
    }
    std::printf("%ld %d\n", nr, rc < 0 ? errno : 0);
  }
  return 0;
}

#else

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <list>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "noded/cgroup.h"
#include "noded/logs.h"
#include "noded/runner.h"
#include "noded/sandbox.h"
#include "noded/seccomp.h"
#include "noded/stop_wait.h"

namespace qufop::noded::sbtest {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The busybox rootfs of the whole test binary, made once; "" with the reason in *why when the
// tests cannot run here.
const std::string& busybox_rootfs(std::string* why) {
  static std::string dir, reason;
  static bool done = false;
  if (!done) {
    done = true;
    if (::geteuid() != 0) {
      reason = "needs root (namespaces, mounts, cgroups)";
    } else {
      std::string name = "/tmp/qufop-sbx-" + std::to_string(::getpid()) + "-rootfs.XXXXXX";
      char* tmpl = name.data();
      if (!::mkdtemp(tmpl)) {
        reason = "mkdtemp failed";
      } else {
        std::string cmd = std::string(QUFOP_SOURCE_DIR) + "/scripts/make-busybox-rootfs " + tmpl +
                          "/rootfs >/dev/null";
        if (std::system(cmd.c_str()) != 0) {
          reason = "scripts/make-busybox-rootfs failed (busybox-static installed?)";
        } else {
          dir = std::string(tmpl) + "/rootfs";
          std::atexit([] { fs::remove_all(fs::path(dir).parent_path()); });
        }
      }
    }
  }
  if (why) *why = reason;
  return dir;
}

std::string binary(const std::string& rel) { return std::string(QUFOP_BINARY_DIR) + "/" + rel; }

// What a test may have left: mounts under `dir` (in our namespace), cgroup dirs named by `ours`
// in any hierarchy, child processes of this one (zombies included), and entries of `dir`'s run/
// subdirectory.
std::vector<std::string> leftovers(const std::string& dir,
                                   const std::function<bool(const std::string&)>& ours) {
  std::vector<std::string> found;
  std::istringstream mounts(read_file("/proc/self/mountinfo"));
  for (std::string line; std::getline(mounts, line);) {
    if (line.find(" " + dir + "/") != std::string::npos ||
        line.find(" " + dir + " ") != std::string::npos) {
      found.push_back("mount: " + line);
    }
  }
  std::error_code ec;
  // Under qufop/ (noded's parent) and right under the root (the one-shot runner's default).
  for (const auto& h : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    for (const fs::path& parent : {h.path() / "qufop", h.path()}) {
      if (!fs::is_directory(parent, ec)) continue;
      for (const auto& cg : fs::directory_iterator(parent, ec)) {
        if (ours(cg.path().filename().string())) {
          found.push_back("cgroup: " + cg.path().string());
        }
      }
    }
  }
  std::string me = std::to_string(::getpid());
  for (const auto& p : fs::directory_iterator("/proc", ec)) {
    std::string stat = read_file(p.path().string() + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state, ppid;
    rest >> state >> ppid;
    if (ppid == me) found.push_back("process: " + stat.substr(0, close + 1) + " " + state);
  }
  for (const auto& e : fs::directory_iterator(dir + "/run", ec)) {
    found.push_back("dir: " + e.path().string());
  }
  return found;
}

class SandboxRoot : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string why;
    if (busybox_rootfs(&why).empty()) return;
    auto prog = build_default_profile();
    ASSERT_TRUE(prog.ok()) << prog.error().message;
    seccomp_ = new SeccompProgram(std::move(*prog));
    auto cg = make_cgroup_manager();
    ASSERT_TRUE(cg.ok()) << cg.error().message;
    cgroups_ = cg->release();
  }
  static void TearDownTestSuite() {
    delete seccomp_;
    delete cgroups_;
    seccomp_ = nullptr;
    cgroups_ = nullptr;
  }

  void SetUp() override {
    std::string why;
    rootfs_ = busybox_rootfs(&why);
    if (rootfs_.empty()) GTEST_SKIP() << why;
    std::string tmpl = "/tmp/qufop-sbx-" + std::to_string(::getpid()) + "-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ + "/run");
    prefix_ = "qf-t" + std::to_string(::getpid()) + "-";
  }

  void TearDown() override {
    if (dir_.empty()) return;
    for (auto& s : started_) {
      if (s.sb) {
        EXPECT_TRUE(s.sb->release().ok());
      }
      s.pump.reset();
    }
    started_.clear();
    EXPECT_THAT(leftovers(dir_, [this](const std::string& n) { return n.rfind(prefix_, 0) == 0; }),
                IsEmpty());
    fs::remove_all(dir_);
  }

  SandboxSpec make_spec(std::vector<std::string> argv) {
    SandboxSpec s;
    s.id = prefix_ + std::to_string(counter_++);
    s.layers = {rootfs_};
    s.run_dir = dir_ + "/run/" + s.id;
    s.log_dir = dir_ + "/log-" + s.id;
    s.argv = std::move(argv);
    return s;
  }
  SandboxSpec shell(const std::string& script) { return make_spec({"/bin/sh", "-c", script}); }

  StartOptions options() {
    StartOptions o;
    o.cgroups = cgroups_;
    o.seccomp = seccomp_;
    o.init_path = binary("noded/qufop-init");
    return o;
  }

  struct Started {
    std::unique_ptr<Sandbox> sb;
    std::unique_ptr<OutputPump> pump;
    std::string log_path;
  };

  // Starts with stdout+stderr into <log_dir>/output.log; the returned index stays valid.
  Result<Started*> start(const SandboxSpec& spec) {
    auto log = RotatingLog::open(spec.log_dir, spec.log_max_bytes, spec.log_keep);
    if (!log) return log.error();
    std::string log_path = (*log)->path();
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Error::sys("pipe2", errno);
    auto pump =
        std::make_unique<OutputPump>(std::move(*log), std::vector<OutputPump::Source>{{p[0], -1}});
    StartOptions o = options();
    o.stdout_fd = p[1];
    o.stderr_fd = p[1];
    auto sb = Sandbox::start(spec, o);
    ::close(p[1]);
    if (!sb) return sb.error();
    pump->start();
    started_.push_back({std::move(*sb), std::move(pump), log_path});
    return &started_.back();
  }

  // Everything the sandbox wrote, once it is gone.
  std::string output(Started* s) {
    (void)s->pump->join();
    return read_file(s->log_path);
  }

  struct Outcome {
    ExitStatus status;
    std::string output;
  };
  // Starts, waits up to `timeout` (then StopWait, failing the test), releases.
  Outcome run(const SandboxSpec& spec, milliseconds timeout = milliseconds(20'000)) {
    Outcome out;
    auto s = start(spec);
    EXPECT_TRUE(s.ok()) << s.error().message;
    if (!s) return out;
    auto st = (*s)->sb->wait(timeout);
    EXPECT_TRUE(st.ok());
    if (st.ok() && st->has_value()) {
      out.status = **st;
    } else {
      ADD_FAILURE() << "sandbox still running after " << timeout.count() << " ms";
      auto stopped = stop_wait(*(*s)->sb, milliseconds(100));
      if (stopped) out.status = stopped->status;
    }
    EXPECT_TRUE((*s)->sb->release().ok());
    out.output = output(*s);
    return out;
  }

  static SeccompProgram* seccomp_;
  static CgroupManager* cgroups_;
  std::string rootfs_, dir_, prefix_;
  int counter_ = 0;
  std::list<Started> started_;
};

SeccompProgram* SandboxRoot::seccomp_ = nullptr;
CgroupManager* SandboxRoot::cgroups_ = nullptr;

// Whether process `pid` (from a name like "qf-t123-4" or "/tmp/qufop-sbx-123-test.x") is gone.
bool dead(const std::string& digits) {
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return false;
  return ::kill(std::stoi(digits), 0) != 0 && errno == ESRCH;
}

// First, so that a second run of the suite checks the first: nothing of a test process that is
// gone may remain — no temp dir, no cgroup, no mount (every process of a sandbox is in its
// cgroup, so no cgroup means no process).
TEST_F(SandboxRoot, NothingLeftByEarlierRuns) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/tmp", ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("qufop-sbx-", 0) != 0) continue;
    std::string pid = name.substr(10, name.find('-', 10) - 10);
    if (dead(pid)) found.push_back("dir: " + e.path().string());
  }
  for (const auto& h : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    for (const fs::path& parent : {h.path() / "qufop", h.path()}) {
      for (const auto& cg : fs::directory_iterator(parent, ec)) {
        std::string name = cg.path().filename().string();
        std::string pid;
        if (name.rfind("qf-run-", 0) == 0) pid = name.substr(7);
        if (name.rfind("qf-t", 0) == 0) pid = name.substr(4, name.find('-', 4) - 4);
        if (dead(pid)) found.push_back("cgroup: " + cg.path().string());
      }
    }
  }
  std::istringstream mounts(read_file("/proc/self/mountinfo"));
  for (std::string line; std::getline(mounts, line);) {
    if (line.find("/qufop-sbx-") != std::string::npos) found.push_back("mount: " + line);
  }
  EXPECT_THAT(found, IsEmpty());
}

TEST_F(SandboxRoot, RunsACommandAndReportsItsExitCode) {
  auto r = run(shell("echo hello; echo oops >&2; exit 3"));
  EXPECT_FALSE(r.status.signaled);
  EXPECT_EQ(r.status.code, 3);
  EXPECT_EQ(r.output, "hello\noops\n");
}

TEST_F(SandboxRoot, ReportsTheSignalThatKilledTheMainProcess) {
  auto r = run(shell("kill -KILL $$"));
  EXPECT_TRUE(r.status.signaled);
  EXPECT_EQ(r.status.code, SIGKILL);
  EXPECT_EQ(r.status.shell_code(), 137);
  EXPECT_FALSE(r.status.oom_killed);
}

TEST_F(SandboxRoot, PidOneIsInitAndNoHostProcessIsVisible) {
  // The main process is pid 2: pid 1 is qufop-init, its parent in the new pid namespace.
  auto r =
      run(shell("echo pid=$$; tr '\\0' ' ' </proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'"));
  std::istringstream lines(r.output);
  std::string pid, init_cmd, count;
  std::getline(lines, pid);
  std::getline(lines, init_cmd);
  std::getline(lines, count);
  EXPECT_EQ(pid, "pid=2");
  EXPECT_THAT(init_cmd, ::testing::StartsWith("qufop-init 2 "));
  // init, sh, ls and grep (and the subshell of the pipeline): nothing of the host's hundreds.
  EXPECT_LE(std::stoi(count), 5) << r.output;
}

TEST_F(SandboxRoot, BackgroundProcessesEndWithTheMainProcess) {
  // The sleep holds stdout open; it dies with pid 1 when the main shell exits.
  auto t0 = std::chrono::steady_clock::now();
  auto r = run(shell("sleep 1000 & echo started"));
  EXPECT_EQ(r.status.code, 0);
  EXPECT_EQ(r.output, "started\n");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(5000));
}

TEST_F(SandboxRoot, InitReapsOrphans) {
  // The subshell exits at once, orphaning its sleep to pid 1, which must reap it when it ends.
  auto r = run(
      shell("(sleep 0.2 &); sleep 0.6; grep -l '^[0-9]* ([a-z]*) Z' /proc/[0-9]*/stat | wc -l"));
  EXPECT_EQ(r.output, "0\n");
}

TEST_F(SandboxRoot, HasItsOwnHostname) {
  auto spec = shell("hostname");
  spec.hostname = "sbx-host";
  EXPECT_EQ(run(spec).output, "sbx-host\n");
  auto by_id = shell("hostname");
  std::string id = by_id.id;
  EXPECT_EQ(run(by_id).output, id + "\n");
}

TEST_F(SandboxRoot, SeesNoHostMount) {
  auto r = run(shell("cut -d' ' -f5 /proc/self/mountinfo"));
  std::istringstream lines(r.output);
  std::vector<std::string> allowed = {"/", "/proc", "/dev", "/sys", "/tmp"};
  int n = 0;
  for (std::string m; std::getline(lines, m); ++n) {
    bool ok = false;
    for (const auto& a : allowed) {
      if (m == a || (a != "/" && m.rfind(a + "/", 0) == 0)) ok = true;
    }
    EXPECT_TRUE(ok) << "host mount visible in the sandbox: " << m;
  }
  EXPECT_GE(n, 5);
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("/sys/fs/cgroup")));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr(dir_)));
}

TEST_F(SandboxRoot, MinimalDevAndMaskedProc) {
  auto r =
      run(shell("ls /dev | tr '\\n' ' '; echo; cat /proc/keys /proc/timer_list | wc -c; "
                "find /sys/firmware /proc/acpi -mindepth 1 | wc -l; "
                "(echo x >/proc/sys/kernel/hostname) 2>/dev/null || echo ro-sys; "
                "echo x >/dev/null && echo null-ok; head -c 4 /dev/urandom | wc -c; "
                "stat -c '%n %t:%T %a %F' /dev/null /dev/zero /dev/urandom"));
  EXPECT_THAT(r.output,
              HasSubstr("fd full null ptmx pts random shm stderr stdin stdout tty urandom "
                        "zero"));
  // /proc/keys and /proc/timer_list are /dev/null; /sys/firmware and /proc/acpi empty tmpfs.
  EXPECT_THAT(r.output, HasSubstr("\n0\n0\nro-sys\nnull-ok\n4\n"));
  // The host's device numbers, usable by anyone (mknod, or a bind of the host's node).
  EXPECT_THAT(r.output, HasSubstr("/dev/null 1:3 666 character special file\n"
                                  "/dev/zero 1:5 666 character special file\n"
                                  "/dev/urandom 1:9 666 character special file\n"));
}

TEST_F(SandboxRoot, DefaultUserHasNoCapabilityAndIsNobody) {
  auto r =
      run(shell("id -u; id -g; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; "
                "grep NoNewPrivs /proc/self/status"));
  EXPECT_THAT(r.output, HasSubstr("65534\n65534\n"));
  EXPECT_THAT(r.output, HasSubstr("CapEff:\t0000000000000000"));
  EXPECT_THAT(r.output, HasSubstr("CapPrm:\t0000000000000000"));
  EXPECT_THAT(r.output, HasSubstr("CapBnd:\t0000000000000000"));
  EXPECT_THAT(r.output, HasSubstr("CapAmb:\t0000000000000000"));
  EXPECT_THAT(r.output, HasSubstr("NoNewPrivs:\t1"));
  // qufop-init (pid 1) holds no more than the command.
  auto init = run(shell("grep -E '^(Uid|CapEff)' /proc/1/status"));
  EXPECT_THAT(init.output, HasSubstr("Uid:\t65534\t65534\t65534\t65534"));
  EXPECT_THAT(init.output, HasSubstr("CapEff:\t0000000000000000"));
}

TEST_F(SandboxRoot, DeniedCallsFailWithOperationNotPermitted) {
  // As the default user (busybox's mount refuses a non-root user before any syscall) …
  auto r = run(shell("unshare -m true; hostname evil; echo done"));
  EXPECT_THAT(r.output, HasSubstr("unshare: unshare(0x20000): Operation not permitted"));
  EXPECT_THAT(r.output, HasSubstr("hostname: sethostname: Operation not permitted"));
  EXPECT_THAT(r.output, HasSubstr("done"));
  // … and as uid 0 without capabilities.
  auto as_root = shell("mount -t tmpfs x /tmp; unshare -U true; echo done");
  as_root.uid = 0;
  as_root.gid = 0;
  r = run(as_root);
  // busybox's words for EPERM from mount(2).
  EXPECT_THAT(r.output, HasSubstr("mount: permission denied (are you root?)"));
  EXPECT_THAT(r.output, HasSubstr("unshare: unshare(0x10000000): Operation not permitted"));
  EXPECT_THAT(r.output, HasSubstr("done"));
}

TEST_F(SandboxRoot, EveryDeniedSyscallReturnsEpermEvenWithCapSysAdmin) {
  // The probe runs as uid 0 keeping CAP_SYS_ADMIN: without the filter, mount, unshare, setns …
  // would get past the capability checks; with it, each returns EPERM.
  std::string layer = dir_ + "/probe-layer";
  fs::create_directories(layer);
  fs::copy_file(binary("tests/qufop_syscall_probe"), layer + "/probe");
  auto spec = make_spec({"/probe"});
  spec.layers = {layer, rootfs_};
  spec.uid = 0;
  spec.gid = 0;
  spec.keep_capabilities = {"CAP_SYS_ADMIN"};
  std::map<long, std::string> names;
  for (const auto& name : denied_syscalls()) {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr < 0) continue;  // not a syscall of this architecture
    names[nr] = name;
    spec.argv.push_back(std::to_string(nr));
  }
  spec.argv.push_back(std::to_string(seccomp_syscall_resolve_name("clone")));
  names[seccomp_syscall_resolve_name("clone")] = "clone(CLONE_NEWUSER)";
  ASSERT_GE(names.size(), 40u);
  auto r = run(spec);
  EXPECT_EQ(r.status.code, 0) << r.output;
  std::istringstream lines(r.output);
  size_t seen = 0;
  for (long nr; lines >> nr;) {
    int err = -1;
    lines >> err;
    ++seen;
    EXPECT_EQ(err, EPERM) << names[nr] << " (" << nr << ") returned errno " << err;
  }
  EXPECT_EQ(seen, names.size());
}

TEST_F(SandboxRoot, JoinsAPreparedNetworkNamespace) {
  std::string name = prefix_ + "net";
  ASSERT_EQ(std::system(("ip netns add " + name).c_str()), 0);
  std::string path = "/run/netns/" + name;
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  auto spec = shell("readlink /proc/self/ns/net");
  spec.net = NetMode::kNamespace;
  spec.net_namespace_path = path;
  auto r = run(spec);
  EXPECT_EQ(r.output, "net:[" + std::to_string(st.st_ino) + "]\n");
  EXPECT_EQ(std::system(("ip netns del " + name).c_str()), 0);
}

TEST_F(SandboxRoot, ReadonlyRootRefusesWritesButTmpWorks) {
  auto spec = shell("touch /newfile 2>&1; touch /tmp/ok && echo tmp-ok");
  spec.readonly_root = true;
  spec.uid = 0;  // root, so only the read-only mount can refuse
  spec.gid = 0;
  auto r = run(spec);
  EXPECT_THAT(r.output, HasSubstr("Read-only file system"));
  EXPECT_THAT(r.output, HasSubstr("tmp-ok"));
}

TEST_F(SandboxRoot, WritableRootGoesToTheUpperDirOnly) {
  auto spec = shell("echo data >/written && cat /written");
  spec.uid = 0;
  spec.gid = 0;
  EXPECT_EQ(run(spec).output, "data\n");
  EXPECT_FALSE(fs::exists(rootfs_ + "/written"));
}

TEST_F(SandboxRoot, LayersStackTopFirst) {
  std::string top = dir_ + "/top";
  fs::create_directories(top + "/etc");
  std::ofstream(top + "/etc/motd") << "from the top layer\n";
  auto spec = shell("cat /etc/motd; ls /bin/busybox");
  spec.layers = {top, rootfs_};
  EXPECT_EQ(run(spec).output, "from the top layer\n/bin/busybox\n");
}

TEST_F(SandboxRoot, EnvWorkdirAndNoLeakedDescriptors) {
  auto spec = shell("pwd; echo $FOO; echo $PATH; ls /proc/self/fd | tr '\\n' ' '");
  spec.workdir = "/tmp";
  spec.env = {"FOO=bar"};
  auto r = run(spec);
  // ls's own directory fd is 3; nothing of the host's beyond stdio.
  EXPECT_EQ(r.output,
            "/tmp\nbar\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            "0 1 2 3 ");
}

TEST_F(SandboxRoot, MemoryHogIsOomKilledAndRecorded) {
  auto spec = make_spec({"awk", "BEGIN { s = \"xxxxxxxxxxxxxxxx\"; while (1) s = s s }"});
  spec.limits.memory_bytes = 32u << 20;
  auto r = run(spec);
  EXPECT_TRUE(r.status.oom_killed) << r.status.describe();
  EXPECT_TRUE(r.status.signaled);
  EXPECT_EQ(r.status.code, SIGKILL);
}

// A pids file of the sandbox's cgroup (v1: the pids hierarchy; v2: the unified tree).
std::string pids_file(Cgroup* cg, const std::string& name) {
  for (const std::string root : {"/sys/fs/cgroup/pids/", "/sys/fs/cgroup/"}) {
    std::string path = root + cg->path() + "/" + name;
    if (fs::exists(path)) return read_file(path);
  }
  return "";
}

TEST_F(SandboxRoot, ForkBombStopsAtThePidsLimit) {
  // The bomb in a child shell (busybox's shells die when a fork fails, so it burns out at the
  // limit); the main process sleeps on, and StopWait cleans up.
  auto spec = shell("sh -c 'bomb() { bomb & bomb; }; bomb' 2>/dev/null & sleep 1000");
  spec.limits.pids = 32;
  spec.stop_wait = milliseconds(200);
  auto s = start(spec);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Cgroup* cg = (*s)->sb->cgroup();
  int64_t max_seen = 0;
  for (int i = 0; i < 100; ++i) {
    auto stats = cg->stats();
    ASSERT_TRUE(stats.ok());
    max_seen = std::max(max_seen, stats->pids_current);
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_LE(max_seen, 32);
  // The kernel refused forks at the limit ("max N" counts them).
  std::string events = pids_file(cg, "pids.events");
  ASSERT_THAT(events, HasSubstr("max "));
  EXPECT_GT(std::stoll(events.substr(events.find("max ") + 4)), 0) << events;
  if (std::string peak = pids_file(cg, "pids.peak"); !peak.empty()) {
    EXPECT_EQ(std::stoi(peak), 32);
  }
  // The host is fine: it can still fork.
  EXPECT_EQ(std::system("true"), 0);
  auto stopped = stop_wait(*(*s)->sb);
  ASSERT_TRUE(stopped.ok()) << stopped.error().message;
}

TEST_F(SandboxRoot, BusyLoopGetsHalfACpu) {
  auto spec = shell("while :; do :; done");
  spec.limits.cpus = 0.5;
  spec.stop_wait = milliseconds(100);
  auto s = start(spec);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Cgroup* cg = (*s)->sb->cgroup();
  std::this_thread::sleep_for(milliseconds(300));  // past the first period's burst
  auto a = cg->stats();
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(milliseconds(2000));
  auto b = cg->stats();
  double wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(a.ok() && b.ok());
  double cpus = static_cast<double>(b->cpu_usage_usec - a->cpu_usage_usec) / wall_us;
  EXPECT_NEAR(cpus, 0.5, 0.1);
  ASSERT_TRUE(stop_wait(*(*s)->sb).ok());
}

TEST_F(SandboxRoot, StopWaitLetsAProcessHandlingSigtermExitCleanly) {
  auto spec = shell("trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done");
  spec.stop_wait = milliseconds(5000);
  auto s = start(spec);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::this_thread::sleep_for(milliseconds(300));
  auto stopped = stop_wait(*(*s)->sb);
  ASSERT_TRUE(stopped.ok()) << stopped.error().message;
  EXPECT_FALSE(stopped->killed);
  EXPECT_FALSE(stopped->status.signaled);
  EXPECT_EQ(stopped->status.code, 0);
  EXPECT_LT(stopped->took.count(), 1000);
  EXPECT_EQ(output(*s), "ready\nbye\n");
}

TEST_F(SandboxRoot, StopWaitKillsAnIgnoringProcessAndItsDescendantsAtTheDeadline) {
  auto spec = shell("trap '' TERM; sleep 1000 & sh -c 'sleep 1000 & sleep 1000' & sleep 1000");
  spec.stop_wait = milliseconds(1000);
  auto s = start(spec);
  ASSERT_TRUE(s.ok()) << s.error().message;
  // init, the main sh (exec'd into its last sleep), a sleep, the inner sh (exec'd into its last
  // sleep) and its sleep: a grandchild.
  std::vector<pid_t> pids;
  for (int i = 0; i < 100 && pids.size() < 5; ++i) {
    std::this_thread::sleep_for(milliseconds(20));
    auto p = (*s)->sb->cgroup()->processes();
    ASSERT_TRUE(p.ok());
    pids = *p;
  }
  ASSERT_EQ(pids.size(), 5u);
  auto stopped = stop_wait(*(*s)->sb);
  ASSERT_TRUE(stopped.ok()) << stopped.error().message;
  EXPECT_TRUE(stopped->killed);
  EXPECT_NEAR(static_cast<double>(stopped->took.count()), 1000.0, 500.0);
  for (pid_t pid : pids) EXPECT_NE(::kill(pid, 0), 0) << "pid " << pid << " survived";
}

TEST_F(SandboxRoot, ReleaseIsIdempotent) {
  auto s = start(shell("sleep 1000"));
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE((*s)->sb->release().ok());
  EXPECT_TRUE((*s)->sb->release().ok());
  EXPECT_TRUE((*s)->sb->exit_status().has_value());
  EXPECT_FALSE(fs::exists((*s)->sb->spec().run_dir));
}

TEST_F(SandboxRoot, StartsFromManyThreadsAtOnce) {
  std::vector<SandboxSpec> specs;
  for (int i = 0; i < 6; ++i) specs.push_back(shell("echo " + std::to_string(i)));
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (auto& spec : specs) {
    threads.emplace_back([&, spec] {
      StartOptions o = options();
      auto sb = Sandbox::start(spec, o);
      if (!sb) {
        ADD_FAILURE() << sb.error().message;
        return;
      }
      auto st = (*sb)->wait(milliseconds(10'000));
      if (st.ok() && st->has_value() && (*st)->code == 0) ++good;
      EXPECT_TRUE((*sb)->release().ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 6);
}

// ---- bad input: refused with one clear line, nothing left ----

TEST_F(SandboxRoot, RefusesBadSpecsLeavingNothing) {
  struct Case {
    std::string name;
    std::function<void(SandboxSpec&)> change;
    std::string message;
  };
  std::string link_root = dir_ + "/evil";
  fs::create_directories(link_root + "/bin");
  fs::create_symlink("/", link_root + "/proc");
  std::vector<Case> cases = {
      {"missing rootfs", [&](SandboxSpec& s) { s.layers = {dir_ + "/nope"}; },
       "rootfs " + dir_ + "/nope: No such file or directory"},
      {"symlinked /proc", [&](SandboxSpec& s) { s.layers = {link_root}; },
       "/proc is a symlink; refusing"},
      {"empty argv", [](SandboxSpec& s) { s.argv.clear(); }, "no command given"},
      {"bad id", [](SandboxSpec& s) { s.id = "Bad/Id"; }, "sandbox id 'Bad/Id'"},
      {"tiny memory", [](SandboxSpec& s) { s.limits.memory_bytes = 1; }, "below the minimum 4 MiB"},
      {"negative cpus", [](SandboxSpec& s) { s.limits.cpus = -1; }, "cpu limit"},
      {"one pid", [](SandboxSpec& s) { s.limits.pids = 1; }, "pids limit 1"},
      {"unknown capability", [](SandboxSpec& s) { s.keep_capabilities = {"CAP_FLY"}; },
       "unknown capability 'CAP_FLY'"},
      {"relative workdir", [](SandboxSpec& s) { s.workdir = "tmp"; }, "workdir 'tmp'"},
  };
  for (const auto& c : cases) {
    auto spec = shell("true");
    c.change(spec);
    auto s = start(spec);
    ASSERT_FALSE(s.ok()) << c.name;
    EXPECT_THAT(s.error().message, HasSubstr(c.message)) << c.name;
    EXPECT_EQ(s.error().message.find('\n'), std::string::npos) << c.name;
    EXPECT_FALSE(fs::exists(spec.run_dir)) << c.name;
  }
}

TEST_F(SandboxRoot, CommandNotFoundIsTheStartError) {
  auto s = start(make_spec({"/bin/nope"}));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, "exec /bin/nope in rootfs: No such file or directory");
  EXPECT_EQ(s.error().sys_errno, ENOENT);
  auto by_path = start(make_spec({"nope"}));
  ASSERT_FALSE(by_path.ok());
  EXPECT_THAT(by_path.error().message,
              HasSubstr("exec nope in rootfs: not found in PATH /usr/local/sbin"));
  auto workdir = make_spec({"true"});
  workdir.workdir = "/missing";
  auto w = start(workdir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().message, "workdir /missing in rootfs: No such file or directory");
}

TEST_F(SandboxRoot, SymlinkedProcInAnUpperLayerIsRefusedToo) {
  // The bottom layer is fine; the top one replaces /proc with a symlink.
  std::string top = dir_ + "/top";
  fs::create_directories(top);
  fs::create_symlink("/etc", top + "/proc");
  auto spec = shell("true");
  spec.layers = {top, rootfs_};
  auto s = start(spec);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("/proc is a symlink; refusing"));
}

// ---- logs ----

TEST_F(SandboxRoot, OutputLogRotatesAtTheSizeCap) {
  auto spec = shell("seq 1 20000");  // 108894 bytes
  spec.log_max_bytes = 32 * 1024;
  spec.log_keep = 3;
  auto r = run(spec);
  EXPECT_EQ(r.status.code, 0);
  std::string base = spec.log_dir + "/output.log";
  EXPECT_TRUE(fs::exists(base + ".1"));
  EXPECT_TRUE(fs::exists(base + ".2"));
  EXPECT_FALSE(fs::exists(base + ".3"));
  EXPECT_LE(fs::file_size(base), 32u * 1024);
  EXPECT_EQ(fs::file_size(base + ".1"), 32u * 1024);
  // The newest lines are in output.log, ending with the last one.
  std::string last = read_file(base);
  EXPECT_EQ(last.substr(last.size() - 6), "20000\n");
}

TEST(RotatingLog, KeepsAtMostKeepFiles) {
  char tmpl[] = "/tmp/qufop-log-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    auto log = RotatingLog::open(dir, 10, 2);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->write("0123456789abcdefghijKLMNO").ok());
  }
  EXPECT_EQ(read_file(dir + "/output.log"), "KLMNO");
  EXPECT_EQ(read_file(dir + "/output.log.1"), "abcdefghij");
  EXPECT_FALSE(fs::exists(dir + "/output.log.2"));
  auto bad = RotatingLog::open(dir, 0, 2);
  EXPECT_FALSE(bad.ok());
  fs::remove_all(dir);
}

// ---- pure parts: no root needed ----

SandboxSpec plain_spec() {
  SandboxSpec s;
  s.id = "qf-unit";
  s.layers = {"/"};
  s.run_dir = "/tmp/qf-unit";
  s.argv = {"true"};
  return s;
}

TEST(SandboxValidate, NamesTheBadField) {
  EXPECT_TRUE(validate(plain_spec()).ok());
  struct Case {
    std::function<void(SandboxSpec&)> change;
    std::string message;
  };
  std::vector<Case> cases = {
      {[](SandboxSpec& s) { s.id = ""; }, "sandbox id ''"},
      {[](SandboxSpec& s) { s.id = std::string(65, 'a'); }, "1-64 characters"},
      {[](SandboxSpec& s) { s.argv = {""}; }, "no command given"},
      {[](SandboxSpec& s) { s.run_dir = "relative"; }, "run dir 'relative'"},
      {[](SandboxSpec& s) { s.layers = {}; }, "no rootfs layer given"},
      {[](SandboxSpec& s) { s.layers = {"rel"}; }, "not an absolute path"},
      {[](SandboxSpec& s) { s.layers = {"/a,b"}; }, "contains ','"},
      {[](SandboxSpec& s) { s.env = {"NOEQUALS"}; }, "'NOEQUALS' is not K=V"},
      {[](SandboxSpec& s) { s.hostname = "bad host"; }, "hostname 'bad host'"},
      {[](SandboxSpec& s) { s.limits.cpus = 0.001; }, "below the minimum 0.01"},
      {[](SandboxSpec& s) { s.limits.cpus = std::nan(""); }, "cpu limit"},
      {[](SandboxSpec& s) { s.limits.pids = -3; }, "pids limit -3"},
      {[](SandboxSpec& s) { s.limits.nofile = 0; }, "open files limit"},
      {[](SandboxSpec& s) { s.net = NetMode::kNamespace; }, "needs a namespace path"},
      {[](SandboxSpec& s) { s.cgroup_parent = "../x"; }, "cgroup parent '../x'"},
      {[](SandboxSpec& s) { s.stop_wait = milliseconds(-1); }, "stop wait"},
  };
  for (const auto& c : cases) {
    SandboxSpec spec = plain_spec();
    c.change(spec);
    auto r = validate(spec);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_THAT(r.error().message, HasSubstr(c.message));
  }
}

TEST(SandboxPaths, OverlayOfTheLayersTopFirst) {
  SandboxSpec spec = plain_spec();
  spec.layers = {"/img/top", "/img/base"};
  auto p = rootfs_paths(spec);
  EXPECT_EQ(p.rootfs, "/tmp/qf-unit/rootfs");
  EXPECT_EQ(p.overlay_options,
            "lowerdir=/img/top:/img/base,upperdir=/tmp/qf-unit/upper,workdir=/tmp/qf-unit/work");
}

TEST(SandboxExitStatus, ShellCodeAndDescription) {
  ExitStatus exited{false, 3, false};
  EXPECT_EQ(exited.shell_code(), 3);
  EXPECT_EQ(exited.describe(), "exited with 3");
  ExitStatus oom{true, SIGKILL, true};
  EXPECT_EQ(oom.shell_code(), 137);
  EXPECT_EQ(oom.describe(), "killed by SIGKILL (the OOM killer killed a process)");
}

Result<SandboxSpec> runner_spec(std::vector<std::string> args) {
  Flags flags("qufop-noded run", "", run_flags());
  args.insert(args.begin(), "run");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  if (auto r = flags.parse(static_cast<int>(argv.size()), argv.data()); !r.ok()) return r.error();
  return spec_from_flags(flags, 42);
}

TEST(RunnerFlags, MakeTheSpec) {
  auto s =
      runner_spec({"--rootfs", "/",     "--memory",   "64m",         "--cpus",    "0.5",
                   "--pids",   "64",    "--readonly", "--user",      "1000:1001", "--env",
                   "A=1",      "--env", "B=2",        "--workdir",   "/srv",      "--hostname",
                   "web",      "--net", "host",       "--stop-wait", "3s",        "--state-dir",
                   "/run/q",   "--",    "echo",       "--not-a-flag"});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->id, "qf-run-42");
  EXPECT_EQ(s->layers, std::vector<std::string>{"/"});
  EXPECT_EQ(s->limits.memory_bytes, 64u << 20);
  EXPECT_DOUBLE_EQ(s->limits.cpus, 0.5);
  EXPECT_EQ(s->limits.pids, 64);
  EXPECT_TRUE(s->readonly_root);
  EXPECT_EQ(s->uid, 1000u);
  EXPECT_EQ(s->gid, 1001u);
  EXPECT_EQ(s->env, (std::vector<std::string>{"A=1", "B=2"}));
  EXPECT_EQ(s->workdir, "/srv");
  EXPECT_EQ(s->hostname, "web");
  EXPECT_EQ(s->net, NetMode::kHost);
  EXPECT_EQ(s->stop_wait, milliseconds(3000));
  EXPECT_EQ(s->run_dir, "/run/q/run-42");
  EXPECT_EQ(s->log_dir, "");        // no output.log unless --log-dir
  EXPECT_EQ(s->cgroup_parent, "");  // right under each hierarchy's root, as crun does
  EXPECT_EQ(s->argv, (std::vector<std::string>{"echo", "--not-a-flag"}));
  auto d = runner_spec({"--rootfs", "/", "--cgroup-parent", "qufop/one-shot", "--", "true"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->cgroup_parent, "qufop/one-shot");
  EXPECT_EQ(d->uid, 65534u);
  EXPECT_EQ(d->net, NetMode::kNone);
  EXPECT_EQ(d->limits.memory_bytes, 0u);
  EXPECT_EQ(d->stop_wait, milliseconds(10'000));
}

TEST(RunnerFlags, RefuseNonsense) {
  std::vector<std::pair<std::vector<std::string>, std::string> > cases = {
      {{"--memory", "-1"}, "--memory"},
      {{"--memory", "0"}, "--memory: must be > 0"},
      {{"--cpus", "0"}, "--cpus '0'"},
      {{"--cpus", "-0.5"}, "--cpus '-0.5'"},
      {{"--cpus", "lots"}, "--cpus 'lots'"},
      {{"--pids", "1"}, "--pids"},
      {{"--user", "root"}, "--user: uid 'root'"},
      {{"--user", "1:x"}, "--user: gid 'x'"},
      {{"--net", "bogus"}, "--net 'bogus'"},
      {{"--stop-wait", "later"}, "--stop-wait"},
      {{"--log-keep", "0"}, "--log-keep"},
      {{"--cgroup-parent", "../up"}, "--cgroup-parent: cgroup parent '../up'"},
  };
  for (const auto& [flags, message] : cases) {
    std::vector<std::string> args = {"--rootfs", "/"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back("--");
    args.push_back("true");
    auto s = runner_spec(args);
    ASSERT_FALSE(s.ok()) << message;
    EXPECT_THAT(s.error().message, HasSubstr(message));
  }
  auto missing = runner_spec({"--", "true"});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("--rootfs DIR is required"));
}

}  // namespace qufop::noded::sbtest

#endif  // QUFOP_SYSCALL_PROBE

// `qufop-noded run` end to end, as root (skipped with a reason otherwise): the real binary on the
// busybox rootfs of test_noded_sandbox.cc; exit codes, output, flags, StopWait on SIGTERM/SIGINT,
// bad input. Every test checks that nothing is left: no run or log dir in its state dir, no
// cgroup of the runner's id, no child process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace qufop::noded::sbtest {

// From test_noded_sandbox.cc.
const std::string& busybox_rootfs(std::string* why);
std::string binary(const std::string& rel);
std::string read_file(const std::string& path);
std::vector<std::string> leftovers(const std::string& dir,
                                   const std::function<bool(const std::string&)>& ours);

namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using Clock = std::chrono::steady_clock;

// A child process with its stdout and stderr captured.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) std::abort();
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
  }
  ~Child() {
    if (!reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_fd_);
    ::close(err_fd_);
  }
  pid_t pid() const { return pid_; }
  void signal(int sig) { ::kill(pid_, sig); }

  // Reads output for up to `timeout` or until `until` returns true.
  template <class Pred>
  bool pump(milliseconds timeout, Pred until) {
    auto deadline = Clock::now() + timeout;
    while (!until()) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
      if (::poll(fds, 2, static_cast<int>(std::min<int64_t>(left, 50))) <= 0) continue;
      char buf[4096];
      for (int i = 0; i < 2; ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
        ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n > 0) (i == 0 ? out_ : err_).append(buf, static_cast<size_t>(n));
      }
    }
    return true;
  }
  // The exit code (128 + signal when killed), or -1 after `timeout`.
  int wait(milliseconds timeout) {
    bool exited = pump(timeout, [this] {
      if (reaped_) return true;
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) != pid_) return false;
      reaped_ = true;
      code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return true;
    });
    if (!exited) return -1;
    pump(milliseconds(2000), [this] { return eof(); });  // what is left in the pipes
    return code_;
  }
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  bool eof() {
    pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
    if (::poll(fds, 2, 0) < 0) return true;
    for (auto& f : fds) {
      if (f.revents & POLLIN) return false;
    }
    return true;
  }
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  bool reaped_ = false;
  int code_ = -1;
};

class Runner : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    rootfs_ = busybox_rootfs(&why);
    if (rootfs_.empty()) GTEST_SKIP() << why;
    std::string tmpl = "/tmp/qufop-sbx-" + std::to_string(::getpid()) + "-run.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ + "/run");
    fs::create_directories(dir_ + "/cache");
  }
  void TearDown() override {
    if (dir_.empty()) return;
    children_.clear();
    // The runner's run and log dirs are made in <dir>/run (its --state-dir).
    EXPECT_THAT(leftovers(dir_, ours()), IsEmpty());
    fs::remove_all(dir_);
  }

  std::vector<std::string> argv(std::vector<std::string> flags, std::vector<std::string> cmd) {
    std::vector<std::string> a = {
        binary("noded/qufop-noded"), "run",          "--state-dir", dir_ + "/run",
        "--seccomp-cache",           dir_ + "/cache"};
    bool has_rootfs = false;
    for (const auto& f : flags) has_rootfs |= f == "--rootfs";
    if (!has_rootfs) {
      a.push_back("--rootfs");
      a.push_back(rootfs_);
    }
    a.insert(a.end(), flags.begin(), flags.end());
    a.push_back("--");
    a.insert(a.end(), cmd.begin(), cmd.end());
    return a;
  }
  Child& spawn(std::vector<std::string> flags, std::vector<std::string> cmd) {
    children_.push_back(std::make_unique<Child>(argv(std::move(flags), std::move(cmd))));
    ids_.insert("qf-run-" + std::to_string(children_.back()->pid()));
    return *children_.back();
  }
  // The cgroup names of the runners this test started.
  std::function<bool(const std::string&)> ours() {
    return [this](const std::string& name) { return ids_.count(name) > 0; };
  }
  struct Out {
    int code;
    std::string out, err;
  };
  Out run(std::vector<std::string> flags, std::vector<std::string> cmd,
          milliseconds timeout = milliseconds(20'000)) {
    Child& c = spawn(std::move(flags), std::move(cmd));
    int code = c.wait(timeout);
    EXPECT_NE(code, -1) << "still running after " << timeout.count() << " ms";
    return {code, c.out(), c.err()};
  }
  Out sh(std::vector<std::string> flags, const std::string& script) {
    return run(std::move(flags), {"/bin/sh", "-c", script});
  }

  std::string rootfs_, dir_;
  std::vector<std::unique_ptr<Child>> children_;
  std::set<std::string> ids_;
};

TEST_F(Runner, EchoHiPrintsHi) {
  auto r = run({"--net", "none"}, {"echo", "hi"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_EQ(r.err, "");
}

TEST_F(Runner, ExitsWithTheCommandsCodeOr128PlusItsSignal) {
  EXPECT_EQ(sh({}, "exit 7").code, 7);
  EXPECT_EQ(sh({}, "kill -TERM $$").code, 128 + SIGTERM);
  auto r = sh({}, "echo to-out; echo to-err >&2; exit 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "to-out\n");
  EXPECT_EQ(r.err, "to-err\n");
}

TEST_F(Runner, LogDirKeepsTheOutputTooAndWithoutItNothingIsWritten) {
  std::string logs = dir_ + "/logs";
  auto r = sh({"--log-dir", logs}, "echo to-out; echo to-err >&2");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "to-out\n");
  EXPECT_EQ(r.err, "to-err\n");
  std::string kept = read_file(logs + "/output.log");
  EXPECT_NE(kept.find("to-out\n"), std::string::npos) << kept;
  EXPECT_NE(kept.find("to-err\n"), std::string::npos) << kept;
  // Without --log-dir the output only passes through: nothing lands in the state dir.
  auto plain = sh({}, "echo passing");
  EXPECT_EQ(plain.out, "passing\n");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_ + "/run", ec)) {
    ADD_FAILURE() << "left in the state dir: " << e.path();
  }
}

TEST_F(Runner, AppliesUserEnvWorkdirHostnameAndNetwork) {
  auto r = sh({"--hostname", "h1", "--user", "1000:1001", "--env", "A=b", "--env", "C=d",
               "--workdir", "/tmp", "--net", "none"},
              "hostname; id -u; id -g; echo $A$C; pwd; ls /sys/class/net; "
              "cat /sys/class/net/lo/operstate");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "h1\n1000\n1001\nbd\n/tmp\nlo\nunknown\n");
  auto host = sh({"--net", "host"}, "ls /sys/class/net | grep -vc '^lo$'");
  EXPECT_NE(host.out, "0\n") << "--net host shows the host's interfaces";
}

TEST_F(Runner, ReadonlyRootRefusesWrites) {
  auto r = sh({"--readonly"}, "touch /x");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.err, HasSubstr("Read-only file system"));
}

TEST_F(Runner, OomKillSaysSoAndExits137) {
  auto r =
      run({"--memory", "32m"}, {"awk", "BEGIN { s = \"xxxxxxxxxxxxxxxx\"; while (1) s = s s }"});
  EXPECT_EQ(r.code, 137);
  EXPECT_EQ(r.err, "qufop-noded run: killed by the OOM killer (memory limit 32 MiB)\n");
}

TEST_F(Runner, SigtermIsForwardedAndAHandlingCommandExitsCleanly) {
  Child& c = spawn(
      {"--stop-wait", "5s"},
      {"/bin/sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done"});
  ASSERT_TRUE(c.pump(milliseconds(10'000), [&] { return c.out() == "ready\n"; })) << c.err();
  auto t0 = Clock::now();
  c.signal(SIGTERM);
  EXPECT_EQ(c.wait(milliseconds(5'000)), 0) << c.err();
  EXPECT_LT(Clock::now() - t0, milliseconds(1'000));
  EXPECT_EQ(c.out(), "ready\nbye\n");
}

TEST_F(Runner, SigintToACommandIgnoringSigtermKillsEverythingAtStopWait) {
  Child& c = spawn({"--stop-wait", "1s"},
                   {"/bin/sh", "-c",
                    "trap '' TERM; sleep 1000 & sh -c 'sleep 1000 & sleep 1000' & echo ready; "
                    "sleep 1000"});
  ASSERT_TRUE(c.pump(milliseconds(10'000), [&] { return c.out() == "ready\n"; })) << c.err();
  std::this_thread::sleep_for(milliseconds(100));
  auto t0 = Clock::now();
  c.signal(SIGINT);
  EXPECT_EQ(c.wait(milliseconds(5'000)), 128 + SIGKILL) << c.err();
  double took = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_NEAR(took, 1000.0, 500.0);
  EXPECT_EQ(c.err(), "");
}

TEST_F(Runner, ForkBombIsHeldAtThePidsLimit) {
  // The main shell forks the bomb first, then uses builtins only (a fork of its own could fail
  // while the bomb holds every pid), and ends; the kernel kills what is left with pid 1.
  auto r = sh({"--pids", "32"},
              "sh -c 'bomb() { bomb & bomb; }; bomb' 2>/dev/null & "
              "i=0; while [ $i -lt 200000 ]; do i=$((i + 1)); done; echo alive");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "alive\n");
  EXPECT_EQ(std::system("true"), 0);  // the host can still fork
}

// ---- bad input: one line on stderr, 125 (runtime) or 2 (usage), nothing left ----

TEST_F(Runner, BadInputIsOneLineAndLeavesNothing) {
  std::string evil = dir_ + "/evil";
  fs::create_directories(evil + "/bin");
  fs::create_symlink("/", evil + "/proc");
  struct Case {
    std::vector<std::string> flags;
    std::vector<std::string> cmd;
    int code;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"--rootfs", dir_ + "/nope"},
       {"true"},
       125,
       "rootfs " + dir_ + "/nope: No such file or directory"},
      {{}, {"/bin/nope"}, 125, "exec /bin/nope in rootfs: No such file or directory"},
      {{}, {"nope"}, 125, "exec nope in rootfs: not found in PATH"},
      {{"--memory", "-1"}, {"true"}, 125, "--memory"},
      {{"--memory", "1k"}, {"true"}, 125, "below the minimum 4 MiB"},
      {{"--cpus", "0"}, {"true"}, 125, "--cpus '0': expected a number of cpus > 0"},
      {{"--pids", "1"}, {"true"}, 125, "--pids"},
      {{"--rootfs", evil}, {"true"}, 125, "/proc is a symlink; refusing"},
      {{"--user", "nobody"}, {"true"}, 125, "--user: uid 'nobody' is not a number"},
      {{"--net", "bogus"}, {"true"}, 125, "--net 'bogus': expected none, host or bridge"},
      {{"--publish", "0:9100"}, {"true"}, 125, "--publish needs --net bridge"},
      {{"--stop-wait", "soon"}, {"true"}, 125, "--stop-wait"},
      {{"--bogus"}, {"true"}, 2, "unknown flag '--bogus'"},
  };
  for (const auto& c : cases) {
    auto r = run(c.flags, c.cmd);
    std::string what = ::testing::PrintToString(c.flags) + " " + ::testing::PrintToString(c.cmd);
    EXPECT_EQ(r.code, c.code) << what << ": " << r.err;
    EXPECT_THAT(r.err, ::testing::StartsWith("qufop-noded run: ")) << what;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << what;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
    EXPECT_EQ(r.out, "") << what;
    EXPECT_THAT(leftovers(dir_, ours()), IsEmpty()) << what;
  }
  // No command at all: a usage error.
  Child c({binary("noded/qufop-noded"), "run", "--rootfs", rootfs_});
  EXPECT_EQ(c.wait(milliseconds(10'000)), 2);
  EXPECT_THAT(c.err(), HasSubstr("no command given"));
}

// --net bridge --publish: an instance serving on 9100 answers on its published host port from
// the node (127.0.0.1), and when the runner ends its veth, address, rules and (being the last
// one) the bridge and table are gone. A bridge, subnet and state of the test's own, so tests
// and a node's real network never meet.
TEST_F(Runner, BridgePublishServesOnTheHostPortAndLeavesNothing) {
  std::string bridge = "qft" + std::to_string(::getpid() % 100000);
  std::string subnet = "10.231." + std::to_string(::getpid() % 250) + ".0/24";
  // Should the runner die before its own teardown (a failed assertion kills it), remove what
  // it made, so later runs are not refused by a stale route.
  struct Cleanup {
    std::string bridge;
    ~Cleanup() {
      (void)!::system(("ip link del " + bridge + " 2>/dev/null").c_str());
      (void)!::system("nft delete table ip qufop 2>/dev/null");
    }
  } cleanup{bridge};
  std::string www = rootfs_ + "/www-" + std::to_string(::getpid());
  fs::create_directories(www);
  std::ofstream(www + "/index.html") << "hello from the sandbox\n";
  Child& c = spawn({"--net", "bridge", "--publish", "0:9100", "--net-bridge", bridge,
                    "--net-subnet", subnet, "--net-host-ports", "31000-31099", "--stop-wait", "2s"},
                   {"/bin/httpd", "-f", "-p", "9100", "-h", "/www-" + std::to_string(::getpid())});
  ASSERT_TRUE(c.pump(milliseconds(10'000), [&] {
    auto at = c.err().find("published host port");  // and the whole line
    return at != std::string::npos && c.err().find('\n', at) != std::string::npos;
  })) << c.err();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      c.err(), m, std::regex("published host port (\\d+) -> (10\\.231\\.\\d+\\.\\d+):9100")))
      << c.err();
  std::string port = m[1];
  std::string body;
  for (int i = 0; i < 50 && body.find("hello") == std::string::npos; ++i) {
    FILE* p = ::popen(("curl -s -m 2 http://127.0.0.1:" + port + "/index.html").c_str(), "r");
    char buf[256];
    body.clear();
    while (p && fgets(buf, sizeof buf, p)) body += buf;
    if (p) ::pclose(p);
    if (body.empty()) std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_EQ(body, "hello from the sandbox\n");
  c.signal(SIGTERM);
  EXPECT_EQ(c.wait(milliseconds(10'000)), 128 + SIGTERM);
  fs::remove_all(www);
  EXPECT_FALSE(fs::exists("/sys/class/net/" + bridge)) << "bridge left behind";
  FILE* p = ::popen("nft list tables 2>&1", "r");
  std::string tables;
  char buf[256];
  while (p && fgets(buf, sizeof buf, p)) tables += buf;
  if (p) ::pclose(p);
  EXPECT_EQ(tables.find("qufop"), std::string::npos) << tables;
  // The node network's state dir stays (it holds only its lock file, as /run/qufop/net does on
  // a node), and no lease is left in it.
  EXPECT_FALSE(fs::exists(dir_ + "/run/net/ipam"));
  fs::remove_all(dir_ + "/run/net");
}

}  // namespace
}  // namespace qufop::noded::sbtest

// The default seccomp profile. Unit: it builds, the BPF is whole instructions, the hash is
// stable, the cache round-trips and a damaged cache is rebuilt. Root: installed in a forked
// child (still root with every capability, so an EPERM can only come from the filter), every
// denied call fails with EPERM while normal calls work.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "noded/seccomp.h"

namespace qufop::noded {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

class SeccompTempDir {
 public:
  SeccompTempDir() {
    std::string tmpl = (fs::temp_directory_path() / "qufop-seccomp-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~SeccompTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

[[maybe_unused]] std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

#ifdef QUFOP_SANDBOX_UNIT

TEST(SeccompProfile, BuildsWholeBpfWithAStableHash) {
  auto start = Clock::now();
  auto a = build_default_profile();
  double build_ms = ms_since(start);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_FALSE(a->bpf.empty());
  EXPECT_EQ(a->bpf.size() % 8, 0u);
  EXPECT_LE(a->bpf.size() / 8, 4096u) << "BPF_MAXINSNS";
  EXPECT_EQ(a->hash.size(), 64u);
  auto b = build_default_profile();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->hash, b->hash);
  EXPECT_EQ(a->bpf, b->bpf) << "the same rules compile to the same program";
  std::printf("seccomp build: %.3f ms, %zu instructions\n", build_ms, a->bpf.size() / 8);
}

TEST(SeccompProfile, DeniedListNamesTheHeadersCalls) {
  const auto& denied = denied_syscalls();
  for (const char* name : {"mount",
                           "umount2",
                           "ptrace",
                           "kexec_load",
                           "kexec_file_load",
                           "init_module",
                           "finit_module",
                           "delete_module",
                           "bpf",
                           "keyctl",
                           "add_key",
                           "request_key",
                           "unshare",
                           "setns",
                           "pivot_root",
                           "reboot",
                           "swapon",
                           "swapoff",
                           "open_by_handle_at",
                           "perf_event_open",
                           "userfaultfd"}) {
    EXPECT_NE(std::find(denied.begin(), denied.end(), name), denied.end()) << name;
  }
}

TEST(SeccompCache, RoundTripsAndLoadsFasterThanItBuilds) {
  SeccompTempDir dir;
  fs::path cache = dir.path() / "cache";  // created on demand
  auto start = Clock::now();
  auto built = load_or_build_default_profile(cache.string());
  double build_ms = ms_since(start);
  ASSERT_TRUE(built.ok()) << built.error().message;
  fs::path file = cache / ("seccomp-" + built->hash + ".bpf");
  ASSERT_TRUE(fs::exists(file));
  size_t files = std::distance(fs::directory_iterator(cache), fs::directory_iterator());
  EXPECT_EQ(files, 1u) << "no temp file left";

  start = Clock::now();
  auto loaded = load_or_build_default_profile(cache.string());
  double load_ms = ms_since(start);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->hash, built->hash);
  EXPECT_EQ(loaded->bpf, built->bpf);
  std::printf("seccomp: build+write %.3f ms, load from cache %.3f ms\n", build_ms, load_ms);
}

TEST(SeccompCache, DamagedFilesAreRebuilt) {
  SeccompTempDir dir;
  auto good = load_or_build_default_profile(dir.path().string());
  ASSERT_TRUE(good.ok());
  fs::path file = dir.path() / ("seccomp-" + good->hash + ".bpf");
  const std::string original = read_all(file);

  auto damage_and_reload = [&](const std::string& bytes, const char* what) {
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out << bytes;
    }
    auto r = load_or_build_default_profile(dir.path().string());
    ASSERT_TRUE(r.ok()) << what;
    EXPECT_EQ(r->bpf, good->bpf) << what;
    EXPECT_EQ(read_all(file), original) << what << ": the cache file is rewritten";
  };
  std::string flipped = original;
  flipped[flipped.size() - 3] ^= 0x40;  // one bit of the last instruction
  damage_and_reload(flipped, "flipped BPF bit");
  damage_and_reload(original.substr(0, original.size() - 5), "truncated (size % 8 != 0)");
  damage_and_reload(original.substr(0, original.size() - 8), "one instruction short");
  std::string other_key = original;
  other_key[other_key.find("allow read\n") + 6] = 'x';  // a different stored definition
  damage_and_reload(other_key, "stored definition is not the profile");
  damage_and_reload("garbage", "garbage");
  damage_and_reload("", "empty");
}

TEST(SeccompInstall, RefusesWhatIsNotAProgram) {
  EXPECT_FALSE(install(SeccompProgram{}).ok());
  EXPECT_FALSE(install(SeccompProgram{std::vector<uint8_t>(7), "x"}).ok());
}

#endif  // QUFOP_SANDBOX_UNIT

#ifdef QUFOP_SANDBOX_ROOT

// Runs `body` in a forked child that reports lines on a pipe; returns (wait status, text).
std::pair<int, std::string> in_child(const std::function<void(int out)>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    body(fds[1]);
    ::_exit(0);  // _exit: no atexit handlers (the leak checker) under the filter
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {status, text};
}

void say(int fd, const std::string& line) {
  (void)!::write(fd, (line + "\n").data(), line.size() + 1);
}

// The child's preparation: its own session (vhangup would find no terminal) and namespaces
// (hostname, mounts, network), so a call the filter wrongly let through changes nothing outside.
bool isolate_and_install(int out, const SeccompProgram& program) {
  if (::setsid() < 0 || ::unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET) != 0) {
    say(out, std::string("isolate: ") + std::strerror(errno));
    return false;
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    say(out, "no_new_privs failed");
    return false;
  }
  auto start = Clock::now();
  auto r = install(program);
  double install_us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  if (!r.ok()) {
    say(out, "install: " + r.error().message);
    return false;
  }
  say(out, "install_us " + std::to_string(install_us));
  return true;
}

class SeccompRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root: only with every capability does EPERM prove the filter";
    }
    auto p = build_default_profile();
    ASSERT_TRUE(p.ok()) << p.error().message;
    program = std::move(*p);
  }
  SeccompProgram program;
};

TEST_F(SeccompRoot, DeniedCallsGetEpermAndNormalOnesWork) {
  std::vector<std::pair<std::string, int>> calls;
  for (const std::string& name : denied_syscalls()) {
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr >= 0) calls.emplace_back(name, nr);  // negative: not a call on this arch
  }
  ASSERT_GT(calls.size(), 40u);
  auto [status, text] = in_child([&](int out) {
    // Control: unshare(0) is a harmless no-op the filter is about to deny.
    if (::syscall(SYS_unshare, 0) != 0) say(out, "control unshare(0) failed before the filter");
    if (!isolate_and_install(out, program)) ::_exit(3);
    int bad = 0;
    for (const auto& [name, nr] : calls) {
      errno = 0;
      long rc = ::syscall(nr, 0, 0, 0, 0, 0, 0);
      if (rc != -1 || errno != EPERM) {
        say(out, "ALLOWED " + name + " rc=" + std::to_string(rc) + " " + std::strerror(errno));
        ++bad;
      }
    }
    if (::getpid() <= 0) ++bad;
    int fd = ::openat(AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      say(out, std::string("openat: ") + std::strerror(errno));
      ++bad;
    } else {
      char buf[8192];
      ssize_t n = ::read(fd, buf, sizeof buf - 1);
      buf[n > 0 ? n : 0] = 0;
      const char* line = std::strstr(buf, "Seccomp:");
      say(out, line ? std::string(line, std::strcspn(line, "\n")) : "no Seccomp line");
      ::close(fd);
    }
    say(out, bad ? "FAIL" : "OK");  // write(2) works, or nothing would arrive
    ::_exit(bad ? 1 : 0);
  });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status << "\n" << text;
  EXPECT_EQ(WEXITSTATUS(status), 0) << text;
  EXPECT_NE(text.find("Seccomp:\t2"), std::string::npos) << text;
  EXPECT_NE(text.find("OK"), std::string::npos) << text;
  EXPECT_EQ(text.find("ALLOWED"), std::string::npos) << text;
  std::printf("checked %zu denied calls; %s", calls.size(),
              text.substr(0, text.find('\n') + 1).c_str());
}

TEST_F(SeccompRoot, CloneWithNamespaceFlagsIsDeniedThreadsAndForkWork) {
  auto [status, text] = in_child([&](int out) {
    if (!isolate_and_install(out, program)) ::_exit(3);
    int bad = 0;
    for (unsigned long flag : {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUTS,
                               CLONE_NEWIPC, CLONE_NEWCGROUP}) {
      errno = 0;
      long rc = ::syscall(SYS_clone, flag | SIGCHLD, 0, 0, 0, 0);
      if (rc == 0) ::_exit(0);  // a child made by a wrongly allowed clone
      if (rc != -1 || errno != EPERM) {
        say(out, "clone flag " + std::to_string(flag) + " rc=" + std::to_string(rc));
        ++bad;
      }
    }
    // clone3 reports ENOSYS so that glibc falls back to clone.
    clone_args args{};
    errno = 0;
    if (::syscall(SYS_clone3, &args, sizeof args) != -1 || errno != ENOSYS) {
      say(out, "clone3 not ENOSYS");
      ++bad;
    }
    pid_t child = ::fork();
    if (child == 0) ::_exit(7);
    int st = 0;
    if (child < 0 || ::waitpid(child, &st, 0) != child || WEXITSTATUS(st) != 7) {
      say(out, "fork failed");
      ++bad;
    }
    bool ran = false;
    std::thread([&] { ran = true; }).join();
    if (!ran) ++bad;
    ::_exit(bad ? 1 : 0);
  });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status << "\n" << text;
  EXPECT_EQ(WEXITSTATUS(status), 0) << text;
}

TEST_F(SeccompRoot, SocketFamilyAndPersonalityAreRestricted) {
  auto [status, text] = in_child([&](int out) {
    if (!isolate_and_install(out, program)) ::_exit(3);
    int bad = 0;
    errno = 0;
    if (::socket(AF_VSOCK, SOCK_STREAM, 0) != -1 || errno != EPERM) {
      say(out, "AF_VSOCK socket not denied");
      ++bad;
    }
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
      say(out, std::string("AF_INET socket: ") + std::strerror(errno));
      ++bad;
    }
    if (::personality(0xffffffff) < 0) {
      say(out, "personality query denied");
      ++bad;
    }
    errno = 0;
    if (::personality(READ_IMPLIES_EXEC) != -1 || errno != EPERM) {
      say(out, "personality(READ_IMPLIES_EXEC) not denied");
      ++bad;
    }
    errno = 0;
    if (::personality(ADDR_NO_RANDOMIZE) != -1 || errno != EPERM) {
      say(out, "personality(ADDR_NO_RANDOMIZE) not denied");
      ++bad;
    }
    ::_exit(bad ? 1 : 0);
  });
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status << "\n" << text;
  EXPECT_EQ(WEXITSTATUS(status), 0) << text;
}

TEST_F(SeccompRoot, ForeignArchitecturesAreKilled) {
  // i386 getpid through int 0x80.
  auto [i386_status, i386_text] = in_child([&](int out) {
    if (!isolate_and_install(out, program)) ::_exit(3);
    long rc = 20;  // __NR_getpid on i386
    asm volatile("int $0x80" : "+a"(rc) : : "memory");
    ::_exit(0);
  });
  EXPECT_TRUE(WIFSIGNALED(i386_status) && WTERMSIG(i386_status) == SIGSYS)
      << "status " << i386_status << " " << i386_text;
  // x32 getpid: the x86_64 entry with the x32 bit set.
  auto [x32_status, x32_text] = in_child([&](int out) {
    if (!isolate_and_install(out, program)) ::_exit(3);
    ::syscall(0x40000000 | SYS_getpid);
    ::_exit(0);
  });
  EXPECT_TRUE(WIFSIGNALED(x32_status) && WTERMSIG(x32_status) == SIGSYS)
      << "status " << x32_status << " " << x32_text;
}

TEST_F(SeccompRoot, InstallIsMicrosecondsBuildIsMilliseconds) {
  constexpr int kRounds = 20;
  auto start = Clock::now();
  for (int i = 0; i < kRounds; ++i) ASSERT_TRUE(build_default_profile().ok());
  double build_ms = ms_since(start) / kRounds;
  double install_us_total = 0;
  for (int i = 0; i < kRounds; ++i) {
    auto [status, text] = in_child([&](int out) {
      if (!isolate_and_install(out, program)) ::_exit(3);
      ::_exit(0);
    });
    ASSERT_EQ(status, 0) << text;
    install_us_total += std::stod(text.substr(text.find("install_us ") + 11));
  }
  double install_us = install_us_total / kRounds;
  std::printf("seccomp: build %.3f ms (avg of %d), install %.1f us (avg of %d)\n", build_ms,
              kRounds, install_us, kRounds);
  EXPECT_LT(install_us * 10, build_ms * 1000) << "loading ready BPF is far cheaper than building";
}

#endif  // QUFOP_SANDBOX_ROOT

}  // namespace
}  // namespace qufop::noded

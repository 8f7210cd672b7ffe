// Privileges. Unit: capability names. Root: in a forked child, drop to nobody and read back
// /proc/self/status (capability sets, no_new_privs, ids), with and without a kept capability,
// and across an execve (ambient capabilities).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>

#include "noded/privileges.h"

namespace qufop::noded {
namespace {

#ifdef QUFOP_SANDBOX_UNIT

TEST(Capabilities, ParsesNamesWithOrWithoutPrefixAnyCase) {
  auto caps = parse_capabilities(
      {"CAP_NET_BIND_SERVICE", "net_bind_service", "Cap_Sys_Admin", "chown", "CHECKPOINT_RESTORE"});
  ASSERT_TRUE(caps.ok()) << caps.error().message;
  EXPECT_EQ(*caps, (std::vector<int>{CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN, CAP_CHOWN,
                                     CAP_CHECKPOINT_RESTORE}));
  auto none = parse_capabilities({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(Capabilities, UnknownNamesAreInvalidAndNamed) {
  for (const char* bad : {"CAP_FOO", "", "CAP_", "net bind service", "CAP_CAP_CHOWN", "41"}) {
    auto r = parse_capabilities({"CAP_KILL", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, "invalid_argument");
    EXPECT_NE(r.error().message.find("'" + std::string(bad) + "'"), std::string::npos)
        << r.error().message;
  }
}

#endif  // QUFOP_SANDBOX_UNIT

#ifdef QUFOP_SANDBOX_ROOT

// Runs `body` in a forked child with a pipe for its report; returns (wait status, text).
std::pair<int, std::string> in_child(const std::function<void(int out)>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    body(fds[1]);
    ::_exit(0);
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

void say(int fd, const std::string& text) { (void)!::write(fd, text.data(), text.size()); }

void send_status(int out) {
  std::ifstream in("/proc/self/status");
  std::stringstream ss;
  ss << in.rdbuf();
  say(out, ss.str());
}

// "Key:\tvalue" lines of /proc/<pid>/status.
std::map<std::string, std::string> status_fields(const std::string& text) {
  std::map<std::string, std::string> fields;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    size_t start = line.find_first_not_of(" \t", colon + 1);
    std::string value = start == std::string::npos ? "" : line.substr(start);
    while (!value.empty() && value.back() == ' ') value.pop_back();  // "Groups:\t65534 "
    fields[line.substr(0, colon)] = value;
  }
  return fields;
}

uint64_t hex(const std::string& s) { return std::stoull(s, nullptr, 16); }

// Loopback up in the child's fresh network namespace, so 127.0.0.1 can be bound.
bool loopback_up() {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = s >= 0 && ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags |= IFF_UP;
  ok = ok && ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
  if (s >= 0) ::close(s);
  return ok;
}

// 0 or the errno of binding 127.0.0.1:80.
int bind_port_80() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(80);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
  ::close(s);
  return rc;
}

class PrivilegesRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (drops from uid 0)";
  }
};

TEST_F(PrivilegesRoot, DropsToNobodyWithNoCapabilities) {
  Limits limits;
  limits.nofile = 256;
  limits.nproc = 4096;
  auto [status, text] = in_child([&](int out) {
    auto r = drop_privileges(65534, 65534, {}, limits);
    if (!r.ok()) {
      say(out, "drop: " + r.error().message);
      ::_exit(1);
    }
    rlimit nofile{}, nproc{};
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    ::getrlimit(RLIMIT_NPROC, &nproc);
    say(out, "Nofile:\t" + std::to_string(nofile.rlim_cur) + " " + std::to_string(nofile.rlim_max) +
                 "\nNproc:\t" + std::to_string(nproc.rlim_cur) + "\n");
    // Privileged operations fail now.
    say(out, std::string("Setuid0:\t") + (::setuid(0) == 0 ? "yes" : "no") + "\n");
    say(out, std::string("Bind80:\t") + std::to_string(bind_port_80()) + "\n");
    send_status(out);
  });
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  auto f = status_fields(text);
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(hex(f[set]), 0u) << set << " " << f[set];
  }
  EXPECT_EQ(f["NoNewPrivs"], "1");
  EXPECT_EQ(f["Uid"], "65534\t65534\t65534\t65534");
  EXPECT_EQ(f["Gid"], "65534\t65534\t65534\t65534");
  EXPECT_EQ(f["Groups"], "65534");
  EXPECT_EQ(f["Nofile"], "256 256");
  EXPECT_EQ(f["Nproc"], "4096");
  EXPECT_EQ(f["Setuid0"], "no");
  EXPECT_EQ(f["Bind80"], std::to_string(EACCES));
}

TEST_F(PrivilegesRoot, KeepsNetBindServiceAndCanBindPort80) {
  auto keep = parse_capabilities({"NET_BIND_SERVICE"});
  ASSERT_TRUE(keep.ok());
  auto [status, text] = in_child([&](int out) {
    // As root, before the drop: a private network namespace, so port 80 is free and ours.
    if (::unshare(CLONE_NEWNET) != 0 || !loopback_up()) {
      say(out, std::string("netns: ") + std::strerror(errno));
      ::_exit(2);
    }
    auto r = drop_privileges(65534, 65534, *keep, Limits{});
    if (!r.ok()) {
      say(out, "drop: " + r.error().message);
      ::_exit(1);
    }
    say(out, "Bind80:\t" + std::to_string(bind_port_80()) + "\n");
    send_status(out);
  });
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  auto f = status_fields(text);
  constexpr uint64_t kBit = uint64_t{1} << CAP_NET_BIND_SERVICE;
  EXPECT_EQ(hex(f["CapEff"]), kBit) << f["CapEff"];
  EXPECT_EQ(hex(f["CapPrm"]), kBit);
  EXPECT_EQ(hex(f["CapInh"]), kBit);
  EXPECT_EQ(hex(f["CapBnd"]), kBit);
  EXPECT_EQ(hex(f["CapAmb"]), kBit);
  EXPECT_EQ(f["NoNewPrivs"], "1");
  EXPECT_EQ(f["Uid"], "65534\t65534\t65534\t65534");
  EXPECT_EQ(f["Bind80"], "0") << "bind(127.0.0.1:80) as uid 65534";
}

TEST_F(PrivilegesRoot, KeptCapabilitySurvivesExec) {
  auto keep = parse_capabilities({"CAP_NET_BIND_SERVICE"});
  ASSERT_TRUE(keep.ok());
  auto [status, text] = in_child([&](int out) {
    if (!drop_privileges(65534, 65534, *keep, Limits{}).ok()) ::_exit(1);
    ::dup2(out, STDOUT_FILENO);
    ::execl("/bin/cat", "cat", "/proc/self/status", static_cast<char*>(nullptr));
    ::_exit(127);
  });
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  auto f = status_fields(text);
  EXPECT_EQ(f["Name"], "cat");
  EXPECT_EQ(hex(f["CapEff"]), uint64_t{1} << CAP_NET_BIND_SERVICE) << "ambient carried it";
  EXPECT_EQ(hex(f["CapAmb"]), uint64_t{1} << CAP_NET_BIND_SERVICE);
  EXPECT_EQ(f["NoNewPrivs"], "1");
}

#endif  // QUFOP_SANDBOX_ROOT

}  // namespace
}  // namespace qufop::noded

// The node network for real, as root, inside network namespaces this test makes itself: a
// "node" (where NodeNetwork runs, so the real host's links and nftables are never touched),
// another "host" joined to the node by a veth, and instance namespaces. The namespaces are held
// by file descriptors only (never bind-mounted under /run/netns), so they vanish with this
// process whatever happens. Traffic goes only to addresses inside them.
//
//   host H  eth0 10.99.0.2/24 ---- up0 10.99.0.1/24  node N  qf0 10.88.0.1/24 --- A 10.88.0.2
//                                                                             \-- B 10.88.0.3
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "netfilter/link.h"
#include "netfilter/network.h"
#include "netfilter/rules.h"

namespace qufop::netfilter {
namespace {

constexpr int kFailMs = 400;  // a dropped SYN: how long we wait to call it unreachable

// A network namespace of our own, held by an fd.
class Netns {
 public:
  Netns() {
    auto fd = create_netns();
    if (fd.ok()) {
      fd_ = *fd;
    } else {
      error_ = fd.error().message;
    }
  }
  ~Netns() {
    if (fd_ >= 0) ::close(fd_);
  }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  int fd() const { return fd_; }
  const std::string& error() const { return error_; }

 private:
  int fd_ = -1;
  std::string error_;
};

// Runs fn on a thread inside ns and waits for it.
template <class F>
auto in_ns(const Netns& ns, F fn) -> decltype(fn()) {
  std::packaged_task<decltype(fn())()> task([&] {
    if (::setns(ns.fd(), CLONE_NEWNET) != 0) std::abort();  // the fd is ours and valid
    return fn();
  });
  auto result = task.get_future();
  std::thread(std::move(task)).join();
  return result.get();
}

// A TCP server in a namespace: answers every connection with "<name> <peer address>\n".
class Server {
 public:
  Server(const Netns& ns, uint16_t port, std::string name) : name_(std::move(name)) {
    std::promise<bool> ready;
    auto started = ready.get_future();
    thread_ = std::thread([this, &ns, port, &ready] {
      if (::setns(ns.fd(), CLONE_NEWNET) != 0) std::abort();
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(fd, 16) != 0) {
        ::close(fd);
        ready.set_value(false);
        return;
      }
      ready.set_value(true);
      while (!stop_) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        sockaddr_in peer{};
        socklen_t len = sizeof peer;
        int c = ::accept4(fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
        if (c < 0) continue;
        char ip[INET_ADDRSTRLEN];
        ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
        std::string line = name_ + " " + ip + "\n";
        if (::write(c, line.data(), line.size()) < 0) {
        }
        ::close(c);
      }
      ::close(fd);
    });
    ok_ = started.get();
  }
  ~Server() {
    stop_ = true;
    thread_.join();
  }
  bool ok() const { return ok_; }

 private:
  std::string name_;
  std::atomic<bool> stop_{false};
  bool ok_ = false;
  std::thread thread_;
};

// Connects from inside ns; returns the server's line, or "" when it cannot connect in time.
std::string talk(const Netns& ns, const std::string& ip, uint16_t port, int timeout_ms = 3000) {
  return in_ns(ns, [&]() -> std::string {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
      ::close(fd);
      return out;
    }
    pollfd p{fd, POLLIN, 0};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    char buf[256];
    while (std::chrono::steady_clock::now() < deadline) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now())
                                      .count());
      if (::poll(&p, 1, std::max(left, 1)) <= 0) break;
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (out.back() == '\n') break;
    }
    ::close(fd);
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  });
}

// Runs a command inside ns (tests only: to look at the kernel's state with iproute2's eyes);
// returns its stdout.
std::string run(const Netns& ns, std::vector<std::string> argv) {
  return in_ns(ns, [&] {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return std::string();
    pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(out[1], 1);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    ::close(out[0]);
    ::waitpid(pid, nullptr, 0);
    return text;
  });
}

class NetfilterRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: network namespaces, veth, nftables";
    node_ = std::make_unique<Netns>();
    if (node_->fd() < 0) GTEST_SKIP() << "cannot make network namespaces: " << node_->error();
    host_ = std::make_unique<Netns>();
    a_ = std::make_unique<Netns>();
    b_ = std::make_unique<Netns>();
    char tmpl[] = "/dev/shm/qufop-netfilter-root.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    config_.state_dir = dir_ + "/net";
    config_.allowed_node_ports = "7300";
    config_.closed_ranges = {"10.99.0.2/32:9000"};
    // The node: lo up and an uplink to the other host.
    in_ns(*node_, [&] {
      auto links = NetlinkLinkOps::open();
      ASSERT_TRUE(links.ok()) << links.error().message;
      ASSERT_TRUE((*links)->set_up(1).ok());
      auto r = (*links)->create_veth({"up0", 0, 0, "eth0", host_->fd()});
      ASSERT_TRUE(r.ok()) << r.error().message;
      auto up0 = (*links)->find_link("up0");
      ASSERT_TRUE(up0.ok() && *up0);
      ASSERT_TRUE((*links)->add_address((*up0)->ifindex, *parse_cidr("10.99.0.1/24", true)).ok());
      r = (*links)->configure_inside(
          host_->fd(), {"eth0", *parse_cidr("10.99.0.2/24", true), *parse_ipv4("10.99.0.1")});
      ASSERT_TRUE(r.ok()) << r.error().message;
    });
  }

  void TearDown() override {
    if (net_) {
      in_node([&] { EXPECT_TRUE(net_->teardown_node().ok()); });
      net_.reset();
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  template <class F>
  auto in_node(F fn) -> decltype(fn()) {
    return in_ns(*node_, fn);
  }

  void open_and_setup() {
    in_node([&] {
      auto net = NodeNetwork::open(config_);
      ASSERT_TRUE(net.ok()) << net.error().message;
      net_ = std::move(*net);
      auto r = net_->setup_node();
      ASSERT_TRUE(r.ok()) << r.error().message;
    });
  }

  Attachment attach(const std::string& id, const Netns& ns, uint16_t port, uint16_t host_port) {
    return in_node([&] {
      auto r = net_->attach(id, NetnsRef::from_fd(ns.fd()), port, host_port);
      EXPECT_TRUE(r.ok()) << r.error().message;
      return r.ok() ? *r : Attachment{};
    });
  }

  std::string table() {
    return in_node([&] {
      auto nft = LibNftables::create();
      EXPECT_TRUE(nft.ok());
      auto t = (*nft)->list_table();
      EXPECT_TRUE(t.ok()) << t.error().message;
      return t.ok() ? *t : std::string("error");
    });
  }

  // qf* links in the node (bridge and instance ends).
  std::vector<std::string> node_links() {
    return in_node([&] {
      std::vector<std::string> names;
      auto links = NetlinkLinkOps::open();
      auto all = (*links)->list_links();
      for (const auto& l : *all) {
        if (l.name.starts_with("qf")) names.push_back(l.name);
      }
      return names;
    });
  }

  std::unique_ptr<Netns> node_, host_, a_, b_;
  std::string dir_;
  NetworkConfig config_;
  std::unique_ptr<NodeNetwork> net_;
};

TEST_F(NetfilterRoot, InstanceIsConfiguredInsideItsNamespace) {
  open_and_setup();
  Attachment a = attach("inst-a", *a_, 9100, 0);
  in_ns(*a_, [&] {
    auto links = NetlinkLinkOps::open();
    auto eth0 = (*links)->find_link("eth0");
    ASSERT_TRUE(eth0.ok() && *eth0);
    EXPECT_TRUE((*eth0)->up);
    EXPECT_EQ((*eth0)->mtu, 1500u);
    ASSERT_EQ((*eth0)->addresses.size(), 1u);
    EXPECT_EQ((*eth0)->addresses[0].str(), "10.88.0.2/24");
    auto lo = (*links)->find_link("lo");
    EXPECT_TRUE((*lo)->up);
    auto routes = (*links)->list_routes();
    bool default_route = false;
    for (const auto& r : *routes) default_route |= r.dst.prefix == 0;
    EXPECT_TRUE(default_route);
  });
  in_node([&] {
    auto links = NetlinkLinkOps::open();
    auto host_end = (*links)->find_link(a.link);
    ASSERT_TRUE(host_end.ok() && *host_end);
    EXPECT_EQ((*host_end)->alias, "qufop:inst-a");
    auto bridge = (*links)->find_link("qf0");
    EXPECT_EQ((*host_end)->master, (*bridge)->ifindex);
    EXPECT_EQ((*bridge)->alias, "qufop");
    ASSERT_EQ((*bridge)->addresses.size(), 1u);
    EXPECT_EQ((*bridge)->addresses[0].str(), "10.88.0.1/24");
    SystemHostOps host;
    EXPECT_EQ(*host.read_sysctl("net/ipv4/ip_forward"), "1");
    EXPECT_EQ(*host.read_sysctl("net/ipv4/conf/qf0/route_localnet"), "1");
  });
}

TEST_F(NetfilterRoot, PublishedPortAnswersFromTheNodeAndAnotherHost) {
  open_and_setup();
  Attachment a = attach("inst-a", *a_, 9100, 0);
  Attachment b = attach("inst-b", *b_, 9100, 0);
  ASSERT_EQ(a.host_port, 20000);
  ASSERT_EQ(b.host_port, 20001);
  Server sa(*a_, 9100, "A"), sb(*b_, 9100, "B");
  ASSERT_TRUE(sa.ok() && sb.ok());

  // From the node itself: loopback (source rewritten to the bridge address), the node's
  // address, the bridge address.
  EXPECT_EQ(talk(*node_, "127.0.0.1", a.host_port), "A 10.88.0.1");
  EXPECT_EQ(talk(*node_, "10.99.0.1", a.host_port), "A 10.99.0.1");
  EXPECT_EQ(talk(*node_, "10.88.0.1", b.host_port), "B 10.88.0.1");
  // From another host, to the node's address.
  EXPECT_EQ(talk(*host_, "10.99.0.1", a.host_port), "A 10.99.0.2");
  EXPECT_EQ(talk(*host_, "10.99.0.1", b.host_port), "B 10.99.0.2");
  // An unpublished port of the node answers nothing.
  EXPECT_EQ(talk(*host_, "10.99.0.1", 20002, kFailMs), "");
  // While published, no other program on the node can bind the port (its traffic would be
  // DNATed away from it anyway); after detach it can.
  auto bind_errno = [&](uint16_t port) {
    return in_node([&] {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
      ::close(fd);
      return rc;
    });
  };
  EXPECT_EQ(bind_errno(a.host_port), EADDRINUSE);
  in_node([&] { ASSERT_TRUE(net_->detach("inst-a").ok()); });
  EXPECT_EQ(bind_errno(a.host_port), 0);
}

TEST_F(NetfilterRoot, InstancesAreIsolatedFromEachOtherTheNodeAndClosedRanges) {
  open_and_setup();
  Attachment a = attach("inst-a", *a_, 9100, 0);
  Attachment b = attach("inst-b", *b_, 9100, 0);
  Server sb(*b_, 9100, "B"), sb2(*b_, 9101, "B2");
  Server allowed(*node_, 7300, "node-7300"), denied(*node_, 7301, "node-7301");
  Server h_open(*host_, 9001, "H-9001"), h_closed(*host_, 9000, "H-9000");
  ASSERT_TRUE(sb.ok() && sb2.ok() && allowed.ok() && denied.ok() && h_open.ok() && h_closed.ok());

  // A cannot reach B: not by address on any port (bridge port isolation), not through B's
  // published port on the node (forward rules).
  EXPECT_NE(run(*node_, {"ip", "-d", "link", "show", "dev", a.link}).find("isolated on"),
            std::string::npos);
  EXPECT_EQ(talk(*a_, b.ip.str(), 9100, kFailMs), "");
  EXPECT_EQ(talk(*a_, b.ip.str(), 9101, kFailMs), "");
  EXPECT_EQ(talk(*a_, "10.99.0.1", b.host_port, kFailMs), "");
  EXPECT_EQ(talk(*a_, "10.88.0.1", b.host_port, kFailMs), "");
  // Controls, each layer alone. br_netfilter (when the kernel has it) passes bridged frames
  // through the inet forward hook too, where the rules drop bridge-to-bridge traffic.
  auto isolation = [&](const char* on_off) {
    run(*node_, {"ip", "link", "set", "dev", a.link, "type", "bridge_slave", "isolated", on_off});
  };
  const std::string br_nf = "net/bridge/bridge-nf-call-iptables";
  auto set_br_nf = [&](const char* value) {
    return in_node([&] { return SystemHostOps().write_sysctl(br_nf, value).ok(); });
  };
  if (set_br_nf("0")) {
    isolation("off");  // neither layer: A does reach B by address (the test can fail)
    EXPECT_EQ(talk(*a_, b.ip.str(), 9100), "B 10.88.0.2");
    isolation("on");  // port isolation alone
    EXPECT_EQ(talk(*a_, b.ip.str(), 9100, kFailMs), "");
    isolation("off");
    ASSERT_TRUE(set_br_nf("1"));  // the forward rules alone
    EXPECT_EQ(talk(*a_, b.ip.str(), 9101, kFailMs), "");
    isolation("on");
  } else {
    isolation("off");
    EXPECT_EQ(talk(*a_, b.ip.str(), 9100), "B 10.88.0.2");
    isolation("on");
    EXPECT_EQ(talk(*a_, b.ip.str(), 9100, kFailMs), "");
  }
  // ...while the node reaches B directly (health checks).
  EXPECT_EQ(talk(*node_, b.ip.str(), 9101), "B2 10.88.0.1");

  // The node's ports: only the allowed one, on any node address.
  EXPECT_EQ(talk(*a_, "10.88.0.1", 7300), "node-7300 10.88.0.2");
  EXPECT_EQ(talk(*a_, "10.99.0.1", 7300), "node-7300 10.88.0.2");
  EXPECT_EQ(talk(*a_, "10.88.0.1", 7301, kFailMs), "");
  EXPECT_EQ(talk(*a_, "10.99.0.1", 7301, kFailMs), "");
  EXPECT_EQ(talk(*host_, "10.99.0.1", 7301), "node-7301 10.99.0.2");  // not from instances only

  // Egress is masqueraded; the closed range (10.99.0.2:9000) is not reachable.
  EXPECT_EQ(talk(*a_, "10.99.0.2", 9001), "H-9001 10.99.0.1");
  EXPECT_EQ(talk(*a_, "10.99.0.2", 9000, kFailMs), "");
  EXPECT_EQ(talk(*node_, "10.99.0.2", 9000), "H-9000 10.99.0.1");  // closed for instances only
}

TEST_F(NetfilterRoot, DetachAndTeardownLeaveNothing) {
  open_and_setup();
  const std::string empty_table = table();
  Attachment a = attach("inst-a", *a_, 9100, 0);
  Attachment b = attach("inst-b", *b_, 9100, 21000);
  EXPECT_EQ(b.host_port, 21000);
  EXPECT_NE(table().find("20000 : 10.88.0.2 . 9100"), std::string::npos) << table();

  in_node([&] { ASSERT_TRUE(net_->detach("inst-a").ok()); });
  EXPECT_EQ(table().find("10.88.0.2"), std::string::npos) << table();
  auto links = node_links();
  EXPECT_EQ(std::count(links.begin(), links.end(), a.link), 0);
  EXPECT_EQ(std::count(links.begin(), links.end(), b.link), 1);
  in_ns(*a_, [&] {
    auto ops = NetlinkLinkOps::open();
    auto eth0 = (*ops)->find_link("eth0");
    ASSERT_TRUE(eth0.ok());
    EXPECT_FALSE(eth0->has_value());  // the peer went with the host end
  });
  EXPECT_EQ(net_->find("inst-a"), std::nullopt);

  // b's namespace is destroyed: detach skips the explicit delete; the veth goes with it.
  b_.reset();
  in_node([&] { ASSERT_TRUE(net_->detach("inst-b", LinkTeardown::kGoesWithNetns).ok()); });
  EXPECT_EQ(table(), empty_table);
  for (int i = 0; i < 100; ++i) {
    links = node_links();
    if (links == std::vector<std::string>{"qf0"}) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(links, std::vector<std::string>{"qf0"});
  EXPECT_TRUE(net_->attachments().empty());

  in_node([&] { ASSERT_TRUE(net_->teardown_node().ok()); });
  EXPECT_EQ(table(), "");
  EXPECT_TRUE(node_links().empty());
  EXPECT_FALSE(std::filesystem::exists(config_.state_dir + "/ipam"));
  net_.reset();
}

TEST_F(NetfilterRoot, ReconcileTwiceGivesTheIdenticalRuleset) {
  open_and_setup();
  attach("inst-a", *a_, 9100, 0);
  attach("inst-b", *b_, 9100, 0);
  in_node([&] { ASSERT_TRUE(net_->reconcile({"inst-a", "inst-b"}).ok()); });
  const std::string first = table();
  in_node([&] { ASSERT_TRUE(net_->reconcile({"inst-a", "inst-b"}).ok()); });
  EXPECT_EQ(table(), first);
  EXPECT_NE(first.find("20001 : 10.88.0.3 . 9100"), std::string::npos) << first;
  // setup_node again (a restart) changes nothing either.
  in_node([&] { ASSERT_TRUE(net_->setup_node().ok()); });
  EXPECT_EQ(table(), first);
}

TEST_F(NetfilterRoot, RestartAfterSigkillRemovesStaleRulesAndLinks) {
  // The owner: a child process in the node namespace that sets up, attaches A, and is killed.
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = in_node([&] {
    pid_t pid = ::fork();
    if (pid == 0) {
      auto net = NodeNetwork::open(config_);
      bool good = net.ok() && (*net)->setup_node().ok() &&
                  (*net)->attach("inst-a", NetnsRef::from_fd(a_->fd()), 9100, 0).ok();
      char c = good ? '1' : '0';
      if (::write(ready[1], &c, 1) != 1) ::_exit(1);
      ::pause();
      ::_exit(0);
    }
    return pid;
  });
  ASSERT_GT(child, 0);
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_EQ(c, '1') << "the child failed to set up";

  // What it left: the table with A's port, A's veth and lease. Add a stale veth of an instance
  // long gone (peer parked in the node itself) and a stale rule.
  Server sa(*a_, 9100, "A");
  ASSERT_TRUE(sa.ok());
  EXPECT_EQ(talk(*host_, "10.99.0.1", 20000), "A 10.99.0.2");
  in_node([&] {
    auto links = NetlinkLinkOps::open();
    auto bridge = (*links)->find_link("qf0");
    ASSERT_TRUE(
        (*links)
            ->create_veth({"qfv0000000dead", (*bridge)->ifindex, 0, "dead-peer", node_->fd()})
            .ok());
    auto nft = LibNftables::create();
    ASSERT_TRUE((*nft)->run(render_publish({29999, *parse_ipv4("10.88.0.99"), 1})).ok());
  });
  ASSERT_NE(table().find("29999"), std::string::npos);

  // The restart: nothing is live any more.
  open_and_setup();
  in_node([&] {
    auto report = net_->reconcile({});
    ASSERT_TRUE(report.ok()) << report.error().message;
    EXPECT_EQ(report->released, std::vector<std::string>{"inst-a"});
    EXPECT_EQ(report->deleted_links.size(), 2u);
  });
  EXPECT_EQ(node_links(), std::vector<std::string>{"qf0"});
  const std::string t = table();
  EXPECT_EQ(t.find("elements"), std::string::npos) << t;
  EXPECT_EQ(talk(*host_, "10.99.0.1", 20000, kFailMs), "");
  EXPECT_TRUE(net_->attachments().empty());
}

TEST_F(NetfilterRoot, BadInputIsRefusedWithNothingBuilt) {
  // A bridge name taken by a link that is not a qufop bridge.
  in_node([&] {
    auto links = NetlinkLinkOps::open();
    ASSERT_TRUE((*links)->create_veth({"qf0", 0, 0, "qf0-peer", node_->fd()}).ok());
    auto net = NodeNetwork::open(config_);
    auto r = (*net)->setup_node();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, "already_exists");
    EXPECT_NE(r.error().message.find("link qf0 exists and is not a bridge made by qufop"),
              std::string::npos)
        << r.error().message;
    ASSERT_TRUE((*links)->delete_link("qf0").ok());
  });
  EXPECT_EQ(table(), "");
  EXPECT_TRUE(node_links().empty());

  // A host port already bound on the node; then an exhausted port range.
  config_.host_ports = "20000-20000";
  open_and_setup();
  Server squatter(*node_, 21000, "squatter");
  ASSERT_TRUE(squatter.ok());
  in_node([&] {
    auto r = net_->attach("inst-a", NetnsRef::from_fd(a_->fd()), 9100, 21000);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, "conflict");
    EXPECT_NE(r.error().message.find("host port 21000 is already in use on the node"),
              std::string::npos)
        << r.error().message;
    ASSERT_TRUE(net_->attach("inst-a", NetnsRef::from_fd(a_->fd()), 9100, 0).ok());
    auto full = net_->attach("inst-b", NetnsRef::from_fd(b_->fd()), 9100, 0);
    ASSERT_FALSE(full.ok());
    EXPECT_EQ(full.error().code, "unavailable");
    EXPECT_NE(full.error().message.find("no free host port left in 20000"), std::string::npos)
        << full.error().message;
  });
  EXPECT_EQ(node_links().size(), 2u);  // qf0 and A's end only
  in_ns(*b_, [&] {
    auto ops = NetlinkLinkOps::open();
    EXPECT_FALSE((*ops)->find_link("eth0")->has_value());
  });
  in_node([&] { ASSERT_TRUE(net_->teardown_node().ok()); });
  net_.reset();

  // A subnet overlapping a route of the host.
  in_node([&] {
    auto links = NetlinkLinkOps::open();
    auto up0 = (*links)->find_link("up0");
    ASSERT_TRUE((*links)->add_address((*up0)->ifindex, *parse_cidr("10.88.200.1/16", true)).ok());
    auto net = NodeNetwork::open(config_);
    auto r = (*net)->setup_node();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, "conflict");
    EXPECT_NE(r.error().message.find("overlaps the host route 10.88.0.0/16"), std::string::npos)
        << r.error().message;
  });
  EXPECT_EQ(table(), "");
  EXPECT_TRUE(node_links().empty());
}

}  // namespace
}  // namespace qufop::netfilter

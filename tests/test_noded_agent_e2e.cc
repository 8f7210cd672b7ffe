// A real qufop-noded against an in-test scheduler (the node protocol of common/api.h on a real
// HTTP server) and a real qufop-builder serving a busybox image, everything inside a network
// namespace of the test's own (the node's bridge and nftables table live and die with it):
// assign two instances -> running, answering on their host ports; SIGKILL noded -> they keep
// answering; restart -> adopted, same ports; unassign one -> cooling, stopping, exited, gone,
// its port closed; unassign all, stop noded -> nothing of the test left on the host.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "common/api.h"
#include "common/http_server.h"
#include "common/json.h"
#include "process.h"
#include "test_builder_build_util.h"

namespace qufop {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using api::InstanceState;

std::string bin(const std::string& rel) { return std::string(QUFOP_BINARY_DIR) + "/" + rel; }

// Runs fn on a thread inside the network namespace at `path`.
template <typename F>
auto in_netns(const std::string& path, F fn) {
  std::optional<decltype(fn())> out;
  std::thread t([&] {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) std::abort();
    ::close(fd);
    out.emplace(fn());
  });
  t.join();
  return std::move(*out);
}

bool tcp_answers(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  if (ok) {
    // An HTTP answer of any status from busybox httpd.
    std::string req = "GET / HTTP/1.0\r\n\r\n";
    ok = ::write(fd, req.data(), req.size()) == (ssize_t)req.size();
    char buf[16] = {};
    ok = ok && ::read(fd, buf, 5) == 5 && std::string(buf, 5) == "HTTP/";
  }
  ::close(fd);
  return ok;
}

// The scheduler's side of the node protocol, as little as the test needs.
class FakeScheduler {
 public:
  explicit FakeScheduler(const std::string& netns) {
    server_ = std::make_unique<http::Server>(ioc_, http::ServerOptions{});
    server_->route_prefix("POST", "/v1/nodes/", [this](http::Request req, http::Responder res) {
      if (req.header("Authorization") != "Bearer test-token") {
        return res.send(http::Response::error(401, "unauthorized", "bad token"));
      }
      auto v = json::parse(req.body);
      auto st = v ? api::node_status_from_json(*v) : Result<api::NodeStatus>(v.error());
      if (!st) return res.send(http::Response::error(400, "invalid_argument", st.error().message));
      std::lock_guard lock(mu_);
      last_ = *st;
      ++beats_;
      for (const auto& in : st->instances) seen_[in.id].insert(in.state);
      cv_.notify_all();
      res.send({200,
                "application/json",
                {},
                json::serialize(api::to_json(api::HeartbeatReply{list_.index, 1000}))});
    });
    server_->route_prefix("GET", "/v1/nodes/", [this](http::Request req, http::Responder res) {
      int64_t index = std::stoll("0" + req.query_param("index"));
      std::thread([this, index, res = std::move(res)]() mutable {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, 30s, [&] { return list_.index > index || stopping_; });
        res.send({200, "application/json", {}, json::serialize(api::to_json(list_))});
      }).detach();
    });
    auto addr = in_netns(netns, [this] { return server_->listen({"127.0.0.1", 17200}); });
    ok_ = addr.ok();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~FakeScheduler() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    std::this_thread::sleep_for(100ms);
    server_->stop();
    work_.reset();
    ioc_.stop();
    thread_.join();
  }
  bool ok() const { return ok_; }
  void assign(std::vector<api::Assignment> list) {
    std::lock_guard lock(mu_);
    list_.index++;
    list_.instances = std::move(list);
    cv_.notify_all();
  }
  // Waits for a heartbeat satisfying pred (pumping `drain` meanwhile).
  bool wait_for(const std::function<bool(const api::NodeStatus&)>& pred,
                std::chrono::milliseconds timeout, const std::function<void()>& drain) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      drain();
      std::unique_lock lock(mu_);
      if (beats_ > 0 && pred(last_)) return true;
      cv_.wait_for(lock, 100ms);
    }
    return false;
  }
  api::NodeStatus last() {
    std::lock_guard lock(mu_);
    return last_;
  }
  std::set<InstanceState> seen(const std::string& id) {
    std::lock_guard lock(mu_);
    return seen_[id];
  }

 private:
  boost::asio::io_context ioc_;
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_ =
      std::make_unique<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>(
          ioc_.get_executor());
  std::unique_ptr<http::Server> server_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  api::AssignmentList list_;
  api::NodeStatus last_;
  int beats_ = 0;
  bool stopping_ = false;
  bool ok_ = false;
  std::map<std::string, std::set<InstanceState>> seen_;
};

const api::InstanceStatus* find(const api::NodeStatus& s, const std::string& id) {
  for (const auto& in : s.instances)
    if (in.id == id) return &in;
  return nullptr;
}

class AgentE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (sandboxes, bridges, nftables)";
    std::string why;
    tar_ = builder::buildtest::busybox_tar(&why);
    if (tar_.empty()) GTEST_SKIP() << why;
    int pid = ::getpid();
    netns_name_ = "qf-agent-" + std::to_string(pid);
    netns_ = "/run/netns/" + netns_name_;
    ASSERT_EQ(std::system(("ip netns add " + netns_name_ + " && ip netns exec " + netns_name_ +
                           " ip link set lo up")
                              .c_str()),
              0);
    dir_ = test::make_temp_dir("qufop-agent-e2e-");
    cgroup_parent_ = "qufop-test-" + std::to_string(pid);
    test::Process import(
        {bin("builder/qufop-builder"), "import", "busybox:1", tar_, "--data-dir", dir_ + "/b"});
    ASSERT_EQ(import.wait(60s), 0) << import.err();
    builder_ = std::make_unique<test::Process>(std::vector<std::string>{
        "/usr/bin/nsenter", "--net=" + netns_, bin("builder/qufop-builder"), "--data-dir",
        dir_ + "/b", "--listen", "127.0.0.1:17400"});
    scheduler_ = std::make_unique<FakeScheduler>(netns_);
    ASSERT_TRUE(scheduler_->ok());
  }

  void TearDown() override {
    noded_.reset();
    builder_.reset();
    scheduler_.reset();
    if (!netns_name_.empty()) (void)!std::system(("ip netns del " + netns_name_).c_str());
    // Should a failed assertion leave an instance behind: its cgroup goes with a kill.
    for (const char* h : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu",
                          "/sys/fs/cgroup/freezer", "/sys/fs/cgroup"}) {
      std::string p = std::string(h) + "/" + cgroup_parent_;
      if (!cgroup_parent_.empty() && fs::exists(p)) {
        (void)!std::system(("find " + p + " -depth -type d -exec rmdir {} + 2>/dev/null").c_str());
      }
    }
    if (!dir_.empty()) {
      (void)!std::system(("umount -R -l " + dir_ + "/noded/run/* 2>/dev/null").c_str());
      fs::remove_all(dir_);
    }
  }

  void start_noded() {
    int pid = ::getpid();
    noded_ = std::make_unique<test::Process>(
        std::vector<std::string>{"/usr/bin/nsenter",
                                 "--net=" + netns_,
                                 bin("noded/qufop-noded"),
                                 "--data-dir",
                                 dir_,
                                 "--listen",
                                 "127.0.0.1:17300",
                                 "--scheduler",
                                 "127.0.0.1:17200",
                                 "--join-token",
                                 "test-token",
                                 "--node-id",
                                 "n1",
                                 "--cgroup-parent",
                                 cgroup_parent_,
                                 "--net-bridge",
                                 "qf-t" + std::to_string(pid % 100000),
                                 "--net-subnet",
                                 "10.89." + std::to_string(pid % 250) + ".0/24",
                                 "--net-host-ports",
                                 "32000-32099",
                                 "--log-level",
                                 "debug"});
  }

  api::Assignment assignment(const std::string& id) {
    api::Assignment a;
    a.id = id;
    a.ufop = "demo";
    a.version = 1;
    a.spec.registry = "127.0.0.1:17400";
    a.spec.image = "busybox";
    a.spec.reference = "1";
    a.spec.argv = {"/bin/busybox", "httpd", "-f", "-p", "9100", "-h", "/"};
    a.spec.stop_wait_ms = 2000;
    a.spec.memory_bytes = 64 << 20;
    return a;
  }
  bool answers(int port) {
    return in_netns(netns_, [port] { return tcp_answers(static_cast<uint16_t>(port)); });
  }
  std::function<void()> drain() {
    return [this] {
      if (noded_) log_ += noded_->err() + noded_->out();
    };
  }
  static bool running(const api::NodeStatus& s, const std::string& id) {
    auto* in = find(s, id);
    return in && in->state == InstanceState::kRunning && in->host_port != 0;
  }

  std::string tar_, netns_name_, netns_, dir_, cgroup_parent_, log_;
  std::unique_ptr<test::Process> builder_, noded_;
  std::unique_ptr<FakeScheduler> scheduler_;
};

TEST_F(AgentE2E, RunsSurvivesSigkillReadoptsAndStopsLeavingNothing) {
  start_noded();
  const std::string a = "demo-000000a1", b = "demo-000000b2";
  auto t0 = std::chrono::steady_clock::now();
  scheduler_->assign({assignment(a), assignment(b)});
  ASSERT_TRUE(scheduler_->wait_for(
      [&](const api::NodeStatus& s) { return running(s, a) && running(s, b); }, 30s, drain()))
      << log_ << json::serialize(api::to_json(scheduler_->last()));
  auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  std::cout << "assignment -> 2 running: " << took.count() << " ms\n";
  api::NodeStatus before = scheduler_->last();
  int port_a = find(before, a)->host_port, port_b = find(before, b)->host_port;
  EXPECT_NE(port_a, port_b);
  EXPECT_GT(before.capacity.cpu_millis, 0);
  EXPECT_EQ(before.capacity.ports, 100);
  EXPECT_EQ(before.free.ports, 98);
  EXPECT_EQ(before.capacity.memory_bytes - before.free.memory_bytes, 128 << 20);
  EXPECT_TRUE(answers(port_a));
  EXPECT_TRUE(answers(port_b));

  // SIGKILL: the instances do not notice.
  noded_->signal(SIGKILL);
  ASSERT_TRUE(noded_->wait(10s).has_value());
  log_ += noded_->err();
  EXPECT_TRUE(answers(port_a));
  EXPECT_TRUE(answers(port_b));

  // Restart: adopted, same ports, running.
  std::string old_boot = before.boot_id;
  start_noded();
  ASSERT_TRUE(scheduler_->wait_for(
      [&](const api::NodeStatus& s) {
        return s.boot_id != old_boot && running(s, a) && running(s, b);
      },
      30s, drain()))
      << log_;
  api::NodeStatus after = scheduler_->last();
  EXPECT_EQ(find(after, a)->host_port, port_a);
  EXPECT_EQ(find(after, b)->host_port, port_b);
  EXPECT_NE(log_.find("adopted"), std::string::npos);
  EXPECT_TRUE(answers(port_a));

  // Unassign b: cooling, stopping, exited, then gone; its port closed.
  scheduler_->assign({assignment(a)});
  ASSERT_TRUE(
      scheduler_->wait_for([&](const api::NodeStatus& s) { return !find(s, b); }, 30s, drain()))
      << log_;
  auto seen = scheduler_->seen(b);
  EXPECT_TRUE(seen.count(InstanceState::kCooling));
  EXPECT_TRUE(seen.count(InstanceState::kStopping) || seen.count(InstanceState::kExited));
  EXPECT_TRUE(seen.count(InstanceState::kExited));
  EXPECT_FALSE(answers(port_b));
  EXPECT_TRUE(answers(port_a));
  EXPECT_FALSE(fs::exists(dir_ + "/noded/run/qf-" + b));
  EXPECT_FALSE(fs::exists(dir_ + "/noded/instances/" + b + ".json"));

  // The local view and the logs for the CLI.
  // Unassign all, then stop noded: nothing of the test is left.
  scheduler_->assign({});
  ASSERT_TRUE(scheduler_->wait_for([&](const api::NodeStatus& s) { return s.instances.empty(); },
                                   30s, drain()))
      << log_;
  noded_->signal(SIGTERM);
  auto status = noded_->wait(20s);
  ASSERT_TRUE(status.has_value());
  log_ += noded_->err();
  EXPECT_EQ(*status, 0) << log_;
  EXPECT_TRUE(fs::is_empty(dir_ + "/noded/run"));
  EXPECT_TRUE(fs::is_empty(dir_ + "/noded/instances"));
  for (const char* h : {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu",
                        "/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    EXPECT_FALSE(fs::exists(std::string(h) + "/" + cgroup_parent_)) << h;
  }
  std::string mounts = builder::buildtest::capture("grep " + dir_ + " /proc/self/mountinfo");
  EXPECT_EQ(mounts, "");
  std::string links = builder::buildtest::capture("ip -n " + netns_name_ + " -o link show");
  EXPECT_EQ(links.find("qf"), std::string::npos) << links;
  std::string tables =
      builder::buildtest::capture("ip netns exec " + netns_name_ + " nft list tables");
  EXPECT_EQ(tables.find("qufop"), std::string::npos) << tables;
}

}  // namespace
}  // namespace qufop

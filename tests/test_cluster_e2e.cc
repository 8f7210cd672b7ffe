// The whole control plane, as root, out of real processes: qufop-keeper, qufop-scheduler and
// qufop-builder on the host, and three qufop-nodeds, each in a network namespace of the test's
// own that stands for a separate host (a veth into a test bridge on the host, a private subnet;
// each noded with its own bridge, instance subnet, port range, cgroup parent and data dir). The
// UFOP is busybox httpd, the imported busybox base image itself.
//
// --node-timeout is 3 s and --reconcile-period 500 ms to keep the file short; the scenarios are
// issue 7's: resize 0->6 spreads 2/2/2 and every instance answers on its node address; a node
// that dies with its instances is healed within node_timeout + 5 s; the scheduler SIGKILLed right
// after a resize converges after its restart without duplicates; a noded SIGKILLed alone leaves
// its instances serving and re-adopts them; a gray upgrade never drops below the count. After
// each test nothing is left: processes, namespaces, links, nftables tables, cgroups, mounts,
// temp dirs (checked in TearDown).
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "common/api.h"
#include "common/api_client.h"
#include "common/files.h"
#include "common/http_client.h"
#include "common/json.h"
#include "tests/keeper_backends.h"
#include "tests/process.h"
#include "tests/test_builder_build_util.h"

namespace qufop {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using builder::buildtest::capture;

constexpr const char* kToken = "cluster-e2e-token";
constexpr const char* kUfop = "ufop-busy";
constexpr int kNodes = 3;
// Every v1 hierarchy noded may write (this machine is v1) and the unified one.
constexpr const char* kCgroupRoots[] = {"/sys/fs/cgroup/pids",    "/sys/fs/cgroup/memory",
                                        "/sys/fs/cgroup/cpu",     "/sys/fs/cgroup/cpuacct",
                                        "/sys/fs/cgroup/cpuset",  "/sys/fs/cgroup/freezer",
                                        "/sys/fs/cgroup/unified", "/sys/fs/cgroup"};

std::string bin(const std::string& rel) { return std::string(QUFOP_BINARY_DIR) + "/" + rel; }

int run(const std::string& cmd) { return std::system(cmd.c_str()); }

// `ip:port` -> the HTTP status of GET path (any status: the instance answers), -1 when nothing
// answers within a second.
int http_status(const std::string& address, const std::string& path = "/") {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) return -1;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::atoi(address.c_str() + colon + 1)));
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1) return -1;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int status = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
    std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
    char buf[16] = {};
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size()) &&
        ::read(fd, buf, 12) == 12 && std::string(buf, 5) == "HTTP/") {
      status = std::atoi(buf + 9);
    }
  }
  ::close(fd);
  return status;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds every = 100ms) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(every);
  }
  return pred();
}

std::string tail(const std::string& path, size_t bytes = 6000) {
  auto text = read_text_file(path);
  if (!text) return "(no " + path + ")";
  return text->size() > bytes ? "..." + text->substr(text->size() - bytes) : *text;
}

// Pids in the cgroup at `dir` and every cgroup below it.
std::vector<pid_t> cgroup_pids(const std::string& dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  auto read_procs = [&](const fs::path& d) {
    std::ifstream in(d / "cgroup.procs");
    pid_t p;
    while (in >> p) out.push_back(p);
  };
  read_procs(dir);
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_directory(ec)) read_procs(it->path());
  }
  return out;
}

// Command lines of the processes (but this one) that mention `text`.
std::string processes_with(const std::string& text) {
  std::string out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (std::stoi(name) == ::getpid()) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(text) != std::string::npos) out += name + ": " + cmdline + "\n";
  }
  return out;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

struct Node {
  std::string id, netns, ip, host_veth, cgroup_parent, dir, log;
  std::unique_ptr<test::Process> noded;
};

class ClusterE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, sandboxes, nftables)";
    std::string why;
    tar_ = builder::buildtest::busybox_tar(&why);
    if (tar_.empty()) GTEST_SKIP() << why;
    pid_ = ::getpid();
    tag_ = std::to_string(pid_ % 100000);
    // A /24 of 10.91 no other test run (ctest -j) has taken on the host.
    int x = pid_ % 250 + 1;
    for (std::string addrs = capture("ip -o -4 addr show");
         addrs.find(" 10.91." + std::to_string(x) + ".") != std::string::npos;) {
      x = x % 250 + 1;
    }
    bridge_ = "qfce" + tag_;
    net_prefix_ = "10.91." + std::to_string(x) + ".";
    host_ip_ = net_prefix_ + "1";
    dir_ = test::make_temp_dir("qufop-cluster-e2e");
    ASSERT_EQ(run("ip link add " + bridge_ + " type bridge && ip addr add " + host_ip_ +
                  "/24 dev " + bridge_ + " && ip link set " + bridge_ + " up"),
              0);
    for (int n = 1; n <= kNodes; ++n) {
      Node node;
      node.id = "n" + std::to_string(n);
      node.netns = "qf-ce-" + std::to_string(pid_) + "-" + std::to_string(n);
      node.ip = net_prefix_ + std::to_string(10 + n);
      node.host_veth = bridge_ + "v" + std::to_string(n);
      node.cgroup_parent = "qufop-ce-" + std::to_string(pid_) + "-" + std::to_string(n);
      node.dir = dir_ + "/" + node.id;
      node.log = dir_ + "/" + node.id + ".log";
      fs::create_directories(node.dir);
      const std::string in = "ip -n " + node.netns + " ";
      ASSERT_EQ(run("ip netns add " + node.netns + " && " + in + "link set lo up && ip link add " +
                    node.host_veth + " type veth peer name eth0 netns " + node.netns +
                    " && ip link set " + node.host_veth + " master " + bridge_ + " up && " + in +
                    "addr add " + node.ip + "/24 dev eth0 && " + in + "link set eth0 up"),
                0)
          << node.netns;
      nodes_.push_back(std::move(node));
    }

    auto keeper = test::start_keeper();
    ASSERT_TRUE(keeper.ok()) << keeper.error().message;
    keeper_ = std::move(*keeper);

    test::Process import({bin("builder/qufop-builder"), "import", "busybox:latest", tar_,
                          "--data-dir", dir_ + "/builder"});
    ASSERT_EQ(import.wait(60s), 0) << import.err();
    registry_ = host_ip_ + ":" + std::to_string(test::free_port());
    builder_ = spawn({bin("builder/qufop-builder"), "--listen", registry_, "--data-dir",
                      dir_ + "/builder", "--join-token", kToken, "--log-level", "warn"},
                     dir_ + "/builder.log");
    scheduler_port_ = test::free_port();
    start_scheduler();
    for (auto& node : nodes_) start_noded(node);
    ASSERT_TRUE(eventually([&] { return nodes_up() == kNodes; }, 20s))
        << "nodes up: " << nodes_up() << "\n"
        << logs();

    call_json("POST", "/v1/ufops", R"({"name":"ufop-busy","mode":2})", 201);
    add_version("/tmp");
  }

  void TearDown() override {
    if (pid_ == 0) return;  // skipped before anything was made
    if (HasFailure()) std::cerr << logs();
    stop_gracefully();
    force_cleanup();
    expect_nothing_left();
  }

  // ---- processes ----

  // Output goes to a file: nobody has to drain a pipe, and the log outlives a SIGKILL.
  static std::unique_ptr<test::Process> spawn(std::vector<std::string> argv,
                                              const std::string& log) {
    argv.insert(argv.begin(), {"/bin/sh", "-c", "exec \"$0\" \"$@\" >>'" + log + "' 2>&1"});
    return std::make_unique<test::Process>(argv);
  }

  void start_scheduler() {
    std::string listen = host_ip_ + ":" + std::to_string(scheduler_port_);
    scheduler_ = spawn({bin("scheduler/qufop-scheduler"), "--listen", listen, "--data-dir",
                        dir_ + "/scheduler", "--keeper", keeper_->url(), "--join-token", kToken,
                        "--node-timeout", "3s", "--reconcile-period", "500ms", "--builder",
                        registry_, "--registry", registry_, "--log-level", "info"},
                       dir_ + "/scheduler.log");
    bool up = eventually(
        [&] {
          http::Client client(host_ip_, scheduler_port_, {500ms, 2000ms});
          auto r = client.get("/v1/whoami");  // 401 once loaded, 503 while loading
          return r.ok() && r->status == 401;
        },
        20s, 20ms);
    ASSERT_TRUE(up) << "scheduler did not come up\n" << tail(dir_ + "/scheduler.log");
    if (admin_.secret_key.empty()) read_admin_conf();
  }

  void start_noded(Node& node) {
    node.noded = spawn({"/usr/bin/nsenter",
                        "--net=/run/netns/" + node.netns,
                        bin("noded/qufop-noded"),
                        "--data-dir",
                        node.dir,
                        "--listen",
                        node.ip + ":7300",
                        "--scheduler",
                        host_ip_ + ":" + std::to_string(scheduler_port_),
                        "--join-token",
                        kToken,
                        "--node-id",
                        node.id,
                        "--node-address",
                        node.ip,
                        "--cgroup-parent",
                        node.cgroup_parent,
                        "--net-bridge",
                        "qfbr" + node.id,
                        "--net-subnet",
                        "10.9" + std::to_string(1 + std::stoi(node.id.substr(1))) + "." +
                            std::to_string(pid_ % 250 + 1) + ".0/24",
                        "--net-host-ports",
                        "32000-32099",
                        "--log-level",
                        "info"},
                       node.log);
  }

  void read_admin_conf() {
    auto text = read_text_file(dir_ + "/scheduler/admin.conf");
    ASSERT_TRUE(text.ok()) << "no admin.conf in the scheduler's data dir";
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      auto eq = line.find(" = ");
      if (eq == std::string::npos || line[0] == '#') continue;
      if (line.substr(0, eq) == "access_key") admin_.access_key = line.substr(eq + 3);
      if (line.substr(0, eq) == "secret_key") admin_.secret_key = line.substr(eq + 3);
    }
    ASSERT_FALSE(admin_.secret_key.empty());
  }

  // ---- the API ----

  Result<http::Response> call(const std::string& method, const std::string& target,
                              std::string body = "") {
    api::ApiClient client(host_ip_, scheduler_port_, admin_, {500ms, 5000ms});
    return client.call(method, target, std::move(body));
  }
  json::Value call_json(const std::string& method, const std::string& target, std::string body = "",
                        int expect_status = 200) {
    auto r = call(method, target, std::move(body));
    EXPECT_TRUE(r.ok()) << target << ": " << (r.ok() ? "" : r.error().message);
    if (!r.ok()) return nullptr;
    EXPECT_EQ(r->status, expect_status) << method << " " << target << ": " << r->body;
    auto v = json::parse(r->body);
    return v ? *v : nullptr;
  }
  void add_version(const std::string& docroot) {
    call_json("POST", std::string("/v1/ufops/") + kUfop + "/versions",
              R"({"spec":{"registry":")" + registry_ +
                  R"(","image":"busybox","reference":"latest","argv":["/bin/busybox","httpd",)"
                  R"("-f","-p","9100","-h",")" +
                  docroot +
                  R"("],"port":9100,"cpu_millis":10,"memory_bytes":33554432,"stop_wait_ms":1000}})",
              201);
  }
  void resize(int count) {
    auto r = call_json("POST", std::string("/v1/ufops/") + kUfop + "/resize",
                       R"({"count":)" + std::to_string(count) + "}");
    EXPECT_EQ(r.is_object() ? r.at("unschedulable").as_int64() : -1, 0) << r;
  }

  // Empty when the scheduler does not answer.
  std::vector<api::InstanceRecord> instances() {
    std::vector<api::InstanceRecord> out;
    auto r = call("GET", std::string("/v1/ufops/") + kUfop + "/instances");
    if (!r.ok() || r->status != 200) return out;
    auto v = json::parse(r->body);
    if (!v || !v->is_object()) return out;
    for (const auto& i : v->at("instances").as_array()) {
      if (auto rec = api::instance_from_json(i)) out.push_back(*rec);
    }
    return out;
  }
  static bool serving(const api::InstanceRecord& i) {
    return i.state == api::InstanceState::kRunning && !i.stop_requested;
  }
  static std::map<std::string, int> per_node(const std::vector<api::InstanceRecord>& list) {
    std::map<std::string, int> m;
    for (const auto& i : list)
      if (serving(i)) ++m[i.node];
    return m;
  }
  // Every instance serving, `count` of them, none stopping or pending.
  bool settled(const std::vector<api::InstanceRecord>& list, size_t count) {
    if (list.size() != count) return false;
    for (const auto& i : list)
      if (!serving(i)) return false;
    return true;
  }
  int nodes_up() {
    auto r = call("GET", "/v1/nodes");
    if (!r.ok() || r->status != 200) return 0;
    auto v = json::parse(r->body);
    if (!v || !v->is_object()) return 0;
    int up = 0;
    for (const auto& n : v->at("nodes").as_array()) up += n.at("health") == "up";
    return up;
  }
  // What a noded itself runs (its local API): instance id -> state.
  std::map<std::string, std::string> local_view(const Node& node) {
    std::map<std::string, std::string> out;
    http::Client client(node.ip, 7300, {500ms, 2000ms});
    auto r = client.get("/v1/instances");
    if (!r.ok() || r->status != 200) return {{"<error>", r.ok() ? r->body : r.error().message}};
    auto v = json::parse(r->body);
    if (!v || !v->is_object()) return {{"<error>", r->body}};
    for (const auto& i : v->at("instances").as_array()) {
      out[std::string(i.at("id").as_string())] = std::string(i.at("state").as_string());
    }
    return out;
  }
  Node& node(const std::string& id) {
    for (auto& n : nodes_)
      if (n.id == id) return n;
    std::abort();
  }
  std::string describe(const std::vector<api::InstanceRecord>& list) {
    std::string s;
    for (const auto& i : list) {
      s += i.id + " v" + std::to_string(i.version) + " " + i.node + " " +
           std::string(api::to_string(i.state)) + (i.stop_requested ? " (stopping)" : "") + " " +
           i.address + " " + i.message + "\n";
    }
    return s;
  }
  std::string logs() {
    std::string s = "--- scheduler\n" + tail(dir_ + "/scheduler.log");
    for (const auto& n : nodes_) s += "--- " + n.id + "\n" + tail(n.log);
    return s;
  }

  // Resize to 6 and wait until 2/2/2 run and answer.
  void six_running() {
    resize(6);
    std::vector<api::InstanceRecord> list;
    std::map<std::string, int> even{{"n1", 2}, {"n2", 2}, {"n3", 2}};
    ASSERT_TRUE(eventually(
        [&] {
          list = instances();
          return settled(list, 6) && per_node(list) == even;
        },
        45s))
        << describe(list) << logs();
    for (const auto& i : list) {
      EXPECT_EQ(i.address, node(i.node).ip + ":" + std::to_string(i.host_port));
      EXPECT_TRUE(eventually([&] { return http_status(i.address) > 0; }, 5s))
          << i.id << " does not answer on " << i.address;
    }
  }

  // SIGKILLs every process in the node's cgroups: its instances die with the node.
  void kill_instances(const Node& n) {
    for (int round = 0; round < 50; ++round) {
      std::set<pid_t> pids;
      for (const char* root : kCgroupRoots) {
        for (pid_t p : cgroup_pids(std::string(root) + "/" + n.cgroup_parent)) pids.insert(p);
      }
      if (pids.empty()) return;
      for (pid_t p : pids) ::kill(p, SIGKILL);
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << n.id << ": instances survive SIGKILL";
  }

  // ---- cleanup ----

  // Resize to 0, wait until no instance is left anywhere, then SIGTERM every daemon.
  void stop_gracefully() {
    bool nodes_alive = !nodes_.empty();
    for (auto& n : nodes_) nodes_alive = nodes_alive && n.noded && !n.noded->wait(0ms);
    if (scheduler_ && !scheduler_->wait(0ms) && nodes_alive && !admin_.secret_key.empty()) {
      auto r = call("POST", std::string("/v1/ufops/") + kUfop + "/resize", R"({"count":0})");
      EXPECT_TRUE(r.ok() && r->status == 200) << "resize to 0 in cleanup";
      bool empty = eventually(
          [&] {
            if (!instances().empty()) return false;
            for (auto& n : nodes_)
              if (!local_view(n).empty()) return false;
            return true;
          },
          30s, 200ms);
      EXPECT_TRUE(empty) << "instances left after resize to 0\n" << describe(instances());
    }
    for (auto& n : nodes_) {
      if (!n.noded) continue;
      n.noded->signal(SIGTERM);
      auto st = n.noded->wait(20s);
      EXPECT_TRUE(st.has_value()) << n.id << " did not stop on SIGTERM";
      if (st) {
        EXPECT_EQ(*st, 0) << n.id << " exit status\n" << tail(n.log);
      }
      n.noded.reset();
      // An idle noded takes its bridge and table with it when it stops.
      std::string links = capture("ip -n " + n.netns + " -o link show");
      EXPECT_EQ(links.find("qfbr"), std::string::npos) << n.id << ": " << links;
      std::string tables = capture("ip netns exec " + n.netns + " nft list tables");
      EXPECT_EQ(tables.find("qufop"), std::string::npos) << n.id << ": " << tables;
    }
    for (auto* p : {&scheduler_, &builder_}) {
      if (!*p) continue;
      (*p)->signal(SIGTERM);
      EXPECT_TRUE((*p)->wait(10s).has_value()) << "a daemon did not stop on SIGTERM";
      p->reset();
    }
    keeper_.reset();
  }

  // Whatever a failure left behind goes, so that the next test starts clean.
  void force_cleanup() {
    for (auto& n : nodes_) n.noded.reset();  // SIGKILL if still running
    // A sandbox's pid 1 that never got going still carries its noded's command line.
    for (const auto& line : split_lines(processes_with(dir_))) ::kill(std::stoi(line), SIGKILL);
    for (auto& n : nodes_) {
      kill_instances(n);
      run("umount -R -l " + n.dir + "/noded/run/* 2>/dev/null");
      if (!n.netns.empty()) run("ip netns del " + n.netns + " 2>/dev/null");
      for (const char* root : kCgroupRoots) {
        std::string p = std::string(root) + "/" + n.cgroup_parent;
        if (fs::exists(p)) run("find " + p + " -depth -type d -exec rmdir {} + 2>/dev/null");
      }
    }
    run("ip link del " + bridge_ + " 2>/dev/null");
  }

  void expect_nothing_left() {
    // A deleted namespace takes its veth ends with it, in the kernel's own time.
    std::string links;
    EXPECT_TRUE(eventually(
        [&] {
          links = capture("ip -o link show");
          return links.find(bridge_) == std::string::npos;
        },
        10s))
        << links;
    std::string netns = capture("ip netns list");
    EXPECT_EQ(netns.find("qf-ce-" + std::to_string(pid_) + "-"), std::string::npos) << netns;
    for (const auto& n : nodes_) {
      for (const char* root : kCgroupRoots) {
        EXPECT_FALSE(fs::exists(std::string(root) + "/" + n.cgroup_parent)) << root;
      }
    }
    std::string mounts = capture("grep " + dir_ + " /proc/self/mountinfo");
    EXPECT_EQ(mounts, "");
    // No process of ours is left: not a daemon, not an instance (its init is reparented to us
    // or to init, so look for the binaries and the data dir in every command line).
    EXPECT_EQ(processes_with(dir_), "") << "processes still running with " << dir_;
    std::error_code ec;
    fs::remove_all(dir_, ec);
    EXPECT_FALSE(fs::exists(dir_));
  }

  int pid_ = 0;
  std::string tag_, bridge_, net_prefix_, host_ip_, dir_, tar_, registry_;
  uint16_t scheduler_port_ = 0;
  std::vector<Node> nodes_;
  std::unique_ptr<test::Backend> keeper_;
  std::unique_ptr<test::Process> builder_, scheduler_;
  auth::Credentials admin_;
};

// resize 0->6 gives 2/2/2, each answering on its node's address; SIGKILL one noded and its
// instances -> 6 again on the other two within node_timeout + 5 s; the node returns -> it runs
// nothing (what it ran lives elsewhere now) and the count stays 6.
TEST_F(ClusterE2E, ResizeSpreadsAndADeadNodeIsHealed) {
  six_running();
  auto before = instances();

  Node& n3 = node("n3");
  auto t0 = Clock::now();
  n3.noded->signal(SIGKILL);
  ASSERT_TRUE(n3.noded->wait(5s).has_value());
  kill_instances(n3);
  std::vector<api::InstanceRecord> list;
  std::map<std::string, int> healed{{"n1", 3}, {"n2", 3}};
  bool ok = eventually(
      [&] {
        list = instances();
        return settled(list, 6) && per_node(list) == healed;
      },
      8s);
  std::cout << "node killed -> 6 running on the others: " << seconds_since(t0) << " s\n";
  ASSERT_TRUE(ok) << describe(list) << logs();
  // The survivors kept their instances: only n3's two were replaced.
  std::set<std::string> kept;
  for (const auto& i : before)
    if (i.node != "n3") kept.insert(i.id);
  for (const auto& i : list) kept.erase(i.id);
  EXPECT_TRUE(kept.empty()) << "instances of the live nodes were replaced";
  for (const auto& i : list) EXPECT_GT(http_status(i.address), 0) << i.address;

  // The node returns: it cleans up what died and is assigned nothing.
  start_noded(n3);
  ASSERT_TRUE(eventually([&] { return nodes_up() == 3; }, 15s)) << logs();
  EXPECT_TRUE(eventually([&] { return local_view(n3).empty(); }, 10s));
  EXPECT_TRUE(eventually([&] { return fs::is_empty(n3.dir + "/noded/run"); }, 10s));
  list = instances();
  EXPECT_TRUE(settled(list, 6) && per_node(list) == healed) << describe(list);
}

// SIGKILL a noded alone: its instances keep serving; restarted, it re-adopts them (same ids,
// nothing replaced). Then SIGKILL the scheduler right after resize 6->9: restarted, it converges
// to 9 (3/3/3), each noded running exactly its share.
TEST_F(ClusterE2E, NodedAndSchedulerSurviveSigkill) {
  six_running();
  auto before = instances();
  Node& n2 = node("n2");
  std::set<std::string> on_n2;
  for (const auto& i : before)
    if (i.node == "n2") on_n2.insert(i.id);

  n2.noded->signal(SIGKILL);
  ASSERT_TRUE(n2.noded->wait(5s).has_value());
  for (const auto& i : before) {
    if (i.node == "n2") {
      EXPECT_GT(http_status(i.address), 0) << i.address << " after SIGKILL";
    }
  }
  // Restarted: adopted (the node runs them, the scheduler hears they run), nothing replaced.
  auto t_restart = Clock::now();
  start_noded(n2);
  std::vector<api::InstanceRecord> list;
  ASSERT_TRUE(eventually(
      [&] {
        auto view = local_view(n2);
        if (view.size() != on_n2.size()) return false;
        for (const auto& id : on_n2)
          if (view[id] != "running") return false;
        list = instances();
        return settled(list, 6);
      },
      15s))
      << describe(list) << logs();
  std::cout << "noded restart -> its instances adopted and reported running: "
            << seconds_since(t_restart) << " s\n";
  std::set<std::string> ids_before, ids_after;
  for (const auto& i : before) ids_before.insert(i.id);
  for (const auto& i : list) ids_after.insert(i.id);
  EXPECT_EQ(ids_after, ids_before) << "an instance was replaced\n" << describe(list);
  EXPECT_NE(tail(n2.log, 1 << 20).find("adopted"), std::string::npos);
  for (const auto& i : list) EXPECT_GT(http_status(i.address), 0) << i.address;

  // The scheduler dies right after acknowledging the resize.
  resize(9);
  scheduler_->signal(SIGKILL);
  ASSERT_TRUE(scheduler_->wait(5s).has_value());
  start_scheduler();
  std::map<std::string, int> even{{"n1", 3}, {"n2", 3}, {"n3", 3}};
  ASSERT_TRUE(eventually(
      [&] {
        list = instances();
        return settled(list, 9) && per_node(list) == even;
      },
      30s))
      << describe(list) << logs();
  // No duplicate anywhere: each noded runs exactly what the scheduler lists for it.
  for (auto& n : nodes_) {
    std::map<std::string, std::string> want;
    for (const auto& i : list)
      if (i.node == n.id) want[i.id] = "running";
    EXPECT_TRUE(eventually([&] { return local_view(n) == want; }, 5s)) << n.id;
  }
  for (const auto& i : list) EXPECT_GT(http_status(i.address), 0) << i.address;
}

// upgrade -r 2 -v 2 (version 2: httpd serving /etc instead of /tmp): 2 new + 4 old, and the
// count of serving instances, sampled every 100 ms, never below 6.
TEST_F(ClusterE2E, GrayUpgradeNeverDropsBelowTheCount) {
  six_running();
  add_version("/etc");
  auto r = call_json("POST", std::string("/v1/ufops/") + kUfop + "/upgrade",
                     R"({"replace":2,"version":2})");
  ASSERT_TRUE(r.is_object());
  EXPECT_EQ(r.at("desired").at("1").as_int64(), 4);
  EXPECT_EQ(r.at("desired").at("2").as_int64(), 2);
  size_t min_serving = 6, samples = 0;
  std::vector<api::InstanceRecord> list;
  auto t0 = Clock::now();
  bool done = eventually(
      [&] {
        list = instances();
        size_t serving_now = 0, v1 = 0, v2 = 0;
        for (const auto& i : list) {
          if (!serving(i)) continue;
          ++serving_now;
          (i.version == 1 ? v1 : v2) += 1;
        }
        ++samples;
        min_serving = std::min(min_serving, serving_now);
        return v1 == 4 && v2 == 2 && list.size() == 6;
      },
      45s, 100ms);
  std::cout << "upgrade -r 2: " << seconds_since(t0) << " s, " << samples
            << " samples, fewest serving " << min_serving << "\n";
  ASSERT_TRUE(done) << describe(list) << logs();
  EXPECT_GE(min_serving, 6u) << "serving instances dropped below the count during the upgrade";
  // The new version is the new argv: /etc/passwd is served by version 2 only.
  for (const auto& i : list) {
    EXPECT_EQ(http_status(i.address, "/passwd"), i.version == 2 ? 200 : 404) << i.address;
  }
}

}  // namespace
}  // namespace qufop

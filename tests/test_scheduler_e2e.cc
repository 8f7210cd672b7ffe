// The scheduler as a process, against a real qufop-keeper: the node protocol, resize, upgrade,
// node failure, restart (SIGKILL) and bad input. The nodes are in-test fakes speaking the node
// protocol over real sockets (they "run" what they are assigned); the real node daemon is
// tested with the scheduler in test_cluster_e2e.cc.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "common/api.h"
#include "common/api_client.h"
#include "common/files.h"
#include "common/http_client.h"
#include "tests/keeper_backends.h"
#include "tests/process.h"

namespace qufop {
namespace {

using namespace std::chrono_literals;
constexpr const char* kToken = "e2e-token";

std::string scheduler_binary() {
  return std::string(QUFOP_BINARY_DIR) + "/scheduler/qufop-scheduler";
}

http::Request request(std::string method, std::string target, std::string body = "",
                      bool token = false) {
  http::Request r;
  r.method = std::move(method);
  r.target = std::move(target);
  r.body = std::move(body);
  if (!r.body.empty()) r.headers.emplace_back("Content-Type", "application/json");
  if (token) r.headers.emplace_back("Authorization", std::string("Bearer ") + kToken);
  return r;
}

// A node that runs whatever it is assigned: the next heartbeat reports it running (or, when
// `slow_start` is set, starting for that long first).
class FakeNode {
 public:
  FakeNode(std::string id, uint16_t scheduler_port, api::Resources capacity)
      : id_(std::move(id)), port_(scheduler_port), capacity_(capacity) {
    thread_ = std::thread([this] { run(); });
  }
  ~FakeNode() { kill(); }

  // Stops heartbeating: to the scheduler the node is dead.
  void kill() {
    alive_ = false;
    if (thread_.joinable()) thread_.join();
  }
  void set_slow_start(std::chrono::milliseconds d) { slow_start_ = d; }
  std::map<std::string, api::Assignment> assigned() {
    std::lock_guard lock(mu_);
    return assigned_;
  }
  size_t running() {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& [id, s] : status_) n += s.state == api::InstanceState::kRunning;
    return n;
  }

 private:
  void run() {
    http::Client client("127.0.0.1", port_, {500ms, 5000ms});
    int64_t index = -1;
    while (alive_) {
      auto reply = heartbeat(client);
      if (reply && reply->assignments_index != index) {
        auto r = client.send(request(
            "GET", "/v1/nodes/" + id_ + "/assignments?index=" + std::to_string(index) + "&wait=0",
            "", true));
        if (r && r->status == 200) {
          auto list = api::parse_record(r->body, api::assignment_list_from_json);
          if (list) {
            index = list->index;
            converge(*list);
          }
        }
      }
      std::this_thread::sleep_for(50ms);
    }
  }

  void converge(const api::AssignmentList& list) {
    std::lock_guard lock(mu_);
    assigned_.clear();
    auto now = std::chrono::steady_clock::now();
    for (const auto& a : list.instances) {
      assigned_[a.id] = a;
      if (!status_.count(a.id)) {
        api::InstanceStatus s;
        s.id = a.id;
        s.state = api::InstanceState::kStarting;
        s.host_port = next_port_++;
        status_[a.id] = s;
        started_[a.id] = now;
      }
    }
    // Unassigned: reported exited once, then forgotten.
    for (auto& [id, s] : status_) {
      if (!assigned_.count(id)) s.state = api::InstanceState::kExited;
    }
  }

  Result<api::HeartbeatReply> heartbeat(http::Client& client) {
    api::NodeStatus status;
    std::vector<std::string> forget;
    {
      std::lock_guard lock(mu_);
      auto now = std::chrono::steady_clock::now();
      status.id = id_;
      status.address = "127.0.0.1";
      status.capacity = capacity_;
      status.free = capacity_;
      for (auto& [id, s] : status_) {
        if (s.state == api::InstanceState::kStarting && now - started_[id] >= slow_start_.load()) {
          s.state = api::InstanceState::kRunning;
        }
        status.instances.push_back(s);
        if (s.state == api::InstanceState::kExited) forget.push_back(id);
      }
      for (const auto& id : forget) status_.erase(id);
    }
    auto r = client.send(request("POST", "/v1/nodes/" + id_ + "/heartbeat",
                                 json::serialize(api::to_json(status)), true));
    if (!r) return r.error();
    if (r->status != 200) return Error{"http", r->body, r->status};
    return api::parse_record(r->body, api::heartbeat_reply_from_json);
  }

  std::string id_;
  uint16_t port_;
  api::Resources capacity_;
  std::atomic<bool> alive_{true};
  std::atomic<std::chrono::milliseconds> slow_start_{0ms};
  std::mutex mu_;
  std::map<std::string, api::Assignment> assigned_;
  std::map<std::string, api::InstanceStatus> status_;
  std::map<std::string, std::chrono::steady_clock::time_point> started_;
  int next_port_ = 20000;
  std::thread thread_;
};

// Against qufop-keeper and, for HA, a real etcd: the scheduler must not tell them apart.
class SchedulerE2E : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto keeper = test::start_backend(GetParam());
    if (!keeper.ok() && keeper.error().code == "not_found") {
      GTEST_SKIP() << GetParam() << " is not installed: " << keeper.error().message;
    }
    ASSERT_TRUE(keeper.ok()) << keeper.error().message;
    keeper_ = std::move(*keeper);
    dir_ = test::make_temp_dir("qufop-sched-e2e");
    port_ = test::free_port();
    start_scheduler();
  }
  void TearDown() override {
    nodes_.clear();
    if (scheduler_) {
      scheduler_->signal(SIGTERM);
      EXPECT_TRUE(scheduler_->wait(10s)) << "scheduler did not stop on SIGTERM";
    }
    scheduler_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start_scheduler() {
    scheduler_ = std::make_unique<test::Process>(std::vector<std::string>{
        scheduler_binary(), "--listen", "127.0.0.1:" + std::to_string(port_), "--data-dir", dir_,
        "--keeper", keeper_->url(), "--join-token", kToken, "--node-timeout", "2s",
        "--reconcile-period", "200ms", "--log-level", "warn"});
    for (int i = 0; i < 300; ++i) {
      http::Client client("127.0.0.1", port_, {500ms, 5000ms});
      auto r = client.get("/v1/whoami");  // 401 once loaded, 503 while loading
      if (r.ok() && r->status == 401) {
        read_admin_conf();
        return;
      }
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "scheduler did not come up: " << scheduler_->err();
  }

  // Signed as the admin (admin.conf, written by the scheduler on first start); node requests
  // (token) carry the cluster token instead.
  Result<http::Response> call(std::string method, std::string target, std::string body = "",
                              bool token = false) {
    if (token || admin_.access_key.empty()) {
      http::Client client("127.0.0.1", port_, {500ms, 5000ms});
      return client.send(request(std::move(method), std::move(target), std::move(body), token));
    }
    return call_as(admin_, std::move(method), std::move(target), std::move(body));
  }
  Result<http::Response> call_as(const auth::Credentials& who, std::string method,
                                 std::string target, std::string body = "") {
    api::ApiClient client("127.0.0.1", port_, who, {500ms, 5000ms});
    return client.call(method, target, std::move(body));
  }
  void read_admin_conf() {
    auto text = read_text_file(dir_ + "/admin.conf");
    ASSERT_TRUE(text.ok()) << "no admin.conf in the data dir";
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      auto eq = line.find(" = ");
      if (eq == std::string::npos || line[0] == '#') continue;
      std::string key = line.substr(0, eq), value = line.substr(eq + 3);
      if (key == "access_key") admin_.access_key = value;
      if (key == "secret_key") admin_.secret_key = value;
    }
    ASSERT_FALSE(admin_.secret_key.empty());
  }
  json::Value call_json(std::string method, std::string target, std::string body = "",
                        int expect_status = 200) {
    auto r = call(method, target, body);
    EXPECT_TRUE(r.ok()) << target << ": " << (r.ok() ? "" : r.error().message);
    if (!r.ok()) return nullptr;
    EXPECT_EQ(r->status, expect_status) << method << " " << target << ": " << r->body;
    auto v = json::parse(r->body);
    return v ? *v : nullptr;
  }

  void add_node(const std::string& id,
                api::Resources capacity = {4000, 4LL << 30, 1LL << 30, 100}) {
    nodes_[id] = std::make_unique<FakeNode>(id, port_, capacity);
  }

  // Registers `name` with version 1 (and 2 when asked) of 100 millicores and 64 MiB each.
  void register_ufop(const std::string& name, int versions = 1) {
    call_json("POST", "/v1/ufops", R"({"name":")" + name + R"(","mode":2})", 201);
    for (int v = 1; v <= versions; ++v) {
      call_json("POST", "/v1/ufops/" + name + "/versions",
                R"({"spec":{"registry":"127.0.0.1:1","image":")" + name + R"(","reference":")" +
                    std::to_string(v) + R"(","cpu_millis":100,"memory_bytes":67108864}})",
                201);
    }
  }

  std::vector<api::InstanceRecord> instances(const std::string& name) {
    std::vector<api::InstanceRecord> out;
    auto v = call_json("GET", "/v1/ufops/" + name + "/instances");
    if (!v.is_object()) return out;
    for (const auto& i : v.at("instances").as_array()) {
      auto r = api::instance_from_json(i);
      if (r) out.push_back(*r);
    }
    return out;
  }

  // Live (not stopping) instances of `name`, per node, when every one runs.
  std::map<std::string, int> running_per_node(const std::string& name) {
    std::map<std::string, int> per_node;
    for (const auto& i : instances(name)) {
      if (i.state == api::InstanceState::kRunning && !i.stop_requested) ++per_node[i.node];
    }
    return per_node;
  }

  template <typename Pred>
  bool eventually(Pred pred, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(50ms);
    }
    return pred();
  }

  std::unique_ptr<test::Backend> keeper_;
  std::unique_ptr<test::Process> scheduler_;
  std::map<std::string, std::unique_ptr<FakeNode>> nodes_;
  std::string dir_;
  uint16_t port_ = 0;
  auth::Credentials admin_;
};

int total(const std::map<std::string, int>& m) {
  int n = 0;
  for (const auto& [k, v] : m) n += v;
  return n;
}

TEST_P(SchedulerE2E, ResizeSpreadsAndRunningInstancesHaveAddresses) {
  for (auto id : {"n1", "n2", "n3"}) add_node(id);
  register_ufop("ufop-demo");
  auto r = call_json("POST", "/v1/ufops/ufop-demo/resize", R"({"count":6})");
  EXPECT_EQ(r.at("count").as_int64(), 6);
  EXPECT_EQ(r.at("unschedulable").as_int64(), 0);
  std::map<std::string, int> want{{"n1", 2}, {"n2", 2}, {"n3", 2}};
  EXPECT_TRUE(eventually([&] { return running_per_node("ufop-demo") == want; }, 10s));
  for (const auto& i : instances("ufop-demo")) {
    EXPECT_EQ(i.address, "127.0.0.1:" + std::to_string(i.host_port));
    EXPECT_GT(i.running_since_ms, 0);
  }
  // Down to 3: one per node, the others stopped and forgotten.
  call_json("POST", "/v1/ufops/ufop-demo/resize", R"({"count":3})");
  std::map<std::string, int> three{{"n1", 1}, {"n2", 1}, {"n3", 1}};
  EXPECT_TRUE(eventually(
      [&] { return running_per_node("ufop-demo") == three && instances("ufop-demo").size() == 3; },
      10s));
}

TEST_P(SchedulerE2E, DeadNodeInstancesMoveAndSchedulerRestartLosesNothing) {
  for (auto id : {"n1", "n2", "n3"}) add_node(id);
  register_ufop("ufop-demo");
  call_json("POST", "/v1/ufops/ufop-demo/resize", R"({"count":6})");
  ASSERT_TRUE(eventually([&] { return total(running_per_node("ufop-demo")) == 6; }, 10s));

  nodes_["n3"]->kill();
  // node_timeout is 2 s: within that + a few reconcile periods, 6 again on n1 and n2.
  std::map<std::string, int> want{{"n1", 3}, {"n2", 3}};
  EXPECT_TRUE(eventually([&] { return running_per_node("ufop-demo") == want; }, 6s));
  auto nodes = call_json("GET", "/v1/nodes");
  for (const auto& n : nodes.at("nodes").as_array()) {
    if (n.at("id") == "n3") {
      EXPECT_EQ(n.at("health"), "down");
    }
  }

  // SIGKILL mid-resize: the desired count was acknowledged, so the restarted scheduler
  // converges to it without duplicates.
  call_json("POST", "/v1/ufops/ufop-demo/resize", R"({"count":10})");
  scheduler_->signal(SIGKILL);
  scheduler_->wait(5s);
  start_scheduler();
  EXPECT_TRUE(eventually(
      [&] {
        return total(running_per_node("ufop-demo")) == 10 && instances("ufop-demo").size() == 10;
      },
      10s));
  EXPECT_EQ(nodes_["n1"]->assigned().size() + nodes_["n2"]->assigned().size(), 10u);
}

TEST_P(SchedulerE2E, UpgradeNeverDropsBelowTheCount) {
  for (auto id : {"n1", "n2", "n3"}) add_node(id);
  register_ufop("ufop-demo");
  call_json("POST", "/v1/ufops/ufop-demo/resize", R"({"count":6})");
  ASSERT_TRUE(eventually([&] { return total(running_per_node("ufop-demo")) == 6; }, 10s));
  call_json("POST", "/v1/ufops/ufop-demo/versions",
            R"({"spec":{"registry":"127.0.0.1:1","image":"ufop-demo","reference":"2"}})", 201);
  // New instances take a second to become healthy: the old ones must wait for them.
  for (auto& [id, n] : nodes_) n->set_slow_start(1000ms);

  auto r = call_json("POST", "/v1/ufops/ufop-demo/upgrade", R"({"replace":2,"version":2})");
  EXPECT_EQ(r.at("desired").at("1").as_int64(), 4);
  EXPECT_EQ(r.at("desired").at("2").as_int64(), 2);
  int min_running = 6;
  bool done = eventually(
      [&] {
        int v1 = 0, v2 = 0, running = 0;
        auto list = instances("ufop-demo");
        for (const auto& i : list) {
          if (i.state != api::InstanceState::kRunning) continue;
          ++running;
          (i.version == 1 ? v1 : v2) += 1;
        }
        min_running = std::min(min_running, running);
        return v1 == 4 && v2 == 2 && list.size() == 6;
      },
      15s);
  EXPECT_TRUE(done);
  EXPECT_GE(min_running, 6) << "running instances dropped below the count during the upgrade";
}

TEST_P(SchedulerE2E, WhatDoesNotFitIsReportedAndNeverOvercommitted) {
  add_node("n1", {1000, 1LL << 30, 1LL << 30, 100});
  add_node("n2", {200, 1LL << 30, 1LL << 30, 100});
  register_ufop("ufop-big");
  EXPECT_TRUE(eventually(
      [&] { return call_json("GET", "/v1/nodes").at("nodes").as_array().size() == 2; }, 5s));
  // 100 millicores each: 10 fit on n1, 2 on n2.
  auto refused =
      call_json("POST", "/v1/ufops/ufop-big/resize", R"({"count":20,"refuse":true})", 409);
  EXPECT_NE(refused.at("message").as_string().find("insufficient cpu"), std::string::npos)
      << refused;
  EXPECT_TRUE(call_json("GET", "/v1/ufops/ufop-big").at("desired").as_object().empty());

  auto r = call_json("POST", "/v1/ufops/ufop-big/resize", R"({"count":20})");
  EXPECT_EQ(r.at("unschedulable").as_int64(), 8);
  EXPECT_EQ(r.at("reason").as_string(),
            "8 instances of version 1 unschedulable: 0/2 nodes: 2 insufficient cpu");
  std::map<std::string, int> want{{"n1", 10}, {"n2", 2}};
  EXPECT_TRUE(eventually([&] { return running_per_node("ufop-big") == want; }, 10s));
  EXPECT_EQ(instances("ufop-big").size(), 12u);
}

TEST_P(SchedulerE2E, BadInputGetsClearErrors) {
  register_ufop("ufop-demo");
  auto neg = call_json("POST", "/v1/ufops/ufop-demo/resize", R"({"count":-1})", 400);
  EXPECT_EQ(neg.at("message"), "count: must not be negative (got -1)");
  call_json("POST", "/v1/ufops/ufop-nope/resize", R"({"count":1})", 404);
  call_json("POST", "/v1/ufops/ufop-demo/upgrade", R"({"replace":1,"version":9})", 404);
  call_json("POST", "/v1/ufops", R"({"name":"ufop-demo"})", 409);
  auto bad_name = call_json("POST", "/v1/ufops", R"({"name":"Bad!"})", 400);
  EXPECT_NE(bad_name.at("message").as_string().find("5 to 20"), std::string::npos);
  call_json("POST", "/v1/ufops/ufop-demo/resize", "{not json", 400);

  // Node protocol: no token, nonsense resources, a path that disagrees with the body.
  auto no_token = call("POST", "/v1/nodes/n1/heartbeat", "{}");
  ASSERT_TRUE(no_token.ok());
  EXPECT_EQ(no_token->status, 401);
  auto negative =
      call("POST", "/v1/nodes/n1/heartbeat",
           R"({"id":"n1","address":"127.0.0.1","capacity":{"memory_bytes":-5},"free":{}})", true);
  ASSERT_TRUE(negative.ok());
  EXPECT_EQ(negative->status, 400);
  EXPECT_NE(negative->body.find("node.capacity: negative resources"), std::string::npos);
  auto mismatch = call("POST", "/v1/nodes/n2/heartbeat",
                       R"({"id":"n1","address":"127.0.0.1","capacity":{},"free":{}})", true);
  ASSERT_TRUE(mismatch.ok());
  EXPECT_EQ(mismatch->status, 400);
  // A node reporting instances nobody assigned it: accepted, ignored, never listed.
  auto unknown = call("POST", "/v1/nodes/n1/heartbeat",
                      R"({"id":"n1","address":"127.0.0.1","capacity":{},"free":{},)"
                      R"("instances":[{"id":"ghost-1","state":"running"}]})",
                      true);
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->status, 200) << unknown->body;
  EXPECT_TRUE(instances("ufop-demo").empty());
  // Still alive and answering.
  EXPECT_EQ(call_json("GET", "/v1/ufops").at("ufops").as_array().size(), 1u);
}

TEST_P(SchedulerE2E, AssignmentPollWaitsForAChange) {
  add_node("n1");
  register_ufop("ufop-demo");
  ASSERT_TRUE(eventually(
      [&] { return call_json("GET", "/v1/nodes").at("nodes").as_array().size() == 1; }, 5s));
  auto first = call("GET", "/v1/nodes/n1/assignments?index=0&wait=0", "", true);
  ASSERT_TRUE(first.ok());
  auto list = api::parse_record(first->body, api::assignment_list_from_json);
  ASSERT_TRUE(list.ok());
  auto start = std::chrono::steady_clock::now();
  std::thread resize([&] {
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(call("POST", "/v1/ufops/ufop-demo/resize", R"({"count":1})").ok());
  });
  auto polled =
      call("GET", "/v1/nodes/n1/assignments?index=" + std::to_string(list->index) + "&wait=20s", "",
           true);
  resize.join();
  ASSERT_TRUE(polled.ok());
  auto after = api::parse_record(polled->body, api::assignment_list_from_json);
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->index, list->index);
  EXPECT_EQ(after->instances.size(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s) << "the poll did not end on the change";
}

TEST_P(SchedulerE2E, RequestsAreSignedAndUfopsBelongToTheirOwners) {
  // The admin.conf keys work; a new user gets keys of its own.
  auto who = call_json("GET", "/v1/whoami");
  EXPECT_EQ(who.at("name"), "admin");
  EXPECT_TRUE(who.at("admin").as_bool());
  auto alice_json = call_json("POST", "/v1/users", R"({"name":"alice","class":"paid"})", 201);
  auto bob_json = call_json("POST", "/v1/users", R"({"name":"bob"})", 201);
  auth::Credentials alice{std::string(alice_json.at("access_key").as_string()),
                          std::string(alice_json.at("secret_key").as_string())};
  auth::Credentials bob{std::string(bob_json.at("access_key").as_string()),
                        std::string(bob_json.at("secret_key").as_string())};
  call_json("POST", "/v1/users", R"({"name":"alice"})", 409);

  // Unsigned, unknown key, wrong secret, stale date, replayed: 401.
  http::Client raw("127.0.0.1", port_, {500ms, 5000ms});
  auto unsigned_r = raw.get("/v1/ufops");
  ASSERT_TRUE(unsigned_r.ok());
  EXPECT_EQ(unsigned_r->status, 401);
  auto bad = call_as({alice.access_key, "not-the-secret"}, "GET", "/v1/ufops");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 401);
  auto unknown = call_as({"nobody", "x"}, "GET", "/v1/ufops");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->status, 401);
  {
    http::Request stale;
    stale.method = "GET";
    stale.target = "/v1/ufops";
    std::string host = "127.0.0.1:" + std::to_string(port_);
    stale.headers = {{"Host", host},
                     {"X-Qiniu-Date", auth::format_qiniu_date(std::chrono::system_clock::now() -
                                                              std::chrono::hours(1))}};
    auth::SignableRequest s{"GET", "/v1/ufops", "", host, "", stale.headers, ""};
    stale.headers.emplace_back("Authorization",
                               auth::authorization(alice.access_key, alice.secret_key, s));
    auto r = raw.send(stale);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 401) << r->body;
    // The same request with a fresh date, sent twice: the second is a replay.
    stale.headers = {{"Host", host},
                     {"X-Qiniu-Date", auth::format_qiniu_date(std::chrono::system_clock::now())}};
    s.headers = stale.headers;
    stale.headers.emplace_back("Authorization",
                               auth::authorization(alice.access_key, alice.secret_key, s));
    auto first = raw.send(stale);
    auto again = raw.send(stale);
    ASSERT_TRUE(first.ok() && again.ok());
    EXPECT_EQ(first->status, 200) << first->body;
    EXPECT_EQ(again->status, 401);
    EXPECT_NE(again->body.find("replayed"), std::string::npos) << again->body;
  }
  {
    // A captured request re-sent with its Authorization header re-spelled (no base64 '='
    // padding, more spaces after "Qiniu"): the verifier accepts those spellings, so each is the
    // same signature and the same replay.
    http::Request req = api::sign_request(
        alice.access_key, alice.secret_key, "127.0.0.1:" + std::to_string(port_), "GET",
        "/v1/ufops", "", "", std::chrono::system_clock::now(), api::random_nonce());
    auto auth_header = std::find_if(req.headers.begin(), req.headers.end(),
                                    [](const auto& h) { return h.first == "Authorization"; });
    ASSERT_NE(auth_header, req.headers.end());
    const std::string original = auth_header->second;
    ASSERT_TRUE(original.starts_with("Qiniu ")) << original;
    // HMAC-SHA1 is 20 bytes: base64 always ends in one '='.
    ASSERT_EQ(original.back(), '=') << original;
    auto first = raw.send(req);
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(first->status, 200) << first->body;
    const std::string cred = original.substr(std::string_view("Qiniu ").size());
    for (const std::string& respelled :
         {original.substr(0, original.size() - 1), "Qiniu  " + cred, "Qiniu   " + cred,
          "Qiniu  " + cred.substr(0, cred.size() - 1)}) {
      auth_header->second = respelled;
      auto replayed = raw.send(req);
      ASSERT_TRUE(replayed.ok());
      EXPECT_EQ(replayed->status, 401) << respelled << ": " << replayed->body;
      EXPECT_NE(replayed->body.find("replayed"), std::string::npos) << replayed->body;
    }
  }

  // Alice's private UFOP: bob neither sees nor changes it; the admin does.
  auto created = call_as(alice, "POST", "/v1/ufops", R"({"name":"alice-ufop","mode":2})");
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->status, 201) << created->body;
  auto hidden = call_as(bob, "GET", "/v1/ufops/alice-ufop");
  ASSERT_TRUE(hidden.ok());
  EXPECT_EQ(hidden->status, 404);
  auto bob_list = call_as(bob, "GET", "/v1/ufops");
  ASSERT_TRUE(bob_list.ok());
  EXPECT_EQ(bob_list->body, R"({"ufops":[]})");
  EXPECT_EQ(call_json("GET", "/v1/ufops/alice-ufop").at("owner"), alice.access_key.c_str());
  // Semi-public: bob reads it and may use it, but not resize it.
  call_as(alice, "POST", "/v1/ufops", R"({"name":"alice-semi","mode":1})").value();
  auto used = call_as(bob, "POST", "/v1/ufops/alice-semi/use");
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(used->status, 200) << used->body;
  auto resize = call_as(bob, "POST", "/v1/ufops/alice-semi/resize", R"({"count":1})");
  ASSERT_TRUE(resize.ok());
  EXPECT_EQ(resize->status, 403) << resize->body;
  auto private_use = call_as(bob, "POST", "/v1/ufops/alice-ufop/use");
  ASSERT_TRUE(private_use.ok());
  EXPECT_EQ(private_use->status, 404);
  // Public (mode 0) is the admin's to register; users see it listed.
  auto public_by_user = call_as(alice, "POST", "/v1/ufops", R"({"name":"alice-pub","mode":0})");
  ASSERT_TRUE(public_by_user.ok());
  EXPECT_EQ(public_by_user->status, 403);
  call_json("POST", "/v1/ufops", R"({"name":"admin-pub","mode":0})", 201);
  auto listed = call_as(bob, "GET", "/v1/ufops");
  ASSERT_TRUE(listed.ok());
  EXPECT_NE(listed->body.find("admin-pub"), std::string::npos);
  EXPECT_NE(listed->body.find("alice-semi"), std::string::npos);
  EXPECT_EQ(listed->body.find("alice-ufop"), std::string::npos);
  // Only the admin manages users.
  auto add_by_user = call_as(alice, "POST", "/v1/users", R"({"name":"eve"})");
  ASSERT_TRUE(add_by_user.ok());
  EXPECT_EQ(add_by_user->status, 403);
  // Secrets never reach the log.
  scheduler_->signal(SIGTERM);
  scheduler_->wait(10s);
  std::string log = scheduler_->err();
  EXPECT_EQ(log.find(alice.secret_key), std::string::npos);
  EXPECT_EQ(log.find(admin_.secret_key), std::string::npos);
  scheduler_.reset();
}

// A node whose instances all crash at start: each newly assigned instance is reported exited
// (exit code 1) once, then forgotten. Records when it first saw each instance.
class CrashingNode {
 public:
  CrashingNode(std::string id, uint16_t scheduler_port)
      : id_(std::move(id)), port_(scheduler_port) {
    thread_ = std::thread([this] { run(); });
  }
  ~CrashingNode() {
    alive_ = false;
    thread_.join();
  }
  std::vector<std::chrono::steady_clock::time_point> seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  void run() {
    http::Client client("127.0.0.1", port_, {500ms, 5000ms});
    std::set<std::string> known;
    std::vector<api::InstanceStatus> to_report;
    while (alive_) {
      api::NodeStatus status;
      status.id = id_;
      status.address = "127.0.0.1";
      status.capacity = status.free = {4000, 4LL << 30, 1LL << 30, 100};
      status.instances = to_report;
      auto sent = client.send(request("POST", "/v1/nodes/" + id_ + "/heartbeat",
                                      json::serialize(api::to_json(status)), true));
      if (sent && sent->status == 200) to_report.clear();  // else: report them again
      auto r = client.send(request("GET", "/v1/nodes/" + id_ + "/assignments", "", true));
      auto list = r && r->status == 200
                      ? api::parse_record(r->body, api::assignment_list_from_json)
                      : Result<api::AssignmentList>(Error{"http", "no assignments", 0});
      for (const auto& a : list ? list->instances : std::vector<api::Assignment>{}) {
        if (!known.insert(a.id).second) continue;
        std::lock_guard lock(mu_);
        seen_.push_back(std::chrono::steady_clock::now());
        api::InstanceStatus crashed;
        crashed.id = a.id;
        crashed.state = api::InstanceState::kExited;
        crashed.exit_code = 1;
        to_report.push_back(crashed);
      }
      std::this_thread::sleep_for(50ms);
    }
  }

  std::string id_;
  uint16_t port_;
  std::atomic<bool> alive_{true};
  std::mutex mu_;
  std::vector<std::chrono::steady_clock::time_point> seen_;
  std::thread thread_;
};

// Crash-loop backoff: the first crash is replaced at once, the next ones after 1 s, 2 s, ...;
// the hold shows in /metrics.
TEST_P(SchedulerE2E, CrashingInstancesAreReplacedWithABackoff) {
  CrashingNode node("n1", port_);
  register_ufop("ufop-demo");
  call_json("POST", "/v1/ufops/ufop-demo/resize", R"({"count":1})");
  ASSERT_TRUE(eventually([&] { return node.seen().size() >= 4; }, 15s));
  auto seen = node.seen();
  // Lower bounds only: a replacement is placed no earlier than its hold ends.
  EXPECT_GE(seen[2] - seen[1], 1000ms);
  EXPECT_GE(seen[3] - seen[2], 2000ms);
  http::Client client("127.0.0.1", port_, {500ms, 5000ms});
  auto metrics = client.get("/metrics");
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->body.find(R"(qufop_scheduler_backoff_seconds{ufop="ufop-demo",version="1"})"),
            std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find(R"(qufop_scheduler_crash_steps_total{ufop="ufop-demo"})"),
            std::string::npos);
  // Still one desired: the UFOP is below its count, not resized.
  EXPECT_EQ(call_json("GET", "/v1/ufops/ufop-demo").at("desired").at("1").as_int64(), 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, SchedulerE2E, ::testing::Values("keeper", "etcd"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace qufop

#include "noded/control.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <random>

#include "common/auth.h"
#include "common/http_client.h"
#include "common/json.h"

namespace qufop::noded {

namespace {

// A scheduler answer as a record: the transport error, "HTTP <status>: <body>" or
// "reply: <why it does not parse>".
template <typename T>
Result<T> scheduler_reply(Result<http::Response> resp, Result<T> (*from)(const json::Value&)) {
  if (!resp) return resp.error();
  if (resp->status != 200) {
    return Error::io("HTTP " + std::to_string(resp->status) + ": " + resp->body);
  }
  auto v = json::parse(resp->body);
  if (!v) return Error::io("reply: " + v.error().message);
  auto record = from(*v);
  if (!record) return Error::io("reply: " + record.error().message);
  return record;
}

}  // namespace

namespace {

constexpr std::chrono::milliseconds kConvergeEvery{50};
constexpr std::chrono::milliseconds kMinHeartbeatGap{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};
constexpr int kPollWaitSeconds = 30;

std::string random_hex() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

}  // namespace

Control::Control(Agent& agent, SandboxRuntime& runtime, ControlOptions options)
    : agent_(agent), runtime_(runtime), options_(std::move(options)), boot_id_(random_hex()) {}

Control::~Control() { stop(); }

void Control::start() {
  heartbeat_ = std::thread([this] { heartbeat_loop(); });
  converge_ = std::thread([this] { converge_loop(); });
  std::thread([this] { assignments_loop(); }).detach();
}

void Control::stop() {
  stopping_ = true;
  cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
  if (converge_.joinable()) converge_.join();
}

void Control::note(const char* what, bool ok, const std::string& error) {
  std::lock_guard lock(mu_);
  auto it = reachable_.find(what);
  if (it != reachable_.end() && it->second == ok) return;
  bool first = it == reachable_.end();
  reachable_[what] = ok;
  if (ok && !first)
    spdlog::info("{}: the scheduler at {} answers again", what, options_.scheduler.str());
  if (!ok) spdlog::warn("{}: {} (retrying with backoff)", what, error);
}

api::NodeStatus Control::status(bool for_heartbeat) {
  api::NodeStatus s;
  s.id = options_.node_id;
  s.address = options_.address;
  s.api = options_.api;
  s.labels = options_.labels;
  s.boot_id = boot_id_;
  auto node = probe_node(options_.data_dir, runtime_.host_ports());
  if (node) {
    s.capacity = capacity(*node, options_.reserve);
  } else {
    spdlog::warn("reading the node's resources: {}", node.error().message);
  }
  s.free = free_resources(s.capacity, agent_.held());
  s.instances = for_heartbeat ? agent_.report() : agent_.snapshot();
  return s;
}

void Control::heartbeat_loop() {
  http::ClientOptions co;
  co.connect_timeout = std::chrono::milliseconds(2000);
  co.request_timeout = std::chrono::milliseconds(5000);
  http::Client client(options_.scheduler.host, options_.scheduler.port, co);
  std::string target = "/v1/nodes/" + options_.node_id + "/heartbeat";
  auto interval = options_.heartbeat;
  auto backoff = std::chrono::milliseconds(0);
  while (!stopping_) {
    runtime_.rotate_logs(agent_.active_ids());
    http::Request req;
    req.method = "POST";
    req.target = target;
    req.headers = {{"Authorization", auth::bearer(options_.token)},
                   {"Content-Type", "application/json"}};
    req.body = json::serialize(api::to_json(status(true)));
    auto reply = scheduler_reply(client.send(req), api::heartbeat_reply_from_json);
    std::string error = reply ? "" : reply.error().message;
    if (reply) {
      scheduler_index_ = reply->assignments_index;
      if (reply->heartbeat_ms > 0) interval = std::chrono::milliseconds(reply->heartbeat_ms);
    }
    note("heartbeat", error.empty(), error);
    if (error.empty()) {
      backoff = std::chrono::milliseconds(0);
      // Early on a state change (starting -> running matters to the gate), at most every
      // kMinHeartbeatGap.
      auto deadline = std::chrono::steady_clock::now() + interval;
      std::this_thread::sleep_for(kMinHeartbeatGap);
      while (!stopping_ && std::chrono::steady_clock::now() < deadline) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (agent_.wait_for_change(std::min(left, std::chrono::milliseconds(200)))) break;
      }
    } else {
      backoff = std::min(kMaxBackoff, std::max(std::chrono::milliseconds(200), backoff * 2));
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, backoff, [this] { return stopping_.load(); });
    }
  }
}

void Control::assignments_loop() {
  http::ClientOptions co;
  co.connect_timeout = std::chrono::milliseconds(2000);
  co.request_timeout = std::chrono::seconds(kPollWaitSeconds + 10);
  http::Client client(options_.scheduler.host, options_.scheduler.port, co);
  int64_t index = 0;
  auto backoff = std::chrono::milliseconds(0);
  // The scheduler knows the node from its first heartbeat on: poll after that.
  while (!stopping_ && scheduler_index_ == 0) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(20), [this] { return stopping_.load(); });
  }
  while (!stopping_) {
    http::Request req;
    req.method = "GET";
    req.target = "/v1/nodes/" + options_.node_id + "/assignments?index=" + std::to_string(index) +
                 "&wait=" + std::to_string(kPollWaitSeconds) + "s";
    req.headers = {{"Authorization", auth::bearer(options_.token)}};
    auto resp = client.send(req);
    if (stopping_) return;
    auto list = scheduler_reply(std::move(resp), api::assignment_list_from_json);
    std::string error = list ? "" : list.error().message;
    if (list) {
      bool first = agent_.assignments_index() < 0;
      if (first || list->index != index) {
        spdlog::info("assignments: index {}, {} instance(s)", list->index, list->instances.size());
      }
      index = list->index;
      agent_.set_assignments(*list);
      cv_.notify_all();  // converge now
    }
    note("assignments", error.empty(), error);
    if (error.empty()) {
      backoff = std::chrono::milliseconds(0);
      continue;
    }
    backoff = std::min(kMaxBackoff, std::max(std::chrono::milliseconds(200), backoff * 2));
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, backoff, [this] { return stopping_.load(); });
  }
}

void Control::converge_loop() {
  while (!stopping_) {
    agent_.step();
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, kConvergeEvery, [this] { return stopping_.load(); });
  }
}

}  // namespace qufop::noded

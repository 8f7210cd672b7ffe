#include "scheduler/controller.h"

#include <algorithm>
#include <cstdio>

#include <spdlog/spdlog.h>
#include "common/metrics.h"
#include "scheduler/reconcile.h"

namespace qufop::scheduler {

namespace {

using api::InstanceState;

Resources to_placement(const api::Resources& r) {
  return {r.cpu_millis, r.memory_bytes, r.disk_bytes, r.ports};
}

// What one instance of a version holds on its node: its limits and one host port.
Resources request_of(const api::InstanceSpec& spec) {
  return {spec.cpu_millis, spec.memory_bytes, 0, 1};
}

Error not_found(const std::string& what) { return {"not_found", what, 0}; }

bool same_node_facts(const api::NodeRecord& a, const api::NodeStatus& s) {
  return a.address == s.address && a.api == s.api && a.labels == s.labels &&
         a.capacity.cpu_millis == s.capacity.cpu_millis &&
         a.capacity.memory_bytes == s.capacity.memory_bytes &&
         a.capacity.disk_bytes == s.capacity.disk_bytes && a.capacity.ports == s.capacity.ports;
}

// The state the instance's record takes from a node's report. Once the scheduler asked for a
// stop, the record stays cooling until the node reports the end: the gate must send nothing new.
InstanceState merged_state(const api::InstanceRecord& r, InstanceState reported) {
  if (!r.stop_requested || api::is_terminal(reported) || reported == InstanceState::kStopping) {
    return reported;
  }
  return InstanceState::kCooling;
}

}  // namespace

Controller::Controller(RecordStore& store, ControllerOptions options, Metrics* metrics)
    : store_(store), options_(options), metrics_(metrics) {
  auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  // Indices start at the clock in microseconds so that they keep growing across restarts: a
  // node still holding an index from before a restart is answered at once.
  next_index_ = now_us;
  ids_.seed(options_.seed ? options_.seed : static_cast<uint64_t>(now_us) ^ 0x9e3779b97f4a7c15);
  if (metrics_) {
    metrics_->describe("qufop_scheduler_reconcile_passes_total", Metrics::Type::kCounter,
                       "Reconcile passes run.");
    metrics_->describe("qufop_scheduler_instances_created_total", Metrics::Type::kCounter,
                       "Instances placed on a node.");
    metrics_->describe("qufop_scheduler_instances_stopped_total", Metrics::Type::kCounter,
                       "Instances asked to stop.");
    metrics_->describe("qufop_scheduler_unschedulable", Metrics::Type::kGauge,
                       "Desired instances that fit on no node, per UFOP.");
    metrics_->describe("qufop_scheduler_backoff_seconds", Metrics::Type::kGauge,
                       "Seconds until a crash-looping UFOP version gets new instances again.");
    metrics_->describe("qufop_scheduler_crash_steps_total", Metrics::Type::kCounter,
                       "Reconcile passes that found instances of a UFOP ended on their own.");
  }
}

Controller::~Controller() { stop(); }

int64_t Controller::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<void> Controller::load() {
  auto snapshot = store_.load();
  if (!snapshot) return snapshot.error();
  for (const auto& skipped : snapshot->skipped) spdlog::warn("keeper record skipped: {}", skipped);
  std::lock_guard lock(mu_);
  int64_t now = now_ms();
  for (auto& u : snapshot->ufops) ufops_[u.name] = std::move(u);
  for (auto& v : snapshot->versions) versions_[v.ufop][v.version] = std::move(v);
  for (auto& i : snapshot->instances) instances_[i.id] = std::move(i);
  for (auto& n : snapshot->nodes) {
    Node node;
    node.record = std::move(n);
    node.reported_free = {-1, -1, -1, -1};
    node.last_seen_ms = now;
    node.index = ++next_index_;
    nodes_[node.record.id] = std::move(node);
  }
  spdlog::info("loaded {} UFOPs, {} instances, {} nodes from keeper at revision {}", ufops_.size(),
               instances_.size(), nodes_.size(), snapshot->revision);
  return ok();
}

void Controller::start() {
  loop_ = std::thread([this] { loop(); });
}

void Controller::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    kick_.notify_all();
  }
  if (loop_.joinable()) loop_.join();
  std::lock_guard lock(mu_);
  answer_polls_locked(false);
}

bool Controller::ready() const {
  std::lock_guard lock(mu_);
  return ready_;
}

void Controller::loop() {
  std::string last_error;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (stopping_) return;
    }
    auto loaded = load();
    if (loaded && options_.on_load) loaded = options_.on_load();
    if (loaded) {
      std::lock_guard lock(mu_);
      ready_ = true;
      break;
    }
    if (loaded.error().message != last_error) {
      last_error = loaded.error().message;
      spdlog::warn("loading the cluster state (retrying): {}", last_error);
    }
    std::unique_lock lock(mu_);
    kick_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_; });
  }
  auto next_pass = std::chrono::steady_clock::now();
  std::unique_lock lock(mu_);
  while (!stopping_) {
    // Wake at least every 100 ms to expire assignment polls.
    kick_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_ || kicked_; });
    if (stopping_) break;
    answer_polls_locked(true);
    auto now = std::chrono::steady_clock::now();
    // A crash-loop hold that ends places its instances at once, not a period later.
    bool hold_over = next_hold_ms_ > 0 && now_ms() >= next_hold_ms_;
    if (!kicked_ && !hold_over && now < next_pass) continue;
    kicked_ = false;
    next_pass = now + options_.reconcile_period;
    if (auto r = reconcile_locked(nullptr, ""); !r) {
      spdlog::warn("reconcile: {}", r.error().message);
    }
  }
}

// ---- the node protocol ----

Result<api::HeartbeatReply> Controller::heartbeat(const api::NodeStatus& status) {
  std::lock_guard lock(mu_);
  int64_t now = now_ms();
  auto found = nodes_.find(status.id);
  bool is_new = found == nodes_.end();
  Node node = is_new ? Node{} : found->second;
  bool changed = is_new || !same_node_facts(node.record, status) ||
                 node.record.health == api::NodeHealth::kDown;
  if (is_new) node.record.registered_ms = now;
  node.record.id = status.id;
  node.record.address = status.address;
  node.record.api = status.api;
  node.record.labels = status.labels;
  node.record.capacity = status.capacity;
  node.record.free = status.free;
  node.record.health = api::NodeHealth::kUp;
  if (changed) node.record.last_seen_ms = now;

  Batch batch;
  if (changed) batch.put(api::node_key(status.id), api::to_json(node.record));
  std::map<std::string, api::InstanceRecord> updated;
  std::vector<std::string> gone;
  std::set<std::string> reported;
  for (const auto& s : status.instances) {
    reported.insert(s.id);
    auto it = instances_.find(s.id);
    if (it == instances_.end() || it->second.node != status.id) continue;  // the node stops it
    api::InstanceRecord r = it->second;
    if (r.stop_requested && api::is_terminal(s.state)) {
      gone.push_back(r.id);
      continue;
    }
    r.state = merged_state(r, s.state);
    r.ip = s.ip;
    r.host_port = s.host_port;
    r.address = s.host_port > 0 ? status.address + ":" + std::to_string(s.host_port) : "";
    r.exit_code = s.exit_code;
    r.message = s.message;
    if (r.state == InstanceState::kRunning && r.running_since_ms == 0) r.running_since_ms = now;
    if (json::serialize(api::to_json(r)) != json::serialize(api::to_json(it->second))) {
      updated[r.id] = std::move(r);
    }
  }
  // Instances of this node it does not report: stopped and forgotten ones are gone; others
  // it never started in time, or lost, have failed (and are replaced).
  for (const auto& [id, r] : instances_) {
    if (r.node != status.id || reported.count(id)) continue;
    if (r.stop_requested) {
      gone.push_back(id);
    } else if (r.state != InstanceState::kPending ||
               now - r.created_ms > options_.start_timeout.count()) {
      if (r.state == InstanceState::kFailed) continue;
      api::InstanceRecord failed = r;
      failed.state = InstanceState::kFailed;
      failed.message = r.state == InstanceState::kPending ? "not started by its node in time"
                                                          : "no longer reported by its node";
      updated[id] = std::move(failed);
    }
  }
  for (const auto& [id, r] : updated) batch.put(api::instance_key(r.ufop, id), api::to_json(r));
  for (const auto& id : gone) batch.erase(api::instance_key(instances_.at(id).ufop, id));
  if (!batch.empty()) {
    if (auto w = store_.apply(batch); !w) return w.error();
  }

  node.reported_free = status.free;
  node.last_seen_ms = now;
  if (is_new) {
    node.index = ++next_index_;
    spdlog::info("node {} joined ({}; {} millicores, {} MiB)", status.id, status.address,
                 status.capacity.cpu_millis, status.capacity.memory_bytes >> 20);
  } else if (found->second.record.health == api::NodeHealth::kDown) {
    spdlog::info("node {} is back", status.id);
  }
  nodes_[status.id] = node;
  for (auto& [id, r] : updated) instances_[id] = std::move(r);
  for (const auto& id : gone) instances_.erase(id);
  if (changed || !updated.empty() || !gone.empty()) {
    kicked_ = true;
    kick_.notify_all();
  }
  return api::HeartbeatReply{nodes_[status.id].index, options_.heartbeat.count()};
}

Result<api::AssignmentList> Controller::assignments(const std::string& node) {
  std::lock_guard lock(mu_);
  if (!nodes_.count(node)) return not_found("node '" + node + "' has not sent a heartbeat");
  return assignments_locked(node);
}

void Controller::poll_assignments(const std::string& node, int64_t index,
                                  std::chrono::milliseconds wait, http::Responder responder) {
  std::lock_guard lock(mu_);
  auto it = nodes_.find(node);
  if (it == nodes_.end()) {
    responder.send(
        http::Response::error(404, "not_found", "node '" + node + "' has not sent a heartbeat"));
    return;
  }
  if (it->second.index > index || wait.count() <= 0 || stopping_) {
    responder.send(
        {200, "application/json", {}, json::serialize(api::to_json(assignments_locked(node)))});
    return;
  }
  polls_.push_back({node, index, std::chrono::steady_clock::now() + wait, std::move(responder)});
}

api::AssignmentList Controller::assignments_locked(const std::string& node) const {
  api::AssignmentList list;
  list.index = nodes_.at(node).index;
  for (const auto& [id, r] : instances_) {
    if (r.node != node || r.stop_requested || api::is_terminal(r.state)) continue;
    const auto* v = version_locked(r.ufop, r.version);
    if (!v) continue;  // reconcile fails it
    list.instances.push_back({id, r.ufop, r.version, v->spec});
  }
  return list;
}

void Controller::bump_locked(const std::set<std::string>& nodes) {
  for (const auto& id : nodes) {
    if (auto it = nodes_.find(id); it != nodes_.end()) it->second.index = ++next_index_;
  }
  answer_polls_locked(false);
}

void Controller::answer_polls_locked(bool expire_only) {
  auto now = std::chrono::steady_clock::now();
  for (auto it = polls_.begin(); it != polls_.end();) {
    auto node = nodes_.find(it->node);
    bool ready = node == nodes_.end() || node->second.index > it->index;
    bool due = now >= it->deadline || stopping_;
    if ((expire_only && !due && !ready) || (!expire_only && !ready && !due)) {
      ++it;
      continue;
    }
    if (node == nodes_.end()) {
      it->responder.send(
          http::Response::error(404, "not_found", "node '" + it->node + "' is gone"));
    } else {
      it->responder.send({200,
                          "application/json",
                          {},
                          json::serialize(api::to_json(assignments_locked(it->node)))});
    }
    it = polls_.erase(it);
  }
}

ClusterState Controller::build_state_locked(
    const std::map<std::string, api::UfopRecord>& ufops) const {
  ClusterState state;
  state.now_ms = now_ms();
  state.node_timeout_ms = options_.node_timeout.count();
  state.crash_loops = crash_loops_;
  std::map<std::string, size_t> node_index;
  for (const auto& [id, n] : nodes_) {
    NodeView view;
    view.id = id;
    view.state = n.record.health == api::NodeHealth::kUp ? NodeState::kUp : NodeState::kDown;
    view.labels = n.record.labels;
    view.capacity = to_placement(n.record.capacity);
    if (n.reported_free.cpu_millis >= 0) view.reported_free = to_placement(n.reported_free);
    view.last_seen_ms = n.last_seen_ms;
    node_index[id] = state.nodes.size();
    state.nodes.push_back(std::move(view));
  }
  for (const auto& [id, r] : instances_) {
    InstanceView view;
    view.id = id;
    view.ufop = r.ufop;
    view.version = r.version;
    view.node = r.node;
    view.state = std::string(api::to_string(r.state));
    view.stop_requested = r.stop_requested;
    view.created_ms = r.created_ms;
    if (const auto* v = version_locked(r.ufop, r.version)) view.resources = request_of(v->spec);
    if (auto n = node_index.find(r.node); n != node_index.end()) {
      state.nodes[n->second].allocated.add(view.resources);
    }
    state.instances.push_back(std::move(view));
  }
  for (const auto& [name, u] : ufops) {
    for (const auto& [version, count] : u.desired) {
      DesiredVersion d;
      d.ufop = name;
      d.version = version;
      d.count = static_cast<int>(std::min<int64_t>(count, 1'000'000));
      const auto* v = version_locked(name, version);
      if (!v) continue;  // checked when the count was set; a deleted version runs nothing new
      d.per_instance = request_of(v->spec);
      state.desired.push_back(std::move(d));
    }
  }
  return state;
}

std::string Controller::unschedulable_text(const ReconcilePlan& plan, const std::string& ufop) {
  std::string text;
  for (const auto& u : plan.unschedulable) {
    if (u.ufop != ufop) continue;
    if (!text.empty()) text += "; ";
    text += std::to_string(u.missing) + " instance" + (u.missing == 1 ? "" : "s") + " of version " +
            std::to_string(u.version) + " unschedulable: " + u.reason;
  }
  return text;
}

Result<void> Controller::reconcile_locked(std::optional<ScaleResult>* report_for,
                                          const std::string& ufop) {
  ++pass_;
  if (metrics_) metrics_->add("qufop_scheduler_reconcile_passes_total", "");
  auto plan = reconcile(build_state_locked(ufops_), options_.seed + pass_);
  int64_t now = now_ms();

  Batch batch;
  std::map<std::string, api::NodeRecord> node_changes;
  for (const auto& id : plan.nodes_down) {
    auto r = nodes_.at(id).record;
    r.health = api::NodeHealth::kDown;
    r.last_seen_ms = nodes_.at(id).last_seen_ms;
    node_changes[id] = r;
  }
  for (const auto& id : plan.nodes_up) {
    auto r = nodes_.at(id).record;
    r.health = api::NodeHealth::kUp;
    node_changes[id] = r;
  }
  for (const auto& [id, r] : node_changes) batch.put(api::node_key(id), api::to_json(r));

  std::set<std::string> touched;
  std::vector<api::InstanceRecord> created;
  for (const auto& c : plan.create) {
    api::InstanceRecord r;
    r.id = new_instance_id_locked(c.ufop);
    while (
        std::any_of(created.begin(), created.end(), [&](const auto& x) { return x.id == r.id; })) {
      r.id = new_instance_id_locked(c.ufop);
    }
    r.ufop = c.ufop;
    r.version = c.version;
    r.node = c.node;
    r.state = InstanceState::kPending;
    r.created_ms = now;
    if (const auto* v = version_locked(c.ufop, c.version)) r.warmup_ms = v->spec.warmup_ms;
    batch.put(api::instance_key(r.ufop, r.id), api::to_json(r));
    touched.insert(r.node);
    created.push_back(std::move(r));
  }
  std::vector<api::InstanceRecord> stopped;
  for (const auto& id : plan.stop) {
    auto r = instances_.at(id);
    r.stop_requested = true;
    if (!api::is_terminal(r.state) && r.state != InstanceState::kStopping) {
      r.state = InstanceState::kCooling;
    }
    batch.put(api::instance_key(r.ufop, id), api::to_json(r));
    touched.insert(r.node);
    stopped.push_back(std::move(r));
  }
  for (const auto& id : plan.forget) {
    const auto& r = instances_.at(id);
    batch.erase(api::instance_key(r.ufop, id));
    touched.insert(r.node);
  }
  if (!batch.empty()) {
    if (auto w = store_.apply(batch); !w) return w.error();
  }

  for (auto& [id, r] : node_changes) {
    nodes_[id].record = std::move(r);
    spdlog::warn("node {} is {}", id,
                 nodes_[id].record.health == api::NodeHealth::kUp ? "up" : "down");
  }
  for (const auto& id : plan.forget) {
    const auto& r = instances_.at(id);
    if (r.state == InstanceState::kFailed || r.state == InstanceState::kExited) {
      spdlog::warn("instance {} on {} {}{}{}", id, r.node, api::to_string(r.state),
                   r.message.empty() ? "" : ": ", r.message);
    }
    instances_.erase(id);
  }
  for (auto& r : stopped) instances_[r.id] = std::move(r);
  for (auto& r : created) instances_[r.id] = std::move(r);
  if (metrics_) {
    metrics_->add("qufop_scheduler_instances_created_total", "",
                  static_cast<double>(created.size()));
    metrics_->add("qufop_scheduler_instances_stopped_total", "",
                  static_cast<double>(stopped.size()));
  }

  std::map<std::string, std::string> unschedulable;
  for (const auto& u : plan.unschedulable) {
    unschedulable[u.ufop] = unschedulable_text(plan, u.ufop);
  }
  for (const auto& [name, text] : unschedulable) {
    auto old = unschedulable_.find(name);
    if (old == unschedulable_.end() || old->second != text) spdlog::warn("UFOP {}: {}", name, text);
  }
  if (metrics_) {
    for (const auto& [name, u] : ufops_) {
      int64_t missing = 0;
      for (const auto& x : plan.unschedulable) missing += x.ufop == name ? x.missing : 0;
      metrics_->set("qufop_scheduler_unschedulable", "ufop=\"" + name + "\"",
                    static_cast<double>(missing));
    }
  }
  unschedulable_ = std::move(unschedulable);
  take_crash_loops_locked(std::move(plan.crash_loops), now);
  if (report_for) {
    ScaleResult result;
    for (const auto& u : plan.unschedulable) {
      if (u.ufop == ufop) result.unschedulable += u.missing;
    }
    result.reason = unschedulable_text(plan, ufop);
    *report_for = result;
  }
  if (!touched.empty()) bump_locked(touched);
  return ok();
}

namespace {

std::string version_labels(const CrashLoop& c) {
  return "ufop=\"" + c.ufop + "\",version=\"" + std::to_string(c.version) + "\"";
}

// A new crash step: not in the old state, or with another count or time.
bool is_new_step(const std::vector<CrashLoop>& old, const CrashLoop& c) {
  return std::none_of(old.begin(), old.end(), [&](const CrashLoop& o) {
    return o.ufop == c.ufop && o.version == c.version && o.crashes == c.crashes &&
           o.last_crash_ms == c.last_crash_ms;
  });
}

}  // namespace

void Controller::take_crash_loops_locked(std::vector<CrashLoop> next, int64_t now) {
  next_hold_ms_ = 0;
  for (const CrashLoop& c : next) {
    if (c.hold_until_ms > now && (next_hold_ms_ == 0 || c.hold_until_ms < next_hold_ms_)) {
      next_hold_ms_ = c.hold_until_ms;
    }
    if (!is_new_step(crash_loops_, c)) continue;
    if (metrics_) metrics_->add("qufop_scheduler_crash_steps_total", "ufop=\"" + c.ufop + "\"");
    if (c.hold_until_ms > 0) {
      spdlog::info(
          "UFOP {} version {} is crash-looping ({} crashes in a row): next instance in {} s",
          c.ufop, c.version, c.crashes, (c.hold_until_ms - c.last_crash_ms) / 1000.0);
    }
  }
  // Versions that left the state (quiet long enough) read 0 again.
  for (CrashLoop& old : crash_loops_) {
    old.hold_until_ms = 0;
    set_backoff_metric_locked(old, now);
  }
  crash_loops_ = std::move(next);
  for (const CrashLoop& c : crash_loops_) set_backoff_metric_locked(c, now);
}

void Controller::set_backoff_metric_locked(const CrashLoop& c, int64_t now) {
  if (!metrics_) return;
  double left = static_cast<double>(std::max<int64_t>(c.hold_until_ms - now, 0)) / 1000.0;
  metrics_->set("qufop_scheduler_backoff_seconds", version_labels(c), left);
}

// ---- the public operations ----

Result<api::UfopRecord> Controller::register_ufop(api::UfopRecord ufop) {
  QF_TRY(api::check_ufop_name(ufop.name));
  std::lock_guard lock(mu_);
  ufop.created_ms = now_ms();
  ufop.latest_version = 0;
  ufop.desired.clear();
  auto created = store_.create(api::ufop_key(ufop.name), api::to_json(ufop));
  if (!created) return created.error();
  if (!*created) {
    return Error{"already_exists", "UFOP '" + ufop.name + "' is already registered", 0};
  }
  ufops_[ufop.name] = ufop;
  return ufop;
}

Result<void> Controller::unregister_ufop(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = ufops_.find(name);
  if (it == ufops_.end()) return not_found("no UFOP named '" + name + "'");
  for (const auto& [id, r] : instances_) {
    if (r.ufop == name) {
      return Error{
          "conflict",
          "UFOP '" + name + "' still has instances: resize it to 0 and wait for them to stop", 0};
    }
  }
  Batch batch;
  batch.erase(api::ufop_key(name));
  for (const auto& [v, record] : versions_[name]) batch.erase(api::version_key(name, v));
  if (auto w = store_.apply(batch); !w) return w.error();
  ufops_.erase(it);
  versions_.erase(name);
  unschedulable_.erase(name);
  // A UFOP registered again under this name starts without the old one's crashes.
  for (CrashLoop& c : crash_loops_) {
    if (c.ufop != name) continue;
    c.hold_until_ms = 0;
    set_backoff_metric_locked(c, 0);
  }
  std::erase_if(crash_loops_, [&](const CrashLoop& c) { return c.ufop == name; });
  return ok();
}

Result<api::VersionRecord> Controller::add_version(api::VersionRecord version) {
  std::lock_guard lock(mu_);
  auto it = ufops_.find(version.ufop);
  if (it == ufops_.end()) return not_found("no UFOP named '" + version.ufop + "'");
  api::UfopRecord ufop = it->second;
  if (version.version == 0) version.version = ufop.latest_version + 1;
  if (version.version < 1) return Error::invalid("version: must be at least 1");
  if (versions_[ufop.name].count(version.version)) {
    return Error{"already_exists",
                 "UFOP '" + ufop.name + "' already has version " + std::to_string(version.version),
                 0};
  }
  version.created_ms = now_ms();
  ufop.latest_version = std::max(ufop.latest_version, version.version);
  Batch batch;
  batch.put(api::version_key(ufop.name, version.version), api::to_json(version));
  batch.put(api::ufop_key(ufop.name), api::to_json(ufop));
  if (auto w = store_.apply(batch); !w) return w.error();
  versions_[ufop.name][version.version] = version;
  ufops_[ufop.name] = std::move(ufop);
  return version;
}

Result<ScaleResult> Controller::resize(const std::string& name, int64_t count, bool refuse) {
  if (count < 0)
    return Error::invalid("count: must not be negative (got " + std::to_string(count) + ")");
  std::lock_guard lock(mu_);
  auto it = ufops_.find(name);
  if (it == ufops_.end()) return not_found("no UFOP named '" + name + "'");
  api::UfopRecord ufop = it->second;
  if (ufop.desired.empty()) {
    if (ufop.latest_version == 0) {
      return Error{"conflict", "UFOP '" + name + "' has no version yet: build it first", 0};
    }
    ufop.desired[ufop.latest_version] = 0;
  }
  int64_t total = 0;
  for (const auto& [v, n] : ufop.desired) total += n;
  if (count >= total) {
    ufop.desired.rbegin()->second += count - total;
  } else {
    int64_t cut = total - count;
    for (auto& [v, n] : ufop.desired) {
      int64_t take = std::min(n, cut);
      n -= take;
      cut -= take;
    }
  }
  // Versions down to 0 leave the desired set, but the newest stays (it takes the next raise).
  for (auto d = ufop.desired.begin(); d != ufop.desired.end();) {
    bool newest = std::next(d) == ufop.desired.end();
    d = (d->second == 0 && !newest) ? ufop.desired.erase(d) : std::next(d);
  }
  return set_desired_locked(std::move(ufop), refuse);
}

Result<ScaleResult> Controller::upgrade(const std::string& name, int64_t replace, int64_t version) {
  std::lock_guard lock(mu_);
  auto it = ufops_.find(name);
  if (it == ufops_.end()) return not_found("no UFOP named '" + name + "'");
  if (!version_locked(name, version)) {
    return not_found("UFOP '" + name + "' has no version " + std::to_string(version));
  }
  api::UfopRecord ufop = it->second;
  int64_t others = 0;
  for (const auto& [v, n] : ufop.desired) others += v == version ? 0 : n;
  if (replace < 0) replace = others;
  if (replace == 0 && others == 0) {
    return Error{"conflict", "UFOP '" + name + "' has no instances of another version to replace",
                 0};
  }
  if (replace > others) {
    return Error::invalid("-r " + std::to_string(replace) + ": only " + std::to_string(others) +
                          " instances run another version than " + std::to_string(version));
  }
  // Take from the oldest versions first.
  int64_t left = replace;
  for (auto& [v, n] : ufop.desired) {
    if (v == version) continue;
    int64_t take = std::min(n, left);
    n -= take;
    left -= take;
  }
  ufop.desired[version] += replace;
  std::erase_if(ufop.desired, [&](const auto& d) { return d.second == 0 && d.first != version; });
  return set_desired_locked(std::move(ufop), false);
}

Result<ScaleResult> Controller::set_desired_locked(api::UfopRecord ufop, bool refuse) {
  if (refuse) {
    // A dry run over the view as it would be: nothing is written when not everything fits.
    auto ufops = ufops_;
    ufops[ufop.name] = ufop;
    auto plan = reconcile(build_state_locked(ufops), pass_);
    std::string why = unschedulable_text(plan, ufop.name);
    if (!why.empty()) return Error{"insufficient_capacity", why, 0};
  }
  Batch batch;
  batch.put(api::ufop_key(ufop.name), api::to_json(ufop));
  if (auto w = store_.apply(batch); !w) return w.error();
  std::string name = ufop.name;
  ufops_[name] = std::move(ufop);
  std::optional<ScaleResult> report;
  if (auto r = reconcile_locked(&report, name); !r) {
    spdlog::warn("reconcile after a change of {}: {}", name, r.error().message);
  }
  ScaleResult result = report.value_or(ScaleResult{});
  result.desired = ufops_[name].desired;
  return result;
}

Result<api::UfopRecord> Controller::ufop(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = ufops_.find(name);
  if (it == ufops_.end()) return not_found("no UFOP named '" + name + "'");
  return it->second;
}

std::vector<api::UfopRecord> Controller::ufops() {
  std::lock_guard lock(mu_);
  std::vector<api::UfopRecord> out;
  for (const auto& [name, u] : ufops_) out.push_back(u);
  return out;
}

Result<std::vector<api::VersionRecord>> Controller::versions(const std::string& name) {
  std::lock_guard lock(mu_);
  if (!ufops_.count(name)) return not_found("no UFOP named '" + name + "'");
  std::vector<api::VersionRecord> out;
  for (const auto& [v, r] : versions_[name]) out.push_back(r);
  return out;
}

Result<std::vector<api::InstanceRecord>> Controller::instances(const std::string& name) {
  std::lock_guard lock(mu_);
  if (!name.empty() && !ufops_.count(name)) return not_found("no UFOP named '" + name + "'");
  std::vector<api::InstanceRecord> out;
  for (const auto& [id, r] : instances_) {
    if (name.empty() || r.ufop == name) out.push_back(r);
  }
  return out;
}

std::vector<NodeInfo> Controller::nodes() {
  std::lock_guard lock(mu_);
  int64_t now = now_ms();
  std::vector<NodeInfo> out;
  for (const auto& [id, n] : nodes_) {
    NodeInfo info;
    info.record = n.record;
    if (n.reported_free.cpu_millis >= 0) info.record.free = n.reported_free;
    info.last_seen_ago_ms = now - n.last_seen_ms;
    for (const auto& [iid, r] : instances_) {
      if (r.node != id || api::is_terminal(r.state)) continue;
      ++info.instances;
      if (const auto* v = version_locked(r.ufop, r.version)) {
        info.allocated.cpu_millis += v->spec.cpu_millis;
        info.allocated.memory_bytes += v->spec.memory_bytes;
        info.allocated.ports += 1;
      }
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::string Controller::unschedulable(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = unschedulable_.find(name);
  return it == unschedulable_.end() ? "" : it->second;
}

std::string Controller::backoff(const std::string& name) {
  std::lock_guard lock(mu_);
  int64_t now = now_ms();
  std::string text;
  for (const CrashLoop& c : crash_loops_) {
    if (c.ufop != name || c.hold_until_ms <= now) continue;
    if (!text.empty()) text += "; ";
    char left[32];
    std::snprintf(left, sizeof left, "%.1f", static_cast<double>(c.hold_until_ms - now) / 1000.0);
    text += "version " + std::to_string(c.version) + " crash-looping (" +
            std::to_string(c.crashes) + " crashes in a row): next instance in " + left + " s";
  }
  return text;
}

Result<void> Controller::reconcile_now() {
  std::lock_guard lock(mu_);
  return reconcile_locked(nullptr, "");
}

const api::VersionRecord* Controller::version_locked(const std::string& ufop,
                                                     int64_t version) const {
  auto u = versions_.find(ufop);
  if (u == versions_.end()) return nullptr;
  auto v = u->second.find(version);
  return v == u->second.end() ? nullptr : &v->second;
}

std::string Controller::new_instance_id_locked(const std::string& ufop) {
  for (;;) {
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08x", static_cast<unsigned>(ids_() & 0xffffffffu));
    std::string id = ufop + "-" + hex;
    if (!instances_.count(id)) return id;
  }
}

}  // namespace qufop::scheduler

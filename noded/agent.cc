#include "noded/agent.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace qufop::noded {

using api::InstanceState;

Agent::Agent(InstanceRuntime& runtime, Executor work, Executor probes, Clock clock,
             AgentOptions options)
    : runtime_(runtime),
      work_(std::move(work)),
      probes_(std::move(probes)),
      clock_(std::move(clock)),
      options_(options) {}

void Agent::set_state(Instance& in, InstanceState s, std::string message) {
  if (in.status.state != s) {
    spdlog::info("instance {}: {} -> {}{}{}", in.status.id, api::to_string(in.status.state),
                 api::to_string(s), message.empty() ? "" : ": ", message);
  }
  in.status.state = s;
  in.status.message = std::move(message);
  in.status.since_ms = clock_();
  ++changes_;
  changed_cv_.notify_all();
}

void Agent::adopt(const std::vector<AdoptedInstance>& instances) {
  std::lock_guard lock(mu_);
  for (const auto& a : instances) {
    Instance in;
    in.assignment = a.assignment;
    in.status.id = a.assignment.id;
    in.status.ip = a.started.ip;
    in.status.host_port = a.started.host_port;
    if (a.exited) in.status.exit_code = a.exited->exit_code;
    auto [it, added] = instances_.emplace(a.assignment.id, std::move(in));
    if (!added) continue;
    if (a.exited) {
      set_state(it->second, InstanceState::kExited, a.exited->message);
    } else {
      set_state(it->second, InstanceState::kStarting, "adopted after a noded restart");
    }
  }
}

void Agent::set_assignments(const api::AssignmentList& list) {
  std::lock_guard lock(mu_);
  if (list.index < index_) return;
  index_ = list.index;
  desired_.clear();
  for (const auto& a : list.instances) desired_[a.id] = a;
}

int64_t Agent::assignments_index() const {
  std::lock_guard lock(mu_);
  return index_;
}

void Agent::step() {
  std::lock_guard lock(mu_);
  int64_t now = clock_();
  for (const auto& [id, a] : desired_) {
    if (instances_.count(id)) continue;
    Instance in;
    in.assignment = a;
    in.status.id = id;
    auto& added = instances_.emplace(id, std::move(in)).first->second;
    set_state(added, InstanceState::kPending);
    begin_start(added);
  }
  for (auto it = instances_.begin(); it != instances_.end();) {
    Instance& in = it->second;
    // Before the first assignment list (a restart), everything adopted counts as assigned.
    bool assigned = index_ < 0 || desired_.count(it->first) > 0;
    if (!assigned && api::is_terminal(in.status.state) && in.final_reported && !in.busy) {
      runtime_.forget(it->first);
      it = instances_.erase(it);
      ++changes_;
      continue;
    }
    step_one(in, assigned, now);
    ++it;
  }
}

void Agent::step_one(Instance& in, bool assigned, int64_t now) {
  if (in.busy) return;
  switch (in.status.state) {
    case InstanceState::kStarting:
    case InstanceState::kRunning:
    case InstanceState::kUnhealthy:
      if (auto e = runtime_.exited(in.status.id)) {
        in.status.exit_code = e->exit_code;
        set_state(in, InstanceState::kExited, e->message);
        return;
      }
      if (!assigned) {
        // The gate sees cooling and drains it before the stop begins.
        in.cool_until_ms = now + options_.cooling.count();
        set_state(in, InstanceState::kCooling);
        return;
      }
      if (!in.probing && now >= in.next_probe_ms) begin_probe(in, now);
      return;
    case InstanceState::kCooling:
      if (assigned) {
        set_state(in, InstanceState::kStarting, "assigned again while cooling");
        return;
      }
      if (now >= in.cool_until_ms) begin_stop(in);
      return;
    default:
      return;
  }
}

void Agent::begin_start(Instance& in) {
  in.busy = true;
  std::string id = in.status.id;
  api::Assignment a = in.assignment;
  work_([this, id, a] {
    {
      std::lock_guard lock(mu_);
      auto it = instances_.find(id);
      if (it != instances_.end()) set_state(it->second, InstanceState::kPulling);
    }
    finish_start(id, runtime_.start(a));
  });
}

void Agent::finish_start(const std::string& id, Result<StartedInstance> r) {
  std::lock_guard lock(mu_);
  auto it = instances_.find(id);
  if (it == instances_.end()) return;
  Instance& in = it->second;
  in.busy = false;
  if (!r.ok()) {
    set_state(in, InstanceState::kFailed, r.error().message);
    return;
  }
  in.status.ip = r->ip;
  in.status.host_port = r->host_port;
  in.next_probe_ms = 0;
  in.failures = 0;
  set_state(in, InstanceState::kStarting);
}

void Agent::begin_stop(Instance& in) {
  in.busy = true;
  set_state(in, InstanceState::kStopping);
  std::string id = in.status.id;
  auto stop_wait = std::chrono::milliseconds(in.assignment.spec.stop_wait_ms);
  work_([this, id, stop_wait] { finish_stop(id, runtime_.stop(id, stop_wait)); });
}

void Agent::finish_stop(const std::string& id, Result<ExitInfo> r) {
  std::lock_guard lock(mu_);
  auto it = instances_.find(id);
  if (it == instances_.end()) return;
  Instance& in = it->second;
  in.busy = false;
  in.status.host_port = 0;
  if (!r.ok()) {
    set_state(in, InstanceState::kFailed, "stopping: " + r.error().message);
    return;
  }
  in.status.exit_code = r->exit_code;
  set_state(in, InstanceState::kExited, r->message);
}

void Agent::begin_probe(Instance& in, int64_t now) {
  in.probing = true;
  in.next_probe_ms = now;  // finish_probe schedules the next one from when this one ends
  std::string id = in.status.id;
  api::InstanceSpec spec = in.assignment.spec;
  probes_([this, id, spec] { finish_probe(id, runtime_.probe(id, spec)); });
}

void Agent::finish_probe(const std::string& id, bool healthy) {
  std::lock_guard lock(mu_);
  auto it = instances_.find(id);
  if (it == instances_.end()) return;
  Instance& in = it->second;
  in.probing = false;
  InstanceState s = in.status.state;
  if (s != InstanceState::kStarting && s != InstanceState::kRunning &&
      s != InstanceState::kUnhealthy) {
    return;  // cooling or gone meanwhile: the result is stale
  }
  if (healthy) {
    in.failures = 0;
    if (s != InstanceState::kRunning) set_state(in, InstanceState::kRunning);
  } else if (++in.failures >= options_.unhealthy_after && s == InstanceState::kRunning) {
    set_state(in, InstanceState::kUnhealthy,
              std::to_string(in.failures) + " health checks failed in a row");
  }
  bool starting = in.status.state == InstanceState::kStarting;
  in.next_probe_ms =
      clock_() + (starting ? options_.probe_starting : options_.probe_running).count();
}

std::vector<api::InstanceStatus> Agent::report() {
  std::lock_guard lock(mu_);
  std::vector<api::InstanceStatus> out;
  for (auto& [id, in] : instances_) {
    out.push_back(in.status);
    bool assigned = index_ < 0 || desired_.count(id) > 0;
    if (!assigned && api::is_terminal(in.status.state)) in.final_reported = true;
  }
  return out;
}

std::vector<api::InstanceStatus> Agent::snapshot() const {
  std::lock_guard lock(mu_);
  std::vector<api::InstanceStatus> out;
  for (const auto& [id, in] : instances_) out.push_back(in.status);
  return out;
}

Held Agent::held() const {
  std::lock_guard lock(mu_);
  Held h;
  for (const auto& [id, in] : instances_) {
    if (api::is_terminal(in.status.state)) continue;
    h.cpu_millis += in.assignment.spec.cpu_millis;
    h.memory_bytes += in.assignment.spec.memory_bytes;
    if (in.status.host_port != 0) ++h.ports;
  }
  return h;
}

std::vector<std::string> Agent::active_ids() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [id, in] : instances_) {
    if (!api::is_terminal(in.status.state)) out.push_back(id);
  }
  return out;
}

bool Agent::wait_for_change(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  bool changed = changed_cv_.wait_for(lock, timeout, [this] { return changes_ != seen_changes_; });
  seen_changes_ = changes_;
  return changed;
}

}  // namespace qufop::noded

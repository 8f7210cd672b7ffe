#include "scheduler/reconcile.h"

#include <algorithm>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace qufop::scheduler {

namespace {

using VersionKey = std::pair<std::string, int64_t>;  // (ufop, version)

// Everything the pass knows about one (ufop, version).
struct Group {
  std::vector<int> live;  // indexes into state.instances
  const DesiredVersion* desired = nullptr;
  bool invalid = false;  // a bad desired entry: leave its instances alone
};

struct UfopTotals {
  int running = 0;  // live and "running", all versions
  int64_t desired = 0;
};

bool is_done(std::string_view state) { return state == "exited" || state == "failed"; }

// Ended on its own: a stop the scheduler asked for or a node loss is not the program's fault.
bool is_crash(const InstanceView& inst, bool node_down) {
  return is_done(inst.state) && !inst.stop_requested && !node_down;
}

// Rule 1: node states for this pass.
void update_nodes(const ClusterState& state, std::vector<NodeView>& nodes, ReconcilePlan& plan) {
  for (NodeView& node : nodes) {
    bool silent = state.now_ms - node.last_seen_ms > state.node_timeout_ms;
    if (node.state != NodeState::kDown && silent) {
      node.state = NodeState::kDown;
      plan.nodes_down.push_back(node.id);
    } else if (node.state == NodeState::kDown && !silent) {
      node.state = NodeState::kUp;
      plan.nodes_up.push_back(node.id);
    }
    node.instances_per_ufop.clear();  // recomputed from the live instances
  }
}

std::string invalid_reason(const DesiredVersion& d) {
  PlacementRequest request{d.ufop, d.version, d.per_instance, d.count, {}, d.max_per_node};
  return validate(request);
}

class Pass {
 public:
  Pass(const ClusterState& state, uint64_t seed)
      : state_(state), seed_(seed), nodes_(state.nodes) {}

  ReconcilePlan run() {
    update_nodes(state_, nodes_, plan_);
    for (size_t i = 0; i < nodes_.size(); ++i)
      node_index_.emplace(nodes_[i].id, static_cast<int>(i));
    read_desired();
    classify_instances();
    count_crashes();
    choose_stops();
    place_missing();
    std::sort(plan_.nodes_down.begin(), plan_.nodes_down.end());
    std::sort(plan_.nodes_up.begin(), plan_.nodes_up.end());
    std::sort(plan_.stop.begin(), plan_.stop.end());
    std::sort(plan_.forget.begin(), plan_.forget.end());
    return std::move(plan_);
  }

 private:
  void read_desired() {
    for (const DesiredVersion& d : state_.desired) {
      std::string error = invalid_reason(d);
      Group& group = groups_[{d.ufop, d.version}];
      if (error.empty() && (group.desired != nullptr || group.invalid)) {
        // The first entry stands; the duplicate is reported and ignored.
        plan_.unschedulable.push_back(
            Unschedulable{d.ufop, d.version, 0, "invalid request: duplicate desired version"});
        continue;
      }
      if (!error.empty()) {
        group.invalid = true;
        plan_.unschedulable.push_back(Unschedulable{d.ufop, d.version, 0, error});
        continue;
      }
      group.desired = &d;
      totals_[d.ufop].desired += d.count;
    }
  }

  // Rules 2 and 3.
  void classify_instances() {
    for (size_t j = 0; j < state_.instances.size(); ++j) {
      const InstanceView& inst = state_.instances[j];
      auto found = node_index_.find(inst.node);
      int idx = found == node_index_.end() ? -1 : found->second;
      bool node_down = idx < 0 || nodes_[idx].state == NodeState::kDown;
      if (is_done(inst.state) || node_down) {
        if (is_crash(inst, node_down)) crashed_.insert({inst.ufop, inst.version});
        plan_.forget.push_back(inst.id);
        if (idx >= 0) release(nodes_[idx], inst.resources);
        continue;
      }
      if (inst.stop_requested || inst.state == "stopping") continue;
      groups_[{inst.ufop, inst.version}].live.push_back(static_cast<int>(j));
      ++nodes_[idx].instances_per_ufop[inst.ufop];
      if (inst.state == "running") ++totals_[inst.ufop].running;
    }
  }

  // Rule 2b: the crash state after this pass, in plan_.crash_loops (ordered by key).
  void count_crashes() {
    for (const CrashLoop& c : state_.crash_loops) {
      if (state_.now_ms - c.last_crash_ms >= kCrashResetMs) continue;  // quiet long enough
      CrashLoop& kept = crash_[{c.ufop, c.version}] = c;
      // A clock stepped back must not hold a version for longer than the cap.
      kept.hold_until_ms = std::min(kept.hold_until_ms, state_.now_ms + kCrashBackoffMaxMs);
    }
    for (const VersionKey& key : crashed_) {
      CrashLoop& c = crash_[key];
      c.ufop = key.first;
      c.version = key.second;
      c.crashes = std::clamp(c.crashes, 0, 1'000'000) + 1;  // bad input must not overflow
      c.last_crash_ms = state_.now_ms;
      int64_t delay = crash_backoff_ms(c.crashes);
      c.hold_until_ms = delay > 0 ? state_.now_ms + delay : 0;
    }
    for (const auto& [key, c] : crash_) plan_.crash_loops.push_back(c);
  }

  // The hold on placing instances of a version, or 0.
  int64_t held_until(const VersionKey& key) const {
    auto it = crash_.find(key);
    if (it == crash_.end() || it->second.hold_until_ms <= state_.now_ms) return 0;
    return it->second.hold_until_ms;
  }

  static void release(NodeView& node, const Resources& resources) {
    for (int r = 0; r < Resources::kCount; ++r) {
      node.allocated.at(r) = std::max<int64_t>(node.allocated.at(r) - resources.at(r), 0);
    }
  }

  int live_on_node(const InstanceView& inst) const {
    const NodeView& node = nodes_[node_index_.at(inst.node)];
    auto it = node.instances_per_ufop.find(inst.ufop);
    return it == node.instances_per_ufop.end() ? 0 : it->second;
  }

  // Rule 4. Groups are ordered by (ufop, version), so one UFOP's versions are adjacent and its
  // running extras are collected oldest version first.
  void choose_stops() {
    std::vector<int> running_extras;
    std::string ufop;
    for (auto it = groups_.begin(); it != groups_.end(); ++it) {
      if (it->first.first != ufop) {
        stop_running(ufop, running_extras);
        ufop = it->first.first;
      }
      Group& group = it->second;
      if (group.invalid) continue;
      int64_t want = group.desired == nullptr ? 0 : group.desired->count;
      int64_t extra = static_cast<int64_t>(group.live.size()) - want;
      if (extra <= 0) continue;
      for (int j : pick_for_stop(group.live, extra)) {
        const InstanceView& inst = state_.instances[j];
        if (inst.state == "running") {
          running_extras.push_back(j);
        } else {
          stop(j);
        }
      }
    }
    stop_running(ufop, running_extras);
  }

  // The `count` instances to stop, in order: not yet running first, then from the node with the
  // most live instances of the UFOP (counted as the picks go, so a scale-down keeps the spread),
  // then the newest, then the smallest id. Counts only fall as picks go, so a heap entry whose
  // count is stale is pushed again with the current one.
  std::vector<int> pick_for_stop(const std::vector<int>& live, int64_t count) {
    struct Key {
      bool running;
      int crowd;
      int64_t created_ms;
      const std::string* id;
      int index;
    };
    auto later = [](const Key& a, const Key& b) {  // true: b is stopped before a
      if (a.running != b.running) return a.running;
      if (a.crowd != b.crowd) return a.crowd < b.crowd;
      if (a.created_ms != b.created_ms) return a.created_ms < b.created_ms;
      return *a.id > *b.id;
    };
    std::vector<Key> heap;
    heap.reserve(live.size());
    for (int j : live) {
      const InstanceView& inst = state_.instances[j];
      heap.push_back({inst.state == "running", live_on_node(inst), inst.created_ms, &inst.id, j});
    }
    std::make_heap(heap.begin(), heap.end(), later);
    std::vector<int> picked;
    std::map<std::string, int> taken;  // picks per node so far
    while (static_cast<int64_t>(picked.size()) < count && !heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      Key top = heap.back();
      heap.pop_back();
      const InstanceView& inst = state_.instances[top.index];
      int crowd = live_on_node(inst) - taken[inst.node];
      if (crowd != top.crowd) {
        top.crowd = crowd;
        heap.push_back(top);
        std::push_heap(heap.begin(), heap.end(), later);
        continue;
      }
      ++taken[inst.node];
      picked.push_back(top.index);
    }
    return picked;
  }

  // Never below the count: keep the UFOP's running instances >= its total desired count.
  void stop_running(const std::string& ufop, std::vector<int>& extras) {
    if (extras.empty()) return;
    const UfopTotals& totals = totals_[ufop];
    int64_t budget = totals.running - totals.desired;
    for (size_t k = 0; k < extras.size() && static_cast<int64_t>(k) < budget; ++k) stop(extras[k]);
    extras.clear();
  }

  void stop(int j) {
    const InstanceView& inst = state_.instances[j];
    plan_.stop.push_back(inst.id);
    --nodes_[node_index_.at(inst.node)].instances_per_ufop[inst.ufop];  // spread ignores it
  }

  // Rule 5.
  void place_missing() {
    Placer placer(&nodes_, seed_);
    for (const auto& [key, group] : groups_) {
      if (group.invalid || group.desired == nullptr) continue;
      const DesiredVersion& d = *group.desired;
      int missing = d.count - static_cast<int>(group.live.size());
      if (missing <= 0) continue;
      if (int64_t until = held_until(key); until > 0) {
        plan_.held_back.push_back(
            HeldBack{d.ufop, d.version, missing, until, crash_.at(key).crashes});
        continue;
      }
      PlacementRequest request{d.ufop,  d.version,         d.per_instance,
                               missing, d.required_labels, d.max_per_node};
      PlacementPlan placed = placer.place(request);
      for (const std::string& node : placed.nodes) {
        plan_.create.push_back(NewInstance{d.ufop, d.version, node, d.per_instance});
      }
      if (placed.unplaced > 0) {
        plan_.unschedulable.push_back(
            Unschedulable{d.ufop, d.version, placed.unplaced, placed.reason});
      }
    }
  }

  const ClusterState& state_;
  uint64_t seed_;
  std::vector<NodeView> nodes_;
  std::unordered_map<std::string, int> node_index_;
  std::map<VersionKey, Group> groups_;
  std::unordered_map<std::string, UfopTotals> totals_;
  std::set<VersionKey> crashed_;           // versions with a crash in this pass
  std::map<VersionKey, CrashLoop> crash_;  // crash state after this pass
  ReconcilePlan plan_;
};

}  // namespace

int64_t crash_backoff_ms(int crashes) {
  if (crashes <= 1) return 0;
  int shift = crashes - 2;
  // 2^20 s is far past the cap: checked before shifting so that no count overflows.
  if (shift >= 20) return kCrashBackoffMaxMs;
  return std::min(kCrashBackoffBaseMs << shift, kCrashBackoffMaxMs);
}

ReconcilePlan reconcile(const ClusterState& state, uint64_t seed) {
  return Pass(state, seed).run();
}

}  // namespace qufop::scheduler

// The simulated cluster: 1,000 in-process fake nodes on a fake clock, ~500 UFOPs with 20,000
// instances, reconciled every period the way the daemon does it (records, creates -> pending,
// stops -> stop_requested, forgets erased). Then 10% of the nodes die: after node_timeout every
// desired instance must be placed again and live within two reconcile periods, none on a dead
// node, no node over capacity.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "scheduler/reconcile.h"

namespace qufop::scheduler {
namespace {

constexpr int64_t kPeriodMs = 1000;
constexpr int64_t kTimeoutMs = 10000;

class SimCluster {
 public:
  explicit SimCluster(uint64_t seed) : rng_(seed) {
    state_.node_timeout_ms = kTimeoutMs;
    for (int i = 0; i < 1000; ++i) {
      NodeView n;
      n.id = "node-" + std::to_string(i);
      n.capacity = Resources{16000, int64_t{64} << 30, int64_t{500} << 30, 2000};
      n.labels["zone"] = i % 2 ? "a" : "b";
      state_.nodes.push_back(std::move(n));
      alive_.push_back(true);
    }
    int total = 0;
    for (int u = 0; total < 20000; ++u) {
      DesiredVersion d;
      d.ufop = "ufop-" + std::to_string(u);
      d.version = 1;
      d.count = std::min(10 + static_cast<int>(rng_() % 61), 20000 - total);  // ~500 UFOPs
      d.per_instance = Resources{100 + static_cast<int64_t>(rng_() % 400),
                                 (int64_t{128} << 20) * (1 + static_cast<int64_t>(rng_() % 8)),
                                 int64_t{1} << 30, 1};
      if (u % 50 == 0) d.max_per_node = 1;
      if (u % 70 == 0) d.required_labels["zone"] = "a";
      total += d.count;
      state_.desired.push_back(std::move(d));
    }
  }

  // One period: the fake nodes report, then one reconcile pass is applied.
  ReconcilePlan period() {
    state_.now_ms += kPeriodMs;
    heartbeat();
    fill_allocated();
    ReconcilePlan plan = reconcile(state_, seed_++);
    apply(plan);
    return plan;
  }

  void kill(int fraction_percent) {
    std::vector<int> order(alive_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    std::shuffle(order.begin(), order.end(), rng_);
    for (size_t k = 0; k < order.size() * fraction_percent / 100; ++k) {
      alive_[order[k]] = false;
      dead_.insert(state_.nodes[order[k]].id);
    }
  }

  // Every desired instance has a live record on an alive node, running; no node over capacity.
  ::testing::AssertionResult converged() const {
    std::unordered_map<std::string, int> live;
    std::unordered_map<std::string, Resources> used;
    for (const InstanceView& i : state_.instances) {
      if (i.stop_requested) continue;
      if (dead_.count(i.node))
        return ::testing::AssertionFailure() << i.id << " on dead " << i.node;
      if (i.state != "running") return ::testing::AssertionFailure() << i.id << " is " << i.state;
      ++live[i.ufop];
      used[i.node].add(i.resources);
    }
    for (const DesiredVersion& d : state_.desired) {
      if (live[d.ufop] != d.count) {
        return ::testing::AssertionFailure() << d.ufop << ": " << live[d.ufop] << "/" << d.count;
      }
    }
    for (const NodeView& n : state_.nodes) {
      if (!used[n.id].fits(n.capacity)) return ::testing::AssertionFailure() << n.id << " over";
    }
    return ::testing::AssertionSuccess();
  }

  size_t instances() const { return state_.instances.size(); }
  int64_t now() const { return state_.now_ms; }

 private:
  // Alive nodes report: seen now; what was assigned runs; what was asked to stop is gone.
  void heartbeat() {
    std::unordered_map<std::string, int> index;
    for (size_t i = 0; i < state_.nodes.size(); ++i)
      index[state_.nodes[i].id] = static_cast<int>(i);
    for (size_t i = 0; i < state_.nodes.size(); ++i) {
      if (alive_[i]) state_.nodes[i].last_seen_ms = state_.now_ms;
    }
    for (InstanceView& inst : state_.instances) {
      if (!alive_[index.at(inst.node)]) continue;
      inst.state = inst.stop_requested ? "exited" : "running";
    }
  }

  void fill_allocated() {
    std::unordered_map<std::string, Resources> used;
    for (const InstanceView& i : state_.instances) used[i.node].add(i.resources);
    for (NodeView& n : state_.nodes) n.allocated = used[n.id];
  }

  void apply(const ReconcilePlan& plan) {
    std::unordered_map<std::string, NodeView*> by_id;
    for (NodeView& n : state_.nodes) by_id[n.id] = &n;
    for (const auto& id : plan.nodes_down) by_id.at(id)->state = NodeState::kDown;
    for (const auto& id : plan.nodes_up) by_id.at(id)->state = NodeState::kUp;
    std::unordered_set<std::string> stop(plan.stop.begin(), plan.stop.end());
    std::unordered_set<std::string> forget(plan.forget.begin(), plan.forget.end());
    for (InstanceView& i : state_.instances) {
      if (stop.count(i.id)) i.stop_requested = true, i.state = "cooling";
    }
    std::erase_if(state_.instances, [&](const InstanceView& i) { return forget.count(i.id) > 0; });
    for (const NewInstance& c : plan.create) {
      InstanceView i;
      i.id = "i-" + std::to_string(next_id_++);
      i.ufop = c.ufop;
      i.version = c.version;
      i.node = c.node;
      i.state = "pending";
      i.created_ms = state_.now_ms;
      i.resources = c.resources;
      state_.instances.push_back(std::move(i));
    }
  }

  std::mt19937_64 rng_;
  uint64_t seed_ = 1;
  int next_id_ = 0;
  ClusterState state_;
  std::vector<bool> alive_;
  std::set<std::string> dead_;
};

TEST(SchedulerSim, KillTenPercentOfThousandNodesAllInstancesRePlacedWithinTwoPeriods) {
  SimCluster sim(2024);
  ReconcilePlan first = sim.period();
  EXPECT_EQ(first.create.size(), 20000u);
  EXPECT_TRUE(first.unschedulable.empty());
  sim.period();  // the nodes run what was assigned
  ASSERT_TRUE(sim.converged());
  ReconcilePlan quiet = sim.period();
  EXPECT_TRUE(quiet.create.empty() && quiet.stop.empty() && quiet.forget.empty());

  sim.kill(10);
  int64_t killed_at = sim.now();
  // Before the timeout nothing changes: the silent nodes still count.
  ReconcilePlan p;
  while (true) {
    p = sim.period();
    if (!p.nodes_down.empty()) break;
    EXPECT_TRUE(p.create.empty()) << "at " << sim.now() - killed_at;
    ASSERT_LE(sim.now() - killed_at, kTimeoutMs + kPeriodMs);
  }
  EXPECT_EQ(p.nodes_down.size(), 100u);
  EXPECT_GT(p.forget.size(), 1000u);
  EXPECT_EQ(p.create.size(), p.forget.size());
  EXPECT_TRUE(p.unschedulable.empty()) << p.unschedulable[0].reason;
  sim.period();  // second period: the replacements run
  EXPECT_TRUE(sim.converged());
  EXPECT_EQ(sim.instances(), 20000u);
}

}  // namespace
}  // namespace qufop::scheduler

// The reconcile core, rule by rule (scheduler/reconcile.h), and a gray upgrade driven step by
// step with the plan applied between passes as the daemon would.
#include "scheduler/reconcile.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace qufop::scheduler {
namespace {

constexpr int64_t kNow = 1'000'000;
const Resources kSmall{100, 64 << 20, 0, 1};

NodeView node(std::string id, int64_t last_seen = kNow) {
  NodeView n;
  n.id = std::move(id);
  n.capacity = Resources{4000, int64_t{8} << 30, int64_t{100} << 30, 100};
  n.last_seen_ms = last_seen;
  return n;
}

InstanceView inst(std::string id, std::string ufop, int64_t version, std::string on,
                  std::string state = "running", int64_t created = 0) {
  InstanceView i;
  i.id = std::move(id);
  i.ufop = std::move(ufop);
  i.version = version;
  i.node = std::move(on);
  i.state = std::move(state);
  i.created_ms = created;
  i.resources = kSmall;
  return i;
}

DesiredVersion want(std::string ufop, int64_t version, int count) {
  DesiredVersion d;
  d.ufop = std::move(ufop);
  d.version = version;
  d.count = count;
  d.per_instance = kSmall;
  return d;
}

ClusterState three_nodes() {
  ClusterState s;
  s.now_ms = kNow;
  s.nodes = {node("a"), node("b"), node("c")};
  return s;
}

// What the daemon keeps: allocated = the requests of every record on the node.
void fill_allocated(ClusterState& s) {
  for (NodeView& n : s.nodes) {
    n.allocated = {};
    for (const InstanceView& i : s.instances) {
      if (i.node == n.id) n.allocated.add(i.resources);
    }
  }
}

std::map<std::string, int> creates_per_node(const ReconcilePlan& p) {
  std::map<std::string, int> out;
  for (const auto& c : p.create) ++out[c.node];
  return out;
}

TEST(SchedulerReconcile, SilentNodeGoesDownAndItsInstancesAreReplacedAndForgotten) {
  ClusterState s = three_nodes();
  s.nodes[0].last_seen_ms = kNow - 10001;
  s.instances = {inst("i1", "web", 1, "a"), inst("i2", "web", 1, "a"), inst("i3", "web", 1, "b"),
                 inst("i4", "web", 1, "c")};
  s.desired = {want("web", 1, 4)};
  fill_allocated(s);
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_EQ(p.nodes_down, std::vector<std::string>{"a"});
  EXPECT_EQ(p.forget, (std::vector<std::string>{"i1", "i2"}));
  ASSERT_EQ(p.create.size(), 2u);
  EXPECT_EQ(creates_per_node(p), (std::map<std::string, int>{{"b", 1}, {"c", 1}}));
  EXPECT_TRUE(p.stop.empty());
  EXPECT_TRUE(p.unschedulable.empty());

  // Exactly at the timeout the node is still up.
  s.nodes[0].last_seen_ms = kNow - 10000;
  ReconcilePlan q = reconcile(s, 1);
  EXPECT_TRUE(q.nodes_down.empty());
  EXPECT_TRUE(q.create.empty());
  EXPECT_TRUE(q.forget.empty());
}

TEST(SchedulerReconcile, InstancesOnAMarkedDownNodeNeverCountAsLive) {
  ClusterState s = three_nodes();
  s.nodes[2].state = NodeState::kDown;
  s.nodes[2].last_seen_ms = kNow - 60000;
  s.instances = {inst("i1", "web", 1, "c"), inst("i2", "web", 1, "gone")};
  s.desired = {want("web", 1, 2)};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_TRUE(p.nodes_down.empty());  // already down
  EXPECT_EQ(p.forget, (std::vector<std::string>{"i1", "i2"}));
  EXPECT_EQ(creates_per_node(p), (std::map<std::string, int>{{"a", 1}, {"b", 1}}));
}

TEST(SchedulerReconcile, DownNodeSeenAgainComesUpAndTakesWork) {
  ClusterState s = three_nodes();
  s.nodes[1].state = NodeState::kDown;  // heartbeat arrived since
  s.desired = {want("web", 1, 3)};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_EQ(p.nodes_up, std::vector<std::string>{"b"});
  EXPECT_EQ(creates_per_node(p), (std::map<std::string, int>{{"a", 1}, {"b", 1}, {"c", 1}}));
}

TEST(SchedulerReconcile, DrainingNodeKeepsItsInstancesButTakesNoNewOnes) {
  ClusterState s = three_nodes();
  s.nodes[0].state = NodeState::kDraining;
  s.instances = {inst("i1", "web", 1, "a")};
  s.desired = {want("web", 1, 3)};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_TRUE(p.forget.empty());
  EXPECT_EQ(creates_per_node(p), (std::map<std::string, int>{{"b", 1}, {"c", 1}}));
  s.nodes[0].last_seen_ms = 0;  // and a silent draining node goes down
  EXPECT_EQ(reconcile(s, 1).nodes_down, std::vector<std::string>{"a"});
}

TEST(SchedulerReconcile, FailedAndExitedAreForgottenAndReplacedOnFreedCapacity) {
  ClusterState s;
  s.now_ms = kNow;
  s.nodes = {node("a")};
  s.nodes[0].capacity.cpu_millis = 200;  // room for two
  s.instances = {inst("i1", "web", 1, "a", "failed"), inst("i2", "web", 1, "a", "exited"),
                 inst("i3", "web", 1, "a", "stopping")};
  s.instances[2].stop_requested = true;
  s.instances[2].resources = {};
  s.desired = {want("web", 1, 2)};
  fill_allocated(s);
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_EQ(p.forget, (std::vector<std::string>{"i1", "i2"}));
  EXPECT_EQ(p.create.size(), 2u);  // the failed ones' resources are free again in this pass
  EXPECT_TRUE(p.unschedulable.empty());
  EXPECT_TRUE(p.stop.empty());  // i3 is stopping already
}

TEST(SchedulerReconcile, TooFewPlacesMissingWithSpreadOverExisting) {
  ClusterState s = three_nodes();
  s.instances = {inst("i1", "web", 1, "a"), inst("i2", "web", 1, "a", "pending"),
                 inst("i3", "web", 2, "b")};  // another version counts for spread too
  s.desired = {want("web", 1, 4), want("web", 2, 1)};
  ReconcilePlan p = reconcile(s, 7);
  // c first (none there), then b and c tie on spread (one each); b has more room left.
  EXPECT_EQ(creates_per_node(p), (std::map<std::string, int>{{"b", 1}, {"c", 1}}));
  for (const auto& c : p.create) {
    EXPECT_EQ(c.ufop, "web");
    EXPECT_EQ(c.version, 1);
    EXPECT_EQ(c.resources, kSmall);
  }
}

TEST(SchedulerReconcile, TooManyStopsNotRunningFirstThenCrowdedNodeThenNewest) {
  ClusterState s = three_nodes();
  s.instances = {
      inst("old", "web", 1, "a", "running", 100),      inst("new", "web", 1, "b", "running", 500),
      inst("starting", "web", 1, "c", "starting", 50), inst("tie-c", "web", 1, "c", "running", 300),
      inst("tie-a", "web", 1, "a", "running", 300),    inst("x", "web", 1, "a", "running", 10)};
  s.desired = {want("web", 1, 3)};
  ReconcilePlan p = reconcile(s, 1);
  // starting (not running), then from a (3 live there) its newest, tie-a, then a again (2 live
  // there, 1 on b and c) its newest left, old: one per node stays.
  EXPECT_EQ(p.stop, (std::vector<std::string>{"old", "starting", "tie-a"}));
  EXPECT_TRUE(p.create.empty());
}

TEST(SchedulerReconcile, PlainResizeDownStopsAtOnce) {
  ClusterState s = three_nodes();
  for (int i = 0; i < 6; ++i) {
    s.instances.push_back(
        inst("i" + std::to_string(i), "web", 1, "abc"[i % 3] + std::string(), "running", i));
  }
  s.desired = {want("web", 1, 2)};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"i2", "i3", "i4", "i5"}));
  s.desired = {};  // the UFOP is gone
  EXPECT_EQ(reconcile(s, 1).stop.size(), 6u);
}

// The daemon's side of a pass, enough to drive the upgrade: creates become pending records,
// stops become stop_requested, forgets are erased.
void apply(ClusterState& s, const ReconcilePlan& p, int& next_id) {
  for (const auto& c : p.create) {
    s.instances.push_back(
        inst("n" + std::to_string(next_id++), c.ufop, c.version, c.node, "pending", s.now_ms));
  }
  std::set<std::string> stop(p.stop.begin(), p.stop.end());
  std::set<std::string> forget(p.forget.begin(), p.forget.end());
  for (auto& i : s.instances) {
    if (stop.count(i.id)) i.stop_requested = true, i.state = "cooling";
  }
  std::erase_if(s.instances, [&](const InstanceView& i) { return forget.count(i.id) > 0; });
}

int running(const ClusterState& s, int64_t version = -1) {
  return static_cast<int>(std::count_if(s.instances.begin(), s.instances.end(), [&](const auto& i) {
    return i.state == "running" && !i.stop_requested && (version < 0 || i.version == version);
  }));
}

TEST(SchedulerReconcile, GrayUpgradeNeverGoesBelowTheCount) {
  ClusterState s = three_nodes();
  for (int i = 0; i < 6; ++i) {
    s.instances.push_back(
        inst("v1-" + std::to_string(i), "web", 1, "abc"[i % 3] + std::string(), "running", i));
  }
  s.desired = {want("web", 1, 4), want("web", 2, 2)};  // upgrade -r 2 -v 2
  int next_id = 0;

  // Pass 1: both v2 are created at once, no v1 stops.
  ReconcilePlan p = reconcile(s, 3);
  ASSERT_EQ(p.create.size(), 2u);
  EXPECT_TRUE(p.stop.empty());
  apply(s, p, next_id);
  EXPECT_EQ(running(s), 6);

  // The new ones pull and start: still nothing to stop, nothing new to create.
  for (auto& i : s.instances) {
    if (i.version == 2) i.state = "starting";
  }
  p = reconcile(s, 3);
  EXPECT_TRUE(p.create.empty());
  EXPECT_TRUE(p.stop.empty());

  // One v2 runs: exactly one v1 may go.
  auto first_v2 = std::find_if(s.instances.begin(), s.instances.end(),
                               [](const auto& i) { return i.version == 2; });
  first_v2->state = "running";
  p = reconcile(s, 3);
  ASSERT_EQ(p.stop.size(), 1u);
  apply(s, p, next_id);
  EXPECT_GE(running(s), 6);
  EXPECT_EQ(running(s, 1), 5);

  // The stopped one is cooling (not live); a repeat pass does not stop more.
  p = reconcile(s, 3);
  EXPECT_TRUE(p.stop.empty());
  EXPECT_TRUE(p.create.empty());

  // The second v2 runs: the second v1 goes.
  for (auto& i : s.instances) {
    if (i.version == 2) i.state = "running";
  }
  p = reconcile(s, 3);
  ASSERT_EQ(p.stop.size(), 1u);
  apply(s, p, next_id);
  EXPECT_EQ(running(s), 6);
  EXPECT_EQ(running(s, 1), 4);
  EXPECT_EQ(running(s, 2), 2);

  // The node reports the two stopped v1 gone: forgotten, nothing else to do.
  for (auto& i : s.instances) {
    if (i.stop_requested) i.state = "exited";
  }
  p = reconcile(s, 3);
  EXPECT_EQ(p.forget.size(), 2u);
  EXPECT_TRUE(p.stop.empty());
  EXPECT_TRUE(p.create.empty());
  apply(s, p, next_id);
  EXPECT_EQ(s.instances.size(), 6u);
}

TEST(SchedulerReconcile, VersionNoLongerDesiredStopsOnlyWhenReplacementsRun) {
  ClusterState s = three_nodes();
  s.instances = {inst("v1a", "web", 1, "a"), inst("v1b", "web", 1, "b"),
                 inst("v2a", "web", 2, "c", "pending"), inst("v2b", "web", 2, "a", "pulling")};
  s.desired = {want("web", 2, 2)};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_TRUE(p.stop.empty());
  EXPECT_TRUE(p.create.empty());
  s.instances[2].state = "running";
  EXPECT_EQ(reconcile(s, 1).stop.size(), 1u);
  s.instances[3].state = "running";
  EXPECT_EQ(reconcile(s, 1).stop, (std::vector<std::string>{"v1a", "v1b"}));
}

TEST(SchedulerReconcile, StopRequestedIsNotLiveAndIsReplaced) {
  ClusterState s = three_nodes();
  s.instances = {inst("i1", "web", 1, "a"), inst("i2", "web", 1, "b"), inst("i3", "web", 1, "c")};
  s.instances[0].stop_requested = true;
  s.desired = {want("web", 1, 3)};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_TRUE(p.stop.empty());
  ASSERT_EQ(p.create.size(), 1u);
  EXPECT_EQ(p.create[0].node, "a");  // a has no live instance of web
}

TEST(SchedulerReconcile, UnschedulableIsReportedAndNodesAreNotOvercommitted) {
  ClusterState s = three_nodes();
  s.nodes[0].state = NodeState::kDraining;
  DesiredVersion big = want("big", 1, 5);
  big.per_instance = Resources{3000, 1 << 20, 0, 0};
  s.desired = {big};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_EQ(p.create.size(), 2u);
  ASSERT_EQ(p.unschedulable.size(), 1u);
  EXPECT_EQ(p.unschedulable[0].ufop, "big");
  EXPECT_EQ(p.unschedulable[0].missing, 3);
  EXPECT_EQ(p.unschedulable[0].reason, "0/3 nodes: 2 insufficient cpu, 1 draining");
}

TEST(SchedulerReconcile, InvalidDesiredIsReportedAndItsInstancesLeftAlone) {
  ClusterState s = three_nodes();
  s.instances = {inst("i1", "web", 1, "a")};
  s.desired = {want("web", 1, -1), want("api", 1, 1), want("api", 1, 5)};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_TRUE(p.stop.empty());
  ASSERT_EQ(p.unschedulable.size(), 2u);
  EXPECT_EQ(p.unschedulable[0].reason, "invalid request: count -1");
  EXPECT_EQ(p.unschedulable[1].reason, "invalid request: duplicate desired version");
  EXPECT_EQ(p.create.size(), 1u);  // the first api entry stands
}

TEST(SchedulerReconcile, DeterministicForInputAndSeed) {
  ClusterState s;
  s.now_ms = kNow;
  for (int i = 0; i < 40; ++i) s.nodes.push_back(node("n" + std::to_string(i)));
  for (int u = 0; u < 10; ++u) s.desired.push_back(want("u" + std::to_string(u), 1, 7));
  ReconcilePlan a = reconcile(s, 5);
  ReconcilePlan b = reconcile(s, 5);
  ASSERT_EQ(a.create.size(), 70u);
  for (size_t i = 0; i < a.create.size(); ++i) EXPECT_EQ(a.create[i].node, b.create[i].node);
  std::reverse(s.nodes.begin(), s.nodes.end());
  ReconcilePlan c = reconcile(s, 5);
  for (size_t i = 0; i < a.create.size(); ++i) EXPECT_EQ(a.create[i].node, c.create[i].node);
}

// ---- crash-loop backoff (rule 2b): time is driven by hand, the state carried as the daemon does

// The clock moves to `t`; the nodes are heard from at `t` (they stay up).
void at(ClusterState& s, int64_t t) {
  s.now_ms = t;
  for (NodeView& n : s.nodes) n.last_seen_ms = t;
}

// One pass with the daemon's side applied, the crash state carried into the next one.
ReconcilePlan pass(ClusterState& s, int& next_id) {
  ReconcilePlan p = reconcile(s, 1);
  apply(s, p, next_id);
  s.crash_loops = p.crash_loops;
  return p;
}

// Every live instance of web ends on its own.
void crash_all(ClusterState& s, const char* how = "failed") {
  for (auto& i : s.instances) {
    if (!i.stop_requested) i.state = how;
  }
}

ClusterState one_web_instance() {
  ClusterState s;
  s.now_ms = kNow;
  s.nodes = {node("a")};
  s.instances = {inst("i1", "web", 1, "a")};
  s.desired = {want("web", 1, 1)};
  return s;
}

TEST(SchedulerReconcile, CrashLoopFirstCrashIsReplacedAtOnce) {
  ClusterState s = one_web_instance();
  s.instances[0].state = "exited";
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_EQ(p.forget, std::vector<std::string>{"i1"});
  EXPECT_EQ(p.create.size(), 1u);
  EXPECT_TRUE(p.held_back.empty());
  ASSERT_EQ(p.crash_loops.size(), 1u);
  EXPECT_EQ(p.crash_loops[0].ufop, "web");
  EXPECT_EQ(p.crash_loops[0].version, 1);
  EXPECT_EQ(p.crash_loops[0].crashes, 1);
  EXPECT_EQ(p.crash_loops[0].last_crash_ms, kNow);
  EXPECT_EQ(p.crash_loops[0].hold_until_ms, 0);
}

TEST(SchedulerReconcile, CrashLoopRepeatedCrashesAreDelayedOneTwoFourSeconds) {
  ClusterState s = one_web_instance();
  int next_id = 0;
  int64_t t = kNow;
  for (int64_t delay : {0, 1000, 2000, 4000, 8000, 16000}) {
    crash_all(s);
    at(s, t);
    ReconcilePlan p = pass(s, next_id);
    if (delay == 0) {
      EXPECT_EQ(p.create.size(), 1u) << "the first crash is replaced at once";
    } else {
      EXPECT_TRUE(p.create.empty()) << "delay " << delay;
      ASSERT_EQ(p.held_back.size(), 1u);
      EXPECT_EQ(p.held_back[0].ufop, "web");
      EXPECT_EQ(p.held_back[0].missing, 1);
      EXPECT_EQ(p.held_back[0].until_ms, t + delay);
      // Still held a millisecond before, and the hold is not a new step.
      at(s, t + delay - 1);
      p = pass(s, next_id);
      EXPECT_TRUE(p.create.empty());
      ASSERT_EQ(p.held_back.size(), 1u);
      EXPECT_EQ(p.held_back[0].until_ms, t + delay);
      // Placed once the delay is over.
      at(s, t + delay);
      p = pass(s, next_id);
      EXPECT_EQ(p.create.size(), 1u) << "delay " << delay;
      EXPECT_TRUE(p.held_back.empty());
    }
    t += delay + 500;  // the replacement crashes half a second after it was placed
  }
  EXPECT_EQ(s.crash_loops.at(0).crashes, 6);
}

TEST(SchedulerReconcile, CrashLoopDelayIsCappedAtFiveMinutes) {
  EXPECT_EQ(crash_backoff_ms(0), 0);
  EXPECT_EQ(crash_backoff_ms(1), 0);
  EXPECT_EQ(crash_backoff_ms(2), 1'000);
  EXPECT_EQ(crash_backoff_ms(10), 256'000);
  EXPECT_EQ(crash_backoff_ms(11), 300'000);
  EXPECT_EQ(crash_backoff_ms(1'000'000), 300'000);
  ClusterState s = one_web_instance();
  s.instances[0].state = "failed";
  s.crash_loops = {CrashLoop{"web", 1, 30, kNow - 300'000, kNow}};
  ReconcilePlan p = reconcile(s, 1);
  ASSERT_EQ(p.held_back.size(), 1u);
  EXPECT_EQ(p.held_back[0].until_ms, kNow + 300'000);
  EXPECT_EQ(p.held_back[0].crashes, 31);
  // A hold far in the future (the clock stepped back) waits no longer than the cap.
  s.instances.clear();
  s.crash_loops = {CrashLoop{"web", 1, 30, kNow, kNow + 3'600'000}};
  EXPECT_EQ(reconcile(s, 1).held_back.at(0).until_ms, kNow + 300'000);
}

TEST(SchedulerReconcile, CrashLoopCountResetsAfterTenQuietMinutes) {
  ClusterState s = one_web_instance();
  s.instances[0].state = "failed";
  // Ten minutes less a millisecond since the last crash: the count goes on.
  s.crash_loops = {CrashLoop{"web", 1, 5, kNow - kCrashResetMs + 1, 0}};
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_TRUE(p.create.empty());
  EXPECT_EQ(p.crash_loops.at(0).crashes, 6);
  // Ten quiet minutes: this crash is a first one again and is replaced at once.
  s.crash_loops = {CrashLoop{"web", 1, 5, kNow - kCrashResetMs, 0}};
  p = reconcile(s, 1);
  EXPECT_EQ(p.create.size(), 1u);
  EXPECT_TRUE(p.held_back.empty());
  EXPECT_EQ(p.crash_loops.at(0).crashes, 1);
  // With no crash at all, the state is dropped.
  s.instances[0].state = "running";
  EXPECT_TRUE(reconcile(s, 1).crash_loops.empty());
}

TEST(SchedulerReconcile, CrashLoopNodeDownLossesDoNotCount) {
  ClusterState s = three_nodes();
  s.nodes[0].last_seen_ms = kNow - 10001;  // a goes down in this pass
  s.instances = {inst("i1", "web", 1, "a"), inst("i2", "web", 1, "a", "failed"),
                 inst("i3", "web", 1, "b"), inst("i4", "web", 1, "gone", "exited")};
  s.desired = {want("web", 1, 4)};
  s.crash_loops = {CrashLoop{"web", 1, 3, kNow - 60'000, kNow - 56'000}};  // hold is over
  fill_allocated(s);
  ReconcilePlan p = reconcile(s, 1);
  EXPECT_EQ(p.forget, (std::vector<std::string>{"i1", "i2", "i4"}));
  EXPECT_EQ(p.create.size(), 3u);
  EXPECT_TRUE(p.held_back.empty());
  ASSERT_EQ(p.crash_loops.size(), 1u);
  EXPECT_EQ(p.crash_loops[0].crashes, 3);  // unchanged: no new step
  EXPECT_EQ(p.crash_loops[0].last_crash_ms, kNow - 60'000);
}

TEST(SchedulerReconcile, CrashLoopStopsForScaleDownAndUpgradeDoNotCount) {
  ClusterState s = three_nodes();
  int next_id = 0;
  s.instances = {inst("i1", "web", 1, "a"), inst("i2", "web", 1, "b"), inst("i3", "web", 1, "c")};
  s.desired = {want("web", 1, 1)};  // resize down to 1
  ReconcilePlan p = pass(s, next_id);
  ASSERT_EQ(p.stop.size(), 2u);
  for (auto& i : s.instances) {
    if (i.stop_requested) i.state = "exited";  // the node reports the stopped ones ended
  }
  // Upgrade to v2: the v2 instance runs, the v1 one is stopped and ends.
  s.desired = {want("web", 2, 1)};
  p = pass(s, next_id);
  EXPECT_EQ(p.forget.size(), 2u);
  EXPECT_TRUE(p.crash_loops.empty());
  ASSERT_EQ(p.create.size(), 1u);
  for (auto& i : s.instances) i.state = "running";
  p = pass(s, next_id);
  ASSERT_EQ(p.stop.size(), 1u);
  for (auto& i : s.instances) {
    if (i.stop_requested) i.state = "exited";
  }
  p = pass(s, next_id);
  EXPECT_EQ(p.forget.size(), 1u);
  EXPECT_TRUE(p.crash_loops.empty());
  EXPECT_TRUE(p.held_back.empty());
}

TEST(SchedulerReconcile, CrashLoopHoldsOnlyItsVersionAndStillCountsTowardTheTotal) {
  // Gray upgrade to a v2 that crash-loops: v2 is held, v1 keeps its instances (never below the
  // count), a crashed v1 is replaced at once, and a resize down still stops at once.
  ClusterState s = three_nodes();
  s.instances = {inst("v1a", "web", 1, "a"), inst("v1b", "web", 1, "b"),
                 inst("v1c", "web", 1, "c", "exited"), inst("v2a", "web", 2, "a", "failed")};
  s.instances[2].stop_requested = true;  // the upgrade stopped it before v2 began crashing
  s.desired = {want("web", 1, 2), want("web", 2, 1)};
  s.crash_loops = {CrashLoop{"web", 2, 4, kNow - 3000, 0}};
  ReconcilePlan p = reconcile(s, 1);
  ASSERT_EQ(p.held_back.size(), 1u);
  EXPECT_EQ(p.held_back[0].version, 2);
  EXPECT_EQ(p.held_back[0].until_ms, kNow + 8000);
  EXPECT_TRUE(p.create.empty());  // v1 has its 2 live
  EXPECT_TRUE(p.stop.empty());
  ASSERT_EQ(p.crash_loops.size(), 1u);
  EXPECT_EQ(p.crash_loops[0].crashes, 5);

  // v1 loses one more: replaced at once although v2 is held.
  s.instances = {inst("v1a", "web", 1, "a"), inst("v1b", "web", 1, "b", "failed")};
  s.crash_loops = p.crash_loops;
  s.desired = {want("web", 1, 2), want("web", 2, 1)};
  at(s, kNow + 1000);
  p = reconcile(s, 1);
  ASSERT_EQ(p.create.size(), 1u);
  EXPECT_EQ(p.create[0].version, 1);
  EXPECT_EQ(p.held_back.size(), 1u);

  // Resize down while held: the extra running v1 stops at once.
  s.instances = {inst("v1a", "web", 1, "a"), inst("v1b", "web", 1, "b")};
  s.desired = {want("web", 1, 1), want("web", 2, 0)};
  p = reconcile(s, 1);
  EXPECT_EQ(p.stop.size(), 1u);
  EXPECT_TRUE(p.held_back.empty());  // v2 misses nothing
}

}  // namespace
}  // namespace qufop::scheduler

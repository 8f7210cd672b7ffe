// The level-triggered decision core: desired counts vs what nodes report -> what to do now.
// A pure function of its input and a seed (no I/O, clocks, threads), called by the scheduler
// daemon every period and on every change; the daemon applies the plan through keeper and runs
// it again. Every rule below converges from any starting state.
//
// Rules, in the order they are applied:
//  1. Nodes. A node that is not down and was last seen more than node_timeout_ms before now_ms
//     goes down (nodes_down); a down node seen within node_timeout_ms comes up (nodes_up). A
//     draining node that falls silent goes down too; a draining node stays draining. The rest of
//     the pass uses these new states.
//  2. Records to forget (forget): instances in state "exited" or "failed" (the node is done with
//     them), and every instance on a node that is down or unknown (including an empty node id):
//     such an instance never counts as live; when its node comes back and still runs it, the
//     record is gone and the daemon has the node stop it. Forgotten instances are replaced below
//     like any missing one.
//  2b. Crash-loop backoff, per (ufop, version) (a crashing new version must not slow the
//     replacements of the old one, and a fixed version starts with a clean slate). A crash is an
//     instance forgotten in state "exited" or "failed" that was not stop_requested and whose node
//     is not down: scale-down/upgrade stops and node losses are not the program's fault. All the
//     crashes of a version seen in one pass are one crash step (ten instances dying together at
//     start are one event). The first step in a window places replacements at once; step n >= 2
//     holds every placement of the version for kCrashBackoffBaseMs * 2^(n-2), capped at
//     kCrashBackoffMaxMs (1 s, 2 s, 4 s ... 5 min, as Kubernetes' CrashLoopBackOff). The count
//     resets after kCrashResetMs without a crash of the version ("no failure for 10 min" rather
//     than "one instance ran 10 min": with several instances, healthy ones would otherwise keep
//     resetting a crash-looping one's count). The state comes in as ClusterState::crash_loops and
//     goes out as ReconcilePlan::crash_loops: the daemon keeps it in memory between passes (a
//     restart forgets it, which only makes the next crash count as a first one).
//  3. Live instances of a (ufop, version): on an up or draining node, not stop_requested, state
//     not in {exited, failed, stopping}. RUNNING = live and state "running".
//  4. Too many live of a version (count from desired; 0 when the version is not desired at all):
//     the extras are chosen in this order: not yet running first, then the one on the node with
//     the most live instances of that UFOP (counted as the picks go, so a scale-down keeps the
//     spread), then the newest (created_ms), then the smallest id.
//     Extras that are not running are stopped at once. Extras that are running are stopped only
//     as far as the UFOP's RUNNING count (all versions) stays >= the UFOP's total desired count
//     ("never below the count"), oldest version first. So a gray upgrade (desired {v1: 4, v2: 2}
//     from six v1) creates the two v2 at once and stops two v1 only once both v2 run; a plain
//     resize down stops at once (RUNNING exceeds the smaller total by the extras).
//  5. Too few live of a version: the missing instances are placed (placement.h) over the up
//     nodes, versions in (ufop, version) order with one Placer, so each placement sees the
//     previous ones. Spread counts the UFOP's live instances (all versions) not being stopped.
//     What does not fit is reported in unschedulable with the placement's reason; placement
//     never overcommits a node. A version held by its crash-loop backoff places nothing and is
//     reported in held_back instead; its missing instances still count toward the UFOP's total
//     (so rule 4 stops no running instance of another version meanwhile).
// Node resources: allocated is taken from the NodeView as the daemon gives it (the sum of the
// requests of all instance records on the node, any state), minus the resources of the records
// forgotten in this pass (InstanceView::resources). instances_per_ufop is recomputed from
// `instances` (the input's is ignored). reported_free is used as given.
// Bad input is reported, never fatal: a desired entry with a negative count or resources, an
// empty ufop name or a duplicate (ufop, version) is listed in unschedulable with
// "invalid request: ..." and its instances are left alone.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "scheduler/placement.h"

namespace qufop::scheduler {

struct InstanceView {
  std::string id;
  std::string ufop;
  int64_t version = 0;
  std::string node;
  // "pending", "pulling", "starting", "running", "unhealthy", "cooling", "stopping", "exited",
  // "failed"
  std::string state;
  bool stop_requested = false;
  int64_t created_ms = 0;
  Resources resources;  // the request it was placed with (freed when the record is forgotten)
};

struct DesiredVersion {
  std::string ufop;
  int64_t version = 0;
  int count = 0;
  Resources per_instance;
  std::map<std::string, std::string> required_labels;
  int max_per_node = 0;  // 0 = unlimited
};

// Crash-loop backoff constants (rule 2b).
constexpr int64_t kCrashBackoffBaseMs = 1'000;   // the delay at the second crash step
constexpr int64_t kCrashBackoffMaxMs = 300'000;  // the cap: 5 min
constexpr int64_t kCrashResetMs = 600'000;       // no crash for 10 min: the count starts over

// The delay before placing after crash step `crashes` (0 for the first).
int64_t crash_backoff_ms(int crashes);

// Crash-loop state of one (ufop, version).
struct CrashLoop {
  std::string ufop;
  int64_t version = 0;
  int crashes = 0;            // crash steps since the last kCrashResetMs without one
  int64_t last_crash_ms = 0;  // the pass of the last step
  int64_t hold_until_ms = 0;  // nothing of the version is placed before this (0: no hold)
};

struct ClusterState {
  int64_t now_ms = 0;
  int64_t node_timeout_ms = 10000;
  std::vector<NodeView> nodes;
  std::vector<InstanceView> instances;
  std::vector<DesiredVersion> desired;
  std::vector<CrashLoop> crash_loops;  // the previous plan's crash_loops (empty: none)
};

struct NewInstance {
  std::string ufop;
  int64_t version = 0;
  std::string node;
  Resources resources;  // the desired per_instance it was placed with
};

struct Unschedulable {
  std::string ufop;
  int64_t version = 0;
  int missing = 0;
  std::string reason;  // "0/3 nodes: 2 insufficient memory, 1 down" or "invalid request: ..."
};

// A version whose missing instances wait for its crash-loop backoff.
struct HeldBack {
  std::string ufop;
  int64_t version = 0;
  int missing = 0;
  int64_t until_ms = 0;
  int crashes = 0;
};

struct ReconcilePlan {
  std::vector<std::string> nodes_down;  // silent longer than node_timeout: mark down
  std::vector<std::string> nodes_up;    // down nodes seen again
  std::vector<NewInstance> create;      // place these (the daemon assigns ids)
  std::vector<std::string> stop;        // instance ids to stop (StopWait: cooling, then removed)
  std::vector<std::string> forget;      // instance records to delete
  std::vector<Unschedulable> unschedulable;
  std::vector<HeldBack> held_back;
  std::vector<CrashLoop> crash_loops;  // the state to pass to the next pass
};

// Lists are sorted (nodes by id, instances by id, create in placement order grouped by
// (ufop, version), held_back and crash_loops by (ufop, version)), so a plan is deterministic for a
// given input and seed.
ReconcilePlan reconcile(const ClusterState& state, uint64_t seed);

}  // namespace qufop::scheduler

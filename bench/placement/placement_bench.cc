// The placement core on a simulated cluster: N nodes (default 10,000, three sizes), place
// 100,000 instances of 1,000 UFOPs (100 each, requests of varied shapes) through one Placer.
// Prints placements/s (median of 5 runs, each on a fresh cluster), the spread quality (UFOPs whose
// max-min instances per node is <= 1) and the balance of the cluster, beside Nomad's C1M figure.
//   qufop_placement_bench [NODES] [UFOPS] [INSTANCES_PER_UFOP]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "scheduler/placement.h"
#include "scheduler/reconcile.h"

namespace {

using qufop::scheduler::NodeView;
using qufop::scheduler::PlacementPlan;
using qufop::scheduler::PlacementRequest;
using qufop::scheduler::Placer;
using qufop::scheduler::Resources;
namespace sched = qufop::scheduler;

constexpr double kNomadC1M = 3750.0;  // placements/s, HashiCorp's C1M (2016)
constexpr int64_t kMiB = int64_t{1} << 20;

std::vector<NodeView> make_nodes(int n) {
  std::vector<NodeView> nodes(n);
  for (int i = 0; i < n; ++i) {
    int64_t size = 1 << (i % 3);  // 8, 16, 32 cores; 32, 64, 128 GiB
    nodes[i].id = "node-" + std::to_string(i);
    nodes[i].capacity = Resources{8000 * size, 32768 * kMiB * size, 500 * 1024 * kMiB, 1000};
    nodes[i].labels["zone"] = "z" + std::to_string(i % 4);
  }
  return nodes;
}

std::vector<PlacementRequest> make_requests(int ufops, int per_ufop) {
  std::mt19937_64 rng(1);
  std::vector<PlacementRequest> requests(ufops);
  for (int u = 0; u < ufops; ++u) {
    PlacementRequest& r = requests[u];
    r.ufop = "ufop-" + std::to_string(u);
    r.version = 1;
    r.count = per_ufop;
    r.per_instance = Resources{static_cast<int64_t>(100 + rng() % 900),
                               static_cast<int64_t>(128 + rng() % 1920) * kMiB, 1024 * kMiB, 1};
  }
  return requests;
}

struct Run {
  double seconds = 0;
  long placed = 0;
  long unplaced = 0;
  int spread_ok = 0;
  double min_share = 1, max_share = 0;  // free share of the scarcest resource, over nodes
};

Run run_once(int n, const std::vector<PlacementRequest>& requests, uint64_t seed) {
  std::vector<NodeView> nodes = make_nodes(n);
  Run run;
  auto start = std::chrono::steady_clock::now();
  {
    Placer placer(&nodes, seed);
    for (const PlacementRequest& r : requests) {
      PlacementPlan plan = placer.place(r);
      run.placed += static_cast<long>(plan.nodes.size());
      run.unplaced += plan.unplaced;
    }
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Quality: per UFOP, max - min instances over the nodes (all nodes are up and have room).
  std::unordered_map<std::string, std::pair<int, int>> spread;  // ufop -> (nodes hosting, max)
  for (const NodeView& node : nodes) {
    for (const auto& [ufop, count] : node.instances_per_ufop) {
      auto& s = spread[ufop];
      ++s.first;
      s.second = std::max(s.second, count);
    }
    double share = 1;
    for (int r = 0; r < Resources::kCount; ++r) {
      if (node.capacity.at(r) <= 0) continue;
      double free = static_cast<double>(node.capacity.at(r) - node.allocated.at(r));
      share = std::min(share, free / static_cast<double>(node.capacity.at(r)));
    }
    run.min_share = std::min(run.min_share, share);
    run.max_share = std::max(run.max_share, share);
  }
  for (const PlacementRequest& r : requests) {
    auto it = spread.find(r.ufop);
    int max = it == spread.end() ? 0 : it->second.second;
    int min = it == spread.end() || it->second.first < n ? 0 : 1;  // >= 1 only if on every node
    if (it != spread.end() && it->second.first == n) {
      min = max;
      for (const NodeView& node : nodes) min = std::min(min, node.instances_per_ufop.at(r.ufop));
    }
    if (max - min <= 1) ++run.spread_ok;
  }
  return run;
}

// One reconcile pass over 1,000 nodes and 20,000 running instances of 500 UFOPs, 10% of the
// nodes just gone silent (their ~2,000 instances forgotten and placed again): median ms of 5.
double reconcile_ms() {
  sched::ClusterState state;
  state.now_ms = 100000;
  for (int i = 0; i < 1000; ++i) {
    NodeView n;
    n.id = "node-" + std::to_string(i);
    n.capacity = Resources{16000, 65536 * kMiB, 500 * 1024 * kMiB, 1000};
    n.last_seen_ms = i % 10 == 0 ? 0 : state.now_ms;
    state.nodes.push_back(std::move(n));
  }
  for (int u = 0; u < 500; ++u) {
    sched::DesiredVersion d;
    d.ufop = "ufop-" + std::to_string(u);
    d.version = 1;
    d.count = 40;
    d.per_instance = Resources{200, 256 * kMiB, 0, 1};
    for (int k = 0; k < d.count; ++k) {
      sched::InstanceView inst;
      inst.id = d.ufop + "-" + std::to_string(k);
      inst.ufop = d.ufop;
      inst.version = 1;
      inst.node = "node-" + std::to_string((u * 40 + k) % 1000);
      inst.state = "running";
      inst.resources = d.per_instance;
      state.nodes[(u * 40 + k) % 1000].allocated.add(d.per_instance);
      state.instances.push_back(std::move(inst));
    }
    state.desired.push_back(std::move(d));
  }
  std::vector<double> ms;
  size_t created = 0;
  for (int k = 0; k < 5; ++k) {
    auto start = std::chrono::steady_clock::now();
    sched::ReconcilePlan plan = sched::reconcile(state, k);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
    created = plan.create.size();
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "reconcile: 1000 nodes x 20000 instances, 100 nodes down -> %zu re-placed: %.1f ms "
      "(median of 5)\n",
      created, ms[2]);
  return ms[2];
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 10000;
  int ufops = argc > 2 ? std::atoi(argv[2]) : 1000;
  int per_ufop = argc > 3 ? std::atoi(argv[3]) : 100;
  if (n <= 0 || ufops <= 0 || per_ufop < 0) {
    std::fprintf(stderr, "usage: qufop_placement_bench [NODES>0] [UFOPS>0] [PER_UFOP>=0]\n");
    return 2;
  }
  std::vector<PlacementRequest> requests = make_requests(ufops, per_ufop);
  std::vector<Run> runs;
  for (int k = 0; k < 5; ++k) runs.push_back(run_once(n, requests, 1000 + k));
  std::vector<double> rates;
  for (const Run& r : runs) rates.push_back(static_cast<double>(r.placed) / r.seconds);
  std::sort(rates.begin(), rates.end());
  double median = rates[rates.size() / 2];
  const Run& last = runs.back();
  std::printf("placement core: %d nodes, %d UFOPs x %d instances (%ld placed, %ld unplaced)\n", n,
              ufops, per_ufop, last.placed, last.unplaced);
  std::printf("  placements/s (median of 5): %.0f   [runs: %.0f %.0f %.0f %.0f %.0f]\n", median,
              rates[0], rates[1], rates[2], rates[3], rates[4]);
  std::printf("  Nomad C1M anchor: %.0f placements/s -> qufop is %.1fx\n", kNomadC1M,
              median / kNomadC1M);
  std::printf("  target >= 100000/s: %s\n", median >= 100000 ? "met" : "NOT met");
  std::printf("  spread quality: %d/%d UFOPs with max-min instances per node <= 1\n",
              last.spread_ok, ufops);
  std::printf("  balance: free share of the scarcest resource per node: min %.3f max %.3f\n",
              last.min_share, last.max_share);
  reconcile_ms();
  return 0;
}

// The placement core: spread, balance, filters and their reasons, no overcommit, determinism,
// and the indexed search checked against a brute-force reference on random clusters.
#include "scheduler/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace qufop::scheduler {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

NodeView make_node(std::string id, int64_t cpu, int64_t mem, int64_t disk = 100 * kGiB,
                   int64_t ports = 1000) {
  NodeView node;
  node.id = std::move(id);
  node.capacity = Resources{cpu, mem, disk, ports};
  return node;
}

std::vector<NodeView> equal_nodes(int n, int64_t cpu = 8000, int64_t mem = 32 * kGiB) {
  std::vector<NodeView> nodes;
  for (int i = 0; i < n; ++i) nodes.push_back(make_node("n" + std::to_string(i), cpu, mem));
  return nodes;
}

PlacementRequest request(std::string ufop, int count, Resources per = {100, kGiB / 4, 0, 1}) {
  PlacementRequest r;
  r.ufop = std::move(ufop);
  r.version = 1;
  r.count = count;
  r.per_instance = per;
  return r;
}

std::map<std::string, int> tally(const std::vector<std::string>& nodes) {
  std::map<std::string, int> out;
  for (const auto& n : nodes) ++out[n];
  return out;
}

// --- The reference: the scoring of placement.h written out plainly, one full scan per instance.
int64_t ref_balance(const NodeView& node, const Resources& q) {
  Resources free = free_for_placement(node);
  int64_t best = INT64_MAX;
  for (int r = 0; r < Resources::kCount; ++r) {
    int64_t cap = std::max<int64_t>(node.capacity.at(r), 0);
    int64_t term = 1'000'000;
    if (cap > 0) {
      __int128 fs = static_cast<__int128>(free.at(r)) * 1'000'000 / cap;
      __int128 qs = q.at(r) == 0 ? 0 : (static_cast<__int128>(q.at(r)) * 1'000'000 + cap - 1) / cap;
      term = static_cast<int64_t>(fs - qs);
    }
    best = std::min(best, term);
  }
  return best;
}

uint64_t ref_tiebreak(uint64_t seed, const std::string& id) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : id) h = (h ^ c) * 0x100000001b3ULL;
  uint64_t x = seed ^ h;
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int ref_pick(const std::vector<NodeView>& nodes, const PlacementRequest& req, uint64_t seed) {
  int best = -1;
  std::tuple<int, int64_t, uint64_t> best_key;
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    const NodeView& node = nodes[i];
    if (node.state != NodeState::kUp) continue;
    bool labels_ok =
        std::all_of(req.required_labels.begin(), req.required_labels.end(), [&](const auto& kv) {
          auto it = node.labels.find(kv.first);
          return it != node.labels.end() && it->second == kv.second;
        });
    if (!labels_ok) continue;
    auto it = node.instances_per_ufop.find(req.ufop);
    int count = it == node.instances_per_ufop.end() ? 0 : std::max(it->second, 0);
    if (req.max_per_node > 0 && count >= req.max_per_node) continue;
    if (!req.per_instance.fits(free_for_placement(node))) continue;
    // Smaller count, larger balance, larger tie-break.
    std::tuple<int, int64_t, uint64_t> key{-count, ref_balance(node, req.per_instance),
                                           ref_tiebreak(seed, node.id)};
    if (best < 0 || key > best_key) best = i, best_key = key;
  }
  return best;
}

TEST(SchedulerPlacement, SpreadsNineInstancesThreePerEqualNode) {
  auto nodes = equal_nodes(3);
  PlacementPlan plan = place(nodes, request("web", 9), 42);
  EXPECT_EQ(plan.unplaced, 0);
  ASSERT_EQ(plan.nodes.size(), 9u);
  for (const auto& [node, n] : tally(plan.nodes)) EXPECT_EQ(n, 3) << node;
  for (const NodeView& node : nodes) {
    EXPECT_EQ(node.instances_per_ufop.at("web"), 3);
    EXPECT_EQ(node.allocated.cpu_millis, 300);
    EXPECT_EQ(node.allocated.memory_bytes, 3 * kGiB / 4);
  }
}

TEST(SchedulerPlacement, SpreadCountsInstancesAlreadyThere) {
  auto nodes = equal_nodes(3);
  nodes[0].instances_per_ufop["web"] = 2;
  PlacementPlan plan = place(nodes, request("web", 4), 1);
  auto t = tally(plan.nodes);
  EXPECT_EQ(t.count("n0"), 0u);
  EXPECT_EQ(t["n1"], 2);
  EXPECT_EQ(t["n2"], 2);
}

TEST(SchedulerPlacement, ThousandUfopsEachSpreadWithinOne) {
  auto nodes = equal_nodes(60, 1'000'000, 4096 * kGiB);
  for (auto& n : nodes) n.capacity.ports = 100000;
  Placer placer(&nodes, 7);
  std::mt19937_64 rng(7);
  for (int u = 0; u < 1000; ++u) {
    auto req = request("u" + std::to_string(u), 1 + static_cast<int>(rng() % 150));
    req.per_instance =
        Resources{static_cast<int64_t>(10 + rng() % 200), static_cast<int64_t>(rng() % kGiB), 0, 1};
    PlacementPlan plan = placer.place(req);
    ASSERT_EQ(plan.unplaced, 0) << plan.reason;
    int lo = INT32_MAX, hi = 0;
    for (const NodeView& node : nodes) {
      auto it = node.instances_per_ufop.find(req.ufop);
      int c = it == node.instances_per_ufop.end() ? 0 : it->second;
      lo = std::min(lo, c), hi = std::max(hi, c);
    }
    EXPECT_LE(hi - lo, 1) << req.ufop << " count " << req.count;
  }
}

TEST(SchedulerPlacement, BalancePrefersMostFreeShareOfScarcestResource) {
  auto nodes = equal_nodes(2, 1000, 1000);
  nodes[0].allocated = Resources{500, 100, 0, 0};  // cpu 50% free: scarcest
  nodes[1].allocated = Resources{300, 400, 0, 0};  // memory 60% free: scarcest
  PlacementPlan plan = place(nodes, request("a", 1, Resources{10, 10, 0, 0}), 3);
  ASSERT_EQ(plan.nodes.size(), 1u);
  EXPECT_EQ(plan.nodes[0], "n1");
}

TEST(SchedulerPlacement, BalanceIsJudgedAfterPlacement) {
  auto nodes = equal_nodes(2, 1000, 1000);
  nodes[0].allocated = Resources{500, 400, 0, 0};  // before: 0.50 (cpu); after +100 mem: 0.50
  nodes[1].allocated = Resources{450, 480, 0, 0};  // before: 0.52 (mem); after +100 mem: 0.42
  PlacementPlan plan = place(nodes, request("a", 1, Resources{0, 100, 0, 0}), 3);
  ASSERT_EQ(plan.nodes.size(), 1u);
  EXPECT_EQ(plan.nodes[0], "n0");
}

TEST(SchedulerPlacement, MatchesBruteForceReferenceAndNeverOvercommits) {
  for (uint64_t seed = 0; seed < 40; ++seed) {
    std::mt19937_64 rng(seed);
    int n = 1 + static_cast<int>(rng() % 300);
    std::vector<NodeView> nodes;
    for (int i = 0; i < n; ++i) {
      // Few distinct shapes, so ties are common; some nodes down, draining, with reports.
      int64_t size = 1 + static_cast<int64_t>(rng() % 3);
      NodeView node = make_node("node-" + std::to_string(rng() % 100000) + "-" + std::to_string(i),
                                4000 * size, 16 * kGiB * size, 50 * kGiB, 100);
      if (rng() % 4 == 0) node.allocated = Resources{static_cast<int64_t>(rng() % 4000), 0, 0, 0};
      if (rng() % 5 == 0)
        node.reported_free.memory_bytes = static_cast<int64_t>(rng() % (8 * kGiB));
      if (rng() % 7 == 0) node.capacity.ports = 0;
      if (rng() % 10 == 0) node.state = rng() % 2 ? NodeState::kDown : NodeState::kDraining;
      if (rng() % 9 == 0) node.labels["zone"] = "b";
      nodes.push_back(std::move(node));
    }
    std::vector<NodeView> ref = nodes;
    std::vector<NodeView> original = nodes;
    Placer placer(&nodes, seed);
    for (int k = 0; k < 40; ++k) {
      PlacementRequest req = request("u" + std::to_string(rng() % 8), 1 + rng() % 25);
      req.per_instance = Resources{
          static_cast<int64_t>(rng() % 1500), static_cast<int64_t>(rng() % (3 * kGiB)),
          rng() % 3 == 0 ? static_cast<int64_t>(rng() % kGiB) : 0, static_cast<int64_t>(rng() % 2)};
      if (rng() % 6 == 0) req.max_per_node = 1 + rng() % 3;
      if (rng() % 8 == 0) req.required_labels["zone"] = "b";
      PlacementPlan plan = placer.place(req);
      ASSERT_FALSE(plan.invalid);
      ASSERT_EQ(plan.nodes.size() + plan.unplaced, static_cast<size_t>(req.count));
      // The reference places the same instances one at a time with a full scan.
      for (size_t j = 0; j < plan.nodes.size(); ++j) {
        int want = ref_pick(ref, req, seed);
        ASSERT_GE(want, 0) << "seed " << seed << " request " << k;
        ASSERT_EQ(plan.nodes[j], ref[want].id) << "seed " << seed << " request " << k;
        ref[want].allocated.add(req.per_instance);
        for (int r = 0; r < Resources::kCount; ++r) {
          if (ref[want].reported_free.at(r) >= 0)
            ref[want].reported_free.at(r) -= req.per_instance.at(r);
        }
        ++ref[want].instances_per_ufop[req.ufop];
      }
      if (plan.unplaced > 0) {
        EXPECT_EQ(ref_pick(ref, req, seed), -1) << "seed " << seed;
        EXPECT_EQ(plan.reason, describe(plan.rejections, nodes.size()));
        EXPECT_EQ(plan.rejections.size(), nodes.size());
      }
    }
    for (int i = 0; i < n; ++i) {
      const NodeView& node = nodes[i];
      EXPECT_TRUE(node.allocated.fits(node.capacity)) << node.id;
      for (int r = 0; r < Resources::kCount; ++r) {
        int64_t said = original[i].reported_free.at(r);
        int64_t added = node.allocated.at(r) - original[i].allocated.at(r);
        if (said >= 0) {
          EXPECT_LE(added, said) << node.id << " " << Resources::name(r);
        }
      }
      if (original[i].state != NodeState::kUp) {
        EXPECT_EQ(node.allocated, original[i].allocated);
      }
    }
  }
}

TEST(SchedulerPlacement, RequiredLabels) {
  auto nodes = equal_nodes(4);
  nodes[1].labels["gpu"] = "yes";
  nodes[3].labels["gpu"] = "yes";
  nodes[2].labels["gpu"] = "no";
  auto req = request("ml", 4);
  req.required_labels["gpu"] = "yes";
  PlacementPlan plan = place(nodes, req, 9);
  EXPECT_EQ(plan.unplaced, 0);
  auto t = tally(plan.nodes);
  EXPECT_EQ(t["n1"], 2);
  EXPECT_EQ(t["n3"], 2);
  EXPECT_EQ(t.size(), 2u);
}

TEST(SchedulerPlacement, MaxPerNode) {
  auto nodes = equal_nodes(3);
  auto req = request("web", 7);
  req.max_per_node = 2;
  PlacementPlan plan = place(nodes, req, 5);
  EXPECT_EQ(plan.nodes.size(), 6u);
  EXPECT_EQ(plan.unplaced, 1);
  EXPECT_FALSE(plan.invalid);
  EXPECT_EQ(plan.reason, "0/3 nodes: 3 max per node");
  for (const auto& [node, n] : tally(plan.nodes)) EXPECT_EQ(n, 2) << node;
}

TEST(SchedulerPlacement, EveryRejectionReason) {
  auto nodes = equal_nodes(8, 1000, 1000);
  for (auto& n : nodes) n.labels["zone"] = "a", n.capacity.disk_bytes = 1000, n.capacity.ports = 10;
  nodes[0].state = NodeState::kDown;
  nodes[1].state = NodeState::kDraining;
  nodes[2].labels["zone"] = "b";
  nodes[3].instances_per_ufop["web"] = 1;
  nodes[4].allocated.cpu_millis = 950;
  nodes[5].reported_free.memory_bytes = 10;
  nodes[6].allocated.disk_bytes = 1000;
  nodes[7].capacity.ports = 0;
  auto req = request("web", 1, Resources{100, 100, 100, 1});
  req.required_labels["zone"] = "a";
  req.max_per_node = 1;
  PlacementPlan plan = place(nodes, req, 0);
  EXPECT_TRUE(plan.nodes.empty());
  EXPECT_EQ(plan.unplaced, 1);
  EXPECT_EQ(plan.reason,
            "0/8 nodes: 1 down, 1 draining, 1 insufficient cpu, 1 insufficient disk, "
            "1 insufficient memory, 1 insufficient ports, 1 label mismatch, 1 max per node");
  std::map<std::string, std::string> by_node;
  for (const auto& r : plan.rejections) by_node[r.node] = r.reason;
  EXPECT_EQ(by_node["n0"], "down");
  EXPECT_EQ(by_node["n3"], "max per node");
  EXPECT_EQ(by_node["n5"], "insufficient memory");
  EXPECT_EQ(by_node["n7"], "insufficient ports");
}

TEST(SchedulerPlacement, ReasonTextCountsMostFrequentFirst) {
  auto nodes = equal_nodes(3, 1000, 1000);
  nodes[0].state = NodeState::kDown;
  PlacementPlan plan = place(nodes, request("big", 1, Resources{10, 2000, 0, 0}), 0);
  EXPECT_EQ(plan.reason, "0/3 nodes: 2 insufficient memory, 1 down");
  EXPECT_EQ(describe({}, 0), "0/0 nodes: no nodes");
  EXPECT_EQ(describe({{"a", "down"}, {"b", "draining"}, {"c", "down"}}, 5),
            "2/5 nodes: 2 down, 1 draining");
  std::vector<NodeView> none;
  EXPECT_EQ(place(none, request("x", 2), 0).reason, "0/0 nodes: no nodes");
}

TEST(SchedulerPlacement, FillsWhatFitsThenReportsTheRest) {
  auto nodes = equal_nodes(2, 1000, 1000);
  PlacementPlan plan = place(nodes, request("web", 5, Resources{400, 10, 0, 0}), 11);
  EXPECT_EQ(plan.nodes.size(), 4u);
  EXPECT_EQ(plan.unplaced, 1);
  EXPECT_EQ(plan.reason, "0/2 nodes: 2 insufficient cpu");
  for (const auto& n : nodes) EXPECT_EQ(n.allocated.cpu_millis, 800);
}

TEST(SchedulerPlacement, DeterministicForSeedIndependentOfVectorOrder) {
  auto a = equal_nodes(50);
  auto b = a;
  std::reverse(b.begin(), b.end());
  auto c = a;
  PlacementPlan pa = place(a, request("web", 30), 1234);
  PlacementPlan pb = place(b, request("web", 30), 1234);
  PlacementPlan pc = place(c, request("web", 30), 1234);
  EXPECT_EQ(pa.nodes, pb.nodes);
  EXPECT_EQ(pa.nodes, pc.nodes);
  // Equal nodes: the seed only decides ties, so another seed picks other nodes, same spread.
  std::set<std::string> firsts;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto d = equal_nodes(50);
    PlacementPlan p = place(d, request("web", 30), seed);
    EXPECT_EQ(tally(p.nodes).size(), 30u);
    firsts.insert(p.nodes[0]);
  }
  EXPECT_GT(firsts.size(), 1u);
}

TEST(SchedulerPlacement, SeedDoesNotOverrideScores) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto nodes = equal_nodes(3);
    nodes[0].allocated.cpu_millis = 4000;
    nodes[1].instances_per_ufop["web"] = 1;
    PlacementPlan p = place(nodes, request("web", 1), seed);
    EXPECT_EQ(p.nodes, std::vector<std::string>{"n2"}) << seed;
  }
}

TEST(SchedulerPlacement, ReportedFreeBoundsWhenKnownAndUnknownFieldsAreIgnored) {
  auto nodes = equal_nodes(1, 8000, 4 * kGiB);
  nodes[0].reported_free = Resources{-1, kGiB, -1, -1};  // something else uses memory
  PlacementPlan plan = place(nodes, request("web", 3, Resources{100, 600 << 20, 0, 0}), 0);
  EXPECT_EQ(plan.nodes.size(), 1u);
  EXPECT_EQ(plan.reason, "0/1 nodes: 1 insufficient memory");
  EXPECT_EQ(nodes[0].reported_free.memory_bytes, kGiB - (600 << 20));
  EXPECT_EQ(nodes[0].reported_free.cpu_millis, -1);

  auto unknown = equal_nodes(1, 1000, 4 * kGiB);
  PlacementPlan all = place(unknown, request("web", 10, Resources{100, 0, 0, 0}), 0);
  EXPECT_EQ(all.nodes.size(), 10u);
  EXPECT_EQ(unknown[0].allocated.cpu_millis, 1000);
}

TEST(SchedulerPlacement, ZeroResourceRequestsSpreadAnywhereUp) {
  std::vector<NodeView> nodes = {make_node("a", 0, 0, 0, 0), make_node("b", 0, 0, 0, 0),
                                 make_node("c", 1000, 1000, 0, 0)};
  nodes[2].state = NodeState::kDraining;
  PlacementPlan plan = place(nodes, request("idle", 4, Resources{}), 0);
  EXPECT_EQ(plan.unplaced, 0);
  auto t = tally(plan.nodes);
  EXPECT_EQ(t["a"], 2);
  EXPECT_EQ(t["b"], 2);
  PlacementPlan cpu = place(nodes, request("cpu", 1, Resources{1, 0, 0, 0}), 0);
  EXPECT_EQ(cpu.reason, "0/3 nodes: 2 insufficient cpu, 1 draining");
}

TEST(SchedulerPlacement, BadInputIsAnErrorNotACrash) {
  auto nodes = equal_nodes(2);
  auto before = nodes;
  PlacementPlan p = place(nodes, request("web", -1), 0);
  EXPECT_TRUE(p.invalid);
  EXPECT_EQ(p.reason, "invalid request: count -1");
  EXPECT_EQ(p.unplaced, 0);
  EXPECT_TRUE(p.nodes.empty());
  p = place(nodes, request("web", 2, Resources{1, -5, 0, 0}), 0);
  EXPECT_TRUE(p.invalid);
  EXPECT_EQ(p.reason, "invalid request: memory -5");
  EXPECT_EQ(p.unplaced, 2);
  auto neg = request("web", 1);
  neg.max_per_node = -2;
  EXPECT_EQ(place(nodes, neg, 0).reason, "invalid request: max_per_node -2");
  EXPECT_EQ(place(nodes, request("", 1), 0).reason, "invalid request: empty ufop name");
  for (size_t i = 0; i < nodes.size(); ++i) EXPECT_EQ(nodes[i].allocated, before[i].allocated);
  EXPECT_TRUE(place(nodes, request("web", 0), 0).nodes.empty());

  // A node reporting nonsense never receives an instance.
  std::vector<NodeView> odd = {make_node("neg", -1000, -5, 0, 0), make_node("ok", 1000, kGiB)};
  odd[0].allocated = Resources{-100, -100, -100, -100};
  PlacementPlan q = place(odd, request("web", 3, Resources{10, 10, 0, 0}), 0);
  EXPECT_EQ(tally(q.nodes)["ok"], 3);
}

TEST(SchedulerPlacement, PlacerSeesEarlierRequestsAndNodesStayUpdated) {
  auto nodes = equal_nodes(4, 1000, kGiB);
  Placer placer(&nodes, 99);
  PlacementPlan a = placer.place(request("web", 2, Resources{500, 0, 0, 0}));
  PlacementPlan b = placer.place(request("web", 2, Resources{500, 0, 0, 0}));
  std::set<std::string> used(a.nodes.begin(), a.nodes.end());
  used.insert(b.nodes.begin(), b.nodes.end());
  EXPECT_EQ(used.size(), 4u);  // spread across requests of one UFOP
  PlacementPlan c = placer.place(request("other", 5, Resources{500, 0, 0, 0}));
  EXPECT_EQ(c.nodes.size(), 4u);
  EXPECT_EQ(c.unplaced, 1);
  for (const auto& n : nodes) EXPECT_EQ(n.allocated.cpu_millis, 1000);
  // A fresh Placer over the updated vector sees the same state.
  EXPECT_EQ(place(nodes, request("x", 1, Resources{1, 0, 0, 0}), 1).unplaced, 1);
}

TEST(SchedulerPlacement, ResourcesHelpers) {
  Resources a{1, 2, 3, 4};
  Resources b{1, 1, 1, 1};
  EXPECT_EQ(Resources(a).sub(b), (Resources{0, 1, 2, 3}));
  EXPECT_EQ(Resources(a).add(b), (Resources{2, 3, 4, 5}));
  EXPECT_TRUE(b.fits(a));
  EXPECT_FALSE(a.fits(b));
  EXPECT_TRUE((Resources{0, -1, 0, 0}).any_negative());
  NodeView n = make_node("n", 1000, 1000, 1000, 10);
  n.allocated = Resources{200, 0, 0, 0};
  n.reported_free = Resources{900, 500, -1, -1};
  EXPECT_EQ(free_for_placement(n), (Resources{800, 500, 1000, 10}));
}

}  // namespace
}  // namespace qufop::scheduler

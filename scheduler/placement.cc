#include "scheduler/placement.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace qufop::scheduler {

namespace {

constexpr int R = Resources::kCount;
constexpr int64_t kScale = 1'000'000;  // shares are in millionths
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

constexpr const char* kDown = "down";
constexpr const char* kDraining = "draining";
constexpr const char* kLabels = "label mismatch";
constexpr const char* kMaxPerNode = "max per node";
constexpr const char* kInsufficient[R] = {"insufficient cpu", "insufficient memory",
                                          "insufficient disk", "insufficient ports"};

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// floor(free * 1e6 / capacity); a resource the node has none of counts as a full share.
int64_t free_share(int64_t free, int64_t capacity) {
  if (capacity <= 0) return kScale;
  return static_cast<int64_t>(static_cast<__int128>(free) * kScale / capacity);
}

// ceil(request * 1e6 / capacity) for request >= 0. A request of a resource the node lacks never
// fits (the free filter rejects it first); the bound still must not overflow.
int64_t request_share(int64_t request, int64_t capacity) {
  if (request <= 0) return 0;
  if (capacity <= 0) return kMax / 4;
  if (request < (int64_t{1} << 43)) {  // request * 1e6 + capacity fits in 64 unsigned bits
    uint64_t num = static_cast<uint64_t>(request) * kScale + static_cast<uint64_t>(capacity) - 1;
    return static_cast<int64_t>(num / static_cast<uint64_t>(capacity));
  }
  __int128 num = static_cast<__int128>(request) * kScale + capacity - 1;
  __int128 q = num / capacity;
  return q > kMax / 4 ? kMax / 4 : static_cast<int64_t>(q);
}

bool labels_match(const NodeView& node, const std::map<std::string, std::string>& required) {
  for (const auto& [key, value] : required) {
    auto it = node.labels.find(key);
    if (it == node.labels.end() || it->second != value) return false;
  }
  return true;
}

}  // namespace

int64_t& Resources::at(int i) {
  switch (i) {
    case 0:
      return cpu_millis;
    case 1:
      return memory_bytes;
    case 2:
      return disk_bytes;
    default:
      return ports;
  }
}

int64_t Resources::at(int i) const { return const_cast<Resources*>(this)->at(i); }

const char* Resources::name(int i) {
  static constexpr const char* kNames[R] = {"cpu", "memory", "disk", "ports"};
  return kNames[std::clamp(i, 0, R - 1)];
}

Resources& Resources::add(const Resources& other) {
  for (int r = 0; r < R; ++r) at(r) += other.at(r);
  return *this;
}

Resources& Resources::sub(const Resources& other) {
  for (int r = 0; r < R; ++r) at(r) -= other.at(r);
  return *this;
}

bool Resources::fits(const Resources& available) const {
  for (int r = 0; r < R; ++r) {
    if (at(r) > available.at(r)) return false;
  }
  return true;
}

bool Resources::any_negative() const {
  for (int r = 0; r < R; ++r) {
    if (at(r) < 0) return true;
  }
  return false;
}

Resources free_for_placement(const NodeView& node) {
  Resources free;
  for (int r = 0; r < R; ++r) {
    // Nonsense (negative capacity or allocation) never makes room.
    int64_t f =
        std::max<int64_t>(node.capacity.at(r), 0) - std::max<int64_t>(node.allocated.at(r), 0);
    int64_t reported = node.reported_free.at(r);
    if (reported >= 0) f = std::min(f, reported);
    free.at(r) = f;
  }
  return free;
}

std::string describe(const std::vector<Rejection>& rejections, size_t total_nodes) {
  size_t fitting = total_nodes >= rejections.size() ? total_nodes - rejections.size() : 0;
  std::string out = std::to_string(fitting) + "/" + std::to_string(total_nodes) + " nodes: ";
  if (total_nodes == 0) return out + "no nodes";
  std::map<std::string, size_t> counts;
  for (const Rejection& r : rejections) ++counts[r.reason];
  std::vector<std::pair<std::string, size_t>> sorted(counts.begin(), counts.end());
  // std::map already orders names; a stable sort by count keeps ties alphabetical.
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(sorted[i].second) + " " + sorted[i].first;
  }
  if (sorted.empty()) out += "all fit";
  return out;
}

std::string validate(const PlacementRequest& request) {
  if (request.ufop.empty()) return "invalid request: empty ufop name";
  if (request.count < 0) return "invalid request: count " + std::to_string(request.count);
  if (request.max_per_node < 0) {
    return "invalid request: max_per_node " + std::to_string(request.max_per_node);
  }
  for (int r = 0; r < R; ++r) {
    if (request.per_instance.at(r) < 0) {
      return "invalid request: " + std::string(Resources::name(r)) + " " +
             std::to_string(request.per_instance.at(r));
    }
  }
  return "";
}

// The index. Leaves mirror the nodes; each inner entry holds maxima over its subtree, which bound
// the score of any node below it, so whole subtrees are skipped.
struct Placer::Impl {
  struct Leaf {
    int64_t free[R];
    int64_t cap[R];
    int64_t fs[R];  // free share, millionths
    uint64_t tb = 0;
    bool valid = false;  // up (not down, not draining)
  };
  struct Agg {
    int64_t maxfree[R];
    int64_t maxfs[R];
    int64_t maxcap[R];
    int64_t maxpre;  // max over leaves of min_r fs
    uint64_t maxtb;
  };
  struct UfopIndex {
    std::unordered_map<int, int> count;  // node index -> instances of this UFOP (> 0 only)
    int valid_hosts = 0;                 // how many of those nodes are valid
  };
  struct Best {
    int idx = -1;
    int count = 0;
    int64_t score = kMin;
    uint64_t tb = 0;
  };

  std::vector<NodeView>* nodes;
  uint64_t seed;
  int n = 0;
  int size = 1;  // leaves in the tree (power of two)
  int valid_nodes = 0;
  std::vector<Leaf> leaves;  // by node index
  std::vector<Agg> tree;
  // Tree positions are ordered by (capacity, tie-break descending): subtrees of equally sized
  // nodes give tight bounds, and among equal scores the first found wins the tie-break.
  std::vector<int> node_at;  // position -> node index
  std::vector<int> pos_of;   // node index -> position
  std::unordered_map<std::string, UfopIndex> ufops;

  // Per-search state.
  int64_t q[R] = {};
  int64_t memo_cap[R] = {};
  int64_t memo_share[R] = {};
  const UfopIndex* hosting = nullptr;
  Best best;

  Impl(std::vector<NodeView>* nodes_in, uint64_t seed_in) : nodes(nodes_in), seed(seed_in) {
    n = static_cast<int>(nodes->size());
    while (size < n) size *= 2;
    leaves.resize(n);
    tree.resize(2 * size);
    for (int i = 0; i < n; ++i) {
      const NodeView& node = (*nodes)[i];
      leaves[i].tb = splitmix64(seed ^ fnv1a(node.id));
      leaves[i].valid = node.state == NodeState::kUp;
      if (leaves[i].valid) ++valid_nodes;
      refresh_leaf(i);
      for (const auto& [ufop, count] : node.instances_per_ufop) {
        if (count <= 0) continue;
        UfopIndex& index = ufops[ufop];
        index.count[i] = count;
        if (leaves[i].valid) ++index.valid_hosts;
      }
    }
    order_positions();
    for (int t = size; t < 2 * size; ++t) set_leaf_agg(t);
    for (int t = size - 1; t >= 1; --t) pull(t);
  }

  void order_positions() {
    node_at.resize(n);
    for (int i = 0; i < n; ++i) node_at[i] = i;
    std::sort(node_at.begin(), node_at.end(), [&](int a, int b) {
      const Leaf& x = leaves[a];
      const Leaf& y = leaves[b];
      for (int r = 0; r < R; ++r) {
        if (x.cap[r] != y.cap[r]) return x.cap[r] > y.cap[r];
      }
      return x.tb > y.tb;
    });
    pos_of.resize(n);
    for (int p = 0; p < n; ++p) pos_of[node_at[p]] = p;
  }

  void refresh_leaf(int i) {
    const NodeView& node = (*nodes)[i];
    Resources free = free_for_placement(node);
    Leaf& leaf = leaves[i];
    for (int r = 0; r < R; ++r) {
      leaf.free[r] = free.at(r);
      leaf.cap[r] = std::max<int64_t>(node.capacity.at(r), 0);
      leaf.fs[r] = free_share(leaf.free[r], leaf.cap[r]);
    }
  }

  void set_leaf_agg(int t) {
    Agg& a = tree[t];
    int p = t - size;
    if (p >= n || !leaves[node_at[p]].valid) {
      for (int r = 0; r < R; ++r) a.maxfree[r] = a.maxfs[r] = kMin, a.maxcap[r] = 0;
      a.maxpre = kMin;
      a.maxtb = 0;
      return;
    }
    const Leaf& leaf = leaves[node_at[p]];
    a.maxpre = kMax;
    for (int r = 0; r < R; ++r) {
      a.maxfree[r] = leaf.free[r];
      a.maxfs[r] = leaf.fs[r];
      a.maxcap[r] = leaf.cap[r];
      a.maxpre = std::min(a.maxpre, leaf.fs[r]);
    }
    a.maxtb = leaf.tb;
  }

  void pull(int t) {
    const Agg& l = tree[2 * t];
    const Agg& r2 = tree[2 * t + 1];
    Agg& a = tree[t];
    for (int r = 0; r < R; ++r) {
      a.maxfree[r] = std::max(l.maxfree[r], r2.maxfree[r]);
      a.maxfs[r] = std::max(l.maxfs[r], r2.maxfs[r]);
      a.maxcap[r] = std::max(l.maxcap[r], r2.maxcap[r]);
    }
    a.maxpre = std::max(l.maxpre, r2.maxpre);
    a.maxtb = std::max(l.maxtb, r2.maxtb);
  }

  int64_t share_of_request(int r, int64_t cap) {
    if (memo_cap[r] != cap) memo_cap[r] = cap, memo_share[r] = request_share(q[r], cap);
    return memo_share[r];
  }

  // An upper bound of the balance of every feasible node in the subtree; kMin when none fits.
  // For a leaf it is that node's exact balance.
  int64_t bound(int t) {
    const Agg& a = tree[t];
    for (int r = 0; r < R; ++r) {
      if (a.maxfree[r] < q[r]) return kMin;
    }
    int64_t ub = a.maxpre;
    for (int r = 0; r < R; ++r) ub = std::min(ub, a.maxfs[r] - share_of_request(r, a.maxcap[r]));
    return ub;
  }

  // Exact balance of node i for the current request (it must fit).
  int64_t balance(int i) {
    const Leaf& leaf = leaves[i];
    int64_t b = kMax;
    for (int r = 0; r < R; ++r) {
      int64_t term = leaf.cap[r] <= 0 ? kScale : leaf.fs[r] - request_share(q[r], leaf.cap[r]);
      b = std::min(b, term);
    }
    return b;
  }

  bool fits(int i) const {
    for (int r = 0; r < R; ++r) {
      if (leaves[i].free[r] < q[r]) return false;
    }
    return true;
  }

  int count_of(int i) const {
    if (hosting == nullptr) return 0;
    auto it = hosting->count.find(i);
    return it == hosting->count.end() ? 0 : it->second;
  }

  // Full order: fewer instances of the UFOP, then higher balance, then higher tie-break, then
  // the smaller id (only on a 64-bit tie-break collision).
  bool better(int count, int64_t score, int idx) const {
    if (best.idx < 0) return true;
    if (count != best.count) return count < best.count;
    if (score != best.score) return score > best.score;
    if (leaves[idx].tb != leaves[best.idx].tb) return leaves[idx].tb > leaves[best.idx].tb;
    return (*nodes)[idx].id < (*nodes)[best.idx].id;
  }

  void consider(int i, int count) {
    int64_t score = balance(i);
    if (better(count, score, i)) best = Best{i, count, score, leaves[i].tb};
  }

  // Branch and bound over the nodes without this UFOP (spread level 0).
  void visit(int t, int64_t ub) {
    if (ub == kMin) return;
    if (best.idx >= 0 && (ub < best.score || (ub == best.score && tree[t].maxtb < best.tb))) return;
    if (t >= size) {
      int i = node_at[t - size];
      if (count_of(i) == 0) consider(i, 0);
      return;
    }
    int l = 2 * t, r = 2 * t + 1;
    int64_t ubl = bound(l), ubr = bound(r);
    bool left_first = ubl > ubr || (ubl == ubr && tree[l].maxtb >= tree[r].maxtb);
    if (left_first) {
      visit(l, ubl);
      visit(r, ubr);
    } else {
      visit(r, ubr);
      visit(l, ubl);
    }
  }

  int pick(const PlacementRequest& request, const std::vector<int>* candidates) {
    best = Best{};
    if (candidates != nullptr) {  // required labels: scan the matching nodes
      for (int i : *candidates) {
        int count = count_of(i);
        if (request.max_per_node > 0 && count >= request.max_per_node) continue;
        if (fits(i)) consider(i, count);
      }
      return best.idx;
    }
    int hosts = hosting == nullptr ? 0 : hosting->valid_hosts;
    if (hosts < valid_nodes) visit(1, bound(1));
    if (best.idx >= 0) return best.idx;
    if (hosting == nullptr) return -1;
    for (const auto& [i, count] : hosting->count) {  // spread level >= 1: the hosting nodes
      if (!leaves[i].valid) continue;
      if (request.max_per_node > 0 && count >= request.max_per_node) continue;
      if (fits(i)) consider(i, count);
    }
    return best.idx;
  }

  void apply(int i, const PlacementRequest& request) {
    NodeView& node = (*nodes)[i];
    node.allocated.add(request.per_instance);
    for (int r = 0; r < R; ++r) {
      // The node's report predates this instance: count it against what it said too.
      if (node.reported_free.at(r) >= 0) node.reported_free.at(r) -= request.per_instance.at(r);
    }
    ++node.instances_per_ufop[request.ufop];
    UfopIndex& index = ufops[request.ufop];
    hosting = &index;
    if (index.count[i]++ == 0) ++index.valid_hosts;
    refresh_leaf(i);
    int t = size + pos_of[i];
    set_leaf_agg(t);
    for (t /= 2; t >= 1; t /= 2) pull(t);
  }

  std::vector<Rejection> rejections(const PlacementRequest& request) const {
    std::vector<Rejection> out;
    for (int i = 0; i < n; ++i) {
      const NodeView& node = (*nodes)[i];
      const char* reason = nullptr;
      if (node.state == NodeState::kDown) {
        reason = kDown;
      } else if (node.state == NodeState::kDraining) {
        reason = kDraining;
      } else if (!labels_match(node, request.required_labels)) {
        reason = kLabels;
      } else if (request.max_per_node > 0 && count_of(i) >= request.max_per_node) {
        reason = kMaxPerNode;
      } else {
        for (int r = 0; r < R && reason == nullptr; ++r) {
          if (leaves[i].free[r] < q[r]) reason = kInsufficient[r];
        }
      }
      if (reason != nullptr) out.push_back(Rejection{node.id, reason});
    }
    return out;
  }

  PlacementPlan place(const PlacementRequest& request) {
    PlacementPlan plan;
    if (std::string error = validate(request); !error.empty()) {
      plan.invalid = true;
      plan.unplaced = std::max(request.count, 0);
      plan.reason = std::move(error);
      return plan;
    }
    for (int r = 0; r < R; ++r) q[r] = request.per_instance.at(r), memo_cap[r] = -1;
    auto found = ufops.find(request.ufop);
    hosting = found == ufops.end() ? nullptr : &found->second;
    std::vector<int> matching;
    bool labelled = !request.required_labels.empty();
    if (labelled) {
      for (int i = 0; i < n; ++i) {
        if (leaves[i].valid && labels_match((*nodes)[i], request.required_labels)) {
          matching.push_back(i);
        }
      }
    }
    plan.nodes.reserve(request.count);
    for (int k = 0; k < request.count; ++k) {
      int i = pick(request, labelled ? &matching : nullptr);
      if (i < 0) {
        plan.unplaced = request.count - k;
        plan.rejections = rejections(request);
        plan.reason = describe(plan.rejections, nodes->size());
        break;
      }
      apply(i, request);
      plan.nodes.push_back((*nodes)[i].id);
    }
    return plan;
  }
};

Placer::Placer(std::vector<NodeView>* nodes, uint64_t seed)
    : impl_(std::make_unique<Impl>(nodes, seed)) {}
Placer::~Placer() = default;

PlacementPlan Placer::place(const PlacementRequest& request) { return impl_->place(request); }

PlacementPlan place(std::vector<NodeView>& nodes, const PlacementRequest& request, uint64_t seed) {
  Placer placer(&nodes, seed);
  return placer.place(request);
}

}  // namespace qufop::scheduler

// The placement core: a pure function of a cluster view, a request and a seed (no I/O, clocks,
// threads or global randomness). DESIGN.md "Placement".
//
// For each instance, in order:
//  1. Filters, each recording a reason from a fixed list when it rejects a node:
//     "down", "draining", "label mismatch", "max per node", "insufficient cpu",
//     "insufficient memory", "insufficient disk", "insufficient ports".
//     Free for placement = min(capacity - allocated, reported_free where known) per resource; a
//     node is never taken below 0 on any resource (no overcommit).
//  2. Scorers, lexicographic:
//     a. spread: fewest instances of this UFOP on the node;
//     b. balance: most free share of the scarcest resource after placement, in millionths:
//          share_r = floor(free_r * 1e6 / capacity_r) - ceil(request_r * 1e6 / capacity_r)
//          balance = min over the four resources of share_r (a resource with capacity <= 0
//          counts as 1e6: the node has none of it, so only requests of 0 of it fit);
//     c. tie-break: splitmix64(seed ^ fnv1a(node id)), highest wins (then the smaller id) —
//        deterministic for a seed, independent of the order of the node vector.
//  3. The chosen node's allocated (and reported_free, where known) and instances_per_ufop grow by
//     the instance, so the next instance and the next request see it.
//
// Speed: the Placer keeps a max-tree over the nodes (ordered by capacity, then tie-break) with
// per-subtree bounds (free per resource, free share, capacity, tie-break) and does a
// branch-and-bound search for the best node among those with none of the UFOP's instances; nodes
// already hosting the UFOP, and requests with required labels, are scanned directly. The result
// is exactly the scoring above (tests compare it with a full scan). Building a Placer is O(nodes);
// each placement is O(log nodes) when bounds are tight, O(nodes) at worst.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace qufop::scheduler {

struct Resources {
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 0;
  int64_t disk_bytes = 0;
  int64_t ports = 0;

  static constexpr int kCount = 4;
  // Field by index: 0 cpu, 1 memory, 2 disk, 3 ports (the order of the rejection reasons).
  int64_t& at(int i);
  int64_t at(int i) const;
  static const char* name(int i);  // "cpu", "memory", "disk", "ports"

  Resources& add(const Resources& other);
  Resources& sub(const Resources& other);
  // True when every field of this fits within `available`.
  bool fits(const Resources& available) const;
  bool any_negative() const;
  bool operator==(const Resources&) const = default;
};

enum class NodeState { kUp, kDown, kDraining };

struct NodeView {
  std::string id;
  NodeState state = NodeState::kUp;
  std::map<std::string, std::string> labels;
  Resources capacity;
  // Sum of the requests of the instances the scheduler assigned there.
  Resources allocated;
  // What the node last said it has free; a field of -1 = unknown.
  Resources reported_free{-1, -1, -1, -1};
  std::map<std::string, int> instances_per_ufop;
  int64_t last_seen_ms = 0;
};

// min(capacity - allocated, reported_free where known), per resource.
Resources free_for_placement(const NodeView& node);

struct PlacementRequest {
  std::string ufop;
  int64_t version = 0;
  Resources per_instance;
  int count = 0;
  std::map<std::string, std::string> required_labels;
  int max_per_node = 0;  // 0 = unlimited
};

struct Rejection {
  std::string node;
  std::string reason;  // one of the fixed reasons above
};

struct PlacementPlan {
  std::vector<std::string> nodes;  // one node id per placed instance, in order
  int unplaced = 0;
  // When unplaced > 0: "0/3 nodes: 2 insufficient memory, 1 down"; when invalid:
  // "invalid request: count -1".
  std::string reason;
  bool invalid = false;  // the request was malformed; nothing was placed
  // When unplaced > 0 and valid: why each node was rejected for the first unplaced instance.
  std::vector<Rejection> rejections;
};

// "K/N nodes: 2 insufficient memory, 1 down": N = total_nodes, K = N - rejections, counts per
// reason, most frequent first, ties alphabetically. "0/0 nodes: no nodes" for an empty cluster.
std::string describe(const std::vector<Rejection>& rejections, size_t total_nodes);

// Empty when the request is well-formed, else "invalid request: count -1" and the like.
std::string validate(const PlacementRequest& request);

// Places requests one after another over one prepared view. The Placer owns *nodes while it
// lives: it writes each placement through to the NodeView (allocated, reported_free where known,
// instances_per_ufop); do not change the vector behind its back.
class Placer {
 public:
  Placer(std::vector<NodeView>* nodes, uint64_t seed);
  ~Placer();
  Placer(const Placer&) = delete;
  Placer& operator=(const Placer&) = delete;

  PlacementPlan place(const PlacementRequest& request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Convenience: one request over `nodes` (updated in place as above).
PlacementPlan place(std::vector<NodeView>& nodes, const PlacementRequest& request, uint64_t seed);

}  // namespace qufop::scheduler

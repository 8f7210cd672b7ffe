#include "gate/balancer.h"

#include <algorithm>

namespace qufop::gate {

bool Instance::try_claim() {
  int cur = outstanding.load(std::memory_order_relaxed);
  while (cur < concurrency) {
    if (outstanding.compare_exchange_weak(cur, cur + 1, std::memory_order_seq_cst)) return true;
  }
  return false;
}

void Instance::record_failure(int64_t now_ms, int eject_after, int64_t eject_for_ms) {
  int n = failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (eject_after > 0 && n >= eject_after) {
    ejected_until_ms.store(now_ms + eject_for_ms, std::memory_order_relaxed);
    failures.store(0, std::memory_order_relaxed);
  }
}

double warmup_weight(int64_t running_since_ms, int64_t warmup_ms, int64_t now_ms) {
  if (warmup_ms <= 0 || running_since_ms <= 0) return 1.0;
  int64_t age = now_ms - running_since_ms;
  if (age >= warmup_ms) return 1.0;
  if (age <= 0) return 0.1;
  return 0.1 + 0.9 * static_cast<double>(age) / static_cast<double>(warmup_ms);
}

namespace {

constexpr size_t kSmall = 16;

// Instances with a free slot, with their weights; on the stack for the common small case.
struct Candidates {
  Instance* inst[kSmall];
  double weight[kSmall];
  size_t n = 0;
  double total = 0;
};

// A weighted sample among the first `n` candidates, excluding index `not_this`.
size_t sample(const Candidates& c, double total, size_t not_this, Rng& rng) {
  double r = rng.unit() * total;
  size_t last = c.n;
  for (size_t i = 0; i < c.n; ++i) {
    if (i == not_this) continue;
    last = i;
    if (r < c.weight[i]) return i;
    r -= c.weight[i];
  }
  return last;  // rounding: the last eligible one
}

// Larger sets (rare: more than 16 instances of one UFOP): uniform choice of two.
Instance* pick_large(const std::vector<InstancePtr>& instances, int64_t now_ms, Rng& rng,
                     const Instance* skip) {
  Instance* best = nullptr;
  double best_score = 0;
  size_t start = rng.next() % instances.size();
  int seen = 0;
  for (size_t k = 0; k < instances.size() && seen < 2; ++k) {
    Instance* i = instances[(start + k * 7919) % instances.size()].get();
    if (i == skip || i->ejected(now_ms)) continue;
    if (i->outstanding.load(std::memory_order_relaxed) >= i->concurrency) continue;
    double w = warmup_weight(i->running_since_ms, i->warmup_ms, now_ms);
    if (rng.unit() > w) continue;  // thinning by weight
    double score = (i->outstanding.load(std::memory_order_relaxed) + 1) / w;
    if (!best || score < best_score) best = i, best_score = score;
    ++seen;
  }
  if (!best) {  // fall back to the first one with room
    for (const auto& p : instances) {
      if (p.get() != skip && !p->ejected(now_ms) && p->try_claim()) return p.get();
    }
    return nullptr;
  }
  if (best->try_claim()) return best;
  return nullptr;
}

}  // namespace

Instance* pick_and_claim(const std::vector<InstancePtr>& instances, int64_t now_ms, Rng& rng,
                         const Instance* skip) {
  if (instances.size() > kSmall) {
    if (Instance* i = pick_large(instances, now_ms, rng, skip)) return i;
    // Rare: a race on the chosen one; claim any with room.
    for (const auto& p : instances) {
      if (p.get() != skip && !p->ejected(now_ms) && p->try_claim()) return p.get();
    }
    return nullptr;
  }
  // A claim can lose a race with another thread; then choose again among what is left.
  for (int attempt = 0; attempt < 4; ++attempt) {
    Candidates c;
    for (const auto& p : instances) {
      Instance* i = p.get();
      if (i == skip || i->ejected(now_ms)) continue;
      if (i->outstanding.load(std::memory_order_relaxed) >= i->concurrency) continue;
      c.inst[c.n] = i;
      c.weight[c.n] = warmup_weight(i->running_since_ms, i->warmup_ms, now_ms);
      c.total += c.weight[c.n];
      ++c.n;
    }
    if (c.n == 0) return nullptr;
    size_t a = c.n == 1 ? 0 : sample(c, c.total, c.n, rng);
    size_t chosen = a;
    if (c.n > 1) {
      size_t b = sample(c, c.total - c.weight[a], a, rng);
      // The less loaded relative to its weight; ties keep the first (weighted) sample.
      double sa = (c.inst[a]->outstanding.load(std::memory_order_relaxed) + 1) / c.weight[a];
      double sb = (c.inst[b]->outstanding.load(std::memory_order_relaxed) + 1) / c.weight[b];
      if (c.inst[a]->outstanding.load(std::memory_order_relaxed) !=
              c.inst[b]->outstanding.load(std::memory_order_relaxed) &&
          sb < sa) {
        chosen = b;
      }
    }
    if (c.inst[chosen]->try_claim()) return c.inst[chosen];
  }
  return nullptr;
}

bool any_routable(const std::vector<InstancePtr>& instances, int64_t now_ms, const Instance* skip) {
  return std::any_of(instances.begin(), instances.end(),
                     [&](const InstancePtr& p) { return p.get() != skip && !p->ejected(now_ms); });
}

}  // namespace qufop::gate

// One UFOP's admission state, shared by every worker thread and kept across routing-table
// updates: its FIFO queue of requests waiting for a free instance slot, the counters behind the
// per-command limit and the gauges, and its stats.
//
// The fast path takes no lock: while nobody waits, a request claims a slot with a CAS
// (pick_and_claim). Only when every slot is taken does it enter the queue (a mutex). A release
// decrements the instance's count and then looks at the queue length; an enqueue publishes the
// length and then tries to claim. Both are sequentially consistent, so one of them always sees
// the other: a waiter is never left behind a free slot.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "gate/balancer.h"
#include "gate/stats.h"

namespace qufop::gate {

// A request waiting for a slot. `wake` is called under the queue's lock once `granted` is set,
// with the waiter itself (to keep it alive in what it posts): it must only post, never block.
struct Waiter {
  virtual ~Waiter() = default;
  std::function<void(const std::shared_ptr<Waiter>&)> wake;
  InstancePtr granted;  // under the queue's lock
};

using Members = std::vector<InstancePtr>;

class UfopQueue {
 public:
  explicit UfopQueue(std::string name) : name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  UfopStats& stats() { return stats_; }
  const UfopStats& stats() const { return stats_; }

  // The routable instances now; waiters are served from the new set at once.
  void set_members(std::shared_ptr<const Members> members, int64_t now_ms, Rng& rng);

  // Per-command concurrency: requests admitted (queued or in flight). False when at `limit`
  // (0: unlimited); a true must be paired with leave().
  bool enter(int limit);
  void leave() { admitted_.fetch_sub(1, std::memory_order_relaxed); }

  // The lock-free try: a slot on one of `members` (the caller's snapshot) while nobody waits.
  InstancePtr try_claim(const Members& members, int64_t now_ms, Rng& rng,
                        const Instance* skip = nullptr);

  // A slot on another instance than `skip`, queue or not: the retry of a request that already
  // had its turn.
  InstancePtr claim_other(const Members& members, int64_t now_ms, Rng& rng, const Instance* skip);

  enum class Enqueued { kGranted, kWaiting, kFull };
  // Queues `w` unless `bound` requests already wait. kGranted: a slot was free after all
  // (w->granted is set; `wake` is not called).
  Enqueued enqueue(const std::shared_ptr<Waiter>& w, size_t bound, int64_t now_ms, Rng& rng);
  // The deadline passed: removes `w`; returns its slot if it was granted meanwhile.
  InstancePtr cancel(const std::shared_ptr<Waiter>& w);

  // Gives the slot back and serves the head of the queue.
  void release(Instance& instance, int64_t now_ms, Rng& rng);
  // Serves waiters (after ejections expire, for instance); cheap when nobody waits.
  void drain(int64_t now_ms, Rng& rng);

  int queued() const { return queued_.load(std::memory_order_relaxed); }
  int in_flight() const { return active_.load(std::memory_order_relaxed); }

 private:
  void drain_locked(int64_t now_ms, Rng& rng);

  const std::string name_;
  UfopStats stats_;
  std::atomic<int> admitted_{0};
  std::atomic<int> active_{0};
  std::atomic<int> queued_{0};
  std::mutex mu_;
  std::shared_ptr<const Members> members_;  // under mu_
  std::deque<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace qufop::gate

#include "gate/queue.h"

#include <algorithm>

namespace qufop::gate {

void UfopQueue::set_members(std::shared_ptr<const Members> members, int64_t now_ms, Rng& rng) {
  std::lock_guard lock(mu_);
  members_ = std::move(members);
  drain_locked(now_ms, rng);
}

bool UfopQueue::enter(int limit) {
  int n = admitted_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (limit > 0 && n > limit) {
    admitted_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

InstancePtr UfopQueue::try_claim(const Members& members, int64_t now_ms, Rng& rng,
                                 const Instance* skip) {
  if (queued_.load(std::memory_order_seq_cst) > 0) return nullptr;  // FIFO: no overtaking
  return claim_other(members, now_ms, rng, skip);
}

InstancePtr UfopQueue::claim_other(const Members& members, int64_t now_ms, Rng& rng,
                                   const Instance* skip) {
  Instance* i = pick_and_claim(members, now_ms, rng, skip);
  if (!i) return nullptr;
  active_.fetch_add(1, std::memory_order_relaxed);
  return i->shared_from_this();
}

UfopQueue::Enqueued UfopQueue::enqueue(const std::shared_ptr<Waiter>& w, size_t bound,
                                       int64_t now_ms, Rng& rng) {
  std::lock_guard lock(mu_);
  if (waiters_.size() >= bound) return Enqueued::kFull;
  waiters_.push_back(w);
  queued_.store(static_cast<int>(waiters_.size()), std::memory_order_seq_cst);
  // The wake of a waiter served right here would be wasted: take it out first.
  if (waiters_.size() == 1 && members_) {
    if (Instance* i = pick_and_claim(*members_, now_ms, rng)) {
      waiters_.pop_front();
      queued_.store(0, std::memory_order_seq_cst);
      active_.fetch_add(1, std::memory_order_relaxed);
      w->granted = i->shared_from_this();
      return Enqueued::kGranted;
    }
  }
  drain_locked(now_ms, rng);  // may serve `w` too: then its wake is on the way
  return Enqueued::kWaiting;
}

InstancePtr UfopQueue::cancel(const std::shared_ptr<Waiter>& w) {
  std::lock_guard lock(mu_);
  if (w->granted) return w->granted;
  auto it = std::find(waiters_.begin(), waiters_.end(), w);
  if (it != waiters_.end()) waiters_.erase(it);
  queued_.store(static_cast<int>(waiters_.size()), std::memory_order_seq_cst);
  return nullptr;
}

void UfopQueue::release(Instance& instance, int64_t now_ms, Rng& rng) {
  instance.release();
  active_.fetch_sub(1, std::memory_order_relaxed);
  if (queued_.load(std::memory_order_seq_cst) == 0) return;
  std::lock_guard lock(mu_);
  drain_locked(now_ms, rng);
}

void UfopQueue::drain(int64_t now_ms, Rng& rng) {
  if (queued_.load(std::memory_order_seq_cst) == 0) return;
  std::lock_guard lock(mu_);
  drain_locked(now_ms, rng);
}

void UfopQueue::drain_locked(int64_t now_ms, Rng& rng) {
  while (!waiters_.empty() && members_) {
    Instance* i = pick_and_claim(*members_, now_ms, rng);
    if (!i) break;
    auto w = std::move(waiters_.front());
    waiters_.pop_front();
    queued_.store(static_cast<int>(waiters_.size()), std::memory_order_seq_cst);
    active_.fetch_add(1, std::memory_order_relaxed);
    w->granted = i->shared_from_this();
    if (w->wake) w->wake(w);
  }
}

}  // namespace qufop::gate

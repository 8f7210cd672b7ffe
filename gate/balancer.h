// Instances as the gate sees them, and the choice of one: power of two choices over weighted
// samples, the less loaded of the two. Sampling by weight makes a warming instance's share of an
// idle UFOP's requests follow its weight (10% -> 100%); comparing outstanding requests keeps a
// busy UFOP's load even. No locks: outstanding counts are atomics claimed with a CAS, so a
// request never takes a slot beyond the instance's concurrency.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace qufop::gate {

// A small, fast, seedable generator (xorshift64*): each worker thread owns one.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  uint64_t next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545f4914f6cdd1dull;
  }
  // Uniform in [0, 1).
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

struct Instance : std::enable_shared_from_this<Instance> {
  Instance(std::string id, std::string host, uint16_t port, int concurrency,
           int64_t running_since_ms, int64_t warmup_ms)
      : id(std::move(id)),
        host(std::move(host)),
        port(port),
        address(this->host + ":" + std::to_string(port)),
        concurrency(concurrency),
        running_since_ms(running_since_ms),
        warmup_ms(warmup_ms) {}

  const std::string id;
  const std::string host;
  const uint16_t port;
  const std::string address;  // "host:port": the upstream pools' key
  const int concurrency;      // requests it takes at once
  const int64_t running_since_ms;
  const int64_t warmup_ms;

  std::atomic<int> outstanding{0};
  // Passive health: consecutive transport failures; ejected (skipped) until this time.
  std::atomic<int> failures{0};
  std::atomic<int64_t> ejected_until_ms{0};

  // Claims one of its slots; false when it is full.
  bool try_claim();
  void release() { outstanding.fetch_sub(1, std::memory_order_seq_cst); }
  bool ejected(int64_t now_ms) const {
    return ejected_until_ms.load(std::memory_order_relaxed) > now_ms;
  }
  // A transport failure; ejects it for eject_for_ms after `eject_after` in a row (0: never).
  void record_failure(int64_t now_ms, int eject_after, int64_t eject_for_ms);
  void record_success() {
    if (failures.load(std::memory_order_relaxed) != 0) failures.store(0, std::memory_order_relaxed);
  }
};

using InstancePtr = std::shared_ptr<Instance>;

// The warm-up weight at now_ms: 0.1 at running_since, rising linearly to 1.0 at
// running_since + warmup; 1.0 without a warm-up or a start time.
double warmup_weight(int64_t running_since_ms, int64_t warmup_ms, int64_t now_ms);

// Picks an instance with a free slot and claims it (outstanding incremented), or nullptr when
// every non-ejected instance is full. `skip` (may be null) is left out: the one that just failed.
Instance* pick_and_claim(const std::vector<InstancePtr>& instances, int64_t now_ms, Rng& rng,
                         const Instance* skip = nullptr);

// True when some instance is neither ejected nor `skip`: waiting in the queue can succeed.
bool any_routable(const std::vector<InstancePtr>& instances, int64_t now_ms,
                  const Instance* skip = nullptr);

}  // namespace qufop::gate

// Replay refusal for signed requests (auth.h), shared by the scheduler and the gate: a signature
// is accepted once while its X-Qiniu-Date is inside the verifier's window. Clients add a random
// X-Qiniu-Nonce, so two identical calls still sign differently.
//
// Entries are keyed by the access key and the decoded signature (Verified), never the header
// text: the header has several spellings of one signature (base64 padding, spaces after
// "Qiniu") that the verifier all accepts, and each must count as the same replay. Memory is
// bounded: an entry leaves once its date is out of the window (it could not pass the date check
// again), and at most `capacity` are kept — past that the oldest go early (counted: a replay of
// one of those would pass; size the capacity for the signed request rate times the window).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "common/auth.h"

namespace qufop::auth {

class ReplayGuard {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  // window: the verifier's date window. capacity 0: no replay refusal at all.
  ReplayGuard(std::chrono::seconds window, size_t capacity);
  ~ReplayGuard();
  ReplayGuard(const ReplayGuard&) = delete;
  ReplayGuard& operator=(const ReplayGuard&) = delete;

  bool enabled() const { return capacity_ > 0; }
  // Records a request Verifier::verify_full() accepted; false when its signature was already
  // recorded: a replay. `now` is injected (no clock reads here).
  bool first_use(const Verified& request, TimePoint now);
  // The same with the parts: `signature` is the decoded bytes, `date` the X-Qiniu-Date.
  bool first_use(std::string_view access_key, std::string_view signature, TimePoint date,
                 TimePoint now);

  size_t size() const { return size_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  uint64_t evicted() const { return evicted_.load(std::memory_order_relaxed); }

 private:
  struct Shard;
  static constexpr size_t kShards = 16;

  const std::chrono::seconds window_;
  const size_t capacity_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<size_t> size_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> evicted_{0};
};

}  // namespace qufop::auth

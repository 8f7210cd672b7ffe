// Request rates: token buckets refilled at `rate` tokens/s up to `burst`. One per signed user
// (TokenBucket, kept in the routing table) and one per client address for unsigned callers
// (ClientLimiter, bounded in memory). Time is passed in (steady milliseconds), so the logic is
// tested without a clock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace qufop::gate {

// One bucket's arithmetic without a lock: the owner holds its own.
struct Tokens {
  static constexpr int64_t kNever = INT64_MIN;
  double tokens = 0;
  int64_t last_ms = kNever;

  void refill(int64_t now_ms, double rate, double burst);
  // Takes one token; false when the bucket is empty.
  bool take(int64_t now_ms, double rate, double burst);
  // Milliseconds until a token is available (0 when one is).
  int64_t wait_ms(int64_t now_ms, double rate, double burst);
};

class TokenBucket {
 public:
  // rate <= 0: unlimited.
  TokenBucket(double rate, double burst);

  bool take(int64_t now_ms);
  int64_t wait_ms(int64_t now_ms);

 private:
  std::mutex mu_;  // one user's requests only: no contention between users
  const double rate_;
  const double burst_;
  Tokens tokens_;
};

// A token bucket per client address (IPv4 as v4-mapped IPv6). Memory is bounded two ways: a
// bucket idle long enough to be full again says nothing a new one would not, so expire() drops
// it; and at most `max_clients` are tracked — beyond that, new addresses share one bucket per
// shard until expiry makes room (an address flood cannot grow the table, and cannot starve the
// addresses already tracked).
class ClientLimiter {
 public:
  using Address = std::array<uint8_t, 16>;

  // rate <= 0: unlimited (take() always admits, nothing is tracked).
  ClientLimiter(double rate, double burst, size_t max_clients);
  ~ClientLimiter();

  bool enabled() const { return rate_ > 0; }
  // Takes one token for `client`: 0 when admitted, else the milliseconds until a token
  // (at least 1).
  int64_t take(const Address& client, int64_t now_ms);
  // Drops the buckets that have refilled; call periodically.
  void expire(int64_t now_ms);

  size_t tracked() const { return tracked_.load(std::memory_order_relaxed); }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct Shard;
  static constexpr size_t kShards = 16;

  const double rate_;
  const double burst_;
  const size_t per_shard_;
  const int64_t refill_ms_;  // idle this long: the bucket is full again
  std::unique_ptr<Shard[]> shards_;
  std::atomic<size_t> tracked_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace qufop::gate

// The committed leases and their expiry times (memory only: expiry is not persisted, as in
// etcd). The writer adds and removes leases after their commit; keep-alives renew here.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace qufop::keeper {

class Lessor {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  explicit Lessor(Clock clock) : clock_(std::move(clock)) {}

  // A lease granted (or restored at open): it expires ttl seconds from now.
  void add(int64_t id, int64_t ttl);
  void remove(int64_t id);
  bool exists(int64_t id) const;
  bool expired(int64_t id) const;

  enum class Renewal { kRenewed, kMissing, kExpired };
  // Resets the expiry to now + ttl unless the lease is gone or already ran out.
  Renewal renew(int64_t id, int64_t* ttl);

  struct Remaining {
    int64_t seconds = 0;  // truncated toward zero, as etcd's int64(Remaining().Seconds())
    int64_t granted_ttl = 0;
  };
  std::optional<Remaining> remaining(int64_t id) const;

  // The leases whose TTL ran out by the clock.
  std::vector<int64_t> expired_ids() const;

 private:
  struct Entry {
    int64_t ttl = 0;
    std::chrono::steady_clock::time_point expiry;
  };
  Clock clock_;
  mutable std::mutex mu_;
  std::map<int64_t, Entry> leases_;
};

}  // namespace qufop::keeper

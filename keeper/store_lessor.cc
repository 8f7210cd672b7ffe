#include "keeper/store_lessor.h"

namespace qufop::keeper {

void Lessor::add(int64_t id, int64_t ttl) {
  auto now = clock_();
  std::lock_guard lock(mu_);
  leases_[id] = Entry{ttl, now + std::chrono::seconds(ttl)};
}

void Lessor::remove(int64_t id) {
  std::lock_guard lock(mu_);
  leases_.erase(id);
}

bool Lessor::exists(int64_t id) const {
  std::lock_guard lock(mu_);
  return leases_.count(id) != 0;
}

bool Lessor::expired(int64_t id) const {
  auto now = clock_();
  std::lock_guard lock(mu_);
  auto it = leases_.find(id);
  return it != leases_.end() && it->second.expiry <= now;
}

// etcd refuses to renew a lease that already ran out (it is being revoked).
Lessor::Renewal Lessor::renew(int64_t id, int64_t* ttl) {
  auto now = clock_();
  std::lock_guard lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return Renewal::kMissing;
  if (it->second.expiry <= now) return Renewal::kExpired;
  it->second.expiry = now + std::chrono::seconds(it->second.ttl);
  *ttl = it->second.ttl;
  return Renewal::kRenewed;
}

std::optional<Lessor::Remaining> Lessor::remaining(int64_t id) const {
  auto now = clock_();
  std::lock_guard lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::nullopt;
  auto left = std::chrono::duration_cast<std::chrono::seconds>(it->second.expiry - now);
  return Remaining{left.count(), it->second.ttl};
}

std::vector<int64_t> Lessor::expired_ids() const {
  auto now = clock_();
  std::lock_guard lock(mu_);
  std::vector<int64_t> out;
  for (const auto& [id, entry] : leases_) {
    if (entry.expiry <= now) out.push_back(id);
  }
  return out;
}

}  // namespace qufop::keeper

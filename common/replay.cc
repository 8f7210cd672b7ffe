#include "common/replay.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <unordered_set>
#include <utility>

namespace qufop::auth {

namespace {

// 128 bits of the signature, the first 64 mixed with the access key: HMAC output is uniform, so
// two accepted requests share a key with negligible probability, and a caller cannot aim at
// another's future signature.
struct Key {
  uint64_t a = 0;
  uint64_t b = 0;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const { return static_cast<size_t>(k.a); }
};

Key key_of(std::string_view access_key, std::string_view signature) {
  char bytes[16] = {};
  std::memcpy(bytes, signature.data(), std::min<size_t>(signature.size(), sizeof bytes));
  Key k;
  std::memcpy(&k.a, bytes, 8);
  std::memcpy(&k.b, bytes + 8, 8);
  k.a ^= std::hash<std::string_view>{}(access_key);
  return k;
}

}  // namespace

struct ReplayGuard::Shard {
  std::mutex mu;
  std::unordered_set<Key, KeyHash> seen;
  std::deque<std::pair<TimePoint, Key>> order;  // (expiry, key), in the order accepted
};

ReplayGuard::ReplayGuard(std::chrono::seconds window, size_t capacity)
    : window_(window), capacity_(capacity), shards_(std::make_unique<Shard[]>(kShards)) {}

ReplayGuard::~ReplayGuard() = default;

bool ReplayGuard::first_use(const Verified& request, TimePoint now) {
  return first_use(request.access_key, request.signature, request.date, now);
}

bool ReplayGuard::first_use(std::string_view access_key, std::string_view signature, TimePoint date,
                            TimePoint now) {
  if (capacity_ == 0) return true;
  const Key k = key_of(access_key, signature);
  Shard& s = shards_[KeyHash{}(k) % kShards];
  const size_t limit = std::max<size_t>(1, capacity_ / kShards);
  std::lock_guard lock(s.mu);
  // Out of the window: that request can no longer pass the date check. Expiries are not in
  // acceptance order (clients' dates differ), so one still valid at the front holds back later
  // expired ones a little: never one still valid, though.
  size_t dropped = 0;
  while (!s.order.empty() && s.order.front().first < now) {
    s.seen.erase(s.order.front().second);
    s.order.pop_front();
    ++dropped;
  }
  if (s.seen.count(k)) {
    size_.fetch_sub(dropped, std::memory_order_relaxed);
    refused_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  while (s.order.size() >= limit) {
    s.seen.erase(s.order.front().second);
    s.order.pop_front();
    ++dropped;
    evicted_.fetch_add(1, std::memory_order_relaxed);
  }
  s.seen.insert(k);
  // The verifier accepts |date - now| <= window, so the entry is needed until date + window.
  s.order.emplace_back(date + window_, k);
  size_.fetch_add(1, std::memory_order_relaxed);
  size_.fetch_sub(dropped, std::memory_order_relaxed);
  return true;
}

}  // namespace qufop::auth

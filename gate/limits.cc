#include "gate/limits.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace qufop::gate {

void Tokens::refill(int64_t now_ms, double rate, double burst) {
  if (last_ms == kNever) {  // a new bucket starts full
    tokens = burst;
    last_ms = now_ms;
    return;
  }
  if (now_ms > last_ms) {
    tokens = std::min(burst, tokens + rate * static_cast<double>(now_ms - last_ms) / 1000.0);
    last_ms = now_ms;
  }
}

bool Tokens::take(int64_t now_ms, double rate, double burst) {
  refill(now_ms, rate, burst);
  if (tokens < 1.0) return false;
  tokens -= 1.0;
  return true;
}

int64_t Tokens::wait_ms(int64_t now_ms, double rate, double burst) {
  refill(now_ms, rate, burst);
  if (tokens >= 1.0) return 0;
  return static_cast<int64_t>(std::ceil((1.0 - tokens) * 1000.0 / rate));
}

TokenBucket::TokenBucket(double rate, double burst) : rate_(rate), burst_(std::max(1.0, burst)) {}

bool TokenBucket::take(int64_t now_ms) {
  if (rate_ <= 0) return true;
  std::lock_guard lock(mu_);
  return tokens_.take(now_ms, rate_, burst_);
}

int64_t TokenBucket::wait_ms(int64_t now_ms) {
  if (rate_ <= 0) return 0;
  std::lock_guard lock(mu_);
  return tokens_.wait_ms(now_ms, rate_, burst_);
}

namespace {

struct AddressHash {
  size_t operator()(const ClientLimiter::Address& a) const {
    uint64_t hi, lo;
    std::memcpy(&hi, a.data(), 8);
    std::memcpy(&lo, a.data() + 8, 8);
    return std::hash<uint64_t>{}(hi * 0x9e3779b97f4a7c15ull ^ lo);
  }
};

}  // namespace

struct ClientLimiter::Shard {
  std::mutex mu;
  std::unordered_map<Address, Tokens, AddressHash> buckets;
  Tokens overflow;  // shared by the addresses that found the shard full
};

ClientLimiter::ClientLimiter(double rate, double burst, size_t max_clients)
    : rate_(rate),
      burst_(std::max(1.0, burst)),
      per_shard_(std::max<size_t>(1, max_clients / kShards)),
      refill_ms_(rate > 0 ? static_cast<int64_t>(std::ceil(burst_ * 1000.0 / rate)) : 0),
      shards_(std::make_unique<Shard[]>(kShards)) {}

ClientLimiter::~ClientLimiter() = default;

int64_t ClientLimiter::take(const Address& client, int64_t now_ms) {
  if (rate_ <= 0) return 0;
  Shard& s = shards_[AddressHash{}(client) % kShards];
  std::lock_guard lock(s.mu);
  auto it = s.buckets.find(client);
  Tokens* t = nullptr;
  if (it != s.buckets.end()) {
    t = &it->second;
  } else if (s.buckets.size() < per_shard_) {
    t = &s.buckets.emplace(client, Tokens{}).first->second;
    tracked_.fetch_add(1, std::memory_order_relaxed);
  } else {
    t = &s.overflow;
  }
  if (t->take(now_ms, rate_, burst_)) return 0;
  refused_.fetch_add(1, std::memory_order_relaxed);
  return std::max<int64_t>(1, t->wait_ms(now_ms, rate_, burst_));
}

void ClientLimiter::expire(int64_t now_ms) {
  if (rate_ <= 0) return;
  for (size_t i = 0; i < kShards; ++i) {
    Shard& s = shards_[i];
    std::lock_guard lock(s.mu);
    size_t dropped = std::erase_if(
        s.buckets, [&](const auto& kv) { return now_ms - kv.second.last_ms >= refill_ms_; });
    tracked_.fetch_sub(dropped, std::memory_order_relaxed);
  }
}

}  // namespace qufop::gate

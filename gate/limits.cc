#include "gate/limits.h"

#include <algorithm>
#include <cmath>

namespace qufop::gate {

TokenBucket::TokenBucket(double rate, double burst)
    : rate_(rate), burst_(std::max(1.0, burst)), tokens_(std::max(1.0, burst)) {}

void TokenBucket::refill(int64_t now_ms) {
  if (last_ms_ >= 0 && now_ms > last_ms_) {
    tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_ms - last_ms_) / 1000.0);
  }
  if (now_ms > last_ms_) last_ms_ = now_ms;
}

bool TokenBucket::take(int64_t now_ms) {
  if (rate_ <= 0) return true;
  std::lock_guard lock(mu_);
  refill(now_ms);
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

int64_t TokenBucket::wait_ms(int64_t now_ms) {
  if (rate_ <= 0) return 0;
  std::lock_guard lock(mu_);
  refill(now_ms);
  if (tokens_ >= 1.0) return 0;
  return static_cast<int64_t>(std::ceil((1.0 - tokens_) * 1000.0 / rate_));
}

}  // namespace qufop::gate

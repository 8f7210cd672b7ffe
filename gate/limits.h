// Per-user request rate: a token bucket refilled at `rate` tokens/s up to `burst`. Time is
// passed in (steady milliseconds), so the logic is tested without a clock.
#pragma once

#include <cstdint>
#include <mutex>

namespace qufop::gate {

class TokenBucket {
 public:
  // rate <= 0: unlimited.
  TokenBucket(double rate, double burst);

  // Takes one token; false when the bucket is empty.
  bool take(int64_t now_ms);
  // Milliseconds until a token is available (0 when one is).
  int64_t wait_ms(int64_t now_ms);

 private:
  void refill(int64_t now_ms);

  std::mutex mu_;  // one user's requests only: no contention between users
  const double rate_;
  const double burst_;
  double tokens_;
  int64_t last_ms_ = -1;
};

}  // namespace qufop::gate

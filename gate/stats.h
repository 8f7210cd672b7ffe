// Per-UFOP figures for /metrics, kept in atomics so the request path never takes a lock:
// requests by status, a latency histogram, queued requests their clients abandoned, and the
// gauges (queue length, in flight) read from the UFOP's queue when rendered.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace qufop::gate {

class UfopStats {
 public:
  // Upper bounds of the latency buckets, in seconds (+Inf is implied).
  static constexpr std::array<double, 14> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                      0.25,  0.5,    1,     2.5,  5,     10,   30};

  void record(int status, int64_t micros);
  uint64_t count(int status) const;
  // A queued request whose client left before it had a slot (it never reached an instance).
  void record_abandoned() { abandoned_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t abandoned() const { return abandoned_.load(std::memory_order_relaxed); }

  // Appends this UFOP's series to the three families' texts.
  void render(const std::string& ufop, std::string& requests, std::string& histogram) const;

 private:
  std::array<std::atomic<uint64_t>, 500> by_status_{};  // 100..599
  std::array<std::atomic<uint64_t>, kBuckets.size() + 1> buckets_{};
  std::atomic<uint64_t> sum_micros_{0};
  std::atomic<uint64_t> total_{0};
  std::atomic<uint64_t> abandoned_{0};
};

}  // namespace qufop::gate

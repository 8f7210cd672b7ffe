#include "gate/stats.h"

#include <cstdio>

namespace qufop::gate {

void UfopStats::record(int status, int64_t micros) {
  if (status >= 100 && status < 600)
    by_status_[status - 100].fetch_add(1, std::memory_order_relaxed);
  double secs = static_cast<double>(micros) / 1e6;
  size_t b = 0;
  while (b < kBuckets.size() && secs > kBuckets[b]) ++b;
  buckets_[b].fetch_add(1, std::memory_order_relaxed);
  sum_micros_.fetch_add(static_cast<uint64_t>(micros < 0 ? 0 : micros), std::memory_order_relaxed);
  total_.fetch_add(1, std::memory_order_relaxed);
}

uint64_t UfopStats::count(int status) const {
  if (status < 100 || status >= 600) return 0;
  return by_status_[status - 100].load(std::memory_order_relaxed);
}

void UfopStats::render(const std::string& ufop, std::string& requests,
                       std::string& histogram) const {
  const std::string label = "ufop=\"" + ufop + "\"";
  for (int s = 100; s < 600; ++s) {
    uint64_t n = by_status_[s - 100].load(std::memory_order_relaxed);
    if (n == 0) continue;
    requests += "qufop_gate_requests_total{" + label + ",code=\"" + std::to_string(s) + "\"} " +
                std::to_string(n) + "\n";
  }
  uint64_t cumulative = 0;
  char le[32];
  for (size_t b = 0; b <= kBuckets.size(); ++b) {
    cumulative += buckets_[b].load(std::memory_order_relaxed);
    if (b < kBuckets.size()) {
      std::snprintf(le, sizeof le, "%g", kBuckets[b]);
    } else {
      std::snprintf(le, sizeof le, "+Inf");
    }
    histogram += "qufop_gate_request_duration_seconds_bucket{" + label + ",le=\"" + le + "\"} " +
                 std::to_string(cumulative) + "\n";
  }
  char sum[64];
  std::snprintf(sum, sizeof sum, "%.6f",
                static_cast<double>(sum_micros_.load(std::memory_order_relaxed)) / 1e6);
  histogram += "qufop_gate_request_duration_seconds_sum{" + label + "} " + sum + "\n";
  histogram += "qufop_gate_request_duration_seconds_count{" + label + "} " +
               std::to_string(total_.load(std::memory_order_relaxed)) + "\n";
}

}  // namespace qufop::gate

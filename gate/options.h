// qufop-gate's own flags and the options they give.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"

namespace qufop::gate {

struct Options {
  std::vector<HostPort> keeper;
  size_t queue_free = 10;  // requests a free (or unsigned) caller may find queued and still wait
  size_t queue_paid = 3;
  int64_t queue_timeout_ms = 30'000;
  size_t max_connections = 10'000;
  double user_rate = 0;  // requests/s per signed user; 0: unlimited
  double user_burst = 0;
  // Unsigned calls (public UFOPs): a token bucket per client address; 0: unlimited.
  double anon_rate = 0;
  double anon_burst = 0;
  size_t anon_clients = 100'000;  // addresses tracked at once (memory bound)
  // Signatures remembered to refuse replays (within the ±15 min date window); 0: no refusal.
  size_t replay_cache = 1'000'000;
  int command_concurrency =
      0;  // requests per UFOP admitted at once (queued + in flight); 0: no cap
  int64_t upstream_timeout_ms = 60'000;
  int64_t connect_timeout_ms = 2'000;
  int64_t client_timeout_ms = 60'000;
  int eject_after = 3;
  int64_t eject_for_ms = 10'000;
  int threads = 0;  // 0: one per core
  uint64_t max_body_bytes = 1ull << 30;
  size_t max_header_bytes = 16u << 10;
  size_t max_signed_body_bytes = 1u << 20;  // signed JSON/form bodies are read whole to verify
  bool fast_path = true;  // the head scanner for small keep-alive requests (else Beast only)
};

std::vector<FlagSpec> option_flags();
Result<Options> options_from_flags(const Flags& flags);

}  // namespace qufop::gate

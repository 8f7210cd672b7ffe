// The routing table: what the gate knows from keeper (users, semi-public grants, UFOPs and
// their routable instances), rebuilt into an immutable Snapshot on every change. Workers read
// the snapshot without locks: they keep their own reference and swap it when generation()
// moves (one atomic load per request). Per-UFOP queues and per-instance state (outstanding
// requests, ejection) live across snapshots.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/api.h"
#include "common/config.h"
#include "gate/balancer.h"
#include "gate/limits.h"
#include "gate/queue.h"
#include "keeper/types.h"

namespace qufop::gate {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct User {
  std::string access_key;
  std::string secret_key;
  bool paid = false;
  bool admin = false;
  std::shared_ptr<TokenBucket> bucket;
};

struct Route {
  std::string name;
  std::string owner;  // access key
  api::UfopMode mode = api::UfopMode::kPrivate;
  std::shared_ptr<UfopQueue> queue;
  std::shared_ptr<const Members> members;  // running, not stopping, with an address
};

struct Snapshot {
  StringMap<User> users;
  std::unordered_set<std::string> uses;  // "<ak>/<ufop>"
  StringMap<Route> ufops;
  int64_t revision = 0;
};

class Table {
 public:
  struct Options {
    double user_rate = 0;  // requests/s per user; 0: unlimited
    double user_burst = 0;
  };
  explicit Table(Options options);

  // The keeper range this table follows (users, grants, UFOPs, instances; nodes pass through
  // and are ignored).
  static std::string range_start() { return std::string(api::kInstancesPrefix); }
  static std::string range_end();

  // Replaces everything with a fresh range's key-values.
  void reset(const std::vector<keeper::KeyValue>& kvs, int64_t revision, int64_t now_ms);
  void apply(const std::vector<keeper::Event>& events, int64_t revision, int64_t now_ms);

  std::shared_ptr<const Snapshot> current() const;
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Every UFOP's queue, for /metrics and the periodic drain.
  std::vector<std::shared_ptr<UfopQueue>> queues() const;

 private:
  void publish(int64_t revision, int64_t now_ms);
  InstancePtr instance_for(const std::string& key, const api::InstanceRecord& r, int concurrency);

  const Options options_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> kv_;  // under mu_
  StringMap<std::shared_ptr<UfopQueue>> queues_;
  StringMap<InstancePtr> instances_;
  StringMap<std::shared_ptr<TokenBucket>> buckets_;
  std::unordered_set<std::string> bad_;  // keys already reported as unparsable
  std::shared_ptr<const Snapshot> current_;
  std::atomic<uint64_t> generation_{0};
  Rng rng_{42};
};

// Follows keeper: a range, then a watch from the revision after it; after a failure it resumes
// from the last revision seen + 1 (a fresh range when that was compacted).
class Watcher {
 public:
  Watcher(std::vector<HostPort> endpoints, std::shared_ptr<Table> table,
          std::function<int64_t()> now_ms);
  ~Watcher();
  void start();
  // Ends the thread and waits for it: a pause or a keeper watch in progress ends at once.
  void stop();
  // True once the first range was loaded.
  bool synced() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::thread thread_;
};

// Splits "host:port" of an instance record; nullopt-like error when malformed.
Result<HostPort> parse_instance_address(std::string_view address);

}  // namespace qufop::gate

// The controller: the scheduler's in-memory view of the cluster (rebuilt from keeper at start),
// the node protocol (heartbeats, assignment long polls), the public operations (register,
// versions, resize, upgrade, lists) and the level-triggered reconcile loop that drives the pure
// core (reconcile.h). Every change is written to keeper before the view takes it, so a restart
// (even SIGKILL) loses nothing: the next start loads the same view and converges.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/api.h"
#include "common/http_server.h"
#include "common/result.h"
#include "scheduler/reconcile.h"
#include "scheduler/records.h"

namespace qufop {
class Metrics;
}

namespace qufop::scheduler {

struct ControllerOptions {
  std::chrono::milliseconds node_timeout{10'000};
  std::chrono::milliseconds reconcile_period{1'000};
  std::chrono::milliseconds heartbeat{1'000};  // what nodes are told to use
  // An instance assigned but never reported by its node for this long is failed (and replaced).
  std::chrono::milliseconds start_timeout{60'000};
  uint64_t seed = 0;  // placement ties; 0: from the clock
  // Runs after the view is loaded and before the scheduler is ready (users, admin.conf); a
  // failure is retried like a failed load.
  std::function<Result<void>()> on_load;
};

// The outcome of a resize or an upgrade, for qufopctl.
struct ScaleResult {
  std::map<int64_t, int64_t> desired;  // version -> count after the change
  int64_t unschedulable = 0;           // instances that fit nowhere now
  std::string reason;                  // "0/3 nodes: 2 insufficient memory, 1 down"
};

struct NodeInfo {
  api::NodeRecord record;
  api::Resources allocated;  // what the scheduler placed there
  int64_t instances = 0;
  int64_t last_seen_ago_ms = 0;
};

class Controller {
 public:
  Controller(RecordStore& store, ControllerOptions options, Metrics* metrics = nullptr);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  // Loads the view from keeper. Nodes get a fresh node_timeout from now: a scheduler restart
  // does not declare the whole cluster down.
  Result<void> load();
  // Starts the loop: load() (retried while keeper is unreachable: it may be starting too), then
  // reconcile passes; it also expires assignment polls. stop() ends it.
  void start();
  void stop();
  // Loaded: until then every operation fails with "unavailable".
  bool ready() const;

  // ---- the node protocol ----
  Result<api::HeartbeatReply> heartbeat(const api::NodeStatus& status);
  // Answers with the node's assignments as soon as its index passes `index`, or after `wait`.
  void poll_assignments(const std::string& node, int64_t index, std::chrono::milliseconds wait,
                        http::Responder responder);
  Result<api::AssignmentList> assignments(const std::string& node);

  // ---- the public operations ----
  Result<api::UfopRecord> register_ufop(api::UfopRecord ufop);
  Result<void> unregister_ufop(const std::string& name);
  // A new version of a UFOP (version 0: the next number). Its image is in the registry.
  Result<api::VersionRecord> add_version(api::VersionRecord version);
  // Sets the total count (the newest version in the desired set takes a raise; a cut comes
  // from the oldest versions first). refuse: fail with nothing changed when not everything fits.
  Result<ScaleResult> resize(const std::string& name, int64_t count, bool refuse);
  // Moves `replace` instances to `version` (all of them when replace < 0).
  Result<ScaleResult> upgrade(const std::string& name, int64_t replace, int64_t version);

  Result<api::UfopRecord> ufop(const std::string& name);
  std::vector<api::UfopRecord> ufops();
  Result<std::vector<api::VersionRecord>> versions(const std::string& name);
  Result<std::vector<api::InstanceRecord>> instances(const std::string& name);
  std::vector<NodeInfo> nodes();
  // The last placement failure of a UFOP ("" when everything is placed).
  std::string unschedulable(const std::string& name);
  // The UFOP's versions held by the crash-loop backoff ("" when none): "version 2 crash-looping
  // (5 crashes in a row): next instance in 8 s".
  std::string backoff(const std::string& name);

  // One reconcile pass now (the loop runs them too).
  Result<void> reconcile_now();

 private:
  struct Node {
    api::NodeRecord record;
    api::Resources reported_free;
    int64_t last_seen_ms = 0;
    int64_t index = 0;  // assignment index: bumped whenever its assigned set changes
  };
  struct Poll {
    std::string node;
    int64_t index;
    std::chrono::steady_clock::time_point deadline;
    http::Responder responder;
  };

  Result<void> reconcile_locked(std::optional<ScaleResult>* report_for, const std::string& ufop);
  ClusterState build_state_locked(const std::map<std::string, api::UfopRecord>& ufops) const;
  static std::string unschedulable_text(const ReconcilePlan& plan, const std::string& ufop);
  // Takes the pass's crash-loop state: logs each new backoff step, updates the metrics.
  void take_crash_loops_locked(std::vector<CrashLoop> next, int64_t now);
  void set_backoff_metric_locked(const CrashLoop& c, int64_t now);
  // Writes a changed UFOP record, then reconciles and reports what did not fit.
  Result<ScaleResult> set_desired_locked(api::UfopRecord ufop, bool refuse);
  api::AssignmentList assignments_locked(const std::string& node) const;
  const api::VersionRecord* version_locked(const std::string& ufop, int64_t version) const;
  void bump_locked(const std::set<std::string>& nodes);
  void answer_polls_locked(bool expire_only);
  std::string new_instance_id_locked(const std::string& ufop);
  int64_t now_ms() const;
  void loop();

  RecordStore& store_;
  ControllerOptions options_;
  Metrics* metrics_;

  mutable std::mutex mu_;
  std::map<std::string, api::UfopRecord> ufops_;
  std::map<std::string, std::map<int64_t, api::VersionRecord>> versions_;
  std::map<std::string, api::InstanceRecord> instances_;  // by id
  std::map<std::string, Node> nodes_;
  std::map<std::string, std::string> unschedulable_;  // ufop -> reason
  // Crash-loop backoff state (reconcile.h rule 2b): in memory only; a restart forgets it, which
  // at worst places one replacement too early.
  std::vector<CrashLoop> crash_loops_;
  int64_t next_hold_ms_ = 0;  // the earliest hold to end (0: none): the loop runs a pass then
  std::vector<Poll> polls_;
  int64_t next_index_ = 0;
  uint64_t pass_ = 0;
  std::mt19937_64 ids_;

  std::condition_variable kick_;
  bool kicked_ = false;
  bool stopping_ = false;
  bool ready_ = false;
  std::thread loop_;
};

}  // namespace qufop::scheduler

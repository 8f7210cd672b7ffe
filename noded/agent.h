// The node agent's core (issue 7): the scheduler's desired set of instances made real on this
// node, level-triggered. Every step() compares the assignments with the instances it has and
// moves each one along its states:
//
//   pending -> pulling -> starting -> running <-> unhealthy
//                 \-> failed            \-> exited (the process ended: it stays stopped)
//   (no longer assigned) running/starting/unhealthy -> cooling -> stopping -> exited -> gone
//
// The kernel side (pull, sandbox, network, probes) sits behind InstanceRuntime, and the work
// runs on injected executors with an injected clock, so the logic is unit-tested over a fake
// runtime with no thread and no timing (tests/test_noded_agent.cc).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/api.h"
#include "common/result.h"
#include "noded/resources.h"

namespace qufop::noded {

struct StartedInstance {
  std::string ip;
  int host_port = 0;
};

struct ExitInfo {
  int exit_code = 0;  // -1: unknown (the process was adopted: noded is not its parent)
  std::string message;
};

// An instance recorded by an earlier noded (restore.h): still running and adopted as it is, or
// ended meanwhile (`exited`: reported exited, stays stopped).
struct AdoptedInstance {
  api::Assignment assignment;
  StartedInstance started;
  std::optional<ExitInfo> exited;
};

class InstanceRuntime {
 public:
  virtual ~InstanceRuntime() = default;
  // Pulls the image, builds the network and the sandbox. Blocks. On failure nothing is left
  // and the error says what failed.
  virtual Result<StartedInstance> start(const api::Assignment& a) = 0;
  // One health check (HTTP GET spec.health, 2xx; or a TCP connect). Blocks about a second at
  // most.
  virtual bool probe(const std::string& id, const api::InstanceSpec& spec) = 0;
  // Non-blocking: how the process ended once it has (its sandbox and network are released
  // then), nullopt while it runs.
  virtual std::optional<ExitInfo> exited(const std::string& id) = 0;
  // StopWait (SIGTERM, stop_wait, SIGKILL to all), then everything released. Blocks.
  virtual Result<ExitInfo> stop(const std::string& id, std::chrono::milliseconds stop_wait) = 0;
  // The instance is dropped for good: its last files (logs, record) go.
  virtual void forget(const std::string& id) = 0;
};

struct AgentOptions {
  std::chrono::milliseconds cooling{1000};        // reported cooling before the stop begins
  std::chrono::milliseconds probe_starting{100};  // health checks until the first success
  std::chrono::milliseconds probe_running{1500};  // afterwards
  int unhealthy_after = 3;                        // consecutive failures
};

class Agent {
 public:
  using Clock = std::function<int64_t()>;  // unix ms
  using Executor = std::function<void(std::function<void()>)>;

  // `work` runs starts and stops (a small pool), `probes` health checks.
  Agent(InstanceRuntime& runtime, Executor work, Executor probes, Clock clock,
        AgentOptions options = {});

  // Instances found running at startup: reported starting until their first health check.
  void adopt(const std::vector<AdoptedInstance>& instances);
  // The scheduler's whole desired set (ignored when older than the last one).
  void set_assignments(const api::AssignmentList& list);
  int64_t assignments_index() const;
  // One converge pass: starts, cooling, stops, exits, health checks. Call often.
  void step();
  // Every instance's status for a heartbeat. An instance no longer assigned and over (exited or
  // failed) is in one report, then forgotten at the next step().
  std::vector<api::InstanceStatus> report();
  // The same, without consequence (the local /v1/instances view).
  std::vector<api::InstanceStatus> snapshot() const;
  // What the instances hold (their requests; a host port each when published).
  Held held() const;
  // Ids of the instances whose sandbox may be running (for log rotation).
  std::vector<std::string> active_ids() const;
  // Blocks until some instance changed state or `timeout` passed; true on a change.
  bool wait_for_change(std::chrono::milliseconds timeout);

 private:
  struct Instance {
    api::Assignment assignment;
    api::InstanceStatus status;
    bool busy = false;  // a start or stop task is running
    bool probing = false;
    int64_t next_probe_ms = 0;
    int failures = 0;
    int64_t cool_until_ms = 0;
    bool final_reported = false;
  };

  void set_state(Instance& in, api::InstanceState s, std::string message = {});
  void begin_start(Instance& in);
  void begin_stop(Instance& in);
  void begin_probe(Instance& in, int64_t now);
  void finish_start(const std::string& id, Result<StartedInstance> r);
  void finish_stop(const std::string& id, Result<ExitInfo> r);
  void finish_probe(const std::string& id, bool healthy);
  void step_one(Instance& in, bool assigned, int64_t now);

  InstanceRuntime& runtime_;
  Executor work_, probes_;
  Clock clock_;
  AgentOptions options_;

  mutable std::mutex mu_;
  std::condition_variable changed_cv_;
  uint64_t changes_ = 0;
  uint64_t seen_changes_ = 0;
  int64_t index_ = -1;
  std::map<std::string, api::Assignment> desired_;
  std::map<std::string, Instance> instances_;
};

}  // namespace qufop::noded

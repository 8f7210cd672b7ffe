// noded's side of the node protocol (common/api.h): a heartbeat (NodeStatus) every interval and
// on every state change, a long poll of the node's assignments on a thread of its own, and the
// converge loop that steps the agent. The scheduler unreachable: instances keep running, the
// calls retry with backoff, and the log says so once per change, not every second.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "common/config.h"
#include "noded/agent.h"
#include "noded/instance_runtime.h"
#include "noded/resources.h"

namespace qufop::noded {

struct ControlOptions {
  HostPort scheduler;
  std::string token;
  std::string node_id;
  std::string address;  // where published ports are reached
  std::string api;      // noded's own listen address
  std::map<std::string, std::string> labels;
  Reserve reserve;
  std::chrono::milliseconds heartbeat{1000};
  std::string data_dir;
};

class Control {
 public:
  Control(Agent& agent, SandboxRuntime& runtime, ControlOptions options);
  ~Control();  // stop()
  void start();
  // Joins the heartbeat and converge threads; the long poll's thread is left to the process
  // exit (a poll may block for its whole wait).
  void stop();

  // The status the next heartbeat sends.
  api::NodeStatus status(bool for_heartbeat);

 private:
  void heartbeat_loop();
  void assignments_loop();
  void converge_loop();
  // Logs a change of reachability once.
  void note(const char* what, bool ok, const std::string& error);

  Agent& agent_;
  SandboxRuntime& runtime_;
  ControlOptions options_;
  std::string boot_id_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> scheduler_index_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, bool> reachable_;
  std::thread heartbeat_, converge_;
};

}  // namespace qufop::noded

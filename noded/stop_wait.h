// StopWait (DESIGN.md "Node daemon"): SIGTERM to the main process (through qufop-init), up to
// stop_wait for it to exit, then SIGKILL to every process left in the cgroup (children and
// grandchildren included), then release: mounts, cgroup, run dir.
#pragma once

#include <chrono>

#include "common/result.h"
#include "noded/sandbox.h"

namespace qufop::noded {

struct StopResult {
  ExitStatus status;
  bool killed = false;  // stop_wait ran out: everything was SIGKILLed
  std::chrono::milliseconds took{0};
};

// Blocks for at most `stop_wait` (plus the kill and the release). The sandbox is released even
// when it had exited already; calling it again returns the recorded status.
Result<StopResult> stop_wait(Sandbox& sandbox, std::chrono::milliseconds stop_wait);
// With the spec's stop_wait.
Result<StopResult> stop_wait(Sandbox& sandbox);

}  // namespace qufop::noded

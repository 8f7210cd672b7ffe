#include "noded/stop_wait.h"

#include <csignal>

namespace qufop::noded {

Result<StopResult> stop_wait(Sandbox& sandbox, std::chrono::milliseconds stop_wait) {
  auto t0 = std::chrono::steady_clock::now();
  StopResult result;
  // 1. SIGTERM: qufop-init forwards it to the main process.
  QF_TRY(sandbox.signal(SIGTERM));
  // 2. Up to stop_wait for the main process to finish (init exits with it).
  auto exited = sandbox.wait(stop_wait);
  if (!exited) return exited.error();
  if (!exited->has_value()) {
    // 3. Time is up: SIGKILL to everything in the cgroup, pid 1 included.
    result.killed = true;
    QF_TRY(sandbox.kill_all());
    exited = sandbox.wait(std::nullopt);
    if (!exited) return exited.error();
  }
  if (exited->has_value()) result.status = **exited;
  // 4. Nothing runs any more: mounts, cgroup and run dir go.
  QF_TRY(sandbox.release());
  result.took =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  return result;
}

Result<StopResult> stop_wait(Sandbox& sandbox) {
  return stop_wait(sandbox, sandbox.spec().stop_wait);
}

}  // namespace qufop::noded

#include "scheduler/scheduler.h"

namespace qufop::scheduler {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{
      "scheduler", "qufop-scheduler",
      "The controller: public API, placement, reconciliation, gray upgrades.", "127.0.0.1:7200"};
  return kInfo;
}

std::vector<FlagSpec> flags() { return {}; }

int run(const DaemonOptions& options) {
  Daemon daemon(options);
  return daemon.run();
}

}  // namespace qufop::scheduler

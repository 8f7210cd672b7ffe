// qufop-scheduler: The controller: public API, placement, reconciliation, gray upgrades.
#pragma once

#include <vector>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop::scheduler {

const DaemonInfo& info();
// The flags of qufop-scheduler beyond the common ones.
std::vector<FlagSpec> flags();
// Serves until SIGTERM/SIGINT; returns the exit code.
int run(const DaemonOptions& options);

}  // namespace qufop::scheduler

// qufop-gate: The data path: routes requests to UFOP instances.
#pragma once

#include <vector>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop::gate {

const DaemonInfo& info();
// The flags of qufop-gate beyond the common ones.
std::vector<FlagSpec> flags();
// Serves until SIGTERM/SIGINT; returns the exit code.
int run(const DaemonOptions& options);

}  // namespace qufop::gate

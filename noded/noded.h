// qufop-noded: The node daemon: reports resources, builds and stops sandboxes.
#pragma once

#include <vector>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop::noded {

const DaemonInfo& info();
// The flags of qufop-noded beyond the common ones.
std::vector<FlagSpec> flags();
// Serves until SIGTERM/SIGINT; returns the exit code.
int run(const DaemonOptions& options);

}  // namespace qufop::noded

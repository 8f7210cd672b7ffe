// qufop-keeper: Cluster state: the etcd v3 API served from SQLite.
#pragma once

#include <vector>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop::keeper {

const DaemonInfo& info();
// The flags of qufop-keeper beyond the common ones.
std::vector<FlagSpec> flags();
// Serves until SIGTERM/SIGINT; returns the exit code.
int run(const DaemonOptions& options);

}  // namespace qufop::keeper

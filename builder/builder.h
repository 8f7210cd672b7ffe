// qufop-builder: Builds UFOP descriptors into OCI images and serves them to nodes.
#pragma once

#include <vector>

#include "common/config.h"
#include "common/daemon.h"

namespace qufop::builder {

const DaemonInfo& info();
// The flags of qufop-builder beyond the common ones.
std::vector<FlagSpec> flags();
// Serves until SIGTERM/SIGINT; returns the exit code.
int run(const DaemonOptions& options);

}  // namespace qufop::builder

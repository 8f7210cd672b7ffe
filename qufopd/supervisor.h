// qufopd, the all-in-one: keeper, scheduler, builder, gate and one noded on one host (loopback
// by default) with one data dir, started in dependency order, their logs on the terminal, and
// stopped in reverse order on Ctrl-C — the node's instances StopWait-stopped, nothing left.
//
// DESIGN.md pictured one process. It is one supervisor of the five daemon binaries instead:
// each daemon owns process-wide state (signal handling, its thread pools, noded's child
// reaping), and the same binaries are what a real cluster runs, so the all-in-one tests them.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"

namespace qufop::qufopd {

struct Options {
  std::string data_dir;
  std::string host = "127.0.0.1";
  int port_base = 7100;  // keeper; scheduler +100, noded +200, builder +300, gate +400
  std::string bin_dir;   // where the daemon binaries are; default: found from qufopd's own path
  std::string log_level = "info";
  std::vector<std::string> noded_flags;  // extra flags for noded (--net-subnet=…)
};

std::vector<FlagSpec> flags();
Result<Options> options_from_flags(const Flags& flags);

// Runs until SIGINT/SIGTERM or a daemon dies; returns the exit code.
int run(const Options& options);

// The path of a daemon binary ("keeper" -> …/qufop-keeper): bin_dir, qufopd's own dir, or the
// build tree's <dir>/../<component>/.
Result<std::string> find_binary(const std::string& bin_dir, const std::string& component);

}  // namespace qufop::qufopd

// `qufop-noded run`: one sandbox, in the foreground, for operators and benchmarks.
//
//   qufop-noded run --rootfs DIR [--memory 64m] [--cpus 0.5] [--pids 64] [--readonly]
//     [--user UID:GID] [--env K=V]... [--workdir D] [--hostname H] [--net none|host|bridge]
//     [--publish HOSTPORT:PORT] [--stop-wait S] -- CMD ARGS...
//
// --net bridge: the sandbox gets its own network namespace with a veth on the node bridge
// (netfilter: qf0, 10.88.0.0/24 by default; --net-* flags), and --publish makes instance PORT
// reachable on host HOSTPORT (0 = allocated; printed on stderr), also via 127.0.0.1. All of it
// is undone when the runner exits; the last runner also removes the bridge and the table.
//
// Exits with the command's exit code, 128+N when signal N killed it, 137 (saying so on stderr)
// after an OOM kill; 2 for a command line it cannot parse, 125 when the sandbox cannot be built
// (one line on stderr, nothing left behind). SIGTERM/SIGINT/SIGHUP stop the sandbox the StopWait
// way. The output is copied to the runner's own stdout/stderr and to a rotated output.log.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "noded/spec.h"

namespace qufop::noded {

// The flags of `qufop-noded run`.
std::vector<FlagSpec> run_flags();
// The spec the flags describe (for the runner's own pid `pid`): id "qf-run-<pid>", run dir
// "<state-dir>/run-<pid>", cgroup parent "qufop".
Result<SandboxSpec> spec_from_flags(const Flags& flags, int pid);

// argv[0] is "run". Returns the exit code when nothing was started; once a sandbox has run and
// been released, flushes stdout/stderr and _exit()s with the command's code (a one-shot process
// has nothing left to tear down that the kernel does not).
int run_main(int argc, char** argv);

}  // namespace qufop::noded

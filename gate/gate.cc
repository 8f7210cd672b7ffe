#include "gate/gate.h"

namespace qufop::gate {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{
      "gate", "qufop-gate", "The data path: routes requests to UFOP instances.", "127.0.0.1:7500"};
  return kInfo;
}

std::vector<FlagSpec> flags() { return {}; }

int run(const DaemonOptions& options) {
  Daemon daemon(options);
  return daemon.run();
}

}  // namespace qufop::gate

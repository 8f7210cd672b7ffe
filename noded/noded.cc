#include "noded/noded.h"

namespace qufop::noded {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{"noded", "qufop-noded",
                                "The node daemon: reports resources, builds and stops sandboxes.",
                                "127.0.0.1:7300"};
  return kInfo;
}

std::vector<FlagSpec> flags() { return {}; }

int run(const DaemonOptions& options) {
  Daemon daemon(options);
  return daemon.run();
}

}  // namespace qufop::noded

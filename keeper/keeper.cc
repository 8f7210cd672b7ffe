#include "keeper/keeper.h"

namespace qufop::keeper {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{"keeper", "qufop-keeper",
                                "Cluster state: the etcd v3 API served from SQLite.",
                                "127.0.0.1:7100"};
  return kInfo;
}

std::vector<FlagSpec> flags() { return {}; }

int run(const DaemonOptions& options) {
  Daemon daemon(options);
  return daemon.run();
}

}  // namespace qufop::keeper

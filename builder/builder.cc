#include "builder/builder.h"

namespace qufop::builder {

const DaemonInfo& info() {
  static const DaemonInfo kInfo{"builder", "qufop-builder",
                                "Builds UFOP descriptors into OCI images and serves them to nodes.",
                                "127.0.0.1:7400"};
  return kInfo;
}

std::vector<FlagSpec> flags() { return {}; }

int run(const DaemonOptions& options) {
  Daemon daemon(options);
  return daemon.run();
}

}  // namespace qufop::builder

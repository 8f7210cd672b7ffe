#include <cstdio>

#include "cli/command.h"

namespace qufop::cli {

int cmd_version(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::fprintf(stderr, "qufopctl version: takes no arguments\n");
    return kUsage;
  }
  std::printf("qufopctl %s\n", QUFOP_VERSION);
  return kOk;
}

}  // namespace qufop::cli

// qufop-noded: the one-shot `run` subcommand in this process; for the daemon, the agent binary
// beside it (qufop-noded-agent), exec'd with the same arguments. The split keeps the runner's
// process small and fast to start: the agent links the builder's puller and libarchive, whose
// shared C++ dependencies also cannot share a process with the runner's static C++ runtime.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "noded/runner.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "run") {
    return qufop::noded::run_main(argc - 1, argv + 1);
  }
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    std::fprintf(stderr, "qufop-noded: readlink(/proc/self/exe): %s\n", std::strerror(errno));
    return 1;
  }
  std::string agent(self, static_cast<size_t>(n));
  agent = agent.substr(0, agent.rfind('/') + 1) + "qufop-noded-agent";
  ::execv(agent.c_str(), argv);
  std::fprintf(stderr, "qufop-noded: exec %s: %s\n", agent.c_str(), std::strerror(errno));
  return 1;
}

#include <cstdio>
#include <string_view>

#include "cli/command.h"

namespace qufop::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> kCommands = {
      {"status", "show whether each qufop daemon answers", cmd_status},
      {"version", "print the qufopctl version", cmd_version},
  };
  return kCommands;
}

namespace {
void print_usage(FILE* out) {
  std::fprintf(out, "usage: qufopctl COMMAND [ARGS...]\n\ncommands:\n");
  for (const auto& c : commands()) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\n'qufopctl COMMAND --help' describes one command.\n");
}
}  // namespace

int run(int argc, const char* const* argv) {
  if (argc < 2) {
    print_usage(stderr);
    return kUsage;
  }
  std::string_view name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    print_usage(stdout);
    return kOk;
  }
  for (const auto& c : commands()) {
    if (name == c.name) return c.run(std::vector<std::string>(argv + 2, argv + argc));
  }
  std::fprintf(stderr, "qufopctl: unknown command '%s' (see qufopctl --help)\n", argv[1]);
  return kUsage;
}

}  // namespace qufop::cli

#include <cstdio>
#include <string_view>

#include "cli/command.h"

namespace qufop::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> kCommands = {
      {"login", "check keys with the scheduler and save them", cmd_login},
      {"whoami", "show the user the configured keys belong to", cmd_whoami},
      {"reg", "register a UFOP", cmd_reg},
      {"unreg", "delete a UFOP", cmd_unreg},
      {"build", "upload a UFOP directory and build a new version", cmd_build},
      {"ver", "list a UFOP's versions and image digests", cmd_ver},
      {"resize", "set how many instances run", cmd_resize},
      {"upgrade", "move instances to another version (gray upgrade)", cmd_upgrade},
      {"info", "show a UFOP", cmd_info},
      {"list", "list the UFOPs you can see", cmd_list},
      {"instances", "list a UFOP's instances", cmd_instances},
      {"logs", "print (or follow) an instance's output", cmd_logs},
      {"nodes", "list the nodes", cmd_nodes},
      {"use", "add a semi-public UFOP to the ones you call", cmd_use},
      {"image", "import a base image (admin)", cmd_image},
      {"user", "add or list users (admin)", cmd_user},
      {"status", "show whether each qufop daemon answers", cmd_status},
      {"version", "print the qufopctl version", cmd_version},
  };
  return kCommands;
}

namespace {
void print_usage(FILE* out) {
  std::fprintf(out, "usage: qufopctl COMMAND [ARGS...]\n\ncommands:\n");
  for (const auto& c : commands()) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\n'qufopctl COMMAND --help' describes one command. Exit codes: 0 ok, 1 failed,\n"
               "2 usage. The config is --config FILE, else $QUFOP_CONFIG, else ~/.qufop/config.\n");
}
}  // namespace

int run(int argc, const char* const* argv) {
  if (argc < 2) {
    print_usage(stderr);
    return kUsage;
  }
  // The flags every command takes may also come first: `qufopctl --config F nodes`.
  std::vector<std::string> leading;
  int at = 1;
  while (at < argc) {
    std::string_view a = argv[at];
    bool takes_value = a == "--config" || a == "--scheduler" || a == "--gate";
    bool with_value = a.starts_with("--config=") || a.starts_with("--scheduler=") ||
                      a.starts_with("--gate=") || a == "--json";
    if (!takes_value && !with_value) break;
    leading.emplace_back(a);
    if (takes_value && at + 1 < argc) leading.emplace_back(argv[++at]);
    ++at;
  }
  if (at >= argc) {
    print_usage(stderr);
    return kUsage;
  }
  std::string_view name = argv[at];
  if (name == "-h" || name == "--help" || name == "help") {
    print_usage(stdout);
    return kOk;
  }
  for (const auto& c : commands()) {
    if (name != c.name) continue;
    std::vector<std::string> args(argv + at + 1, argv + argc);
    args.insert(args.end(), leading.begin(), leading.end());
    return c.run(args);
  }
  std::fprintf(stderr, "qufopctl: unknown command '%s' (see qufopctl --help)\n", argv[at]);
  return kUsage;
}

}  // namespace qufop::cli

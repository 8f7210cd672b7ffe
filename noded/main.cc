// qufop-noded: parse flags, set up logging, run (or the one-shot `run` subcommand).
#include <string_view>
#include <variant>

#include "noded/noded.h"
#include "noded/runner.h"

int main(int argc, char** argv) {
  namespace noded = qufop::noded;
  // `qufop-noded run ... -- CMD`: one sandbox in the foreground, before the daemon's flags.
  if (argc > 1 && std::string_view(argv[1]) == "run") return noded::run_main(argc - 1, argv + 1);
  auto parsed = qufop::parse_daemon_command_line(noded::info(), noded::flags(), argc, argv);
  if (auto* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  return noded::run(std::get<qufop::DaemonOptions>(parsed));
}

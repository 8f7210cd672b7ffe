// qufop-keeper: parse flags, set up logging, run (or a backup/restore subcommand).
#include <string_view>
#include <variant>

#include "keeper/keeper.h"

int main(int argc, char** argv) {
  namespace keeper = qufop::keeper;
  std::string_view sub = argc > 1 ? argv[1] : "";
  if (sub == "backup") return keeper::backup_main(argc - 1, argv + 1);
  if (sub == "restore") return keeper::restore_main(argc - 1, argv + 1);
  auto parsed = qufop::parse_daemon_command_line(keeper::info(), keeper::flags(), argc, argv);
  if (auto* exit_code = std::get_if<int>(&parsed)) return *exit_code;
  return keeper::run(std::get<qufop::DaemonOptions>(parsed));
}
